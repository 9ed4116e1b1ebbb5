"""Back-translation: machine translations of the English training captions, translated back into English.

NRCCR trains on such noisy English paraphrases: the round trip en -> X -> en rewords a caption (synonyms,
word order, dropped articles) while keeping what it says, so the model sees more English wordings of the same
image. The input is the output of :func:`ccr.translate.translate_captions` for one language (its rows are
``origin == "mt"`` with ``source_id`` = the English caption), so no caption is translated twice.

Output rows (captions schema): ``caption_id = f"{source_id}#bt-{lang}"``, the source's ``image_id`` and
``split``, ``lang = "en"``, ``origin = "mt"`` (machine-written English), ``source_id`` = the English caption
it paraphrases. Only train and val rows are read (test captions are never translated, and a test row in the
input is an error, not a silent skip). With ``drop_identical`` a round trip that gives back the English
source sentence (same words, ignoring case and punctuation) is dropped: it adds no new wording.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from ccr.data.tables import CAPTIONS_SCHEMA, read_captions, validate_captions
from ccr.io import Progress, batched, fingerprint, read_fingerprint, stamp, write_table_atomic
from ccr.keys import numeric_params

log = logging.getLogger("ccr.translate")

__all__ = ["BACK_TRANSLATED_SPLITS", "back_translate", "back_translate_captions"]

BACK_TRANSLATED_SPLITS = ("train", "val")
_WORD = re.compile(r"\w+")


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def back_translate(translations: pa.Table, lang: str, backend: str = "apertium",
                   params: dict[str, Any] | None = None, english: pa.Table | None = None,
                   drop_identical: bool = True, batch_size: int = 4096) -> pa.Table:
    """English paraphrases of the English captions behind ``translations`` (MT rows in ``lang``).

    ``backend``/``params``: a translate backend (``ccr.translate.TRANSLATORS``) that can do ``lang -> en``
    (Apertium: fr -> es -> en by default). ``english``: the captions table holding the English sources
    (needed for ``drop_identical``). ``batch_size`` captions go through one backend call (one Apertium
    process per hop). Returns a captions-schema table in the order of ``translations``.
    """
    from ccr.translate import TRANSLATORS, TranslationError

    if not lang or lang == "en":
        raise ValueError(f"back_translate: param 'lang' must be the non-English language of the translations, "
                         f"got {lang!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"back_translate: param 'batch_size' must be an integer >= 1, got {batch_size!r}")
    if drop_identical and english is None:
        raise ValueError("back_translate: drop_identical needs the English captions table (param 'english')")
    translations = validate_captions(translations, where=f"back_translate translations ({lang})")
    cols = {c: translations.column(c).to_pylist() for c in ("caption_id", "lang", "origin", "split", "source_id")}
    for cid, lg, origin, split, src in zip(*cols.values(), strict=True):
        if origin != "mt" or lg != lang or not src:
            raise ValueError(f"back_translate: row '{cid}' is not a machine translation into '{lang}' with a "
                             f"source_id (fields origin={origin!r}, lang={lg!r}, source_id={src!r})")
        if split not in BACK_TRANSLATED_SPLITS:
            raise ValueError(f"back_translate: row '{cid}' is in split '{split}'; only {BACK_TRANSLATED_SPLITS} "
                             f"captions are ever translated")
    source_text: dict[str, str] = {}
    if english is not None:
        english = validate_captions(english, where="back_translate english captions")
        source_text = dict(zip(english.column("caption_id").to_pylist(), english.column("text").to_pylist(),
                               strict=True))
        missing = [s for s in cols["source_id"] if s not in source_text]
        if missing:
            raise ValueError(f"back_translate: {len(missing)} source_id(s) not in the English captions table, "
                             f"e.g. {missing[:3]}")

    translator = TRANSLATORS.create(backend, **(params or {}))
    if not translator.supports(lang, "en"):
        raise TranslationError(f"back_translate: translate backend '{backend}' cannot translate {lang}->en")
    texts = translations.column("text").to_pylist()
    out: list[str] = []
    progress = Progress(len(texts), f"back-translate {lang}->en [{backend}]")
    for chunk in batched(texts, batch_size):
        got = translator.translate(list(chunk), lang, "en")
        if len(got) != len(chunk):
            raise TranslationError(f"back_translate: backend '{backend}' returned {len(got)} outputs for "
                                   f"{len(chunk)} inputs")
        out.extend(" ".join(t.split()) for t in got)
        progress.update(len(chunk))

    keep, identical, empty = [], 0, 0
    for i, (text, src) in enumerate(zip(out, cols["source_id"], strict=True)):
        if not text:
            empty += 1
        elif drop_identical and _norm(text) == _norm(source_text[src]):
            identical += 1
        else:
            keep.append(i)
    log.info("back-translate %s->en: %d paraphrases, %d dropped as identical to their source, %d empty",
             lang, len(keep), identical, empty)
    rows = translations.take(pa.array(keep, pa.int64()))
    src_ids = rows.column("source_id").to_pylist()
    n = len(keep)
    return validate_captions(pa.table({
        "caption_id": [f"{s}#bt-{lang}" for s in src_ids],
        "image_id": rows.column("image_id"),
        "lang": ["en"] * n,
        "text": [out[i] for i in keep],
        "origin": ["mt"] * n,
        "split": rows.column("split"),
        "source_id": src_ids,
    }, schema=CAPTIONS_SCHEMA), where=f"back_translate output ({lang})")


def back_translate_captions(translations_path: str | os.PathLike, captions_path: str | os.PathLike, lang: str,
                            out_path: str | os.PathLike, backend: str = "apertium",
                            params: dict[str, Any] | None = None, drop_identical: bool = True) -> None:
    """File wrapper of :func:`back_translate`: MT table + English captions table -> ``out_path`` (atomic)."""
    table = back_translate(read_captions(translations_path), lang, backend=backend, params=params,
                           english=read_captions(captions_path), drop_identical=drop_identical)
    fp = fingerprint("back_translate", {"backend": backend, "params": numeric_params(params), "lang": lang,
                                        "drop_identical": drop_identical},
                     {"translations": read_fingerprint(translations_path), "captions": read_fingerprint(captions_path)})
    write_table_atomic(stamp(table, fp), Path(out_path))
    log.info("back-translate %s->en: wrote %d rows -> %s", lang, table.num_rows, out_path)
