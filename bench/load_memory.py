"""Peak memory of a training job's data loading on M30K-F8K -> results/bench/load_memory.json.

Loads what a full student with a teacher reads (``ccr.train.load_split``: train and val, English and MT
word tokens, image grids, description views) from an existing run's feature tables and records the peak
RSS (VmHWM) and wall time. Run it after the M30K-F8K features exist (``make bench-m30k`` or its first
stages); ``--results`` is the results folder holding them.

    PYTHONPATH=src .venv/bin/python bench/load_memory.py [--results results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ccr.train.inputs import TrainInputs, load_split


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def one(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    if not found:
        raise SystemExit(f"{root}/{pattern}: not found (run the M30K-F8K features first)")
    return found[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--out", type=Path, default=Path("results/bench/load_memory.json"))
    args = ap.parse_args()
    root = args.results
    texts = one(root, "features/m30k-f8k-*/texts/concat-*")
    inputs = TrainInputs(
        images=one(root, "data/m30k-f8k-*/images.parquet"), captions=one(root, "data/m30k-f8k-*/captions.parquet"),
        translations=one(root, "data/m30k-f8k-*/translations/multi/*.parquet"),
        descriptions=one(root, "data/m30k-f8k-*/descriptions/*.parquet"),
        image_features=one(root, "features/m30k-f8k-*/images/*.parquet"),
        caption_features=texts / "captions.parquet", translation_features=one(texts, "mt-multi*.parquet"),
        description_features=one(texts, "descriptions*.parquet"), lang="multi")
    start = time.perf_counter()
    kw = {"use_mt": True, "text_tokens": True, "image_tokens": True, "descriptions": True, "max_text_tokens": 32}
    train = load_split(inputs, "train", **kw)
    load_split(inputs, "val", **kw)
    result = {"what": "load_split train+val of a full student with teacher tokens", "rows": len(train.caption_ids),
              "seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak_rss_mb())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
