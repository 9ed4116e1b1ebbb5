"""Exact evaluation ranks at gallery scale -> results/bench/eval_scale.json (time, peak RSS, pairs/s).

For each gallery size N (default 10k, 100k, 1M) and Q text queries (default 10k), one child process
generates synthetic embeddings and computes, with ``ccr.evaluate.metrics``:

* **T2I** (``text_to_image_ranks``): each query's exact rank of its image among all N gallery items
  -> Q x N scored pairs.
* **I2T** (``image_to_text_ranks``): each *captioned* image's best rank among its captions, against
  all Q queries -> (captioned images) x Q scored pairs.  The queries are the captions of Q / c images
  (c = ``--captions-per-image``, default 5 as in Flickr30k/COCO), so 2,000 images whatever N: images
  without a caption in the query set have no I2T rank in the evaluation, so scoring them
  (1M images x 10k texts) would be work the evaluation throws away.

Data: gallery rows are i.i.d. Gaussian, L2-normalised, float32, generated in blocks straight into one
array (no second copy); a query is its image plus Gaussian noise of norm ``--noise`` (default 4, so
cos(query, image) ~ 0.24), normalised, so ranks are not trivially 1 (R@1 drops with N, a sanity
check).  The distribution does not change the cost of exact ranking.  d defaults to the student's
evaluation embedding size from ``StudentParams`` defaults: ``embed_dim`` 256, doubled because the
default (full) system fuses slots (``use_slots`` and ``slot_fusion`` > 0: ``StudentRetriever`` concatenates
the global and slot parts) -> 512.

Memory: peak RSS of each child comes from ``os.wait4`` (that child's own ru_maxrss); the child also
records its RSS once the data exist, so ``rank_overhead_mib`` = peak - (data + interpreter) is what
ranking adds.  The claimed bound: rank_overhead <= block_bytes + ``OVERHEAD_SLACK_MIB`` whatever N.
Load: the 1-min load average and the CPU share used by *other* processes during the timed part
(from /proc/stat minus this child's own CPU time) are recorded per run; the machine is shared, so
pairs per CPU-second of the child (its own user + system time) is reported beside pairs per second:
it shows whether the kernel runs as efficiently at 1M as at 10k, whatever share of the CPUs it got.

    PYTHONPATH=src .venv/bin/python bench/eval_scale.py [--sizes 10000 100000 1000000] [--queries 10000]
        [--dim 512] [--block-mib 256] [--threads 2] [--repeats 3] [--out results/bench/eval_scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _common import (
    LoadMeter,
    child_cmd,
    default_dim,
    machine,
    median,
    proc_status_kib,
    run_child,
    thread_env,
    write_report,
)

# Slack allowed above block_bytes for the rest of the ranking working set (the queries once more in
# caption order, one chunk of rows, the norm check's row blocks, integer arrays), in MiB.
OVERHEAD_SLACK_MIB = 128
TARGET_RATIO = 0.8  # pairs/s at the largest gallery >= 80% of pairs/s at the smallest


def make_data(n: int, nq: int, per_image: int, dim: int, noise: float, seed: int):
    """(gallery (n, dim), queries (nq, dim), query_to_gallery (nq,)): unit-norm float32, gallery in blocks."""
    import numpy as np

    from ccr.evaluate.metrics import l2_normalise

    rng = np.random.default_rng(seed)
    gallery = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65_536):
        block = gallery[start:start + 65_536]
        rng.standard_normal(out=block, dtype=np.float32)
        l2_normalise(block, "gallery", copy=False)
    images = rng.choice(n, -(-nq // per_image), replace=False)
    q2g = np.repeat(images, per_image)[:nq]
    noise_vec = rng.standard_normal((nq, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
    queries = l2_normalise(gallery[q2g] + noise_vec, "queries", copy=False)
    return gallery, queries, q2g


def measure_size(args: argparse.Namespace) -> dict:
    import numpy as np

    from ccr.evaluate.metrics import Ranks, image_to_text_ranks, summarise_ranks, text_to_image_ranks

    n = args.child
    rss_start = proc_status_kib("VmRSS")
    t = time.perf_counter()
    gallery, queries, q2g = make_data(n, args.queries, args.captions_per_image, args.dim, args.noise, args.seed)
    gen_s = time.perf_counter() - t
    rss_data = proc_status_kib("VmRSS")
    block_bytes = args.block_mib * 2**20

    runs = []
    for _ in range(args.repeats):
        meter = LoadMeter()
        w0 = time.perf_counter()
        t2i = text_to_image_ranks(queries, gallery, q2g, use_gpu=False, block_bytes=block_bytes)
        w1 = time.perf_counter()
        i2t, images = image_to_text_ranks(queries, gallery, q2g, use_gpu=False, block_bytes=block_bytes)
        w2 = time.perf_counter()
        others, cpu_s = meter.stop(w2 - w0)
        runs.append({"t2i_s": round(w1 - w0, 3), "i2t_s": round(w2 - w1, 3), "cpu_s": cpu_s,
                     "load_1min": meter.load_1min, "others_cpu_share": others})
    summary = summarise_ranks(Ranks(t2i=t2i, i2t=i2t, i2t_images=images), (1, 10))
    return {
        "gallery": n, "queries": len(q2g), "captioned_images": len(images), "dim": args.dim,
        "t2i_pairs": len(q2g) * n, "i2t_pairs": len(images) * len(q2g),
        "generate_s": round(gen_s, 2), "runs": runs,
        "rss_start_mib": round(rss_start / 1024, 1), "rss_with_data_mib": round(rss_data / 1024, 1),
        "data_mib": round((gallery.nbytes + queries.nbytes) / 2**20, 1),
        "sanity": {k: round(summary[k], 2) for k in ("t2i_r1", "t2i_r10", "i2t_r1", "i2t_r10", "t2i_medr")},
        "numpy": np.__version__,
    }


def run_size(args: argparse.Namespace, n: int) -> dict:
    """One gallery size in its own process: its ru_maxrss (os.wait4) is that run's peak alone."""
    argv = ["--child", str(n), "--queries", str(args.queries), "--dim", str(args.dim),
            "--captions-per-image", str(args.captions_per_image), "--noise", str(args.noise),
            "--block-mib", str(args.block_mib), "--repeats", str(args.repeats), "--seed", str(args.seed)]
    row, row["peak_rss_mib"] = run_child(child_cmd(__file__, argv), thread_env(args.threads))
    row["rank_overhead_mib"] = round(row["peak_rss_mib"] - row["rss_with_data_mib"], 1)
    row["overhead_bound_mib"] = args.block_mib + OVERHEAD_SLACK_MIB
    row["within_bound"] = row["rank_overhead_mib"] <= row["overhead_bound_mib"]
    for key, pick in (("median", median), ("best", min)):
        t2i = pick([r["t2i_s"] for r in row["runs"]])
        total = pick([r["t2i_s"] + r["i2t_s"] for r in row["runs"]])
        row[f"{key}_t2i_s"], row[f"{key}_total_s"] = round(t2i, 3), round(total, 3)
        row[f"{key}_t2i_gpairs_per_s"] = round(row["t2i_pairs"] / t2i / 1e9, 4)
        row[f"{key}_gpairs_per_s"] = round((row["t2i_pairs"] + row["i2t_pairs"]) / total / 1e9, 4)
    # Per CPU-second of this child: the kernel's efficiency whatever share of the shared CPUs it got.
    row["median_gpairs_per_cpu_s"] = round(median([(row["t2i_pairs"] + row["i2t_pairs"]) / r["cpu_s"] / 1e9
                                                   for r in row["runs"]]), 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--captions-per-image", type=int, default=5)
    ap.add_argument("--dim", type=int, help="embedding size (default: the student's, from StudentParams defaults)")
    ap.add_argument("--noise", type=float, default=4.0, help="norm of the noise added to a query's image vector")
    ap.add_argument("--block-mib", type=int, default=256, help="block_bytes of the score blocks, in MiB")
    ap.add_argument("--threads", type=int, default=2, help="BLAS threads (OPENBLAS/OMP/MKL_NUM_THREADS)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench/eval_scale.json")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)  # internal: one gallery size, JSON to stdout
    args = ap.parse_args()
    for name in ("queries", "captions_per_image", "block_mib", "threads", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if any(n < 1 for n in args.sizes):
        ap.error("--sizes must be >= 1")
    if -(-args.queries // args.captions_per_image) > min(args.sizes):
        ap.error("--queries / --captions-per-image images do not fit in the smallest gallery")

    if args.child is not None:
        print(json.dumps(measure_size(args)))
        return
    if args.dim is None:
        args.dim = default_dim()

    rows = []
    print(f"d={args.dim}, {args.queries} queries ({args.captions_per_image} per image), block {args.block_mib} MiB, "
          f"{args.threads} BLAS threads, {args.repeats} repeats; load {os.getloadavg()[0]:.2f}", flush=True)
    header = (f"{'gallery':>9} {'T2I s':>8} {'I2T s':>7} {'total s':>8} {'Gpairs/s':>9} {'T2I Gp/s':>9} {'Gp/CPU-s':>9} "
              f"{'peak RSS MiB':>13} {'data MiB':>9} {'rank +MiB':>10} {'load':>5} {'others':>7}  R@1 t2i/i2t")
    print(header, flush=True)
    for n in args.sizes:
        r = run_size(args, n)
        rows.append(r)
        med_i2t = median([x["i2t_s"] for x in r["runs"]])
        print(f"{n:>9} {r['median_t2i_s']:>8.2f} {med_i2t:>7.2f} {r['median_total_s']:>8.2f} "
              f"{r['median_gpairs_per_s']:>9.4f} {r['median_t2i_gpairs_per_s']:>9.4f} {r['median_gpairs_per_cpu_s']:>9.4f} "
              f"{r['peak_rss_mib']:>13.1f} "
              f"{r['data_mib']:>9.1f} {r['rank_overhead_mib']:>10.1f} {median([x['load_1min'] for x in r['runs']]):>5.2f} "
              f"{median([x['others_cpu_share'] for x in r['runs']]):>7.2f}  "
              f"{r['sanity']['t2i_r1']:.1f}/{r['sanity']['i2t_r1']:.1f}", flush=True)

    small, large = rows[0], rows[-1]
    targets = {
        "ratio_definition": f"pairs/s at gallery {large['gallery']} / pairs/s at gallery {small['gallery']}",
        "median_ratio": round(large["median_gpairs_per_s"] / small["median_gpairs_per_s"], 3),
        "best_ratio": round(large["best_gpairs_per_s"] / small["best_gpairs_per_s"], 3),
        "t2i_median_ratio": round(large["median_t2i_gpairs_per_s"] / small["median_t2i_gpairs_per_s"], 3),
        "per_cpu_s_ratio": round(large["median_gpairs_per_cpu_s"] / small["median_gpairs_per_cpu_s"], 3),
        "required_ratio": TARGET_RATIO,
        "memory_bound": f"peak RSS - RSS with data <= block ({args.block_mib} MiB) + {OVERHEAD_SLACK_MIB} MiB",
        "memory_within_bound": all(r["within_bound"] for r in rows),
    }
    targets["speed_met"] = targets["median_ratio"] >= TARGET_RATIO
    print(f"pairs/s ratio {targets['ratio_definition']}: median {targets['median_ratio']}, best "
          f"{targets['best_ratio']} (T2I only, median: {targets['t2i_median_ratio']}; per CPU-second: "
          f"{targets['per_cpu_s_ratio']}; target >= {TARGET_RATIO}); "
          f"memory within bound: {targets['memory_within_bound']}")
    report = {
        "what": "exact T2I ranks (queries x gallery) and I2T ranks (captioned images x queries), ccr.evaluate.metrics",
        "machine": machine(blas_threads=args.threads),
        "params": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
        "note": ("median and best of the repeats; 'others' = CPU share used by other processes while timed "
                 "(the machine is shared, so figures vary)"),
        "targets": targets,
        "results": rows,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
