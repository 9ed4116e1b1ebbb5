"""Translation quality against reference translations (corpus BLEU and chrF via sacrebleu)."""

from __future__ import annotations

import sacrebleu


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
