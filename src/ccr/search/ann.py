"""Top-k search indexes over a gallery of embeddings, for serving (FAISS, inner product = cosine).

Evaluation never uses these: its ranks stay exact (:mod:`ccr.evaluate.metrics`).  An index is chosen
by a config-like ``kind`` plus that kind's ``params`` (defaults in :data:`PARAMS`):

* ``exact`` (``IndexFlatIP``): brute force, the reference; no params.
* ``ivf`` (``IndexIVFFlat``): spherical k-means cuts the gallery into ``nlist`` lists; a query scans
  the ``nprobe`` lists nearest to it.  Trained on ``train_size`` gallery rows drawn at random
  (``seed``) with ``niter`` k-means iterations.  Vectors are stored uncompressed, so the only
  approximation is which lists are scanned (recall rises with ``nprobe``).
* ``hnsw`` (``IndexHNSWFlat``): a graph with ``M`` links per node, built with beam ``efConstruction``,
  searched with beam ``efSearch``; no training.

Embeddings are L2-normalised here as they are added, block by block (no normalised copy of the whole
gallery), and so are queries: scores are cosine similarities and ``exact`` equals the evaluation's
brute force.  Indexes are saved and loaded with ``faiss.write_index`` / ``faiss.read_index`` (no
pickle); the search-time params (``nprobe``, ``efSearch``) travel inside the file.  FAISS's thread
count (``faiss.omp_set_num_threads``) is the caller's to set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ccr.evaluate.metrics import l2_normalise

# kind -> param -> default (None: derived from the gallery size, see index_params).
PARAMS: dict[str, dict[str, int | None]] = {
    "exact": {},
    "ivf": {"nlist": None, "nprobe": None, "train_size": None, "niter": 20, "seed": 0},
    # efConstruction 100: at 1M calibrated vectors FAISS's own default (40) built a graph that stopped at
    # recall@10 0.96 whatever efSearch; 100 reached 0.999 at efSearch 128 for 1.2x the build time.
    # efSearch 128: recall@10 0.996 on 98k real caption embeddings (64: 0.989).
    # Figures: docs/scale.md (bench/ann_index.py).
    "hnsw": {"M": 32, "efConstruction": 100, "efSearch": 128},
}
# Default nprobe = nlist // NPROBE_FRACTION: on 98k real caption embeddings nlist/8 lists gave recall@10
# ~0.97, on the 1M calibrated synthetic set ~0.995 (docs/scale.md).  Fewer lists trade recall for speed.
NPROBE_FRACTION = 8
KINDS = tuple(PARAMS)
# Params that may be changed per search call (the rest are fixed when the index is built).
SEARCH_PARAMS: dict[str, tuple[str, ...]] = {"exact": (), "ivf": ("nprobe",), "hnsw": ("efSearch",)}
# k-means wants at least this many training points per list (FAISS warns below 39).
MIN_POINTS_PER_LIST = 39
# Default training sample per list: above FAISS's minimum of 39 and a quarter of its 256 cap, so k-means
# on a 1M gallery trains on 64k rows (the whole IVF build took 57 s here, adding included).
TRAIN_POINTS_PER_LIST = 64
# Rows normalised and added per FAISS call: bounds the normalised copy to this many rows.
ADD_BLOCK_ROWS = 65_536


def _check_kind(kind: str) -> str:
    if kind not in PARAMS:
        raise ValueError(f"unknown index kind {kind!r}; known: {', '.join(KINDS)}")
    return kind


def _int_param(kind: str, name: str, value: Any, low: int, high: int | None = None, why: str = "") -> int:
    """``value`` as an int in [low, high], else a ValueError naming the param."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{kind} param '{name}' must be an integer {bound}{why}, got {value!r}")
    return int(value)


def index_params(kind: str, params: Mapping[str, Any] | None = None, n: int | None = None) -> dict[str, int]:
    """Validated params of ``kind`` with defaults filled in; ``n`` (gallery rows) checks and sizes the IVF ones.

    Raises ValueError naming the kind or the param (unknown names, wrong types, out of range).
    """
    _check_kind(kind)
    given = dict(params or {})
    unknown = sorted(set(given) - set(PARAMS[kind]))
    if unknown:
        known = ", ".join(PARAMS[kind]) or "none"
        raise ValueError(f"unknown {kind} param(s) {', '.join(map(repr, unknown))}; known: {known}")
    out: dict[str, Any] = {**PARAMS[kind], **given}
    if kind == "ivf":
        if out["nlist"] is None:
            if n is None:
                raise ValueError("ivf param 'nlist' has no default without the gallery size")
            # sqrt(n) lists of sqrt(n) items: the usual balance of list scan vs quantiser cost.
            out["nlist"] = max(1, min(round(math.sqrt(n)), n // MIN_POINTS_PER_LIST))
        nlist = _int_param(kind, "nlist", out["nlist"], 1, n, " (at most the number of embeddings)" if n else "")
        out["nlist"] = nlist
        if out["nprobe"] is None:
            out["nprobe"] = max(1, nlist // NPROBE_FRACTION)
        out["nprobe"] = _int_param(kind, "nprobe", out["nprobe"], 1, nlist, " (at most nlist)")
        if out["train_size"] is None and n is not None:
            out["train_size"] = min(n, TRAIN_POINTS_PER_LIST * nlist)
        if out["train_size"] is not None:
            out["train_size"] = _int_param(kind, "train_size", out["train_size"], nlist, n,
                                           " (at least nlist, at most the number of embeddings)")
        out["niter"] = _int_param(kind, "niter", out["niter"], 1)
        out["seed"] = _int_param(kind, "seed", out["seed"], 0)
    elif kind == "hnsw":
        out["M"] = _int_param(kind, "M", out["M"], 2, 512)
        out["efConstruction"] = _int_param(kind, "efConstruction", out["efConstruction"], 1)
        out["efSearch"] = _int_param(kind, "efSearch", out["efSearch"], 1)
    return out


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array (n, dim), got shape {x.shape}")
    return x


def add(index: faiss.Index, embeddings: np.ndarray) -> None:
    """Append ``embeddings`` (n, dim) to ``index`` (ids continue from ``index.ntotal``), normalised block by block."""
    embeddings = _as_2d(embeddings, "embeddings")
    if embeddings.shape[1] != index.d:
        raise ValueError(f"embeddings have dim {embeddings.shape[1]} but the index has dim {index.d}")
    for start in range(0, embeddings.shape[0], ADD_BLOCK_ROWS):
        block = l2_normalise(embeddings[start:start + ADD_BLOCK_ROWS], "embeddings")  # a block-sized copy
        index.add(block)


def build_index(embeddings: np.ndarray, kind: str = "exact", params: Mapping[str, Any] | None = None) -> faiss.Index:
    """An index of ``kind`` over ``embeddings`` (n, dim); row i gets id i.  See the module docstring for kinds.

    More rows can be appended later with :func:`add` (an IVF index keeps the lists it was trained with).
    """
    embeddings = _as_2d(embeddings, "embeddings")
    n, dim = embeddings.shape
    p = index_params(kind, params, n)
    index: faiss.Index
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, p["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.niter, index.cp.seed = p["niter"], p["seed"]
        index.cp.spherical = True  # unit-norm data: centroids are renormalised, k-means on the sphere
        index.nprobe = p["nprobe"]
        rng = np.random.default_rng(p["seed"])
        sample = np.sort(rng.choice(n, p["train_size"], replace=False))  # sorted: a forward read of the rows
        index.train(l2_normalise(embeddings[sample], "embeddings"))
    else:
        index = faiss.IndexHNSWFlat(dim, p["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p["efConstruction"]
        index.hnsw.efSearch = p["efSearch"]
    add(index, embeddings)
    return index


def index_kind(index: faiss.Index) -> str:
    """The ``kind`` of an index made by :func:`build_index` (ValueError for any other index)."""
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError("not a ccr search index: its metric is not inner product")
    if isinstance(index, faiss.IndexFlat):
        return "exact"
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf"
    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw"
    raise ValueError(f"not a ccr search index: {type(index).__name__}")


def _search_parameters(kind: str, params: Mapping[str, Any] | None, index: faiss.Index):
    if not params:
        return None
    allowed = SEARCH_PARAMS[kind]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{kind} index: param(s) {', '.join(map(repr, unknown))} cannot change at search time; "
                         f"allowed: {', '.join(allowed) or 'none'}")
    if kind == "ivf":
        nprobe = _int_param(kind, "nprobe", params["nprobe"], 1, index.nlist, " (at most the index's nlist)")
        return faiss.SearchParametersIVF(nprobe=nprobe)
    return faiss.SearchParametersHNSW(efSearch=_int_param(kind, "efSearch", params["efSearch"], 1))


def search(index: faiss.Index, queries: np.ndarray, k: int,
           params: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` per query: (scores (nq, k) float32 cosine, ids (nq, k) int64), best first.

    ``params`` overrides the search-time params for this call only (``nprobe`` for ivf, ``efSearch``
    for hnsw).  Where an approximate index finds fewer than ``k`` items, ids are -1.
    """
    kind = index_kind(index)
    queries = _as_2d(queries, "queries")
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dim {queries.shape[1]} but the index has dim {index.d}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if index.ntotal == 0:
        raise ValueError("the index is empty")
    sp = _search_parameters(kind, params, index)
    q = l2_normalise(queries, "queries")
    k = min(int(k), index.ntotal)
    return index.search(q, k) if sp is None else index.search(q, k, params=sp)


def save_index(index: faiss.Index, path: str | os.PathLike) -> None:
    """Write ``index`` with ``faiss.write_index`` (atomically: a temporary file, then a rename)."""
    index_kind(index)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_index(path: str | os.PathLike) -> faiss.Index:
    """Read an index written by :func:`save_index` (``faiss.read_index``); its search params come with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such index file")
    index = faiss.read_index(str(path))
    index_kind(index)
    return index
