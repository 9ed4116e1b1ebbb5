"""Snakemake script for rule embed_texts: calls ccr.features.embed_texts."""

from ccr.features import embed_texts
from ccr.io import parse_part, setup_logging
from ccr.jobs import configured_threads


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    embed_texts(
        captions_paths=[snakemake.input.captions],
        backend=spec["backend"],
        params=dict(spec["params"]),
        out_path=snakemake.output[0],
        with_tokens=spec["with_tokens"],
        shard_size=spec.get("shard_size", 256),
        hints={"threads": configured_threads(snakemake.config, snakemake.rule)},
        part=parse_part(snakemake.params.part),
        skip_unused_human=True,
        query_langs=snakemake.params.query_langs,
        description_role=spec.get("description_role", "passage"),
        reuse=[(snakemake.input.reuse_captions, snakemake.input.reuse_features)]
        if snakemake.input.get("reuse_features")
        else [],
    )


# The guard keeps worker processes started with the "spawn" method (GPU backends) from re-running the stage.
if __name__ == "__main__":
    main(globals()["snakemake"])
