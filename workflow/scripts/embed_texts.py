"""Snakemake script for rule embed_texts: calls ccr.features.embed_texts."""

from ccr.features import embed_texts
from ccr.io import setup_logging

snakemake = globals()["snakemake"]
setup_logging(snakemake.log[0])
spec = snakemake.params.spec
embed_texts(
    captions_paths=[snakemake.input.captions],
    backend=spec["backend"],
    params=dict(spec.get("params", {})),
    out_path=snakemake.output[0],
    with_tokens=spec.get("with_tokens", True),
    shard_size=spec.get("shard_size", 256),
    hints={"threads": snakemake.threads},
    skip_unused_human=True,
)
