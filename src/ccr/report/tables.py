"""Loading and aggregating metrics / history tables with DuckDB (shared by the report and the CLI)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

METRIC_RE = re.compile(r"^(?:(t2i|i2t)_(r\d+|medr|meanr)|mr)$")
COUNT_COLUMNS = ("n_queries", "n_images", "n_i2t_queries")
# Replicates: averaged over, never grouped by.
REPLICATE_COLUMNS = ("seed", "run")
# Preferred leading order of grouping keys; any other tag column follows, sorted.
KEY_ORDER = ("dataset", "system", "lang", "split")
HISTORY_REQUIRED = ("stage", "epoch", "step", "train_loss", "val_mr")


def quote(name: str) -> str:
    """SQL identifier quoting (column names come from files)."""
    return '"' + name.replace('"', '""') + '"'


def _sql_list(paths: Sequence[str | os.PathLike]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Result of ``sql`` as a pyarrow Table (DuckDB 2.0 renamed the relation method)."""
    rel = con.sql(sql)
    fn = getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table
    return fn()


def check_files(paths: Sequence[str | os.PathLike], what: str) -> list[Path]:
    out = [Path(p) for p in paths]
    for p in out:
        if not p.is_file():
            raise FileNotFoundError(f"{what} file not found: {p}")
    return out


def register_parquet_view(con: duckdb.DuckDBPyConnection, name: str, paths: Sequence[str | os.PathLike],
                          filename: bool = False) -> None:
    """Create view ``name`` over the Parquet files (columns unioned by name; missing ones read as NULL)."""
    opts = "union_by_name = true" + (", filename = true" if filename else "")
    con.execute(f"CREATE OR REPLACE VIEW {quote(name)} AS SELECT * FROM read_parquet({_sql_list(paths)}, {opts})")


def metric_columns(columns: Sequence[str]) -> list[str]:
    """Metric columns in display order: t2i recalls by K, i2t recalls by K, mr, then MedR/MeanR."""
    def key(c: str) -> tuple:
        m = METRIC_RE.match(c)
        assert m
        if c == "mr":
            return (1, 0, 0)
        direction, what = m.groups()
        if what.startswith("r") and what[1:].isdigit():
            return (0, direction != "t2i", int(what[1:]))
        return (2, what != "medr", direction != "t2i")

    return sorted((c for c in columns if METRIC_RE.match(c)), key=key)


def recall_ks(columns: Sequence[str], direction: str) -> list[int]:
    return sorted(int(c.split("_r")[1]) for c in columns if re.fullmatch(rf"{direction}_r\d+", c))


def key_columns(columns: Sequence[str]) -> list[str]:
    """Grouping keys: every column that is not a metric, a count, a replicate id or a file name."""
    skip = set(COUNT_COLUMNS) | set(REPLICATE_COLUMNS) | {"filename"}
    keys = [c for c in columns if not METRIC_RE.match(c) and c not in skip]
    return [k for k in KEY_ORDER if k in keys] + sorted(k for k in keys if k not in KEY_ORDER)


def aggregate_sql(view: str, columns: Sequence[str], metrics: Sequence[str] | None = None, digits: int | None = None) -> str:
    """SQL: mean and sample std (NULL for one replicate) of ``metrics`` per key group, with replicate counts."""
    keys = key_columns(columns)
    metrics = metric_columns(columns) if metrics is None else list(metrics)

    def r(expr: str) -> str:
        return f"round({expr}, {digits})" if digits is not None else expr

    sel = [quote(k) for k in keys] + ["count(*) AS n_runs"]
    if "seed" in columns:
        sel.append("count(DISTINCT seed) AS n_seeds")
    for m in metrics:
        sel += [f"{r(f'avg({quote(m)})')} AS {quote(m + '_mean')}",
                f"{r(f'stddev_samp({quote(m)})')} AS {quote(m + '_std')}"]
    sql = f"SELECT {', '.join(sel)} FROM {quote(view)}"
    if keys:
        cols = ", ".join(quote(k) for k in keys)
        sql += f" GROUP BY {cols} ORDER BY {cols}"
    return sql


def load_metrics(con: duckdb.DuckDBPyConnection, paths: Sequence[str | os.PathLike]) -> list[str]:
    """Register view ``metrics`` over the files; return its columns."""
    if not paths:
        raise ValueError("no metrics.parquet files given")
    paths = check_files(paths, "metrics")
    for p in paths:
        if not any(METRIC_RE.match(c) for c in pq.read_schema(p).names):
            raise ValueError(f"{p}: no metric columns (t2i_r<K>, i2t_r<K>, mr); is this a metrics table?")
    register_parquet_view(con, "metrics", paths)
    return [d[0] for d in con.execute("SELECT * FROM metrics LIMIT 0").description]


def aggregate_metrics(metrics: Sequence[str | os.PathLike] | pa.Table) -> pa.Table:
    """One row per key group (dataset x system x lang x other tags): n_runs, n_seeds, <metric>_mean/_std.

    ``metrics``: metrics rows, as a table or as Parquet files.
    """
    con = duckdb.connect()
    if isinstance(metrics, pa.Table):
        con.register("metrics", metrics)
        columns = metrics.column_names
    else:
        columns = load_metrics(con, metrics)
    return fetch_arrow(con, aggregate_sql("metrics", columns))


def load_history(paths: Sequence[str | os.PathLike]) -> pa.Table:
    """All history rows (columns unioned by name) plus ``filename``; checks the required columns per file."""
    paths = check_files(paths, "history")
    for p in paths:
        missing = [c for c in HISTORY_REQUIRED if c not in pq.read_schema(p).names]
        if missing:
            raise ValueError(f"{p}: history table lacks column(s) {missing}; required {list(HISTORY_REQUIRED)}")
    con = duckdb.connect()
    register_parquet_view(con, "history", paths, filename=True)
    return fetch_arrow(con, "SELECT * FROM history")


def format_mean_std(mean: float | None, std: float | None, digits: int = 1) -> str:
    if mean is None or mean != mean:
        return ""
    if std is None or std != std:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# Column headers for display.
def pretty_metric(name: str) -> str:
    if name == "mr":
        return "mR"
    direction, what = name.split("_", 1)
    what = {"medr": "MedR", "meanr": "MeanR"}.get(what, what.replace("r", "R@", 1))
    return f"{direction.upper()} {what}"


def display_rows(table: pa.Table, metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells ('mean ± std', std left out for one seed) of an aggregated metrics table."""
    keys = key_columns([c for c in table.column_names if not c.endswith(("_mean", "_std"))
                        and c not in ("n_runs", "n_seeds")])
    count = "n_seeds" if "n_seeds" in table.column_names else "n_runs"
    header = keys + [count] + [pretty_metric(m) for m in metrics]
    rows = []
    for rec in table.to_pylist():
        rows.append([str(rec[k]) if rec[k] is not None else "" for k in keys] + [str(rec[count])]
                    + [format_mean_std(rec[f"{m}_mean"], rec[f"{m}_std"]) for m in metrics])
    return header, rows


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"
