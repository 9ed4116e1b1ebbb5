"""Snakemake script for rules embed_text_bank and embed_image_bank: one of the querybank's banks (its
training texts or images) embedded once per model."""

from ccr.evaluate.querybank import embed_image_bank, embed_text_bank
from ccr.io import fingerprint, named_fingerprints, setup_logging
from ccr.train import load_job_retriever

EMBED = {"embed_text_bank": embed_text_bank, "embed_image_bank": embed_image_bank}


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    inputs, retriever = load_job_retriever(snakemake.input, "en", spec["student"], spec.get("ensemble"))
    made_from = named_fingerprints(snakemake.input.items())
    key = fingerprint(snakemake.rule, {k: spec[k] for k in ("student", "querybank", "ensemble") if k in spec},
                      made_from)
    EMBED[snakemake.rule](retriever, inputs, spec["querybank"], snakemake.output[0], fingerprint_=key)


if __name__ == "__main__":
    main(globals()["snakemake"])
