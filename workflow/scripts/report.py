"""Snakemake script for rule report: calls ccr.report.build_report."""

from pathlib import Path

from ccr.io import setup_logging
from ccr.report import build_report


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    build_report(
        runs=list(snakemake.params.runs),
        tags=dict(snakemake.params.tags),
        history_paths=list(snakemake.input.histories),
        out_dir=Path(snakemake.output.html).parent,
        history_tags=dict(snakemake.params.history_tags),
    )


if __name__ == "__main__":
    main(globals()["snakemake"])
