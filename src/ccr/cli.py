"""``ccr`` command line.

* ``ccr results``: query every results/**/metrics.parquet with DuckDB SQL.
* ``ccr index`` / ``ccr search`` / ``ccr serve``: search your own images with a trained model bundle
  (docs/search.md).

Examples::

    ccr results                                   # mean/std mR per dataset/system/lang over seeds
    ccr results --sql "SELECT system, lang, t2i_r1 FROM metrics WHERE seed = 0" --format csv
    ccr index --model results/bundles/<ds>/<key>/bundle.pt --images ~/photos --out photos.idx
    ccr search --index photos.idx "une femme sur un vélo" -k 10
    ccr serve --index photos.idx --port 8000
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import duckdb

from ccr.cli_search import add_search_commands  # light: torch and FAISS load when a search command runs
from ccr.report.tables import aggregate_sql, load_metrics


def find_metrics(root: Path) -> list[Path]:
    """Every metrics.parquet under ``root`` (sorted; hidden temporary files never match the name)."""
    return sorted(p for p in root.rglob("metrics.parquet") if p.is_file()) if root.is_dir() else []


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def format_table(columns: list[str], rows: list[tuple]) -> str:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows) for i in range(len(columns))]

    def line(vals: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric, strict=True))

    out = [line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return "\n".join(s.rstrip() for s in out)


def cmd_results(args: argparse.Namespace) -> int:
    root = Path(args.root)
    paths = find_metrics(root)
    if not paths:
        print(f"ccr results: no metrics.parquet found under '{root}' (run the workflow's evaluate rules first, "
              "or pass --root)", file=sys.stderr)
        return 1
    con = duckdb.connect()
    try:
        columns = load_metrics(con, paths)
    except (ValueError, duckdb.Error) as err:
        print(f"ccr results: cannot read the metrics files under '{root}': {err}", file=sys.stderr)
        return 1
    sql = args.sql or aggregate_sql("metrics", columns, metrics=[c for c in ("mr",) if c in columns], digits=2)
    try:
        result = con.execute(sql)
        names = [d[0] for d in result.description]
        rows = result.fetchall()
    except duckdb.Error as err:
        print(f"ccr results: SQL error: {err}\nquery: {sql}\ncolumns of view 'metrics': {', '.join(columns)}",
              file=sys.stderr)
        return 2
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
    elif args.format == "json":
        print(json.dumps([dict(zip(names, r, strict=True)) for r in rows], indent=2, default=str))
    else:
        print(format_table(names, rows))
        print(f"({len(rows)} row(s) from {len(paths)} metrics file(s) under '{root}')", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccr", description="Cross-lingual cross-modal retrieval pipeline tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    res = sub.add_parser("results", help="query all metrics.parquet files with SQL (DuckDB view 'metrics')",
                         description="Registers every <root>/**/metrics.parquet as the DuckDB view 'metrics' "
                                     "(columns unioned by name) and prints a query result. Default query: "
                                     "mean and std of mR over seeds per dataset/system/lang.")
    res.add_argument("--root", default="results/report", help="folder searched recursively for the reports' metrics.parquet (default: results/report)")
    res.add_argument("--sql", help="a SQL query over the view 'metrics' (default: mR mean/std per group)")
    res.add_argument("--format", choices=("table", "csv", "json"), default="table")
    res.set_defaults(func=cmd_results)
    add_search_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
