"""Which image features for M30K-F8K, read on VAL only (never test): EfficientNet-Lite0 or Lite2 (pooled).

A Lite2 pass over all 7,478 photos with its tokens costs about an hour of CPU here, so this asks first,
cheaply, whether it is worth it: the `linear` and `mt` students (neither reads image tokens with pooled-only
features) trained on the benchmark's rows (every English caption of the training images, its French MT,
the workflow's concat text features), once on each encoder's pooled features, scored on the 242 val images
with the human val captions as queries (fr, de, cs task1; de task2).

The pooled features of the train+val images come from bench/knn_captions_val.py's cache (its ``features``
step; test images are never encoded there), written here as image-feature tables of their own.

    .venv/bin/python bench/image_encoders_val.py [--seeds 0 1 2] [--presets linear mt]
    -> results/bench/image_encoders_val.json (and a table on stdout)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_report  # noqa: E402
from knn_captions_val import CACHE, ENCODERS  # noqa: E402
from text_encoders_val import CONFIG, QUERY_SETS, one, seed_summary, train_and_score, val_queries  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("image_encoders_val")


def image_table(pooled_cache: Path, encoder: str, dst: Path) -> Path:
    """``encoder``'s cached pooled features of the train+val images -> an image-feature table at ``dst``."""
    if dst.exists():
        return dst
    from ccr.features.store import fixed_list, image_feature_schema

    ids = json.loads((pooled_cache / "image_ids.json").read_text())
    pooled = np.load(pooled_cache / f"pooled.{encoder}.npy")
    if len(ids) != len(pooled):
        raise SystemExit(f"{pooled_cache}: {len(ids)} image ids but {len(pooled)} rows of {encoder}")
    meta = {"backend": encoder, "derived_from": str(pooled_cache / f"pooled.{encoder}.npy")}
    dst.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image_id": pa.array(ids), "pooled": fixed_list(pooled)},
                            schema=image_feature_schema(pooled.shape[1], None, meta)), dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--presets", nargs="+", default=["linear", "mt"])
    ap.add_argument("--pooled-cache", type=Path, default=CACHE,
                    help="bench/knn_captions_val.py's cache (pooled.<encoder>.npy + image_ids.json)")
    ap.add_argument("--cache", type=Path, default=REPO / "results" / "bench" / "image_encoders_val")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "image_encoders_val.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from ccr.train.inputs import TrainInputs

    student = {**yaml.safe_load(CONFIG.read_text())["train"]["student"], "num_threads": 2}
    data = one("results/data/m30k-f8k-*/images.parquet").parent
    feats = one("results/features/m30k-f8k-*/texts/concat-*/captions.parquet").parent
    mt_features = one("results/features/m30k-f8k-*/texts/concat-*/mt-multi.*.parquet")
    translations = one("results/data/m30k-f8k-*/translations/multi/*.parquet")
    val_images, queries = val_queries(data)

    results = []
    for preset in args.presets:
        for encoder in ENCODERS:
            table = image_table(args.pooled_cache, encoder, args.cache / f"{encoder}.parquet")
            inputs = TrainInputs(images=data / "images.parquet", captions=data / "captions.parquet",
                                 translations=translations, descriptions=None, image_features=table,
                                 caption_features=feats / "captions.parquet", translation_features=mt_features,
                                 description_features=None, lang="multi")
            params = {**student, "preset": preset}
            for seed in args.seeds:
                run = args.cache / "runs" / f"{preset}-{encoder}" / f"seed{seed}"
                row = {"preset": preset, "image_features": encoder, "seed": seed,
                       **train_and_score(inputs, params, seed, run, val_images, queries)}
                row["mean"] = round(float(np.mean([row[q] for q in QUERY_SETS])), 2)
                log.info("%s", row)
                results.append(row)

    table = seed_summary(results, ["preset", "image_features"], [*QUERY_SETS, "mean"],
                         ["student", "image features (pooled, val)"])
    write_report(args.out, {"bench": "image_encoders_val", "split": "val", "train": student, "machine": machine(),
                            "summary": table, "runs": results})


if __name__ == "__main__":
    main()
