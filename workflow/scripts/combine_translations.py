"""Snakemake script for rule combine_translations: calls ccr.translate.combine_translations."""

from ccr.io import setup_logging
from ccr.translate import combine_translations


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    combine_translations(list(snakemake.input), snakemake.output[0])


if __name__ == "__main__":
    main(globals()["snakemake"])
