"""The ``report`` stage: metrics table, R@K plot, training curves, examples, and one self-contained HTML page."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ccr.io import write_bytes_atomic, write_table_atomic, write_text_atomic
from ccr.report.html import Thumbnails, examples_fragment, page, png_img, table_html
from ccr.report.plots import recall_plot, training_curves
from ccr.report.tables import (
    METRIC_RE,
    aggregate_metrics,
    display_rows,
    load_history,
    metric_columns,
    to_markdown,
)

log = logging.getLogger(__name__)

__all__ = ["aggregate_metrics", "build_report"]


# Columns that identify a config's run: constant within one report, they tell runs apart in `ccr results`.
RUN_COLUMNS = ("run_name", "config_hash", "code_version")


def tag_runs(runs: Sequence[Mapping[str, object]], tags: Mapping[str, object], name: str) -> pa.Table:
    """The rows of each run's evaluation file ``name`` (metrics or examples) with the run's tags.

    ``runs``: {system, lang, seed, eval (folder)} per (system, query set, seed); systems that share a
    trained model share an evaluation folder, so the same rows appear under each system's name.
    """
    if not runs:
        raise ValueError("no runs to report (no metrics)")
    tables = []
    for run in runs:
        path = Path(str(run["eval"])) / name
        if not path.is_file():
            raise FileNotFoundError(f"{name} of system '{run['system']}' ({run['lang']}, seed {run['seed']}) "
                                    f"not found: {path}")
        table = pq.read_table(path)
        if name == "metrics.parquet" and not any(METRIC_RE.match(c) for c in table.column_names):
            raise ValueError(f"{path}: no metric columns (t2i_r<K>, i2t_r<K>, mr); is this a metrics table?")
        columns = {**{k: v for k, v in tags.items() if k == "dataset"}, "system": run["system"], "lang": run["lang"],
                   "seed": int(run["seed"]), **{k: v for k, v in tags.items() if k != "dataset"}}
        table = table.drop_columns([c for c in columns if c in table.column_names])
        for i, (key, value) in enumerate(columns.items()):
            table = table.add_column(i, key, pa.array([value] * table.num_rows))
        tables.append(table.replace_schema_metadata(None))
    return pa.concat_tables(tables, promote_options="default")


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
    runs: Sequence[Mapping[str, object]],
    tags: Mapping[str, object],
    history_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    history_tags: Mapping[str, Mapping[str, object]] | None = None,
) -> None:
    """Write metrics.parquet, examples.parquet (both tagged), metrics_table.parquet/.md, recall_at_k.png,
    training_curves.png, examples.html and report.html.

    ``runs`` lists every (system, lang, seed) with the folder of the evaluation that scored it;
    ``tags`` are columns every row gets (dataset, run_name, config_hash, code_version).
    ``history_tags`` maps a history file to the run columns that label its curves (e.g. system,
    lang, seed): the workflow knows which systems share a trained model, the file does not.
    """
    out_dir = Path(out_dir)
    metrics = tag_runs(runs, tags, "metrics.parquet")
    agg = aggregate_metrics(metrics.drop_columns([c for c in RUN_COLUMNS if c in metrics.column_names]))
    base = [c[: -len("_mean")] for c in agg.column_names if c.endswith("_mean")]
    shown = [m for m in metric_columns(base) if METRIC_RE.match(m) and not m.endswith(("medr", "meanr"))]
    header, rows = display_rows(agg, shown)
    history = load_history(history_paths) if history_paths else None
    if history is not None and history_tags:
        history = _tag_history(history, history_tags)
    examples = tag_runs(runs, {}, "examples.parquet")

    recall_png = recall_plot(agg)
    curves_png = training_curves(history)
    thumbs = Thumbnails()
    examples_html = examples_fragment(examples, thumbs)
    note = ('<p class="note">mean ± sample std over seeds (std blank for a single seed); recalls in %; '
            "ranks are exact with ties counted against the system.</p>")

    write_table_atomic(metrics, out_dir / "metrics.parquet")
    write_table_atomic(examples, out_dir / "examples.parquet")
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
