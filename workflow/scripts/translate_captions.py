"""Snakemake script for rule translate_captions: calls ccr.translate.translate_captions."""

from ccr.io import setup_logging
from ccr.translate import translate_captions

snakemake = globals()["snakemake"]
setup_logging(snakemake.log[0])
spec = snakemake.params.spec
translate_captions(
    captions_path=snakemake.input.captions,
    lang=spec.get("code", snakemake.wildcards.lang),
    backend=spec["backend"],
    params=dict(spec.get("params", {})),
    out_path=snakemake.output[0],
    shard_size=spec.get("shard_size", 256),
)
