"""Does a search bundle embed as its evaluation did? Checked on the M30K-F8K cache (test split).

For the bundle of ``--system`` that serves ``--query-set`` (seed ``--seed``), as the workflow exported it:
the query set's test captions are embedded from their **text** by the bundle (given their language,
so its language centering applies) and from the cached features by the evaluation's retriever (its
students, fused when an ensemble, with the same centering, and the querybank the bundle carries, its
banks embedded again here); the test gallery by the retriever, and ``--pixels`` of its photos by the
bundle from the image files. Prints the smallest cosines and the test mR of both against the
retriever's gallery, beside the mR the workflow evaluated.

    .venv/bin/python bench/bundle_vs_evaluation.py --system linear --query-set cs
    .venv/bin/python bench/bundle_vs_evaluation.py --system full --query-set fr --pixels 64
    -> results/bench/bundle_vs_evaluation.<system>.<query set>.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_report  # noqa: E402
from query_set_fusion_val import CONFIG, benchmark_inputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="full")
    parser.add_argument("--query-set", default="fr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixels", type=int, default=0, help="test photos embedded from their files (0: none)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from ccr.data.tables import read_captions, read_images
    from ccr.evaluate.centering import language_centering, with_centering
    from ccr.evaluate.metrics import recall_at_k
    from ccr.evaluate.querybank import with_querybank
    from ccr.evaluate.run import human_captions
    from ccr.search.bundle import load_bundle
    from ccr.train.retriever import EnsembleRetriever, StudentRetriever

    config = yaml.safe_load(CONFIG.read_text())
    spec = config["languages"][args.query_set]
    code, pattern = spec.get("code", args.query_set), spec.get("query_pattern")
    data, inputs = benchmark_inputs()
    report = sorted(REPO.glob("results/report/m30k-f8k/main-*/metrics.parquet"), key=lambda p: p.stat().st_mtime)
    evaluated = {r["seed"]: r["mr"] for r in pq.read_table(report[-1]).to_pylist()
                 if r["system"] == args.system and r["lang"] == args.query_set}
    # the workflow's bundle that carries this system's evaluation of the query set (its metrics name it)
    found = []
    for path in sorted(REPO.glob("results/bundles/m30k-f8k-*/*/bundle.pt")):
        bundle = load_bundle(path)
        metrics = bundle.meta["metrics"].get(args.query_set)
        if metrics and bundle.meta["source"]["seed"] == args.seed and abs(metrics["mr"] - evaluated[args.seed]) < 1e-9:
            found.append((path, bundle))
    if not found:
        raise SystemExit(f"no bundle of {args.system} / {args.query_set} seed {args.seed}: run config/m30k-f8k.yaml first")
    # an older export of the same model (a bundle format or key of an earlier commit) may lie beside it
    path, bundle = max(found, key=lambda pb: pb[0].stat().st_mtime)
    source = bundle.meta["source"]
    members = source.get("ensemble") or [{"student_key": source["student_key"], "weight": 1.0}]
    students = [next(REPO.glob(f"results/runs/m30k-f8k-*/students/*/{m['student_key']}/seed{args.seed}/student.pt"))
                for m in members]
    retrievers = [StudentRetriever(p, inputs, {"device": "cpu"}) for p in students]
    retriever = retrievers[0] if len(retrievers) == 1 else EnsembleRetriever(retrievers, [m["weight"] for m in members])
    alpha = (bundle.meta.get("centering") or {}).get("languages", {}).get(code, {}).get("alpha", 0.0)
    with_centering(retriever, language_centering(inputs, {"alpha": alpha}, code, pattern, "test"))
    querybank = source.get("evaluated_with_querybank") if bundle.meta.get("querybank") else None
    retriever = with_querybank(retriever, inputs, querybank)  # as the evaluation folded it (None: off)

    queries = human_captions(read_captions(inputs.captions), "test", code, pattern).to_pylist()
    images = [r for r in read_images(inputs.images).to_pylist() if r["split"] == "test"]
    row = {r["image_id"]: i for i, r in enumerate(images)}
    q2g = np.array([row[q["image_id"]] for q in queries])
    gallery = retriever.embed_images([r["image_id"] for r in images])
    expected = retriever.embed_texts([q["caption_id"] for q in queries])
    ours = bundle.embed_texts([q["text"] for q in queries], [code] * len(queries))
    out = {"bundle": str(path.relative_to(REPO)), "students": [m["student_key"] for m in members],
           "weights": [m["weight"] for m in members], "centering_alpha": alpha, "querybank": querybank,
           "n_queries": len(queries), "text_cosine_min": float((ours * expected).sum(1).min()),
           "mr_retriever": recall_at_k(expected, gallery, q2g, use_gpu=False)["mr"],
           "mr_bundle": recall_at_k(ours, gallery, q2g, use_gpu=False)["mr"],
           "mr_evaluated": evaluated[args.seed]}
    if args.pixels:
        pixels = bundle.embed_images([str(data / r["path"]) if not Path(r["path"]).is_absolute() else r["path"]
                                      for r in images[:args.pixels]])
        out["image_cosine_min_from_pixels"] = float((pixels * gallery[:args.pixels]).sum(1).min())
    print(yaml.safe_dump(out, sort_keys=False))
    write_report(args.out or REPO / "results" / "bench" / f"bundle_vs_evaluation.{args.system}.{args.query_set}.json",
                 {"bench": "bundle_vs_evaluation", "system": args.system, "query_set": args.query_set,
                  "seed": args.seed, "machine": machine(), **out})


if __name__ == "__main__":
    main()
