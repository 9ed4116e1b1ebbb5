"""Snakemake script for rule train_student: calls ccr.train.train_student (with the teacher when the system has one)."""

from pathlib import Path

from ccr.io import setup_logging
from ccr.jobs import configured_threads
from ccr.train import TrainInputs, train_student


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    params = dict(snakemake.params.train)
    if params.get("num_threads") is None:  # torch's threads from the config, not from --cores
        params["num_threads"] = configured_threads(snakemake.config, snakemake.rule)
    teacher = snakemake.input.get("teacher")
    train_student(
        inputs=TrainInputs.from_mapping(snakemake.input, lang=snakemake.params.lang),
        params=params,
        seed=int(snakemake.wildcards.seed),
        out_dir=Path(snakemake.output.checkpoint).parent,
        teacher_dir=Path(teacher).parent if teacher else None,
    )


if __name__ == "__main__":
    main(globals()["snakemake"])
