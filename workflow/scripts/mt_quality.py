"""Snakemake script for rule mt_quality: BLEU/chrF of a language's translate backend on a parallel test set."""

from ccr.io import setup_logging
from ccr.translate.quality import score_backend


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    score_backend(
        backend=spec["backend"],
        params=dict(spec["params"]),
        source=snakemake.input.source,
        reference=snakemake.input.reference,
        src_lang="en",
        tgt_lang=snakemake.params.code,
        out_path=snakemake.output[0],
    )


if __name__ == "__main__":
    main(globals()["snakemake"])
