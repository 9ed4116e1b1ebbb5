"""Real 512-d sentence embeddings for bench/ann_index.py: Multi30K captions through multilingual USE -> .npy.

The ANN bench runs at 1M items on synthetic data (no 1M gallery of real ccr embeddings exists here);
this gives it real embeddings of the same size d to compare against at a smaller n
(``ann_index.py --runs real:ivf real:hnsw --real-npy ...``), so the synthetic data can be judged, and
its parameters chosen, by how an index behaves on real embeddings.  The text encoder is ccr's own
``use-multilingual`` backend (512-d, L2-normalised); the captions are the English task2 training
captions (five independent captions per image: near-duplicates and topics, as in a real gallery),
read in file order train.1, train.2, ... until ``--n``.

    PYTHONPATH=src .venv/bin/python bench/embed_captions.py [--n 100000] [--out results/bench/m30k_use_captions.npy]

Needs ../shared/data (or CCR_SHARED_DATA); the data stay outside the repository (see its README).
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from pathlib import Path

import numpy as np

from ccr.features import TEXT_ENCODERS


def read_captions(root: Path, n: int) -> list[str]:
    lines: list[str] = []
    for k in range(1, 6):
        path = root / "multi30k" / "task2" / "raw" / f"train.{k}.en.gz"
        if not path.is_file():
            raise SystemExit(f"{path}: not found (set CCR_SHARED_DATA to the shared benchmark data)")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines.extend(line.strip() for line in f)
        if len(lines) >= n:
            break
    if len(lines) < n:
        raise SystemExit(f"only {len(lines)} captions in {root}/multi30k/task2/raw, asked for {n}")
    return lines[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("CCR_SHARED_DATA", "../shared/data"))
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="results/bench/m30k_use_captions.npy")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be >= 1")

    texts = read_captions(Path(args.data), args.n)
    encoder = TEXT_ENCODERS.create("use-multilingual", threads=args.threads, batch_size=args.batch_size)
    out = np.empty((len(texts), 512), dtype=np.float32)
    start, step = time.perf_counter(), 4096
    for i in range(0, len(texts), step):
        emb = np.asarray(encoder.encode(texts[i:i + step], "query"), dtype=np.float32)
        if emb.shape != (len(texts[i:i + step]), out.shape[1]):
            raise SystemExit(f"encoder returned shape {emb.shape} for {len(texts[i:i + step])} captions")
        out[i:i + step] = emb
        done = min(i + step, len(texts))
        rate = done / (time.perf_counter() - start)
        print(f"{done}/{len(texts)} captions, {rate:.0f}/s, ETA {(len(texts) - done) / rate:.0f} s", flush=True)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    print(f"wrote {path} {out.shape}")


if __name__ == "__main__":
    main()
