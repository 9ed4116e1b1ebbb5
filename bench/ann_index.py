"""Approximate search indexes (ccr.search.ann) against exact search at 1M items -> results/bench/ann_index.json.

For each data structure (``clustered``, ``isotropic``) and index kind (``exact``, then ``ivf`` / ``hnsw``
as ``--runs`` asks), one child process generates the gallery block by block straight into the index (the raw gallery never
exists whole, so peak memory is about one index), then searches two query sets of ``--queries`` each:

* **tuning** queries: recall@10 and queries/s for each value of the kind's search-time knob
  (``nprobe`` / ``efSearch``); the smallest value reaching ``--target`` + ``--margin`` recall is chosen;
* **held-out** queries: recall@10 and queries/s at the chosen value, the figures reported, so the
  choice is not graded on the queries it was picked on.

recall@10 = mean over queries of |ANN top-10 ∩ exact top-10| / 10, exact = ``kind="exact"``
(``IndexFlatIP``) over the same gallery, searched in the same run (its queries/s is the baseline).
Build time excludes generating the data.  Threads: ``faiss.omp_set_num_threads(--threads)`` and the
BLAS pools are set in each child and recorded; the machine is shared, so the CPU share of other
processes during each child is recorded too.

Data (unit-norm float32, d = the student's evaluation embedding size, 512 under ccr's defaults):

* ``clustered``: what real embeddings look like in the ways that matter to an index: most variance
  in a few dozen directions and overlapping semantic clusters.  A mixture of ``--clusters`` Gaussians
  (centres N(0, I), spread ``--spread``) in a ``--latent``-dim subspace (a random orthonormal basis of
  R^d), plus isotropic noise carrying ``--noise-energy`` of the energy, L2-normalised.  The defaults
  (2,048 clusters, spread 0.85, 64-d, 10%) are the grid point whose IVF recall-vs-nprobe curve came
  closest to that of real embeddings (``real``) at 98k items (see docs/scale.md).
* ``isotropic``: i.i.d. Gaussian vectors, L2-normalised: no structure at all, the worst case for any
  index (every point is nearly equidistant from every other in 512-d), shown for contrast.
* ``real``: rows of ``--real-npy`` (e.g. 100k Multi30K captions through ccr's 512-d multilingual USE
  encoder, from bench/embed_captions.py); 2 x ``--queries`` random rows are held out as the queries.

Synthetic queries are fresh draws from the same distribution as the gallery.

    PYTHONPATH=src .venv/bin/python bench/ann_index.py [--n 1000000] [--queries 1000] [--threads 2]
        [--runs clustered:ivf clustered:hnsw isotropic:ivf] [--out results/bench/ann_index.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import LoadMeter, child_cmd, default_dim, machine, run_child, thread_env, write_report

BLOCK = 65_536
K = 10
SWEEPS = {"ivf": ("nprobe", [1, 2, 4, 8, 16, 32, 64, 128, 256]), "hnsw": ("efSearch", [16, 32, 64, 128, 256, 512])}
TUNING, HELD_OUT = 1, 2  # query streams
# HNSW is left out on isotropic data by default: at 100k here it took 320 s to build and reached recall@10
# 0.57 at efSearch 512 (IVF shows the same wall for a fraction of the time); add "isotropic:hnsw" to run it.
DEFAULT_RUNS = ("clustered:ivf", "clustered:hnsw", "isotropic:ivf")


class BenchData:
    """Gallery blocks and query sets; synthetic blocks depend only on (seed, stream, block), so every
    child regenerates the same data.  ``real``: rows of a .npy, 2 x ``queries`` random rows held out as queries."""

    def __init__(self, args: argparse.Namespace, structure: str):
        import numpy as np

        self.np, self.structure, self.seed, self.nq = np, structure, args.seed, args.queries
        self.dim, self.n = args.dim, args.n
        if structure == "real":
            self.rows = np.load(args.real_npy, mmap_mode="r")
            self.dim = self.rows.shape[1]
            perm = np.random.default_rng([args.seed, 7]).permutation(len(self.rows))
            self.query_rows = {TUNING: np.sort(perm[:self.nq]), HELD_OUT: np.sort(perm[self.nq:2 * self.nq])}
            self.gallery_rows = np.sort(perm[2 * self.nq:])
            self.n = len(self.gallery_rows)
        elif structure == "clustered":
            latent, spread, energy = args.latent, args.spread, args.noise_energy
            rng = np.random.default_rng([args.seed, 0])
            basis, _ = np.linalg.qr(rng.standard_normal((self.dim, latent)))
            self.basis = basis.T.astype(np.float32)  # (latent, dim), orthonormal rows
            self.centres = rng.standard_normal((args.clusters, latent)).astype(np.float32)
            self.spread = np.float32(spread)
            # isotropic noise with `energy` of the total energy: latent * (1 + spread^2) in the subspace
            self.noise_std = np.float32(np.sqrt(energy * latent * (1 + spread**2) / (self.dim * (1 - energy))))

    def _synthetic(self, stream: int, index: int, rows: int):
        from ccr.evaluate.metrics import l2_normalise

        np = self.np
        rng = np.random.default_rng([self.seed, stream, index])
        if self.structure == "isotropic":
            return l2_normalise(rng.standard_normal((rows, self.dim), dtype=np.float32), copy=False)
        z = self.centres[rng.integers(0, len(self.centres), rows)]
        z += self.spread * rng.standard_normal(z.shape, dtype=np.float32)
        x = z @ self.basis
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        noise *= self.noise_std  # in place: one block-sized temporary, not two
        x += noise
        return l2_normalise(x, copy=False)

    def gallery_block(self, index: int):
        from ccr.evaluate.metrics import l2_normalise

        rows = min(BLOCK, self.n - index * BLOCK)
        if self.structure == "real":
            return l2_normalise(self.rows[self.gallery_rows[index * BLOCK: index * BLOCK + rows]], copy=False)
        return self._synthetic(0, index, rows)

    def queries(self, stream: int):
        from ccr.evaluate.metrics import l2_normalise

        if self.structure == "real":
            return l2_normalise(self.rows[self.query_rows[stream]], copy=False)
        return self._synthetic(stream, 0, self.nq)


def _lid_mle(scores) -> float:
    """Median over queries of the Levina-Bickel MLE of local intrinsic dimension from the k-NN distances."""
    np = __import__("numpy")
    d = np.sqrt(np.maximum(2.0 - 2.0 * scores.astype(np.float64), 1e-12))  # unit vectors: L2 from cosine
    return round(float(np.median(-1.0 / np.mean(np.log(d[:, :-1] / d[:, -1:]), axis=1))), 1)


def _recall(found, truth) -> float:
    import numpy as np

    hits = [len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True)]
    return round(float(np.mean(hits)) / truth.shape[1], 4)


def _timed_search(search, index, queries, params=None) -> tuple[object, float]:
    search(index, queries[:16], K, params)  # warm-up (first-touch of lists / graph pages), not timed
    t = time.perf_counter()
    _, ids = search(index, queries, K, params)
    return ids, round(len(queries) / (time.perf_counter() - t), 1)


def run_kind(args: argparse.Namespace) -> dict:
    """Child: build one index kind over the generated gallery, search both query sets."""
    import faiss
    import numpy as np

    from ccr.search.ann import add, build_index, index_params, search

    faiss.omp_set_num_threads(args.threads)
    kind, structure = args.child_kind, args.child_structure
    data = BenchData(args, structure)
    queries = {s: data.queries(s) for s in (TUNING, HELD_OUT)}
    params = index_params(kind, json.loads(args.params) if args.params else None, data.n)

    meter, wall0 = LoadMeter(), time.perf_counter()
    gen_s = build_s = 0.0
    n_blocks = -(-data.n // BLOCK)
    first_rows = params.get("train_size", 1)  # an IVF index trains on a random sample of its first rows
    first: list = []
    while sum(len(x) for x in first) < first_rows or not first:
        t = time.perf_counter()
        first.append(data.gallery_block(len(first)))
        gen_s += time.perf_counter() - t
    n_first = len(first)
    t = time.perf_counter()
    index = build_index(np.concatenate(first) if len(first) > 1 else first[0], kind, params)
    build_s += time.perf_counter() - t
    del first
    for b in range(n_first, n_blocks):
        t = time.perf_counter()
        block = data.gallery_block(b)
        gen_s += time.perf_counter() - t
        t = time.perf_counter()
        add(index, block)
        build_s += time.perf_counter() - t
    assert index.ntotal == data.n

    out: dict = {"structure": structure, "kind": kind, "params": params, "n": data.n, "dim": data.dim,
                 "threads": args.threads, "faiss_omp_threads": faiss.omp_get_max_threads(),
                 "generate_s": round(gen_s, 1), "build_s": round(build_s, 1)}
    truth_path = Path(args.truth_dir) / f"{structure}.npz"
    if kind == "exact":
        found = {}
        for s, q in queries.items():
            t = time.perf_counter()
            scores, found[s] = search(index, q, K)
            out[f"{'tuning' if s == TUNING else 'held_out'}_qps"] = round(len(q) / (time.perf_counter() - t), 1)
        np.savez(truth_path, tuning=found[TUNING], held_out=found[HELD_OUT])
        pair = queries[HELD_OUT] @ data.gallery_block(0).T
        out["data_stats"] = {  # how hard the neighbourhoods are, from the exact held-out results
            "nn1_cos_mean": round(float(scores[:, 0].mean()), 4), "nn10_cos_mean": round(float(scores[:, -1].mean()), 4),
            "random_pair_cos_mean": round(float(pair.mean()), 4), "random_pair_cos_std": round(float(pair.std()), 4),
            "lid_mle_k10": _lid_mle(scores)}
        out["qps"], out["recall_at_10"] = out["held_out_qps"], 1.0
    else:
        truth = np.load(truth_path)
        knob, values = SWEEPS[kind]
        values = [v for v in values if kind != "ivf" or v <= params["nlist"]]
        sweep = []
        for v in values:
            ids, qps = _timed_search(search, index, queries[TUNING], {knob: v})
            sweep.append({knob: v, "recall_at_10": _recall(ids, truth["tuning"]), "qps": qps})
        reached = [row for row in sweep if row["recall_at_10"] >= args.target + args.margin]
        chosen = reached[0][knob] if reached else values[-1]
        ids, qps = _timed_search(search, index, queries[HELD_OUT], {knob: chosen})
        ids_default, qps_default = _timed_search(search, index, queries[HELD_OUT])
        out.update({"sweep_tuning_queries": sweep, "chosen": {knob: chosen, "reached_target_on_tuning": bool(reached)},
                    "recall_at_10": _recall(ids, truth["held_out"]), "qps": qps,
                    "default_search": {knob: params[knob], "recall_at_10": _recall(ids_default, truth["held_out"]),
                                       "qps": qps_default}})
    wall = time.perf_counter() - wall0
    (out["others_cpu_share"], out["cpu_s"]), out["load_1min_at_start"] = meter.stop(wall), meter.load_1min
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery size")
    ap.add_argument("--queries", type=int, default=1000, help="queries per set (tuning and held-out)")
    ap.add_argument("--dim", type=int, help="embedding size (default: the student's, from StudentParams defaults)")
    ap.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), metavar="STRUCTURE:KIND",
                    help="data (clustered|isotropic|real) and approximate kind (ivf|hnsw) pairs; "
                         "exact runs first for each data set")
    ap.add_argument("--real-npy", help="embeddings (rows, d) for the 'real' data, e.g. from bench/embed_captions.py")
    ap.add_argument("--ivf-params", default="{}", help='JSON, e.g. {"nlist": 1000} (search-time nprobe is swept)')
    ap.add_argument("--hnsw-params", default="{}", help='JSON, e.g. {"M": 32} (search-time efSearch is swept)')
    ap.add_argument("--target", type=float, default=0.99, help="recall@10 the chosen search setting must reach")
    ap.add_argument("--margin", type=float, default=0.005,
                    help="the tuning queries must reach target + margin, so held-out sampling noise does not sink it")
    ap.add_argument("--clusters", type=int, default=2048)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--spread", type=float, default=0.85, help="within-cluster std relative to the centres' std")
    ap.add_argument("--noise-energy", type=float, default=0.1, help="share of energy in isotropic noise")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench/ann_index.json")
    # internal: one (structure, kind) in a child, JSON to stdout
    for hidden in ("--child-kind", "--child-structure", "--params", "--truth-dir"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.n < 1 or args.queries < 1 or args.threads < 1:
        ap.error("--n, --queries and --threads must be >= 1")
    if not 0 <= args.noise_energy < 1:
        ap.error("--noise-energy must be in [0, 1)")

    if args.child_kind:
        print(json.dumps(run_kind(args)))
        return
    plan: dict[str, list[str]] = {}
    for run in args.runs:
        structure, _, kind = run.partition(":")
        if structure not in ("clustered", "isotropic", "real") or kind not in ("ivf", "hnsw"):
            ap.error(f"--runs: {run!r} is not STRUCTURE:KIND with STRUCTURE clustered|isotropic|real and KIND ivf|hnsw")
        plan.setdefault(structure, ["exact"]).append(kind)
    if "real" in plan and not (args.real_npy and Path(args.real_npy).is_file()):
        ap.error(f"--runs real:...: --real-npy must name an existing .npy file, got {args.real_npy!r}")
    if args.dim is None:
        args.dim = default_dim()
    from ccr.search.ann import index_params

    kind_params = {"exact": {}, "ivf": json.loads(args.ivf_params), "hnsw": json.loads(args.hnsw_params)}
    for structure, kinds in plan.items():  # refuse bad params before minutes of building
        n = args.n
        if structure == "real":
            import numpy as np

            n = np.load(args.real_npy, mmap_mode="r").shape[0] - 2 * args.queries
        for kind in kinds:
            try:
                index_params(kind, kind_params[kind], n)
            except ValueError as e:
                ap.error(f"{structure}: {e}")

    print(f"n={args.n} (synthetic), d={args.dim}, {args.queries} tuning + {args.queries} held-out queries, k={K}, "
          f"{args.threads} threads, target recall@10 {args.target}; load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'data':>10} {'kind':>6} {'build s':>8} {'QPS':>8} {'x exact':>8} {'recall@10':>10} {'setting':>14} "
          f"{'peak RSS MiB':>13} {'others':>7}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ccr-ann-bench-") as truth_dir:
        for structure, kinds in plan.items():
            exact_qps = None
            for kind in kinds:
                argv = ["--child-kind", kind, "--child-structure", structure, "--params", json.dumps(kind_params[kind]),
                        "--truth-dir", truth_dir] + (["--real-npy", args.real_npy] if structure == "real" else [])
                for name in ("n", "queries", "dim", "clusters", "latent", "spread", "noise_energy", "threads", "seed",
                             "target", "margin"):
                    argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
                row, row["peak_rss_mib"] = run_child(child_cmd(__file__, argv), thread_env(args.threads))
                exact_qps = row["qps"] if kind == "exact" else exact_qps
                row["speedup_vs_exact"] = round(row["qps"] / exact_qps, 2)
                rows.append(row)
                setting = ", ".join(f"{k}={v}" for k, v in row.get("chosen", {}).items() if k != "reached_target_on_tuning")
                print(f"{structure:>10} {kind:>6} {row['build_s']:>8.1f} {row['qps']:>8.1f} {row['speedup_vs_exact']:>8.2f} "
                      f"{row['recall_at_10']:>10.4f} {setting:>14} {row['peak_rss_mib']:>13.1f} "
                      f"{row['others_cpu_share']:>7.2f}", flush=True)
                if kind == "exact":
                    print(f"{'':>10} data: {row['data_stats']}", flush=True)

    report = {
        "what": "ccr.search.ann indexes vs exact search: recall@10 against exact top-10, queries/s, build time",
        "machine": machine(threads=args.threads),
        "params": {k: v for k, v in vars(args).items() if not k.startswith(("child", "params", "truth"))},
        "note": ("recall and QPS on held-out queries at the smallest knob value reaching the target on tuning queries; "
                 "'others' = CPU share used by other processes during the child (the machine is shared)"),
        "results": rows,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
