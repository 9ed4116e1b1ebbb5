"""Snakemake script for rule export_bundle: calls ccr.search.export_bundle with the student (or an ensemble's
students) and its evaluations."""

import json
from pathlib import Path
from types import SimpleNamespace

from ccr.evaluate.centering import bundle_centering
from ccr.evaluate.run import read_embeddings
from ccr.io import setup_logging
from ccr.search import export_bundle
from ccr.search.bundle import describer_pool


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    metrics = {lang: json.loads(Path(path).read_text(encoding="utf-8"))
               for lang, path in zip(spec["query_sets"], snakemake.input.metrics, strict=True)}
    weights = spec.get("weights")  # an ensemble: its students, fused as its evaluation fused them
    export_bundle(
        list(snakemake.input.student) if weights else snakemake.input.student,
        snakemake.output.bundle,
        image_encoder=spec["image_encoder"],
        text_encoder=spec["text_encoder"],
        describer=spec["describer"],
        query_languages=spec["query_languages"],
        metrics=metrics,
        source=spec["source"],
        description_role=spec["description_role"],
        pool=describer_pool(snakemake.input.images, snakemake.input.captions, snakemake.input.image_features)
        if spec["describer_pool"]
        else None,
        # only the captions' own features: English training captions and the val queries
        centering=bundle_centering(SimpleNamespace(captions=snakemake.input.captions,
                                                   caption_features=snakemake.input.caption_features,
                                                   translation_features=None), spec["centering"])
        if spec.get("centering")
        else None,
        weights=weights,
        querybank=querybank_banks(snakemake.input, spec.get("querybank")),
    )


def querybank_banks(inputs, querybank: dict | None) -> dict | None:
    """The banks its evaluation's querybank was embedded with (rules embed_text_bank, embed_image_bank)."""
    if not querybank:
        return None
    banks = {name: read_embeddings(inputs.get(f"{kind}bank"), key)[1] if inputs.get(f"{kind}bank") else None
             for name, kind, key in (("texts", "text", "caption_id"), ("images", "image", "image_id"))}
    return {"beta": querybank["beta"], **banks}


if __name__ == "__main__":
    main(globals()["snakemake"])
