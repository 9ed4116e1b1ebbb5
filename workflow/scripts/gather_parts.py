"""Snakemake script for the gather_* rules of scattered stages: calls ccr.io.gather_parts."""

from ccr.io import gather_parts, setup_logging


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    gather_parts(list(snakemake.input), snakemake.output[0])


if __name__ == "__main__":
    main(globals()["snakemake"])
