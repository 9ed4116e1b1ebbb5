"""Snakemake script for rule evaluate: loads the trained system (or the zero-shot one) and runs ccr.evaluate."""

from pathlib import Path

from ccr.evaluate import evaluate
from ccr.io import setup_logging
from ccr.train import TrainInputs, load_retriever

snakemake = globals()["snakemake"]
setup_logging(snakemake.log[0])
inputs = TrainInputs.from_mapping(snakemake.input, lang=snakemake.params.query_lang)
student = snakemake.input.get("student")
retriever = load_retriever(Path(student).parent if student else None, inputs, dict(snakemake.params.student))
evaluate(
    retriever,
    inputs,
    lang=snakemake.wildcards.lang,
    ks=list(snakemake.params.ks),
    out_dir=Path(snakemake.output.metrics).parent,
    tags=dict(snakemake.params.tags),
    query_lang=snakemake.params.query_lang,
    query_pattern=snakemake.params.query_pattern,
)
