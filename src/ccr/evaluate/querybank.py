"""Querybank normalisation: QB-Norm's inverted softmax (Bogolin et al., CVPR 2022), in both directions.

A few gallery images ("hubs") are close to many captions and steal the top ranks of queries that are
not theirs; a few captions are close to many images in the same way. QB-Norm scores a query against a
candidate by how much the query prefers it *relative to how much typical queries prefer it*: for
text->image, with a bank B_t of training captions and a sharpness beta,

    score(q, g) = exp(beta s(q, g)) / sum_{b in B_t} exp(beta s(b, g)),     s = cosine similarity,

and for image->text the same with a bank B_i of training images normalising each caption. Per candidate
the denominator is a constant, so the text->image ranking is that of ``s(q, g) + bias(g)`` and the
image->text ranking that of ``s(q, g) + bias(q)``, with ``bias(x) = -logsumexp_b(beta s(b, x)) / beta``;
a bias on the query side never changes that query's ranking, so one score serves both directions:
``s(q, g) + bias(g) + bias(q)``. This module folds it into the embeddings, so every consumer of plain
unit vectors (the cached gallery, exact ranks, FAISS search) gets the normalised rankings unchanged:

    image' = [a g, a bias(g), a, sqrt(1 - a^2 (2 + bias(g)^2)), 0]
    text'  = [b q, b, b bias(q), 0, sqrt(1 - b^2 (2 + bias(q)^2))]

``image' . text' = a b (s(q, g) + bias(g) + bias(q))``. ``a = 1 / sqrt(2 + M_t^2)`` with
``M_t = 1 + ln|B_t| / beta`` bounds |bias(g)| for any unit vectors (likewise ``b`` with B_i), so both
are unit vectors, and the constants depend only on the bank sizes and beta. An empty bank gives a zero
bias on its side.

The banks are the training split's own data, which the system was trained on: the English human
captions and, for a system trained on MT, the translations; the training images. No val or test row is
ever in them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ccr.data.tables import read_captions, read_images
from ccr.evaluate.metrics import unit_rows
from ccr.evaluate.run import (
    IMAGE_BATCH,
    TEXT_BATCH,
    embed_in_batches,
    human_captions,
    read_embeddings,
    write_embeddings,
)
from ccr.params import QuerybankParams

log = logging.getLogger(__name__)


def bank_caption_ids(inputs: Any, size: int, seed: int) -> list[str]:
    """Up to ``size`` training-split text ids: English human captions and (when set) translations.

    Drawn without replacement by ``seed``, in a fixed order, so the same inputs give the same bank.
    """
    ids = human_captions(read_captions(inputs.captions), "train", "en")["caption_id"].to_pylist()
    if getattr(inputs, "translations", None):
        mt = pq.read_table(inputs.translations, columns=["caption_id", "split"])
        ids += mt.filter(pc.equal(mt["split"], "train"))["caption_id"].to_pylist()
    if not ids:
        raise ValueError(f"{inputs.captions}: no training-split English caption for the querybank")
    return _draw(sorted(set(ids)), size, seed)


def bank_image_ids(inputs: Any, size: int, seed: int) -> list[str]:
    """Up to ``size`` training-split image ids, drawn like :func:`bank_caption_ids`."""
    images = read_images(inputs.images)
    ids = images.filter(pc.equal(images["split"], "train"))["image_id"].to_pylist()
    if not ids:
        raise ValueError(f"{inputs.images}: no training-split image for the querybank")
    return _draw(sorted(set(ids)), size, seed)


def _draw(ids: list[str], size: int, seed: int) -> list[str]:
    if len(ids) <= size:
        return ids
    rng = np.random.default_rng(seed)
    return [ids[i] for i in np.sort(rng.choice(len(ids), size, replace=False))]


def _bias(bank: np.ndarray | None, rows: np.ndarray, beta: float) -> np.ndarray:
    """-logsumexp_b(beta s(b, x)) / beta per row x of ``rows`` (unit vectors); zeros without a bank."""
    if bank is None:
        return np.zeros(len(rows), np.float32)
    sims = beta * (rows @ bank.T)                         # (n, |B|)
    top = sims.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(sims - top).sum(axis=1))) / beta


def querybank_scale(bank_size: int, beta: float) -> float:
    """The constant that keeps the folded rows unit vectors, for a bank of ``bank_size`` on the other side."""
    bound = 1.0 + math.log(bank_size) / beta if bank_size else 0.0  # |bias| <= bound for unit vectors
    return 1.0 / math.sqrt(2.0 + bound * bound)


class QuerybankNormalised:
    """A retriever whose embeddings rank by QB-Norm's inverted softmax in both directions (module doc).

    ``text_bank`` / ``image_bank``: training text / image ids, embedded by ``retriever`` on first use;
    ``text_bank_vectors`` / ``image_bank_vectors``: a bank already embedded (the workflow embeds each once
    per model, rules embed_text_bank and embed_image_bank).
    """

    def __init__(self, retriever: Any, text_bank: list[str], image_bank: list[str], beta: float,
                 image_bank_vectors: np.ndarray | None = None, text_bank_vectors: np.ndarray | None = None):
        if not text_bank and not image_bank and image_bank_vectors is None and text_bank_vectors is None:
            raise ValueError("querybank: both banks are empty")
        self.retriever = retriever
        self.beta = float(beta)
        self.text_bank_ids, self.image_bank_ids = list(text_bank), list(image_bank)
        self._text_bank = None if text_bank_vectors is None else unit_rows(text_bank_vectors, "text bank")
        self._image_bank = None if image_bank_vectors is None else unit_rows(image_bank_vectors, "image bank")
        n_images = len(self._image_bank) if self._image_bank is not None else len(self.image_bank_ids)
        n_texts = len(self._text_bank) if self._text_bank is not None else len(self.text_bank_ids)
        self.image_scale = querybank_scale(n_texts, self.beta)
        self.text_scale = querybank_scale(n_images, self.beta)

    def text_bank(self) -> np.ndarray | None:
        if self._text_bank is None and self.text_bank_ids:
            self._text_bank = embed_in_batches(self.retriever.embed_texts, self.text_bank_ids, "querybank texts",
                                               TEXT_BATCH)
            log.info("querybank: %d training texts embedded, beta %.3g", len(self.text_bank_ids), self.beta)
        return self._text_bank

    def image_bank(self) -> np.ndarray | None:
        if self._image_bank is None and self.image_bank_ids:
            self._image_bank = embed_in_batches(self.retriever.embed_images, self.image_bank_ids, "querybank images",
                                                IMAGE_BATCH)
            log.info("querybank: %d training images embedded, beta %.3g", len(self.image_bank_ids), self.beta)
        return self._image_bank

    def embed_images(self, image_ids: list[str]) -> np.ndarray:
        g = unit_rows(np.asarray(self.retriever.embed_images(image_ids), np.float32), "image embeddings")
        return fold_images(g, self.text_bank(), self.beta, self.image_scale)

    def embed_texts(self, caption_ids: list[str]) -> np.ndarray:
        q = unit_rows(np.asarray(self.retriever.embed_texts(caption_ids), np.float32), "text embeddings")
        return fold_texts(q, self.image_bank(), self.beta, self.text_scale)


def fold_images(images: np.ndarray, text_bank: np.ndarray | None, beta: float, scale: float) -> np.ndarray:
    """Unit image rows with their text-bank bias folded in (the image side of the module doc)."""
    return _fold(images, _bias(text_bank, images, beta), scale, image_side=True)


def fold_texts(texts: np.ndarray, image_bank: np.ndarray | None, beta: float, scale: float) -> np.ndarray:
    """Unit text rows with their image-bank bias folded in (the text side of the module doc)."""
    return _fold(texts, _bias(image_bank, texts, beta), scale, image_side=False)


def _fold(rows: np.ndarray, bias: np.ndarray, scale: float, image_side: bool) -> np.ndarray:
    """Unit rows with their bias folded in (module doc): image' = [a g, a bias, a, rest, 0] and
    text' = [b q, b, b bias, 0, rest], so image' . text' = a b (s + bias(g) + bias(q))."""
    n = len(rows)
    own, other = (scale * bias)[:, None], np.full((n, 1), scale)
    rest = np.sqrt(np.clip(1.0 - scale * scale * (2.0 + bias * bias), 0.0, None))[:, None]
    zero = np.zeros((n, 1))
    tail = [own, other, rest, zero] if image_side else [other, own, zero, rest]
    return np.concatenate([scale * rows, *tail], axis=1).astype(np.float32)


def with_querybank(retriever: Any, inputs: Any, params: QuerybankParams | dict | None,
                   image_bank: str | Path | None = None, text_bank: str | Path | None = None) -> Any:
    """``retriever`` itself when the querybank is off, else it wrapped in :class:`QuerybankNormalised`.

    ``image_bank`` / ``text_bank``: tables written by :func:`embed_image_bank` / :func:`embed_text_bank`
    for this model and params (else the bank is embedded here, on first use).
    """
    p = params if isinstance(params, QuerybankParams) else QuerybankParams.from_dict(params)
    if not p.enabled:
        return retriever
    texts = bank_caption_ids(inputs, p.texts, p.seed) if p.texts else []
    images = bank_image_ids(inputs, p.images, p.seed) if p.images else []
    text_vectors = _read_bank(text_bank, "caption_id", texts, "texts", p.seed) if texts else None
    vectors = _read_bank(image_bank, "image_id", images, "images", p.seed) if images else None
    return QuerybankNormalised(retriever, texts, images, p.beta, vectors, text_vectors)


def _read_bank(path: str | Path | None, key: str, ids: list[str], kind: str, seed: int) -> np.ndarray | None:
    """The vectors of a bank table written by :func:`embed_text_bank` / :func:`embed_image_bank` (None
    without one), refused unless it holds exactly the bank's ``ids``."""
    if path is None:
        return None
    got, vectors = read_embeddings(path, key)
    if got != ids:
        raise ValueError(f"{path}: its {kind} are not the querybank's {len(ids)} training {kind} (seed {seed}); "
                         f"rerun embed_{kind[:-1]}_bank")
    return vectors


def embed_image_bank(retriever: Any, inputs: Any, params: QuerybankParams | dict, out_path: str | Path,
                     fingerprint_: str | None = None) -> pa.Table:
    """The querybank's training images embedded once by ``retriever`` -> ``out_path`` (image_id, embedding)."""
    return _embed_bank(retriever.embed_images, bank_image_ids, "image_id", "images", IMAGE_BATCH, inputs, params,
                       out_path, fingerprint_)


def embed_text_bank(retriever: Any, inputs: Any, params: QuerybankParams | dict, out_path: str | Path,
                    fingerprint_: str | None = None) -> pa.Table:
    """The querybank's training texts embedded once by ``retriever`` -> ``out_path`` (caption_id, embedding):
    read by the gallery job (the images' bias) and carried by the search bundle (new images' bias)."""
    return _embed_bank(retriever.embed_texts, bank_caption_ids, "caption_id", "texts", TEXT_BATCH, inputs, params,
                       out_path, fingerprint_)


def _embed_bank(embed: Any, draw: Any, key: str, kind: str, batch: int, inputs: Any,
                params: QuerybankParams | dict, out_path: str | Path, fingerprint_: str | None) -> pa.Table:
    """One bank (``kind``: texts or images): its ids drawn by ``draw``, embedded by ``embed``, written."""
    p = params if isinstance(params, QuerybankParams) else QuerybankParams.from_dict(params)
    size = getattr(p, kind)
    if not size:
        raise ValueError(f"querybank param '{kind}' is 0: there is no {kind[:-1]} bank to embed")
    ids = draw(inputs, size, p.seed)
    table = write_embeddings(embed, ids, key, f"querybank {kind}", out_path, batch, fingerprint_)
    log.info("querybank: %d training %s, dim %d -> %s", len(ids), kind, table["embedding"].type.list_size, out_path)
    return table
