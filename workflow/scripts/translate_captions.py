"""Snakemake script for rule translate_captions: calls ccr.translate.translate_captions."""

from ccr.io import parse_part, setup_logging
from ccr.translate import translate_captions


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    translate_captions(
        captions_path=snakemake.input.captions,
        lang=snakemake.wildcards.code,
        backend=spec["backend"],
        params=dict(spec["params"]),
        out_path=snakemake.output[0],
        shard_size=spec.get("shard_size", 256),
        hints={"threads": snakemake.threads},
        part=parse_part(snakemake.params.part),
    )


# The guard keeps worker processes started with the "spawn" method (GPU backends) from re-running the stage.
if __name__ == "__main__":
    main(globals()["snakemake"])
