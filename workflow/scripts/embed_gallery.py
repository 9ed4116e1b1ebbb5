"""Snakemake script for rule embed_gallery: the evaluated split's images embedded once per model."""

from ccr.evaluate import embed_gallery
from ccr.evaluate.querybank import with_querybank
from ccr.io import fingerprint, path_fingerprint, setup_logging
from ccr.train import load_job_retriever


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    inputs, retriever = load_job_retriever(snakemake.input, "en", dict(spec["student"]))
    retriever = with_querybank(retriever, inputs, spec["querybank"])  # a no-op when off
    # keyed like every other table: the model's settings and the content of what it read
    made_from = {name: path_fingerprint(path) for name, path in snakemake.input.items()}
    key = fingerprint("embed_gallery", {"split": spec["split"], "student": spec["student"], "querybank": spec["querybank"]}, made_from)
    embed_gallery(retriever, inputs, snakemake.output[0], split=spec["split"], fingerprint_=key)


if __name__ == "__main__":
    main(globals()["snakemake"])
