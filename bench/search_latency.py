"""Query latency of `ccr search` (text query -> top-10 images) at 1k and 100k indexed images -> results/bench/search_latency.json.

One query at a time, as the search page and the CLI serve them, timed separately:

* **embed**: the query text through the bundle's text encoder (role ``query``) and the student's text
  head (:meth:`ccr.search.bundle.Bundle.embed_texts`);
* **search**: top-``k`` of one query vector (:func:`ccr.search.ann.search`), for ``exact`` and ``hnsw``
  (default params of :mod:`ccr.search.ann`, then wider hnsw beams ``--ef-search``, each with its
  recall@10 against exact).

Galleries:

* **1k: real images.**  ``--n-real`` generated scenes (the synthetic dataset's renderer, a seed of
  their own) embedded from their pixels with the bundle by :func:`ccr.search.gallery.index_images`
  (image encoder + describer + text encoder + head), which also gives the indexing throughput.
* **100k: synthetic embeddings.**  Embedding 100k images through the bundle is hours of this 2-core
  CPU, so the 100k gallery is the 1k real embeddings plus ``n - 1k`` synthetic unit vectors of the same
  dimension, each a real embedding plus Gaussian noise (``--noise``) renormalised: the real vectors'
  directions and clusters, the size that matters to search cost.  The recall@10 of hnsw against exact
  on that gallery is reported beside its latency.

Queries are French captions of ``--queries`` other generated scenes (the dataset's French grammar),
after ``--warmup`` untimed ones.  Threads: ``--threads`` for torch and FAISS (default 1: the machine is
shared); the CPU share of other processes during the run is recorded.

    make run    # trains the default config and exports its bundle (results/bundles/<ds>/<key>/bundle.pt)
    PYTHONPATH=src .venv/bin/python bench/search_latency.py [--bundle PATH] [--n 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import LoadMeter, machine, write_report

K = 10


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "mean": round(float(a.mean()), 3), "n": len(ms)}


def newest_bundle() -> Path:
    found = sorted(Path("results/bundles").glob("*/*/bundle.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no bundle under results/bundles: run `make run` first, or pass --bundle")
    return found[-1]


def render_images(folder: Path, n: int, seed: int) -> None:
    """``n`` generated scenes as PNG files (kept: a rerun reuses them and the index)."""
    from ccr.data.synthetic import render, sample_scenes

    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(sample_scenes(n, seed)):
        path = folder / f"scene-{i:05d}.png"
        if not path.exists():
            render(scene, 224, np.random.default_rng([seed, 1, i])).save(path)


def french_queries(n: int, seed: int) -> list[str]:
    from ccr.data.synthetic import french_caption, sample_scenes

    rng = np.random.default_rng([seed, 2])
    return [french_caption(scene, rng) for scene in sample_scenes(n, seed)]


def time_each(fn, items) -> tuple[list[float], list]:
    times, outs = [], []
    for item in items:
        start = time.perf_counter()
        outs.append(fn(item))
        times.append((time.perf_counter() - start) * 1000)
    return times, outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="model bundle (default: the newest under results/bundles)")
    parser.add_argument("--n-real", type=int, default=1000, help="real images embedded from pixels (default 1000)")
    parser.add_argument("--n", type=int, default=100_000, help="size of the large gallery (default 100000)")
    parser.add_argument("--noise", type=float, default=0.5, help="noise scale of the synthetic embeddings")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ef-search", type=int, nargs="*", default=[128, 256, 512],
                        help="hnsw: beams searched beside the default (64)")
    parser.add_argument("--work", type=Path, default=Path("results/bench/search_latency"),
                        help="images and index of the 1k gallery (reused by a rerun)")
    parser.add_argument("--out", type=Path, default=Path("results/bench/search_latency.json"))
    args = parser.parse_args()

    import faiss
    import torch

    from ccr.io import setup_logging
    from ccr.search import ann
    from ccr.search.bundle import load_bundle
    from ccr.search.gallery import ImageIndex, index_images

    setup_logging(None)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    meter, started = LoadMeter(), time.perf_counter()
    bundle = load_bundle(args.bundle or newest_bundle(), threads=args.threads)
    seed = 20261201

    images = args.work / f"images-{args.n_real}"
    render_images(images, args.n_real, seed)
    folder = args.work / f"index-{args.n_real}-{bundle.checksum[7:19]}"
    start = time.perf_counter()
    run = index_images(bundle, images, folder, add=(folder / "index.json").exists())
    index_s = time.perf_counter() - start
    timing = folder / "indexing.json"  # the indexing throughput of the run that embedded the images
    if run.added:
        timing.write_text(json.dumps({"images": run.added, "seconds": round(index_s, 1),
                                      "images_per_s": round(run.added / index_s, 2),
                                      "other_processes_cpu_share": meter.stop(index_s)[0]}) + "\n")
    indexing = json.loads(timing.read_text()) if timing.exists() else None
    real = ImageIndex(folder)
    gallery = real.index.reconstruct_n(0, real.index.ntotal)

    queries = french_queries(args.queries + args.warmup, seed + 1)
    bundle.load_encoders(images=False)
    _, warm = time_each(lambda q: bundle.embed_texts([q]), queries[: args.warmup])
    embed_ms, vecs = time_each(lambda q: bundle.embed_texts([q]), queries[args.warmup:])
    qv = np.concatenate(vecs)

    rng = np.random.default_rng(seed + 2)
    big = np.empty((args.n, bundle.dim), np.float32)
    big[: len(gallery)] = gallery
    for start_row in range(len(gallery), args.n, 65_536):  # blocks: bounded temporaries
        rows = min(65_536, args.n - start_row)
        block = gallery[rng.integers(0, len(gallery), rows)] + rng.normal(
            0, args.noise / np.sqrt(bundle.dim), (rows, bundle.dim)).astype(np.float32)
        big[start_row: start_row + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)

    results = []
    for name, data in (("real", gallery), ("synthetic", big)):
        exact_ids = None
        for kind in ("exact", "hnsw"):
            start = time.perf_counter()
            index = ann.build_index(data, kind)
            build_s = time.perf_counter() - start
            # hnsw: its default beam, then wider ones (recall against exact rises, and so does latency)
            for search_params in ([None] if kind == "exact" else [None, *({"efSearch": ef} for ef in args.ef_search)]):
                def one(q, index=index, sp=search_params):
                    return ann.search(index, q[None], K, sp)[1][0]

                for q in qv[: args.warmup]:
                    one(q)
                search_ms, hits = time_each(one, qv)
                ids = np.stack(hits)
                params = {**ann.index_params(kind, None, int(index.ntotal)), **(search_params or {})}
                entry = {"gallery": name, "n": int(index.ntotal), "kind": kind, "params": params,
                         "build_s": round(build_s, 2), "embed_ms": percentiles(embed_ms),
                         "search_ms": percentiles(search_ms),
                         "total_ms": percentiles([e + s for e, s in zip(embed_ms, search_ms, strict=True)])}
                if kind == "exact":
                    exact_ids = ids
                else:
                    entry["recall_at_10_vs_exact"] = round(float(np.mean(
                        [len(set(a) & set(b)) / K for a, b in zip(ids, exact_ids, strict=True)])), 4)
                results.append(entry)
                print(f"{name:9s} n={entry['n']:>7d} {kind:5s} {search_params or ''}: embed p50 "
                      f"{entry['embed_ms']['p50']:.2f} ms p95 {entry['embed_ms']['p95']:.2f}; search p50 "
                      f"{entry['search_ms']['p50']:.3f} ms p95 {entry['search_ms']['p95']:.3f}; build {build_s:.1f} s"
                      + (f"; recall@10 {entry['recall_at_10_vs_exact']}" if kind != "exact" else ""), file=sys.stderr)

    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(threads=args.threads, load_1min_at_start=meter.load_1min,
                           other_processes_cpu_share=meter.stop(time.perf_counter() - started)[0]),
        "bundle": {**bundle.summary(), "path": str(bundle.path)},
        "k": K, "queries": args.queries, "warmup": args.warmup, "query_language": "fr",
        "indexing_1k": indexing,
        "synthetic_100k": f"the {len(gallery)} real embeddings + {args.n - len(gallery)} synthetic: a real embedding "
                          f"+ N(0, ({args.noise}/sqrt(d))^2) noise per coordinate, renormalised",
        "results": results,
    }
    write_report(args.out, out)


if __name__ == "__main__":
    main()
