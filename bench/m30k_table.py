"""Collect the M30K-F8K benchmark (config/m30k-f8k.yaml) into results/m30k-f8k/.

Writes ``table.parquet`` and ``table.md`` (rows = systems, per query set: T2I and I2T R@1/5/10 and mR,
mean +- std over seeds), the MT quality (BLEU/chrF) of the configured MT backends, and
``examples.html`` with the top-5 retrievals of 20 test queries per query set for one system.
Run after the workflow: ``make bench-m30k`` does both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from ccr.io import write_table_atomic, write_text_atomic
from ccr.report.html import Thumbnails, examples_fragment, page
from ccr.report.tables import METRIC_RE, display_rows, fetch_arrow, metric_columns, to_markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--report", help="the workflow's report folder (default: the newest "
                                             "results/report/m30k-f8k/main-<config hash>/)")
    parser.add_argument("--out", default="results/m30k-f8k")
    parser.add_argument("--examples-system", default="full")
    args = parser.parse_args()
    if args.report:
        report = Path(args.report)
    else:
        found = sorted(Path("results/report/m30k-f8k").glob("main-*/metrics_table.parquet"),
                       key=lambda p: p.stat().st_mtime)
        if not found:
            parser.error("no report under results/report/m30k-f8k/main-*/: run the workflow first (make bench-m30k)")
        report = found[-1].parent
    out = Path(args.out)

    agg = pq.read_table(report / "metrics_table.parquet")
    agg = agg.sort_by([("lang", "ascending"), ("mr_mean", "descending")])
    base = [c[: -len("_mean")] for c in agg.column_names if c.endswith("_mean")]
    shown = [m for m in metric_columns(base) if METRIC_RE.match(m) and not m.endswith(("medr", "meanr"))]
    header, rows = display_rows(agg, shown)
    write_table_atomic(agg, out / "table.parquet")

    lines = ["# M30K-F8K results", "",
             "Test gallery 1,000 images; mean +- sample std over seeds; recalls in %. "
             "Produced by `make bench-m30k` (config/m30k-f8k.yaml).", "",
             to_markdown(header, rows), ""]
    mt_files = sorted(report.glob("mt_quality.*.json"))
    if mt_files:
        lines += ["## Machine translation quality (Multi30K test_2016, en -> target)", "",
                  "| lang | backend | BLEU | chrF | sentences |", "|---|---|---|---|---|"]
        for path in mt_files:
            q = json.loads(path.read_text())
            lines.append(f"| {q['tgt']} | {q['backend']} | {q['bleu']:.1f} | {q['chrf']:.1f} | {q['n']} |")
        lines.append("")
    write_text_atomic("\n".join(lines), out / "table.md")

    if (report / "examples.parquet").exists():
        con = duckdb.connect()
        path = str(report / "examples.parquet").replace("'", "''")
        table = fetch_arrow(con, f"SELECT * FROM read_parquet('{path}') WHERE system = '{args.examples_system}' "
                                 f"AND seed = (SELECT min(seed) FROM read_parquet('{path}'))")
        body = examples_fragment(table, Thumbnails(), max_queries=20)
        write_text_atomic(page(f"M30K-F8K: top-5 retrievals ({args.examples_system})", body), out / "examples.html")
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
