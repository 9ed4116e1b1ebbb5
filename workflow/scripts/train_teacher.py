"""Snakemake script for rule train_teacher: calls ccr.train.train_teacher."""

from pathlib import Path

from ccr.io import setup_logging
from ccr.train import TrainInputs, train_teacher


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    train_teacher(
        inputs=TrainInputs.from_mapping(snakemake.input, lang=snakemake.params.lang),
        params=dict(snakemake.params.train),
        seed=int(snakemake.wildcards.seed),
        out_dir=Path(snakemake.output.checkpoint).parent,
    )


if __name__ == "__main__":
    main(globals()["snakemake"])
