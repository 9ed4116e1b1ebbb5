"""Collect the M30K-F8K benchmark into results/m30k-f8k/ (run after the workflows: `make bench-m30k`).

Reads the reports of config/m30k-f8k.yaml (knn-captions describer, 3 seeds), config/m30k-f8k-ablation.yaml
(the slot and softened-matching ablation rows, one seed) and config/m30k-f8k-tags.yaml (the imagenet-tags
describer, side by side for zero-shot and full-one-student), and writes

* ``table.md`` / ``table.parquet``: per system and describer, test mR mean +- sample std over seeds for
  each query set (fr, de, cs, de-task2); full's margin over linear and each switch's delta (unrounded
  means against three times the larger std); the per-seed mR of full (with and without centering),
  linear and the systems run with both describers; then the full Recall@K table;
* the MT quality (BLEU/chrF) of the configured MT backends;
* ``examples.html``: the top-5 retrievals of 20 test queries per query set for one system.

With ``--val``, also the val sweep of config/m30k-f8k-val.yaml (one seed, 242 images) that chose the
settings, the three-seed val check of its first choice (config/m30k-f8k-val-seeds.yaml), the
querybank normalisation's (config/m30k-f8k-val-querybank.yaml), language centering's
(config/m30k-f8k-val-centering.yaml) and the Czech proxy MT's (config/m30k-f8k-val-proxy.yaml).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ccr.io import write_table_atomic, write_text_atomic
from ccr.report.html import Thumbnails, examples_fragment, page
from ccr.report.tables import display_rows, fetch_arrow, format_mean_std, metric_columns, to_markdown

QUERY_SETS = ("fr", "de", "cs", "de-task2")
# the benchmark's switches: (system, the same students without it), for their deltas on test
SWITCHES = (
    ("full", "full-no-proxy"),
    ("linear-proxy", "linear"),
    ("full", "full-no-centering"),
    ("linear", "linear-no-centering"),
    ("full-no-centering", "full-no-fusion"),
    ("full-one-student", "full-no-qb"),
    ("linear-one-student", "linear-no-qb"),
    ("mt", "mt-no-qb"),
)
# the three-seed val checks after the sweep: (run name, heading)
VAL_CHECKS = (
    ("val-seeds", "Three seeds on val: the sweep's choice against its baseline, and leads"),
    ("val-querybank", "Querybank normalisation on val, three seeds"),
    ("val-centering", "Language centering on val, three seeds"),
    ("val-proxy", "Czech proxy MT (Croatian) on val, three seeds"),
)


def newest(root: Path, run_name: str) -> Path | None:
    """The newest report of ``run_name`` (folders ``<run_name>-<config hash>``: ``val`` is not ``val-seeds``)."""
    found = sorted((p for p in root.glob(f"{run_name}-*/metrics.parquet")
                    if re.fullmatch(rf"{re.escape(run_name)}-[0-9a-f]+", p.parent.name)),
                   key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def load_rows(reports: list[Path]) -> pa.Table:
    tables = [pq.read_table(r / "metrics.parquet") for r in reports]
    return pa.concat_tables(tables, promote_options="default")


def summary(rows: pa.Table, split: str) -> tuple[list[str], list[list[str]], pa.Table]:
    """Rows = (system, describer); columns = mR mean +- std over seeds per query set."""
    con = duckdb.connect()
    con.register("runs", rows)
    agg = fetch_arrow(con, f"""
        SELECT system, describer, lang, count(DISTINCT seed) AS n_seeds, avg(mr) AS mr_mean, stddev_samp(mr) AS mr_std
        FROM runs WHERE split = '{split}' GROUP BY ALL ORDER BY ALL""")
    cells: dict[tuple[str, str], dict[str, str]] = {}
    seeds: dict[tuple[str, str], int] = {}
    for r in agg.to_pylist():
        key = (r["system"], r["describer"])
        cells.setdefault(key, {})[r["lang"]] = format_mean_std(r["mr_mean"], r["mr_std"])
        seeds[key] = max(seeds.get(key, 0), r["n_seeds"])
    langs = [q for q in QUERY_SETS if q in set(agg["lang"].to_pylist())]
    order = sorted(cells, key=lambda k: (-_mean(agg, k, "fr"), k))
    header = ["system", "describer", "seeds", *langs]
    return header, [[s, d, str(seeds[(s, d)]), *[cells[(s, d)].get(q, "") for q in langs]] for s, d in order], agg


def margins(agg: pa.Table, system: str, baseline: str, describer: str = "knn-captions") -> list[str]:
    """Markdown rows: per query set, ``system``'s mean test mR minus ``baseline``'s (unrounded, 2 decimals)
    against three times the larger of their two sample stds (issue 8's bar)."""
    stats = {(r["system"], r["lang"]): (r["mr_mean"], r["mr_std"]) for r in agg.to_pylist()
             if r["describer"] == describer}
    lines = [f"| query set | {system} | {baseline} | margin | 3 std | clears it |", "|---|---|---|---|---|---|"]
    for lang in QUERY_SETS:
        if (system, lang) not in stats or (baseline, lang) not in stats:
            continue
        (a, sa), (b, sb) = stats[(system, lang)], stats[(baseline, lang)]
        bar = 3 * max(sa or 0.0, sb or 0.0)
        lines.append(f"| {lang} | {a:.2f} | {b:.2f} | {a - b:+.2f} | {bar:.2f} | {'yes' if a - b > bar else 'no'} |")
    return lines


def per_seed(rows: pa.Table, systems: list[str]) -> tuple[list[str], list[list[str]]]:
    """Test mR of each seed (unrounded, 2 decimals) for ``systems`` and for every system run with more
    than one describer (so the describers pair up seed by seed)."""
    test = [r for r in rows.select(["system", "describer", "seed", "lang", "mr", "split"]).to_pylist()
            if r["split"] == "test"]
    describers: dict[str, set[str]] = {}
    for r in test:
        describers.setdefault(r["system"], set()).add(r["describer"])
    shown = set(systems) | {s for s, found in describers.items() if len(found) > 1}
    cells: dict[tuple[str, str, int], dict[str, float]] = {}
    for r in sorted(test, key=lambda r: (r["system"], r["describer"], r["seed"])):
        if r["system"] in shown:
            cells.setdefault((r["system"], r["describer"], r["seed"]), {})[r["lang"]] = r["mr"]
    header = ["system", "describer", "seed", *QUERY_SETS]
    return header, [[s, d, str(seed), *[f"{cells[(s, d, seed)][q]:.2f}" if q in cells[(s, d, seed)] else ""
                                        for q in QUERY_SETS]] for s, d, seed in cells]


def _mean(agg: pa.Table, key: tuple[str, str], lang: str) -> float:
    for r in agg.to_pylist():
        if (r["system"], r["describer"], r["lang"]) == (*key, lang):
            return r["mr_mean"]
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="results/report/m30k-f8k", help="the reports' folder")
    parser.add_argument("--reports", nargs="*", help="report folders (default: the newest main-*, ablation-* "
                                                     "and tags-*)")
    parser.add_argument("--val", action="store_true", help="also the val sweep (the newest val-* report)")
    parser.add_argument("--out", default="results/m30k-f8k")
    parser.add_argument("--examples-system", default="full")
    args = parser.parse_args()
    root, out = Path(args.root), Path(args.out)
    reports = [Path(r) for r in args.reports] if args.reports else [
        r for r in (newest(root, "main"), newest(root, "ablation"), newest(root, "tags")) if r is not None]
    if not reports:
        parser.error(f"no report under {root}/main-*/: run the workflow first (make bench-m30k)")
    rows = load_rows(reports)
    header, body, agg = summary(rows, "test")
    write_table_atomic(rows, out / "table.parquet")

    con = duckdb.connect()
    con.register("runs", rows)
    base = [c for c in rows.column_names if c.startswith(("t2i_", "i2t_")) and not c.endswith(("medr", "meanr"))]
    metrics = [*metric_columns(base), "mr"]
    full = fetch_arrow(con, "SELECT system, describer, lang, count(DISTINCT seed) AS n_seeds, "
                            + ", ".join(f"avg({m}) AS {m}_mean, stddev_samp({m}) AS {m}_std" for m in metrics)
                            + " FROM runs WHERE split = 'test' GROUP BY ALL ORDER BY lang, mr_mean DESC")
    full_header, full_rows = display_rows(full, metrics)

    lines = ["# M30K-F8K results", "",
             "Test gallery 1,000 images (chance mR about 0.5); mean +- sample std over seeds; recalls in %. "
             "Produced by `make bench-m30k` (config/m30k-f8k.yaml, -ablation.yaml and -tags.yaml).", "",
             "## mR per query set", "", to_markdown(header, body), "",
             "## full over linear (mean test mR, unrounded; 3 std: three times the larger sample std)", "",
             *margins(agg, "full", "linear"), "",
             "## Each switch's delta (mean test mR, unrounded; the same check)", ""]
    for system, without in SWITCHES:
        if {system, without} <= set(rows.column("system").to_pylist()):
            lines += margins(agg, system, without) + [""]
    lines += ["## mR per seed (test)", "", to_markdown(*per_seed(rows, ["full", "full-no-proxy", "full-no-centering", "linear"])), "",
              "## Recall@K", "", to_markdown(full_header, full_rows), ""]
    if args.val:
        val_report = newest(root, "val")
        if val_report is not None:
            vheader, vbody, _ = summary(load_rows([val_report]), "val")
            lines += ["## The val sweep that chose the settings (config/m30k-f8k-val.yaml)", "",
                      "242 val images (chance mR about 2.2), one seed, human val captions as queries.", "",
                      to_markdown(vheader, vbody), ""]
        for run_name, title in VAL_CHECKS:
            report = newest(root, run_name)
            if report is not None:
                header, body, _ = summary(load_rows([report]), "val")
                lines += [f"## {title} (config/m30k-f8k-{run_name}.yaml)", "", to_markdown(header, body), ""]
    mt_files = sorted(p for r in reports for p in r.glob("mt_quality.*.json"))
    if mt_files:
        lines += ["## Machine translation quality (Multi30K test_2016, en -> target)", "",
                  "| lang | backend | BLEU | chrF | sentences |", "|---|---|---|---|---|"]
        for path in mt_files:
            q = json.loads(path.read_text())
            lines.append(f"| {q['tgt']} | {q['backend']} | {q['bleu']:.1f} | {q['chrf']:.1f} | {q['n']} |")
        lines.append("")
    write_text_atomic("\n".join(lines), out / "table.md")

    examples = reports[0] / "examples.parquet"  # the benchmark's own (first) report
    if examples.exists():
        path = str(examples).replace("'", "''")
        table = fetch_arrow(con, f"SELECT * FROM read_parquet('{path}') WHERE system = '{args.examples_system}' "
                                 f"AND seed = (SELECT min(seed) FROM read_parquet('{path}'))")
        body_html = examples_fragment(table, Thumbnails(), max_queries=20)
        write_text_atomic(page(f"M30K-F8K: top-5 retrievals ({args.examples_system})", body_html),
                          out / "examples.html")
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
