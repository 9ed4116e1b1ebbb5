"""Snakemake script for rule embed_images: calls ccr.features.embed_images."""

from ccr.features import embed_images
from ccr.io import parse_part, setup_logging
from ccr.jobs import configured_threads


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    embed_images(
        images_path=snakemake.input.images,
        backend=spec["backend"],
        params=dict(spec["params"]),
        out_path=snakemake.output[0],
        shard_size=spec.get("shard_size", 64),
        hints={"threads": configured_threads(snakemake.config, snakemake.rule)},
        part=parse_part(snakemake.params.part),
    )


# The guard keeps worker processes started with the "spawn" method (GPU backends) from re-running the stage.
if __name__ == "__main__":
    main(globals()["snakemake"])
