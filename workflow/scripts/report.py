"""Snakemake script for rule report: calls ccr.report.build_report."""

from pathlib import Path

from ccr.io import setup_logging
from ccr.report import build_report

snakemake = globals()["snakemake"]
setup_logging(snakemake.log[0])
build_report(
    metrics_paths=list(snakemake.input.metrics),
    history_paths=list(snakemake.input.histories),
    examples_paths=list(snakemake.input.examples),
    out_dir=Path(snakemake.output.html).parent,
    history_tags=dict(snakemake.params.history_tags),
)
