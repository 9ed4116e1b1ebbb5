"""Snakemake script for rule train_teacher: calls ccr.train.train_teacher."""

from pathlib import Path

from ccr.io import setup_logging
from ccr.jobs import configured_threads
from ccr.train import TrainInputs, train_teacher


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    params = dict(snakemake.params.train)
    if params.get("num_threads") is None:  # torch's threads from the config, not from --cores
        params["num_threads"] = configured_threads(snakemake.config, snakemake.rule)
    train_teacher(
        inputs=TrainInputs.from_mapping(snakemake.input, lang=snakemake.params.lang),
        params=params,
        seed=int(snakemake.wildcards.seed),
        out_dir=Path(snakemake.output.checkpoint).parent,
    )


if __name__ == "__main__":
    main(globals()["snakemake"])
