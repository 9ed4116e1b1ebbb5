"""Stage ``translate``: machine-translate the English human training captions into a target language.

Only ``lang == "en"``, ``origin == "human"`` captions of the ``train`` and ``val`` splits are translated;
test captions are never touched (the test set is the human-written target-language captions). Output
rows follow the captions schema: ``caption_id = f"{source_id}#mt-{lang}"``, ``origin = "mt"`` and
``source_id`` = the English caption that was translated.

Backends (chosen by name in ``config.yaml``, see ``docs/backends-translate-describe.md``):

- ``apertium`` (offline default): Debian rule-based MT, en->es and en->fr (pivot through Spanish).
- ``hf-seq2seq``: any Hugging Face seq2seq MT model (MarianMT, NLLB, M2M100, T5-style) on CPU/GPU.
- ``none``: translates nothing and writes an *empty* table, for zero-shot transfer through a
  multilingual text encoder (the student then learns from English captions only).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from ccr.data.tables import CAPTIONS_SCHEMA, read_captions, validate_captions
from ccr.io import (
    Part,
    Progress,
    ShardedWriter,
    fingerprint,
    plan_shards,
    read_fingerprint,
    stamp,
    write_table_atomic,
)
from ccr.keys import numeric_params
from ccr.registry import Registry

log = logging.getLogger("ccr.translate")

TRANSLATED_SPLITS = ("train", "val")

__all__ = ["TRANSLATORS", "Translator", "TranslationError", "combine_translations", "select_sources",
           "translate_captions"]


@runtime_checkable
class Translator(Protocol):
    """A machine-translation backend. ``translate`` returns exactly one output per input, in order."""

    def supports(self, src: str, tgt: str) -> bool: ...

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]: ...


class TranslationError(RuntimeError):
    """A backend failed or returned something unusable (message names the backend and caption)."""


TRANSLATORS: Registry[Translator] = Registry("translate")
TRANSLATORS.register("apertium", "ccr.translate.apertium:ApertiumTranslator")
TRANSLATORS.register("hf-seq2seq", "ccr.translate.hf:HFSeq2SeqTranslator")
TRANSLATORS.register("none", "ccr.translate.none:NoTranslator")


def select_sources(captions: pa.Table) -> pa.Table:
    """The rows that get translated: English, human-written, train or val (never test)."""
    lang = captions.column("lang").to_pylist()
    origin = captions.column("origin").to_pylist()
    split = captions.column("split").to_pylist()
    mask = [
        lg == "en" and og == "human" and sp in TRANSLATED_SPLITS
        for lg, og, sp in zip(lang, origin, split, strict=True)
    ]
    return captions.filter(pa.array(mask, pa.bool_()))


def _mt_rows(sources: pa.Table, translations: Sequence[str], lang: str) -> pa.Table:
    ids = sources.column("caption_id").to_pylist()
    n = len(ids)
    return pa.table(
        {
            "caption_id": [f"{cid}#mt-{lang}" for cid in ids],
            "image_id": sources.column("image_id"),
            "lang": [lang] * n,
            "text": list(translations),
            "origin": ["mt"] * n,
            "split": sources.column("split"),
            "source_id": ids,
        },
        schema=CAPTIONS_SCHEMA,
    )


def translate_captions(
    captions_path: str | os.PathLike,
    lang: str,
    backend: str,
    params: dict[str, Any] | None,
    out_path: str | os.PathLike,
    shard_size: int = 256,
    hints: dict | None = None,
    part: Part | None = None,
) -> None:
    """Translate the en human train/val captions of ``captions_path`` into ``lang``; write ``out_path``.

    Work is done in shards of ``shard_size`` captions (one backend call each) through
    :class:`ccr.io.ShardedWriter`, so a crashed run resumes without losing or repeating rows.
    ``part=(i, n)``: translate only the i-th of n parts (a scattered job; :func:`ccr.io.gather_parts`
    joins the parts into the same table as an unscattered run).
    """
    if not lang or lang == "en":
        raise ValueError(f"translate: target language must be a non-English code, got {lang!r}")
    if shard_size < 1:
        raise ValueError(f"translate: shard_size must be >= 1, got {shard_size}")
    out_path = Path(out_path)
    translator = TRANSLATORS.create(backend, hints=hints, **(params or {}))
    if not translator.supports("en", lang):
        raise TranslationError(f"translate backend '{backend}' cannot translate en->{lang}")

    fp = fingerprint("translate", {"backend": backend, "params": numeric_params(params), "lang": lang},
                     {"captions": read_fingerprint(captions_path)})
    sources = select_sources(read_captions(captions_path))
    if getattr(translator, "translates_nothing", False):
        # Backend "none": zero-shot transfer. The output is deliberately an EMPTY captions table,
        # so downstream stages see "no machine translations" rather than a missing file.
        log.info("translate backend '%s': writing an empty table for en->%s (zero-shot)", backend, lang)
        sources = sources.slice(0, 0)

    source_ids = sources.column("caption_id").to_pylist()
    out_ids = [f"{cid}#mt-{lang}" for cid in source_ids]
    index = {cid: i for i, cid in enumerate(out_ids)}
    shards = plan_shards(out_ids, shard_size, part)
    writer = ShardedWriter(out_path, key="caption_id", schema=CAPTIONS_SCHEMA, fingerprint=fp,
                           resume_key={"shard_size": shard_size, "part": part})
    todo = writer.pending_shards(shards)
    mine = [k for shard in shards for k in shard]
    n_todo = sum(len(chunk) for chunk in todo)
    log.info("translate en->%s with '%s': %d captions%s (%d already done) from %s", lang, backend, len(mine),
             f" (part {part[0] + 1} of {part[1]})" if part else "", len(mine) - n_todo, captions_path)
    progress = Progress(n_todo, f"translate en->{lang} [{backend}]")
    for chunk in todo:
        rows = sources.take(pa.array([index[k] for k in chunk], pa.int64()))
        texts = rows.column("text").to_pylist()
        out = translator.translate(texts, "en", lang)
        if len(out) != len(texts):
            raise TranslationError(
                f"translate backend '{backend}' returned {len(out)} translations for {len(texts)} captions"
            )
        for cid, text in zip(rows.column("caption_id").to_pylist(), out, strict=True):
            if not isinstance(text, str) or not text.strip():
                raise TranslationError(
                    f"translate backend '{backend}' returned an empty en->{lang} translation for caption_id '{cid}'"
                )
        table = validate_captions(_mt_rows(rows, [t.strip() for t in out], lang), where=f"{out_path} (new shard)")
        writer.write(table)
        progress.update(len(chunk))
    writer.finish(order=mine, part=part, positions=index if part else None)


def combine_translations(paths: list[str | os.PathLike], out_path: str | os.PathLike) -> pa.Table:
    """One MT table from the MT tables of several languages (a student trained on all of them).

    Rows keep their languages (caption ids ``<source>#mt-<lang>`` are unique across languages); the
    output's fingerprint chains the inputs' fingerprints.
    """
    if not paths:
        raise ValueError(f"{out_path}: no translation tables to combine")
    tables = [validate_captions(read_captions(p), where=str(p)) for p in paths]
    for path, table in zip(paths, tables, strict=True):
        if table.num_rows and set(table.column("origin").to_pylist()) != {"mt"}:
            raise TranslationError(f"{path}: not a translations table (field 'origin' is not 'mt' everywhere)")
    table = pa.concat_tables(tables)
    ids = table.column("caption_id").to_pylist()
    if len(set(ids)) != len(ids):
        raise TranslationError(f"{out_path}: the tables share caption ids (the same language twice?)")
    fp = fingerprint("combine_translations", {}, {f"mt{i}": read_fingerprint(p) for i, p in enumerate(paths)})
    write_table_atomic(stamp(table, fp), out_path)
    log.info("combined %d translation table(s), %d rows (%s) -> %s", len(paths), table.num_rows,
             ", ".join(sorted(set(table.column("lang").to_pylist()))), out_path)
    return table
