"""Exact retrieval ranks and Recall@K with FAISS inner-product search.

Conventions (the same for every system, so numbers are comparable):

* Scores are cosine similarities: embeddings are L2-normalised **here** (rows of zero norm stay zero),
  so callers may pass raw or already-normalised vectors.  float32 rows whose norm is already 1 (within
  ``UNIT_NORM_TOL``, e.g. the output of :func:`l2_normalise`) are used as they are, without a copy;
  other input is normalised in one copy.
* Ranks are exact: every query is scored against the whole gallery with the brute-force inner-product
  kernel (the BLAS matrix product behind FAISS's ``pairwise_distances`` / ``IndexFlatIP``, or
  ``pairwise_distance_gpu`` on GPU), never an approximate or truncated top-k.  Top-k lists (the
  examples) come from FAISS's exact ``knn`` (the search of ``IndexFlatIP``).
* Ties are broken **pessimistically**: the rank of the correct item is ``1 +`` the number of wrong
  items whose score is ``>=`` the correct score.  A model that gives every item the same score thus
  gets the worst rank instead of a lucky rank 1, and the result never depends on gallery order.
* text->image: each caption (query) is ranked against all gallery images; its positive is its image.
* image->text: each gallery image is ranked against all query captions; its rank is the best rank
  among its captions, i.e. ``1 +`` the number of *other images'* captions scoring ``>=`` its best
  caption.  Images without any caption in the query set are left out of image->text (so only the
  captioned images' columns are ever scored for it).
* Recall values are percentages (0-100); ``mr`` is the mean of all T2I and I2T recalls; MedR is the
  plain median of the 1-based ranks (may end in .5), MeanR their mean.

Memory: scores are computed in blocks of at most ``block_bytes`` (default ``SCORE_BLOCK_BYTES``) of
float32, tiled over both ranked rows and candidate columns, so the working set does not grow with
the gallery and a 1M-item gallery still gets hundreds of query rows per matrix product (a product
with few rows runs the BLAS kernel at a fraction of its speed).  Beyond the inputs themselves, peak
memory is one score block plus copies of at most one chunk of rows and, for image->text, the query
embeddings in caption order (see :func:`retrieval_ranks`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)

# FAISS GPU k-selection is limited (GPU_MAX_SELECTION_K); larger top-k searches run on CPU.
_GPU_MAX_K = 2048
# Bytes of float32 scores materialised at once (one block of ranked rows x candidate columns).
SCORE_BLOCK_BYTES = 256 * 2**20
# A float32 row counts as normalised when | ||x|| - 1 | <= this.  l2_normalise's output is within 2e-7
# of 1 (measured for d = 8..4096); 1e-6 is about the rounding error of a float32 dot product at d ~ 512,
# so using such rows as they are moves no score by more than its own rounding does.  Dividing them again
# would not be a no-op: it moves about a third of the elements by one ulp.
UNIT_NORM_TOL = 1e-6
# Rows per pass when checking / normalising embeddings: bounds the temporaries to rows x dim floats.
_NORM_ROWS = 16_384
# Score blocks are this many columns wide (rounded up): keeps BLAS on its full-width micro-kernels.
_COL_ALIGN = 64


def _as_float32_2d(x: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    """(C-contiguous float32 view or copy of ``x``, True when that array is our own copy)."""
    original = x
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n, dim), got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    owned = not (isinstance(original, np.ndarray) and np.may_share_memory(x, original))
    return x, owned


def _row_norms(x: np.ndarray, name: str) -> np.ndarray:
    """L2 norm of every row (float32), checked finite; computed in row blocks to bound temporaries.

    Per row the arithmetic is the same as ``np.linalg.norm(x, axis=1)`` on the whole array, so the
    blocks change no bit of the result.
    """
    norms = np.empty(x.shape[0], dtype=np.float32)
    bad = 0
    for start in range(0, x.shape[0], _NORM_ROWS):
        block = x[start:start + _NORM_ROWS]
        bad += int((~np.isfinite(block)).any(axis=1).sum())
        norms[start:start + _NORM_ROWS] = np.linalg.norm(block, axis=1)
    if bad:
        raise ValueError(f"{name}: {bad} row(s) contain NaN or inf")
    return norms


def _divide_rows(src: np.ndarray, norms: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = src / norms row-wise (zero rows stay zero), block by block; ``out`` may be ``src``."""
    for start in range(0, src.shape[0], _NORM_ROWS):
        sl = slice(start, start + _NORM_ROWS)
        n = norms[sl, None]
        np.divide(src[sl], np.where(n > 0, n, 1.0), out=out[sl])
    return out


def l2_normalise(x: np.ndarray, name: str = "embeddings", copy: bool = True) -> np.ndarray:
    """Row-L2-normalised float32, C-contiguous ``x`` (zero rows stay zero).

    Returns a new array, unless ``copy=False``: then a float32 C-contiguous ``x`` is normalised in
    place (and returned), which saves a full copy when the caller owns the array.
    """
    arr, owned = _as_float32_2d(x, name)
    norms = _row_norms(arr, name)
    out = arr if (owned or not copy) else np.empty_like(arr)
    return _divide_rows(arr, norms, out)


def unit_rows(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """``x`` as float32 C-contiguous unit rows, without a copy when it already is (else one normalised copy).

    Zero rows count as normalised (they stay zero).  Costs one read of ``x`` to check norms and finiteness.
    """
    arr, owned = _as_float32_2d(x, name)
    norms = _row_norms(arr, name)
    if bool(np.all((np.abs(norms - 1.0) <= UNIT_NORM_TOL) | (norms == 0))):
        return arr
    return _divide_rows(arr, norms, arr if owned else np.empty_like(arr))


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
    """Top-``k`` gallery items per query: (scores (nq, k), indices (nq, k)), best first; inputs normalised here.

    On CPU this is FAISS's brute-force ``knn`` over the gallery array itself (what ``IndexFlatIP``
    runs), so a large gallery is not copied into an index first.
    """
    q, g = unit_rows(query, "query_emb"), unit_rows(gallery, "gallery_emb")
    _check_dims(q, g)
    k = min(k, g.shape[0])
    if _want_gpu(use_gpu):
        return build_index(g, k, use_gpu).search(q, k)
    return faiss.knn(q, g, k, metric=faiss.METRIC_INNER_PRODUCT)


def _check_dims(q: np.ndarray, g: np.ndarray) -> None:
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query_emb has dim {q.shape[1]} but gallery_emb has dim {g.shape[1]}")
    if g.shape[0] == 0:
        raise ValueError("gallery_emb is empty")
    if q.shape[0] == 0:
        raise ValueError("query_emb is empty")


def _check_block_bytes(block_bytes: int) -> int:
    if isinstance(block_bytes, bool) or not isinstance(block_bytes, int | np.integer) or block_bytes < 4:
        raise ValueError(f"block_bytes must be an integer >= 4 (bytes of float32 scores per block), got {block_bytes!r}")
    return int(block_bytes)


@dataclass(frozen=True)
class _Tiling:
    """Candidate columns cut into owned ranges ``starts[t]:starts[t+1]``; every block is ``width`` columns
    wide (a tile near the end is shifted left to stay full width) and at most ``rows`` ranked rows tall."""

    starts: np.ndarray
    width: int
    rows: int


def _plan_tiles(n_rows: int, n_cols: int, lo: np.ndarray, hi: np.ndarray, block_elems: int) -> _Tiling:
    """Tile shapes for ranking ``n_rows`` rows against ``n_cols`` candidates within ``block_elems`` scores.

    Width ~ sqrt(block * n_cols / n_rows) gives each tile about as many ranked rows (those whose
    positives it owns) as fit in a block, so blocks stay tall and wide whatever the gallery size.
    Tile boundaries never split one row's positive range (an image's captions), so each chunk of rows
    finds all its positives in one block.
    """
    longest = int((hi - lo).max())
    width = int(math.sqrt(block_elems * n_cols / n_rows))
    width = min(n_cols, max(width, longest, 1))
    n_tiles = -(-n_cols // width)
    width = -(-n_cols // n_tiles)  # balanced: no thin last tile
    width = min(n_cols, max(-(-width // _COL_ALIGN) * _COL_ALIGN, longest))
    if longest <= 1:
        starts = np.append(np.arange(0, n_cols, width), n_cols)
    else:
        # Boundary p is allowed unless lo < p < hi for some range.
        inside = np.zeros(n_cols + 1, dtype=np.int64)
        np.add.at(inside, lo + 1, 1)
        np.add.at(inside, hi, -1)
        allowed = np.flatnonzero(np.cumsum(inside) <= 0)  # includes 0 and n_cols
        bounds = [0]
        while bounds[-1] < n_cols:
            target = bounds[-1] + width
            nxt = n_cols if target >= n_cols else int(allowed[np.searchsorted(allowed, target, "right") - 1])
            bounds.append(nxt)  # > previous: the next allowed boundary is at most `longest` away
        starts = np.asarray(bounds)
    block_width = int(np.diff(starts).max())
    return _Tiling(starts=starts, width=block_width, rows=max(1, block_elems // block_width))


ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _scorer(gpu: bool) -> ScoreFn:
    """score(x, y, buf) -> x @ y.T as float32 (nx, ny); on CPU written into ``buf`` (no allocation)."""
    if gpu:
        return lambda x, y, buf: np.asarray(
            faiss.pairwise_distance_gpu(_gpu_resources(), x, y, metric=faiss.METRIC_INNER_PRODUCT), dtype=np.float32)
    # The BLAS product faiss.pairwise_distances runs for METRIC_INNER_PRODUCT, minus its extra output copy.
    return lambda x, y, buf: np.matmul(x, y.T, out=buf[: x.shape[0] * y.shape[0]].reshape(x.shape[0], y.shape[0]))


def _count_ge(scores: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Per row i: number of entries of ``scores[i]`` that are >= ``best[i]``."""
    if scores.shape[1] and scores.strides[1] == scores.itemsize:
        # Row by row keeps the boolean temporary small (one row), and count_nonzero on a contiguous
        # row is several times faster than a 2-D sum.
        return np.fromiter((np.count_nonzero(row >= b) for row, b in zip(scores, best, strict=True)),
                           dtype=np.int64, count=scores.shape[0])
    return (scores >= best[:, None]).sum(axis=1)


def _best_positive_ranks(
    ranked: np.ndarray,
    order: np.ndarray,
    cands: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    score: ScoreFn,
    block_bytes: int,
    candidates_first: bool,
) -> np.ndarray:
    """Rank of each ranked row among the candidates, pessimistic ties.

    Row ``ranked[order[i]]``'s positives are ``cands[lo[i]:hi[i]]`` (``lo`` non-decreasing, ranges
    equal or disjoint); its rank is ``1 +`` the number of non-positive candidates scoring ``>=`` its best
    positive.  Returns ranks in the order of ``order``.

    Every score of one chunk of rows comes from products of one shape (chunk x tile width), the
    positive's included, so a candidate identical to the positive scores bit-identically and ties.
    ``candidates_first`` computes blocks as candidates x rows (then transposed), which is the shape
    image->text has always used.
    """
    n, n_cols = len(order), cands.shape[0]
    plan = _plan_tiles(n, n_cols, lo, hi, max(1, block_bytes // 4))
    starts, width = plan.starts, plan.width
    buf = np.empty(plan.rows * width, dtype=np.float32)  # reused by every CPU product: no per-block allocation
    ranks = np.empty(n, dtype=np.int64)
    tile_of = np.searchsorted(starts, lo, "right") - 1
    n_tiles = len(starts) - 1

    def block(chunk: np.ndarray, t: int) -> tuple[int, np.ndarray]:
        w = min(int(starts[t]), n_cols - width)
        window = cands[w:w + width]
        s = score(window, chunk, buf).T if candidates_first else score(chunk, window, buf)
        return w, s

    for t0 in range(n_tiles):
        r0, r1 = np.searchsorted(tile_of, [t0, t0 + 1])
        n_chunks = -(-(r1 - r0) // plan.rows)
        for c in range(n_chunks):  # balanced chunks of at most plan.rows rows
            i0, i1 = r0 + (r1 - r0) * c // n_chunks, r0 + (r1 - r0) * (c + 1) // n_chunks
            chunk = ranked[order[i0:i1]]
            rows = np.arange(i1 - i0)
            w, s = block(chunk, t0)
            first, size = lo[i0:i1] - w, hi[i0:i1] - lo[i0:i1]
            best = s[rows, first]
            for k in range(1, int(size.max())):
                best = np.where(k < size, np.maximum(best, s[rows, np.minimum(first + k, width - 1)]), best)
            counts = _count_ge(s[:, starts[t0] - w: starts[t0 + 1] - w], best)
            for k in range(int(size.max())):  # the positives themselves are not wrong items
                counts -= (k < size) & (s[rows, np.minimum(first + k, width - 1)] >= best)
            for t in range(n_tiles):
                if t != t0:
                    w, s = block(chunk, t)
                    counts += _count_ge(s[:, starts[t] - w: starts[t + 1] - w], best)
            ranks[i0:i1] = 1 + counts
    return ranks


def _check_q2g(q2g: np.ndarray, nq: int, ng: int) -> np.ndarray:
    q2g = np.asarray(q2g)
    if q2g.shape != (nq,) or not np.issubdtype(q2g.dtype, np.integer):
        raise ValueError(f"query_to_gallery must be an integer array of shape ({nq},), got {q2g.dtype} {q2g.shape}")
    if nq and (q2g.min() < 0 or q2g.max() >= ng):
        raise ValueError(f"query_to_gallery has indices outside [0, {ng})")
    return q2g.astype(np.int64)


def _prepare(query_emb: np.ndarray, gallery_emb: np.ndarray, query_to_gallery: np.ndarray,
             use_gpu: bool | str, block_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, ScoreFn]:
    block_bytes = _check_block_bytes(block_bytes)
    q, g = unit_rows(query_emb, "query_emb"), unit_rows(gallery_emb, "gallery_emb")
    _check_dims(q, g)
    q2g = _check_q2g(query_to_gallery, q.shape[0], g.shape[0])
    return q, g, q2g, _scorer(_want_gpu(use_gpu))


def _t2i(q: np.ndarray, g: np.ndarray, q2g: np.ndarray, score: ScoreFn, block_bytes: int) -> np.ndarray:
    order = np.argsort(q2g, kind="stable")  # queries by positive image: a chunk's positives share a tile
    pos = q2g[order]
    ranks = np.empty(len(q2g), dtype=np.int64)
    ranks[order] = _best_positive_ranks(q, order, g, pos, pos + 1, score, block_bytes, candidates_first=False)
    return ranks


def _i2t(q: np.ndarray, g: np.ndarray, q2g: np.ndarray, score: ScoreFn, block_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(q2g, kind="stable")
    by_image = q2g[order]
    captions = q[order]  # queries grouped by image: each image's captions are one contiguous range
    images = np.unique(q2g)  # only captioned images have an image->text rank
    lo, hi = np.searchsorted(by_image, images, "left"), np.searchsorted(by_image, images, "right")
    ranks = _best_positive_ranks(g, images, captions, lo, hi, score, block_bytes, candidates_first=True)
    return ranks, images


def text_to_image_ranks(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    query_to_gallery: np.ndarray,
    use_gpu: bool | str = "auto",
    block_bytes: int = SCORE_BLOCK_BYTES,
) -> np.ndarray:
    """Exact 1-based rank of each query's image among all gallery items, shape (nq,) (pessimistic ties)."""
    q, g, q2g, score = _prepare(query_emb, gallery_emb, query_to_gallery, use_gpu, block_bytes)
    return _t2i(q, g, q2g, score, block_bytes)


def image_to_text_ranks(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    query_to_gallery: np.ndarray,
    use_gpu: bool | str = "auto",
    block_bytes: int = SCORE_BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, images): exact 1-based best rank of each captioned gallery image among all queries.

    ``images`` (sorted gallery rows that have at least one caption) says which image each rank
    belongs to; only those images' embeddings are scored, whatever the gallery size.
    """
    q, g, q2g, score = _prepare(query_emb, gallery_emb, query_to_gallery, use_gpu, block_bytes)
    return _i2t(q, g, q2g, score, block_bytes)


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
    block_bytes: int = SCORE_BLOCK_BYTES,
) -> Ranks:
    """Exact text->image and image->text ranks (pessimistic ties, see the module docstring).

    Memory beyond the inputs: ``block_bytes`` of scores (raised to one row of the widest tile when a
    single row does not fit), one chunk of ranked rows, the queries once more in caption order, and
    O(nq + ng) integers; plus one normalised copy of an input that is not unit-norm float32 already.
    """
    q, g, q2g, score = _prepare(query_emb, gallery_emb, query_to_gallery, use_gpu, block_bytes)
    t2i = _t2i(q, g, q2g, score, block_bytes)
    i2t, images = _i2t(q, g, q2g, score, block_bytes)
    return Ranks(t2i=t2i, i2t=i2t, i2t_images=images)


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
    block_bytes: int = SCORE_BLOCK_BYTES,
) -> dict:
    """T2I and I2T Recall@K (0-100), ``mr``, MedR and MeanR; keys ``t2i_r{k}``, ``i2t_r{k}``, ``mr``,
    ``t2i_medr``, ``i2t_medr``, ``t2i_meanr``, ``i2t_meanr``, ``n_queries``, ``n_images``, ``n_i2t_queries``."""
    ks = _check_ks(ks)
    ranks = retrieval_ranks(query_emb, gallery_emb, query_to_gallery, use_gpu=use_gpu, block_bytes=block_bytes)
    out = summarise_ranks(ranks, ks)
    out["n_images"] = int(np.asarray(gallery_emb).shape[0])
    return out
