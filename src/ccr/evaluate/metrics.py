"""Exact retrieval ranks and Recall@K with FAISS inner-product search.

Conventions (the same for every system, so numbers are comparable):

* Embeddings are L2-normalised **here** (rows of zero norm stay zero), so callers may pass raw or
  already-normalised vectors: the score is the cosine similarity either way.
* Ranks are exact: every query is scored against the whole gallery with FAISS's brute-force
  inner-product kernel (``faiss.pairwise_distances``, the kernel of ``IndexFlatIP``, or
  ``pairwise_distance_gpu`` on GPU), never an approximate or truncated top-k.  Top-k lists (the
  examples) come from an exact ``IndexFlatIP`` search.
* Ties are broken **pessimistically**: the rank of the correct item is ``1 +`` the number of wrong
  items whose score is ``>=`` the correct score.  A model that gives every item the same score thus
  gets the worst rank instead of a lucky rank 1, and the result never depends on gallery order.
* text->image: each caption (query) is ranked against all gallery images; its positive is its image.
* image->text: each gallery image is ranked against all query captions; its rank is the best rank
  among its captions, i.e. ``1 +`` the number of *other images'* captions scoring ``>=`` its best
  caption.  Images without any caption in the query set are left out of image->text.
* Recall values are percentages (0-100); ``mr`` is the mean of all T2I and I2T recalls; MedR is the
  plain median of the 1-based ranks (may end in .5), MeanR their mean.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)

# FAISS GPU k-selection is limited (GPU_MAX_SELECTION_K); larger top-k searches run on CPU.
_GPU_MAX_K = 2048
# Scores materialised per chunk: chunk_rows * gallery_size floats (~16 MB for float32).
_CHUNK_ELEMENTS = 4_000_000


def l2_normalise(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """Return a float32, C-contiguous, row-L2-normalised copy of ``x`` (zero rows stay zero)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n, dim), got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{name}: {bad} row(s) contain NaN or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _want_gpu(use_gpu: bool | str) -> bool:
    if use_gpu == "auto":
        return gpu_available()
    if use_gpu is True:
        if not gpu_available():
            raise RuntimeError("use_gpu=True but faiss has no GPU support or sees no GPU (install faiss-gpu)")
        return True
    if use_gpu is False:
        return False
    raise ValueError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")


_GPU_RESOURCES = None


def _gpu_resources():
    """One StandardGpuResources per process: it must outlive every GPU index made from it."""
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    return _GPU_RESOURCES


def build_index(gallery: np.ndarray, k: int, use_gpu: bool | str = "auto") -> faiss.Index:
    """Exact inner-product index over ``gallery`` (already normalised), on GPU when asked and possible."""
    index: faiss.Index = faiss.IndexFlatIP(gallery.shape[1])
    if _want_gpu(use_gpu):
        if k <= _GPU_MAX_K:
            index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
        else:
            log.info("gallery search with k=%d exceeds the FAISS GPU limit (%d): searching on CPU", k, _GPU_MAX_K)
    index.add(gallery)
    return index


def search(query: np.ndarray, gallery: np.ndarray, k: int, use_gpu: bool | str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` gallery items per query: (scores (nq, k), indices (nq, k)), best first; inputs normalised here."""
    q, g = l2_normalise(query, "query_emb"), l2_normalise(gallery, "gallery_emb")
    _check_dims(q, g)
    k = min(k, g.shape[0])
    return build_index(g, k, use_gpu).search(q, k)


def _check_dims(q: np.ndarray, g: np.ndarray) -> None:
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query_emb has dim {q.shape[1]} but gallery_emb has dim {g.shape[1]}")
    if g.shape[0] == 0:
        raise ValueError("gallery_emb is empty")
    if q.shape[0] == 0:
        raise ValueError("query_emb is empty")


def _score_chunks(q: np.ndarray, g: np.ndarray, gpu: bool) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (row slice, exact score matrix (rows, ng)) computed by FAISS's brute-force inner-product kernel.

    ``pairwise_distances`` is the BLAS kernel behind ``IndexFlatIP`` without the k-selection, so ranks
    are exact with no k limit (FAISS GPU caps k at 2048).  Chunking is a pure function of the shapes,
    so two passes see bit-identical scores (ties must compare exactly).
    """
    ng = g.shape[0]
    rows = max(1, _CHUNK_ELEMENTS // ng)
    for start in range(0, q.shape[0], rows):
        sl = slice(start, min(start + rows, q.shape[0]))
        if gpu:
            scores = faiss.pairwise_distance_gpu(_gpu_resources(), q[sl], g, metric=faiss.METRIC_INNER_PRODUCT)
        else:
            scores = faiss.pairwise_distances(q[sl], g, metric=faiss.METRIC_INNER_PRODUCT)
        yield sl, np.asarray(scores, dtype=np.float32)


@dataclass(frozen=True)
class Ranks:
    """1-based exact ranks. ``i2t`` has one entry per gallery image that has captions (``i2t_images``)."""

    t2i: np.ndarray
    i2t: np.ndarray
    i2t_images: np.ndarray


def retrieval_ranks(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    query_to_gallery: np.ndarray,
    use_gpu: bool | str = "auto",
) -> Ranks:
    """Exact text->image and image->text ranks (pessimistic ties, see the module docstring)."""
    q, g = l2_normalise(query_emb, "query_emb"), l2_normalise(gallery_emb, "gallery_emb")
    _check_dims(q, g)
    nq, ng = q.shape[0], g.shape[0]
    q2g = np.asarray(query_to_gallery)
    if q2g.shape != (nq,) or not np.issubdtype(q2g.dtype, np.integer):
        raise ValueError(f"query_to_gallery must be an integer array of shape ({nq},), got {q2g.dtype} {q2g.shape}")
    if nq and (q2g.min() < 0 or q2g.max() >= ng):
        raise ValueError(f"query_to_gallery has indices outside [0, {ng})")
    q2g = q2g.astype(np.int64)
    gpu = _want_gpu(use_gpu)

    # Pass 1: text->image ranks and each query's positive score.
    t2i = np.empty(nq, dtype=np.int64)
    pos = np.empty(nq, dtype=np.float32)
    for sl, scores in _score_chunks(q, g, gpu):
        true = scores[np.arange(scores.shape[0]), q2g[sl]]
        pos[sl] = true
        t2i[sl] = (scores >= true[:, None]).sum(axis=1)  # counts the positive itself: 1 + wrong items >=

    # Pass 2: image->text, against the best caption of each image.
    best = np.full(ng, -np.inf, dtype=np.float32)
    np.maximum.at(best, q2g, pos)
    has_caps = np.bincount(q2g, minlength=ng) > 0
    wrong_ge = np.zeros(ng, dtype=np.int64)
    cols = np.arange(ng)
    for sl, scores in _score_chunks(q, g, gpu):
        wrong = q2g[sl][:, None] != cols[None, :]
        wrong_ge += ((scores >= best[None, :]) & wrong).sum(axis=0)
    images = np.flatnonzero(has_caps)
    return Ranks(t2i=t2i, i2t=1 + wrong_ge[images], i2t_images=images)


def summarise_ranks(ranks: Ranks, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@K (percent), mR, MedR, MeanR for both directions from :class:`Ranks`."""
    ks = _check_ks(ks)
    out: dict = {}
    recalls = []
    for direction, r in (("t2i", ranks.t2i), ("i2t", ranks.i2t)):
        for k in ks:
            value = float(100.0 * np.mean(r <= k)) if len(r) else float("nan")
            out[f"{direction}_r{k}"] = value
            recalls.append(value)
    out["mr"] = float(np.mean(recalls))
    for direction, r in (("t2i", ranks.t2i), ("i2t", ranks.i2t)):
        out[f"{direction}_medr"] = float(np.median(r)) if len(r) else float("nan")
        out[f"{direction}_meanr"] = float(np.mean(r)) if len(r) else float("nan")
    out["n_queries"] = len(ranks.t2i)
    out["n_i2t_queries"] = len(ranks.i2t)
    return out


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct positive integers, got {ks}")
    return sorted(ks)


def recall_at_k(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    query_to_gallery: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    use_gpu: bool | str = "auto",
) -> dict:
    """T2I and I2T Recall@K (0-100), ``mr``, MedR and MeanR; keys ``t2i_r{k}``, ``i2t_r{k}``, ``mr``,
    ``t2i_medr``, ``i2t_medr``, ``t2i_meanr``, ``i2t_meanr``, ``n_queries``, ``n_images``, ``n_i2t_queries``."""
    ks = _check_ks(ks)
    ranks = retrieval_ranks(query_emb, gallery_emb, query_to_gallery, use_gpu=use_gpu)
    out = summarise_ranks(ranks, ks)
    out["n_images"] = int(np.asarray(gallery_emb).shape[0])
    return out
