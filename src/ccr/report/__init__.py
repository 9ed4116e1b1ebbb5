"""The ``report`` stage: metrics table, R@K plot, training curves, examples, and one self-contained HTML page."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from ccr.io import write_bytes_atomic, write_table_atomic, write_text_atomic
from ccr.report.html import Thumbnails, examples_fragment, page, png_img, table_html
from ccr.report.plots import recall_plot, training_curves
from ccr.report.tables import (
    METRIC_RE,
    aggregate_metrics,
    check_files,
    display_rows,
    fetch_arrow,
    load_history,
    metric_columns,
    register_parquet_view,
    to_markdown,
)

log = logging.getLogger(__name__)

__all__ = ["aggregate_metrics", "build_report"]


def _load_examples(paths: Sequence[str | os.PathLike]):
    if not paths:
        return None
    con = duckdb.connect()
    register_parquet_view(con, "examples", check_files(paths, "examples"))
    return fetch_arrow(con, "SELECT * FROM examples")


def _tag_history(history: pa.Table, tags: Mapping[str, Mapping[str, object]]) -> pa.Table:
    """Add one column per tag name, set on the rows of each tagged history file (matched by resolved path)."""
    by_file = {str(Path(path).resolve()): dict(values) for path, values in tags.items()}
    files = [str(Path(f).resolve()) for f in history.column("filename").to_pylist()]
    for name in sorted({k for values in by_file.values() for k in values}):
        values = [by_file.get(f, {}).get(name) for f in files]
        if name in history.column_names:
            history = history.drop_columns([name])
        history = history.append_column(name, pa.array(values))
    return history


def build_report(
    metrics_paths: Sequence[str | os.PathLike],
    history_paths: Sequence[str | os.PathLike],
    examples_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    history_tags: Mapping[str, Mapping[str, object]] | None = None,
) -> None:
    """Write metrics_table.parquet/.md, recall_at_k.png, training_curves.png, examples.html and report.html.

    ``history_tags`` maps a history file to the run columns that label its curves (e.g. system,
    lang, seed): the workflow knows which systems share a trained model, the file does not.
    """
    out_dir = Path(out_dir)
    agg = aggregate_metrics(metrics_paths)
    base = [c[: -len("_mean")] for c in agg.column_names if c.endswith("_mean")]
    shown = [m for m in metric_columns(base) if METRIC_RE.match(m) and not m.endswith(("medr", "meanr"))]
    header, rows = display_rows(agg, shown)
    history = load_history(history_paths) if history_paths else None
    if history is not None and history_tags:
        history = _tag_history(history, history_tags)
    examples = _load_examples(examples_paths)

    recall_png = recall_plot(agg)
    curves_png = training_curves(history)
    thumbs = Thumbnails()
    examples_html = examples_fragment(examples, thumbs)
    note = ('<p class="note">mean ± sample std over seeds (std blank for a single seed); recalls in %; '
            "ranks are exact with ties counted against the system.</p>")

    write_table_atomic(agg, out_dir / "metrics_table.parquet")
    write_text_atomic(to_markdown(header, rows), out_dir / "metrics_table.md")
    write_bytes_atomic(recall_png, out_dir / "recall_at_k.png")
    write_bytes_atomic(curves_png, out_dir / "training_curves.png")
    write_text_atomic(page("Retrieval examples", examples_html), out_dir / "examples.html")
    body = "\n".join([
        "<h2>Metrics</h2>", note, table_html(header, rows),
        "<h2>Recall@K</h2>", png_img(recall_png, "Recall@K curves"),
        "<h2>Training curves</h2>", png_img(curves_png, "training curves"),
        "<h2>Examples</h2>", examples_html,
    ])
    # report.html last: its presence marks a finished report.
    write_text_atomic(page("Cross-lingual cross-modal retrieval: results", body), out_dir / "report.html")
    log.info("report: %d metric group(s), %d history row(s), %d example row(s) -> %s", agg.num_rows,
             0 if history is None else history.num_rows, 0 if examples is None else examples.num_rows, out_dir)
