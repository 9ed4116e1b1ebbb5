"""Translation quality against reference translations (corpus BLEU and chrF via sacrebleu)."""

from __future__ import annotations

import json
from pathlib import Path

import sacrebleu

from ccr.data.importers._common import read_lines
from ccr.io import write_text_atomic


def mt_quality(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (0-100) of ``hyps`` against one reference each (same order).

    Returns ``{"bleu": ..., "chrf": ..., "n": ...}``; sacrebleu's default (13a) tokenisation, so
    scores are comparable with published numbers for Latin-script targets.
    """
    if len(hyps) != len(refs):
        raise ValueError(f"mt_quality: {len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("mt_quality: no sentences to score")
    bleu = sacrebleu.corpus_bleu(hyps, [refs])
    chrf = sacrebleu.corpus_chrf(hyps, [refs])
    return {"bleu": float(bleu.score), "chrf": float(chrf.score), "n": len(hyps)}


def score_backend(backend: str, params: dict, source: str | Path, reference: str | Path, src_lang: str,
                  tgt_lang: str, out_path: str | Path) -> dict:
    """Translate ``source`` with ``backend`` and score it against ``reference``; writes JSON to ``out_path``.

    Used on Multi30K test_2016 (en -> fr) to report how noisy the training translations are.
    """
    from ccr.translate import TRANSLATORS

    sources = read_lines(Path(source), "mt_quality source")
    references = read_lines(Path(reference), "mt_quality reference")
    if len(sources) != len(references):
        raise ValueError(f"mt_quality: {source} has {len(sources)} lines but {reference} has {len(references)}")
    translator = TRANSLATORS.create(backend, **(params or {}))
    if not translator.supports(src_lang, tgt_lang):
        raise ValueError(f"mt_quality: backend '{backend}' cannot translate {src_lang}->{tgt_lang}")
    hyps = translator.translate(sources, src_lang, tgt_lang)
    scores = {"backend": backend, "src": src_lang, "tgt": tgt_lang, "source": str(source),
              "reference": str(reference), **mt_quality(hyps, references)}
    write_text_atomic(json.dumps(scores, indent=2) + "\n", out_path)
    return scores
