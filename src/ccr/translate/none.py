"""Backend ``none``: no machine translation at all (zero-shot cross-lingual transfer).

The student is trained on English captions only and relies on a multilingual text encoder to carry
over to the target language. :func:`ccr.translate.translate_captions` sees ``translates_nothing`` and
writes an EMPTY captions table (a real, valid file, so the workflow's inputs stay uniform).
"""

from __future__ import annotations


class NoTranslator:
    """Supports every language pair and translates nothing."""

    #: Read by ``translate_captions``: write an empty table instead of calling :meth:`translate`.
    translates_nothing = True

    def supports(self, src: str, tgt: str) -> bool:
        return True

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        raise RuntimeError("translate backend 'none' does not translate; translate_captions writes an empty table "
                           "for it (zero-shot transfer)")
