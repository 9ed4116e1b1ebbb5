"""Snakemake script for rule prepare_dataset: calls ccr.data.prepare.prepare_dataset."""

from pathlib import Path

from ccr.data.prepare import prepare_dataset
from ccr.io import setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    prepare_dataset(
        source=snakemake.params.source,
        params=dict(snakemake.params.dataset_params),
        seed=snakemake.params.seed,
        out_dir=Path(snakemake.output.images).parent,
    )


if __name__ == "__main__":
    main(globals()["snakemake"])
