"""Snakemake script for rule describe_images: calls ccr.describe.describe_images."""

from ccr.describe import describe_images
from ccr.io import parse_part, setup_logging
from ccr.jobs import configured_threads


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    describe_images(
        images_path=snakemake.input.images,
        backend=spec["backend"],
        params=dict(spec["params"]),
        out_path=snakemake.output[0],
        shard_size=spec.get("shard_size", 64),
        hints={"threads": configured_threads(snakemake.config, snakemake.rule)},
        part=parse_part(snakemake.params.part),
        captions_path=snakemake.input.get("captions"),
        image_features_path=snakemake.input.get("image_features"),
    )


# The guard keeps worker processes started with the "spawn" method (vLLM) from re-running the stage.
if __name__ == "__main__":
    main(globals()["snakemake"])
