"""Snakemake script for rule evaluate: loads the trained system (or the zero-shot one) and runs ccr.evaluate."""

from pathlib import Path

from ccr.evaluate import evaluate
from ccr.evaluate.centering import language_centering, with_centering
from ccr.evaluate.querybank import with_querybank
from ccr.io import setup_logging
from ccr.train import load_job_retriever


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    query = spec["query"]
    inputs, retriever = load_job_retriever(snakemake.input, query["code"], spec["student"], spec.get("ensemble"))
    # both no-ops when off. Centering moves the query set's raw text rows before the students read them
    centering = language_centering(inputs, spec.get("centering"), query["code"], query["pattern"], query["split"])
    retriever = with_centering(retriever, centering)
    # the image bank was embedded once for the model by rule embed_image_bank
    retriever = with_querybank(retriever, inputs, spec["querybank"], snakemake.input.get("imagebank"))
    evaluate(
        retriever,
        inputs,
        lang=query["code"],
        ks=list(query["ks"]),
        out_dir=Path(snakemake.output.metrics).parent,
        query_pattern=query["pattern"],
        split=query["split"],
        gallery=snakemake.input.gallery,
    )


if __name__ == "__main__":
    main(globals()["snakemake"])
