"""Snakemake script for rule embed_gallery: the evaluated split's images embedded once per model."""

from ccr.evaluate import embed_gallery
from ccr.evaluate.querybank import with_querybank
from ccr.io import fingerprint, named_fingerprints, setup_logging
from ccr.train import load_job_retriever


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    inputs, retriever = load_job_retriever(snakemake.input, "en", spec["student"], spec.get("ensemble"))
    # a no-op when off; the text bank was embedded once for the model by rule embed_text_bank
    retriever = with_querybank(retriever, inputs, spec["querybank"], text_bank=snakemake.input.get("textbank"))
    # keyed like every other table: the model's settings and the content of what it read
    made_from = named_fingerprints(snakemake.input.items())
    key = fingerprint("embed_gallery", {k: spec[k] for k in ("split", "student", "querybank", "ensemble") if k in spec},
                      made_from)
    embed_gallery(retriever, inputs, snakemake.output[0], split=spec["split"], fingerprint_=key)


if __name__ == "__main__":
    main(globals()["snakemake"])
