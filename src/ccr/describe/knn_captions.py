"""Describer ``knn-captions``: retrieval-based captioning, the offline stand-in for an MLLM describer.

It is honest about what it is: it writes no new text. An image is described by the English HUMAN captions
of its ``k`` nearest TRAINING images in image-feature space (cosine on the pooled vectors); each view is one
of those captions (``view: caption``) or the captions of one neighbour joined (``view: neighbour``).

Leak rules, enforced here (and asserted on the result):

* The caption pool is filtered first: ``split == "train"``, ``lang == "en"``, ``origin == "human"``, and the
  caption's image is a train image of the images table. Val and test captions are dropped before anything
  is computed, so no output depends on them (tests change them and compare).
* Leave-one-out: a training image is never its own neighbour, and a candidate caption whose normalised
  text equals one of the image's own captions is dropped too (the same sentence written for another photo
  would hand the image its own caption back). Own captions are only ever read for train images.
* The neighbour search sees image features only; the mean used for ``center`` is over train images.

Rows follow the describe stage's contract: ``caption_id = f"{image_id}#desc{v}"``, ``lang = "en"``,
``origin = "description"``, the image's split, ``source_id`` null, image order then view order.

Ranking of the candidate captions of an image (``order``):

* ``nearest``: round-robin over neighbours by similarity: view 0 is the first caption of the nearest
  neighbour, view 1 the first caption of the second nearest, ..., then the second captions. Views come
  from different photos first (more independent evidence than three captions of one photo).
* ``consensus``: each candidate is scored by its mean TF-IDF cosine to the candidates of the OTHER
  neighbours (Devlin et al. 2015, "Exploring nearest neighbor approaches for image captioning"): the
  sentence most neighbours agree on ranks first, so one wrong neighbour does not lead. IDF is computed on
  the training pool. Ties fall back to the ``nearest`` order.

Search: exact, chunked numpy matrix products (about 256 MB of similarities at a time), so 100k x 100k
images run in bounded memory; deterministic (ties broken by the training image's position).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ccr.data.tables import description_rows, validate_captions, validate_images
from ccr.features.store import Features, read_features

log = logging.getLogger("ccr.describe")

__all__ = ["KnnCaptionDescriber", "LeakError", "describe_by_neighbours", "normalise_text"]

VIEW_MODES = ("caption", "neighbour")
ORDERS = ("nearest", "consensus")
FEATURES = ("pooled",)
_SIM_BUDGET = 1 << 26  # float32 similarities held at once (256 MB)
_WORD = re.compile(r"\w+")


class LeakError(AssertionError):
    """A description would carry a caption it must not (own caption, or a non-train caption)."""


def normalise_text(text: str) -> str:
    """Lowercased words joined by single spaces: "A dog runs." and "a dog  runs" are the same sentence."""
    return " ".join(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class _Pool:
    """The English human training captions, grouped by their image (the only text the describer reads)."""

    caption_ids: list[str]
    texts: list[str]
    norm: list[str]
    image_rows: np.ndarray         # (n_pool_images,) row of each pool image in the images table
    starts: np.ndarray             # (n_pool_images + 1,) its captions are caption_ids[starts[j]:starts[j+1]]
    own_norm: dict[str, set[str]]  # train image_id -> normalised texts of ALL its captions (not only the
                                   # captions_per_neighbour kept as candidates): leave-one-out is on all of them


class KnnCaptionDescriber:
    """Describe images by the English human captions of their nearest training images.

    Params (all keyword, with defaults; each is validated here and named in the error):

    * ``k`` (int, 5): neighbours (training images) per image.
    * ``views`` (int, 5): descriptions per image.
    * ``view`` ("caption" | "neighbour", "neighbour"): a view is one caption, or the selected captions of one
      neighbour joined into one passage.
    * ``order`` ("nearest" | "consensus", "nearest"): how candidates (or neighbours) are ranked, see the
      module docstring.
    * ``captions_per_neighbour`` (int | None, 2; None = all): how many captions of each neighbour are
      candidates, the first ones in caption_id order.

    The defaults are the cheapest of the best settings on M30K-F8K val (zero-shot, docs/backends-translate-
    describe.md): five neighbours, each one view of two of its captions.
    * ``dedup`` (bool, True): a caption whose normalised text already appeared is not used again.
    * ``center`` (bool, True): subtract the mean TRAIN image feature before the cosine; removes the
      component every photo shares, which otherwise makes a few "hub" images everyone's neighbour.
    * ``feature`` ("pooled", "pooled"): which column of the image feature table is searched.

    When an image has fewer distinct candidates than ``views``, its views repeat the ranked list from the
    top (logged with a count); the row count stays ``views`` per image as the stage contract requires.
    """

    # what the describe stage must give describe_table besides the images (no pixels are read)
    needs = ("captions", "image_features")

    def __init__(self, k: int = 5, views: int = 5, view: str = "neighbour", order: str = "nearest",
                 captions_per_neighbour: int | None = 2, dedup: bool = True, center: bool = True,
                 feature: str = "pooled"):
        name = "describe backend 'knn-captions'"
        for pname, value in (("k", k), ("views", views)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: param '{pname}' must be an integer >= 1, got {value!r}")
        if captions_per_neighbour is not None and (
                not isinstance(captions_per_neighbour, int) or isinstance(captions_per_neighbour, bool)
                or captions_per_neighbour < 1):
            raise ValueError(f"{name}: param 'captions_per_neighbour' must be an integer >= 1 or null (all), "
                             f"got {captions_per_neighbour!r}")
        for pname, value, allowed in (("view", view, VIEW_MODES), ("order", order, ORDERS),
                                      ("feature", feature, FEATURES)):
            if value not in allowed:
                raise ValueError(f"{name}: param '{pname}' must be one of {list(allowed)}, got {value!r}")
        for pname, value in (("dedup", dedup), ("center", center)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: param '{pname}' must be true or false, got {value!r}")
        if view == "neighbour" and views > k:
            raise ValueError(f"{name}: view 'neighbour' makes one view per neighbour, so param 'views' ({views}) "
                             f"must be <= param 'k' ({k})")
        if view == "caption" and captions_per_neighbour is not None and views > k * captions_per_neighbour:
            raise ValueError(f"{name}: params k * captions_per_neighbour = {k * captions_per_neighbour} "
                             f"candidates cannot give {views} different views (param 'views')")
        self.k, self.views, self.view, self.order = k, views, view, order
        self.captions_per_neighbour, self.dedup, self.center, self.feature = (
            captions_per_neighbour, dedup, center, feature)

    # ---------------------------------------------------------------- public
    def describe_table(self, images: pa.Table, captions: pa.Table, features: Features | str | os.PathLike,
                       image_ids: list[str] | None = None) -> pa.Table:
        """Description rows (captions schema) for every image of ``images`` (or only ``image_ids``, in
        that order; the neighbours still come from all training images), image order then view order."""
        table, _ = self.describe_with_sources(images, captions, features, image_ids)
        return table

    def describe_with_sources(self, images: pa.Table, captions: pa.Table, features: Features | str | os.PathLike,
                              image_ids: list[str] | None = None) -> tuple[pa.Table, list[list[list[str]]]]:
        """As :meth:`describe_table`, plus, per image and view, the caption_ids the view was made of."""
        images = validate_images(images, where="knn-captions images")
        captions = validate_captions(captions, where="knn-captions captions")
        all_ids = images.column("image_id").to_pylist()
        row_of = {iid: i for i, iid in enumerate(all_ids)}
        if image_ids is None:
            image_ids = all_ids
        unknown = [i for i in image_ids if i not in row_of]
        if unknown:
            raise KeyError(f"knn-captions: image_ids not in the images table, e.g. {unknown[:3]}")
        query_rows = np.array([row_of[i] for i in image_ids], dtype=np.int64)
        all_splits = images.column("split").to_pylist()
        splits = [all_splits[r] for r in query_rows]
        pool = self._pool(images, captions)
        vectors = self._vectors(features, all_ids)
        train_rows = pool.image_rows
        neighbours = self._search(vectors, train_rows, query_rows)  # (n, k) indices into the pool images
        idf, word_ids = _idf(pool.norm) if self.order == "consensus" else (None, None)

        sources: list[list[list[str]]] = []
        texts: list[list[str]] = []
        padded = 0
        for q, row in enumerate(query_rows.tolist()):
            # own captions are looked up for train images only: val/test captions are never read
            own_norm = pool.own_norm.get(all_ids[row], set()) if all_splits[row] == "train" else set()
            units = self._units(pool, neighbours[q], own_norm, idf, word_ids)
            if len(units) < self.views:
                padded += 1
            chosen = [units[v % len(units)] for v in range(self.views)]
            sources.append([[pool.caption_ids[c] for c in unit] for unit in chosen])
            texts.append([_join([pool.texts[c] for c in unit]) for unit in chosen])
        if padded:
            log.info("knn-captions: %d of %d images had fewer than %d distinct candidates; their views repeat",
                     padded, len(image_ids), self.views)
        table = description_rows(list(image_ids), splits, texts, where="knn-captions output")
        self._check(list(image_ids), splits, captions, sources, pool)
        return table, sources

    # ---------------------------------------------------------------- steps
    def _pool(self, images: pa.Table, captions: pa.Table) -> _Pool:
        split_of = dict(zip(images.column("image_id").to_pylist(), images.column("split").to_pylist(), strict=True))
        row_of = {iid: i for i, iid in enumerate(images.column("image_id").to_pylist())}
        keep = [(cid, iid, text) for cid, iid, lang, text, origin, split in zip(
            *(captions.column(c).to_pylist() for c in ("caption_id", "image_id", "lang", "text", "origin", "split")),
            strict=True) if split == "train" and lang == "en" and origin == "human"]
        for cid, iid, _ in keep:
            if split_of.get(iid) != "train":
                raise LeakError(f"knn-captions: caption '{cid}' is a train caption (field 'split') but its image "
                                f"'{iid}' is {'missing from' if iid not in split_of else 'not train in'} the images "
                                f"table; refusing to use it")
        if not keep:
            raise ValueError("knn-captions: the captions table has no English human training captions "
                             "(split == 'train', lang == 'en', origin == 'human') to describe images with")
        # Grouped by image in images-table order, captions in caption_id order: deterministic whatever
        # the row order of the captions table.
        keep.sort(key=lambda t: (row_of[t[1]], t[0]))
        cpn = self.captions_per_neighbour
        per_image: dict[str, list[tuple[str, str]]] = {}
        own_norm: dict[str, set[str]] = {}
        for cid, iid, text in keep:
            own_norm.setdefault(iid, set()).add(normalise_text(text))
            group = per_image.setdefault(iid, [])
            if cpn is None or len(group) < cpn:
                group.append((cid, text))
        rows = np.array([row_of[iid] for iid in per_image], dtype=np.int64)
        starts = np.zeros(len(rows) + 1, dtype=np.int64)
        starts[1:] = np.cumsum([len(g) for g in per_image.values()])
        flat = [c for g in per_image.values() for c in g]
        if len(rows) < self.k + 1:
            raise ValueError(f"knn-captions: param 'k' ({self.k}) needs at least k + 1 = {self.k + 1} training "
                             f"images with English human captions (leave-one-out); the data has {len(rows)}")
        return _Pool(caption_ids=[c for c, _ in flat], texts=[t for _, t in flat],
                     norm=[normalise_text(t) for _, t in flat], image_rows=rows, starts=starts, own_norm=own_norm)

    def _vectors(self, features: Features | str | os.PathLike, image_ids: list[str]) -> np.ndarray:
        feats = features if isinstance(features, Features) else read_features(features, with_tokens=False)
        try:
            feats = feats.take(image_ids)
        except KeyError as err:
            where = "" if isinstance(features, Features) else f" {features}"
            raise KeyError(f"knn-captions: image feature table{where}: {err.args[0]}") from err
        return np.asarray(feats.pooled, dtype=np.float32)

    def _search(self, vectors: np.ndarray, train_rows: np.ndarray, query_rows: np.ndarray | None = None,
                ) -> np.ndarray:
        """(n_queries, k) pool-image indices of the nearest training images of the images at ``query_rows``
        (rows of ``vectors``; all by default), nearest first."""
        x = vectors.astype(np.float64)
        if self.center:
            x = x - x[train_rows].mean(axis=0)  # train images only: val/test pixels move nothing
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        x = x.astype(np.float32)
        base = np.ascontiguousarray(x[train_rows].T)  # (D, n_train)
        query_rows = np.arange(len(x)) if query_rows is None else np.asarray(query_rows, dtype=np.int64)
        n, n_train, k = len(query_rows), len(train_rows), self.k
        own_all = np.full(len(x), -1, dtype=np.int64)
        own_all[train_rows] = np.arange(n_train)
        own = own_all[query_rows]  # pool index of each query image when it is a training image, else -1
        chunk = max(1, _SIM_BUDGET // max(n_train, 1))
        out = np.empty((n, k), dtype=np.int64)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            sims = x[query_rows[lo:hi]] @ base  # (b, n_train)
            rows = np.nonzero(own[lo:hi] >= 0)[0]
            sims[rows, own[lo:hi][rows]] = -np.inf  # leave-one-out: never one's own neighbour
            cand = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            cs = np.take_along_axis(sims, cand, axis=1)
            # A tie at the k-th similarity: argpartition's pick among the tied is arbitrary, so such rows
            # take the first k of a stable sort (equal similarities by training-image position).
            ties = np.nonzero((sims >= cs.min(axis=1, keepdims=True)).sum(axis=1) > k)[0]
            for t in ties:
                cand[t] = np.argsort(-sims[t], kind="stable")[:k]
                cs[t] = sims[t, cand[t]]
            # nearest first; equal similarities by training-image position (stable, deterministic)
            order = np.lexsort((cand, -cs), axis=1)
            out[lo:hi] = np.take_along_axis(cand, order, axis=1)
        return out

    def _units(self, pool: _Pool, neighbours: np.ndarray, own_norm: set[str], idf: np.ndarray | None,
               word_ids: list[np.ndarray] | None) -> list[list[int]]:
        """The ranked views of one image as lists of pool-caption indices (length >= 1)."""
        per_nb: list[list[int]] = []
        for j in neighbours:
            caps = [c for c in range(pool.starts[j], pool.starts[j + 1]) if pool.norm[c] not in own_norm]
            per_nb.append(caps)
        flat = [(pos, rank, c) for rank, caps in enumerate(per_nb) for pos, c in enumerate(caps)]
        if not flat:
            raise LeakError("knn-captions: every neighbour caption equals one of the image's own captions; "
                            "raise param 'k'")
        score: dict[int, float] = {}
        if self.order == "consensus":
            score = _consensus([(rank, c) for _, rank, c in flat], idf, word_ids)
        if self.view == "caption":
            # nearest: round-robin (position within neighbour, neighbour rank); consensus: score first
            flat.sort(key=lambda t: (-score.get(t[2], 0.0), t[0], t[1]))
            units, seen = [], set()
            for _, _, c in flat:
                if self.dedup and pool.norm[c] in seen:
                    continue
                seen.add(pool.norm[c])
                units.append([c])
            return units
        # view == "neighbour": one unit per neighbour, ranked by the mean score of its captions
        ranked = []
        for rank, caps in enumerate(per_nb):
            if caps:
                mean = float(np.mean([score.get(c, 0.0) for c in caps]))
                ranked.append((-mean, rank, caps))
        ranked.sort(key=lambda t: (t[0], t[1]))
        units, seen = [], set()
        for _, _, caps in ranked:
            if self.dedup:
                caps = [c for c in caps if pool.norm[c] not in seen]
                seen.update(pool.norm[c] for c in caps)
            if caps:
                units.append(caps)
        return units

    def _check(self, image_ids: list[str], splits: list[str], captions: pa.Table,
               sources: list[list[list[str]]], pool: _Pool) -> None:
        """Assert the leak rules on the result (cheap; a bug here must never produce a silent leak)."""
        allowed = set(pool.caption_ids)
        cap_image = dict(zip(captions.column("caption_id").to_pylist(), captions.column("image_id").to_pylist(),
                             strict=True))
        norm_of = dict(zip(pool.caption_ids, pool.norm, strict=True))
        own_norm = pool.own_norm
        for iid, split, views in zip(image_ids, splits, sources, strict=True):
            for unit in views:
                for cid in unit:
                    if cid not in allowed:
                        raise LeakError(f"knn-captions: image '{iid}' got caption '{cid}', which is not an "
                                        f"English human training caption")
                    if cap_image[cid] == iid:
                        raise LeakError(f"knn-captions: image '{iid}' got its own caption '{cid}'")
                    if split == "train" and norm_of[cid] in own_norm.get(iid, ()):
                        raise LeakError(f"knn-captions: image '{iid}' got caption '{cid}', whose text equals one "
                                        f"of its own captions")


def describe_by_neighbours(images: pa.Table, captions: pa.Table, features: Features | str | os.PathLike,
                           k: int = 5, views: int = 5, view: str = "neighbour", order: str = "nearest",
                           captions_per_neighbour: int | None = 2, dedup: bool = True, center: bool = True,
                           feature: str = "pooled", image_ids: list[str] | None = None) -> pa.Table:
    """Descriptions of every image of ``images`` from its nearest training images' English human captions.

    ``images``: images table (all splits are described); ``captions``: captions table (only English human
    TRAIN rows are read); ``features``: image feature table (path or :class:`~ccr.features.store.Features`)
    with a row for every image. ``image_ids``: describe only these (in that order), e.g. val for a quick
    selection run; neighbours still come from all training images. Params: see :class:`KnnCaptionDescriber`.
    Returns a captions-schema table of ``len(images) * views`` rows (``len(image_ids) * views``).
    """
    return KnnCaptionDescriber(k=k, views=views, view=view, order=order,
                               captions_per_neighbour=captions_per_neighbour, dedup=dedup, center=center,
                               feature=feature).describe_table(images, captions, features, image_ids)


def _join(texts: list[str]) -> str:
    """Captions of one neighbour as one passage; each ends with a full stop so sentences stay sentences."""
    parts = [" ".join(t.split()) for t in texts]
    return " ".join(p if p[-1:] in ".!?" else f"{p}." for p in parts) if len(parts) > 1 else parts[0]


def _idf(norm_texts: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Smoothed IDF over the training pool and each pool caption's word ids."""
    vocab: dict[str, int] = {}
    word_ids = []
    for text in norm_texts:
        word_ids.append(np.array([vocab.setdefault(w, len(vocab)) for w in text.split()], dtype=np.int64))
    df = Counter(int(w) for ids in word_ids for w in set(ids.tolist()))
    n = len(norm_texts)
    idf = np.array([math.log((1 + n) / (1 + df[i])) + 1.0 for i in range(len(vocab))])
    return idf, word_ids


def _consensus(cands: list[tuple[int, int]], idf: np.ndarray, word_ids: list[np.ndarray]) -> dict[int, float]:
    """Candidate (neighbour rank, pool caption) -> mean TF-IDF cosine to the candidates of other neighbours."""
    caps = [c for _, c in cands]
    ranks = np.array([r for r, _ in cands])
    local = {w: i for i, w in enumerate(np.unique(np.concatenate([word_ids[c] for c in caps])).tolist())}
    m = np.zeros((len(caps), len(local)))
    for i, c in enumerate(caps):
        for w in word_ids[c].tolist():
            m[i, local[w]] += idf[w]
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    sim = m @ m.T
    other = ranks[:, None] != ranks[None, :]
    counts = other.sum(axis=1)
    mean = np.where(counts > 0, (sim * other).sum(axis=1) / np.maximum(counts, 1), 0.0)
    out: dict[int, float] = {}
    for c, s in zip(caps, mean.tolist(), strict=True):
        out[c] = max(out.get(c, -1.0), round(s, 12))  # rounded: equal scores compare equal across platforms
    return out
