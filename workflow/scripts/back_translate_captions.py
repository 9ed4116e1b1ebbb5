"""Snakemake script for rule back_translate_captions: calls ccr.translate.backtranslate.back_translate_captions."""

from ccr.io import setup_logging
from ccr.translate.backtranslate import back_translate_captions


def main(snakemake) -> None:
    setup_logging(snakemake.log[0])
    spec = snakemake.params.spec
    back_translate_captions(
        translations_path=snakemake.input.translations,
        captions_path=snakemake.input.captions,
        lang=snakemake.wildcards.code,
        out_path=snakemake.output[0],
        backend=spec["backend"],
        params=dict(spec["params"]),
    )


if __name__ == "__main__":
    main(globals()["snakemake"])
