"""Report figures (matplotlib, Agg canvas; no pyplot global state): R@K curves and training curves."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ccr.report.tables import key_columns, recall_ks

RUN_COLUMNS = ("dataset", "system", "lang", "seed", "run")
STAGE_STYLE = {"teacher": "--", "student": "-"}


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` (no timestamp/software metadata, so reruns give the same file)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _message_figure(text: str) -> bytes:
    fig = Figure(figsize=(6, 1.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return figure_png(fig)


def recall_plot(agg: pa.Table) -> bytes:
    """R@K curves (mean, error bar = std over seeds) for T2I and I2T, one line per key group."""
    cols = agg.column_names
    base = [c[: -len("_mean")] for c in cols if c.endswith("_mean")]
    keys = key_columns([c for c in cols if not c.endswith(("_mean", "_std")) and c not in ("n_runs", "n_seeds")])
    rows = agg.to_pylist()
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, direction, title in zip(axes, ("t2i", "i2t"), ("text → image", "image → text"), strict=True):
        ks = recall_ks(base, direction)
        for rec in rows:
            label = " / ".join(str(rec[k]) for k in keys) or "all"
            mean = [rec[f"{direction}_r{k}_mean"] for k in ks]
            std = [rec[f"{direction}_r{k}_std"] or 0.0 for k in ks]
            ax.errorbar(ks, [np.nan if m is None else m for m in mean], yerr=std, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        if ks:
            ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("K")
        ax.set_title(f"R@K, {title}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recall (%)")
    axes[0].set_ylim(0, 100)
    if rows:
        axes[1].legend(fontsize="small" if len(rows) < 8 else "x-small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    return figure_png(fig)


def run_label(rec: dict, run_cols: list[str]) -> str:
    """Label from the run columns set on this row; rows without any (a history file that has no tag columns)
    are named by the last folders of their file's path."""
    parts = [f"{c}={rec[c]}" if c in ("seed", "run") else str(rec[c]) for c in run_cols if rec.get(c) is not None]
    if parts:
        return " / ".join(parts)
    parts = Path(rec["filename"]).parent.parts
    if parts and parts[-1] == str(rec.get("stage")):  # .../seed0/teacher/history.parquet: stage is drawn apart
        parts = parts[:-1]
    return "/".join(parts[-3:])


def training_curves(history: pa.Table | None) -> bytes:
    """Train loss vs step and val mR vs epoch per run; teacher dashed, student solid."""
    if history is None or history.num_rows == 0:
        return _message_figure("no training history (systems without a trained stage)")
    run_cols = [c for c in RUN_COLUMNS if c in history.column_names]
    loss: dict[tuple, list] = defaultdict(list)
    val: dict[tuple, dict] = defaultdict(dict)
    for rec in history.to_pylist():
        key = (run_label(rec, run_cols), str(rec["stage"]))
        if rec["train_loss"] is not None and rec["step"] is not None:
            loss[key].append((rec["step"], rec["train_loss"]))
        if rec["val_mr"] is not None and rec["epoch"] is not None:
            # The last non-null value logged in an epoch wins (rows may repeat per step).
            prev = val[key].get(rec["epoch"])
            if prev is None or (rec["step"] or 0) >= prev[0]:
                val[key][rec["epoch"]] = (rec["step"] or 0, rec["val_mr"])
    labels = sorted({k[0] for k in loss} | {k[0] for k in val})
    colors = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    fig = Figure(figsize=(11, 4.2))
    ax_loss, ax_val = fig.subplots(1, 2)
    for (lab, stage), pts in sorted(loss.items()):
        pts.sort()
        ax_loss.plot([p[0] for p in pts], [p[1] for p in pts], STAGE_STYLE.get(stage, ":"), color=colors[lab],
                     label=f"{lab} ({stage})")
    for (lab, stage), per_epoch in sorted(val.items()):
        epochs = sorted(per_epoch)
        ax_val.plot(epochs, [per_epoch[e][1] for e in epochs], STAGE_STYLE.get(stage, ":"), marker="o",
                    color=colors[lab], label=f"{lab} ({stage})")
    ax_loss.set(xlabel="step", ylabel="train loss", title="training loss")
    ax_val.set(xlabel="epoch", ylabel="val mR (%)", title="validation mR")
    ax_val.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    legend: dict = {}
    for ax in (ax_loss, ax_val):
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    if legend:
        names = sorted(legend)
        ax_val.legend([legend[n] for n in names], names, fontsize="small" if len(names) < 8 else "x-small",
                      loc="center left", bbox_to_anchor=(1.02, 0.5))
    return figure_png(fig)
