"""The ``evaluate`` stage: embed the test gallery and one language's test captions, score, write tables."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ccr.data.tables import read_captions, read_images
from ccr.evaluate.metrics import l2_normalise, retrieval_ranks, search, summarise_ranks
from ccr.features.store import fixed_list
from ccr.io import Progress, batched, stamp, write_table_atomic, write_text_atomic

log = logging.getLogger(__name__)

N_EXAMPLES = 20
TOP_K_EXAMPLES = 5
# Ids per call of a retriever. A student's embed_* call streams its feature table once whatever the number
# of ids (a feature table is one row group), so calls are as large as memory allows: a 20,000-text
# querybank bank read its tables 20 times at 1,024 ids per call. Multiples of the students' 512-row forward
# batches, so the rows are grouped, and the embeddings come out, as at any other multiple.
TEXT_BATCH = 32768  # pooled text rows: 32,768 x 896 float32 is 117 MB
IMAGE_BATCH = 2048  # with 7x7 grid tokens: 2,048 x 49 x 1,280 float32 is 514 MB (also a student's read chunk)


class Retriever(Protocol):
    def embed_images(self, image_ids: list[str]) -> np.ndarray: ...

    def embed_texts(self, caption_ids: list[str]) -> np.ndarray: ...


def embed_in_batches(fn, ids: list[str], what: str, batch: int) -> np.ndarray:
    """Call ``fn`` on ``batch`` ids at a time (progress logged) and check every batch is a finite
    (len(batch), D) array."""
    progress = Progress(len(ids), f"embed {what}")
    parts: list[np.ndarray] = []
    for chunk in batched(ids, batch):
        emb = np.asarray(fn(list(chunk)))
        if emb.ndim != 2 or emb.shape[0] != len(chunk):
            raise ValueError(f"{what}: retriever returned shape {emb.shape} for {len(chunk)} ids; expected ({len(chunk)}, D)")
        if parts and emb.shape[1] != parts[0].shape[1]:
            raise ValueError(f"{what}: retriever changed embedding dim from {parts[0].shape[1]} to {emb.shape[1]}")
        parts.append(emb.astype(np.float32, copy=False))
        progress.update(len(chunk))
    return l2_normalise(np.concatenate(parts), what, copy=False)  # the concatenation is ours: normalise in place


def split_image_ids(images_path: str | os.PathLike, split: str) -> list[str]:
    images = read_images(images_path)
    return images.filter(pc.equal(images["split"], split))["image_id"].to_pylist()


def embed_gallery(retriever: Retriever, inputs: Any, out_path: str | os.PathLike, split: str = "test",
                  fingerprint_: str | None = None) -> pa.Table:
    """The ``split``'s images embedded once by ``retriever`` -> ``out_path`` (image_id, embedding).

    Every query set a model is evaluated on reads these instead of embedding the gallery again.
    """
    image_ids = split_image_ids(inputs.images, split)
    if not image_ids:
        raise ValueError(f"{inputs.images}: no images with split == '{split}'")
    table = write_embeddings(retriever.embed_images, image_ids, "image_id", f"{split} images", out_path,
                             IMAGE_BATCH, fingerprint_)
    log.info("gallery: %d %s images, dim %d -> %s", len(image_ids), split, table["embedding"].type.list_size,
             out_path)
    return table


def write_embeddings(embed: Any, ids: list[str], key: str, what: str, out_path: str | os.PathLike, batch: int,
                     fingerprint_: str | None = None) -> pa.Table:
    """``ids`` embedded by ``embed``, ``batch`` at a time -> ``out_path`` (``key``, embedding), written atomically."""
    emb = embed_in_batches(embed, ids, what, batch)
    table = pa.table({key: pa.array(ids, pa.string()), "embedding": fixed_list(emb)})
    if fingerprint_:
        table = stamp(table, fingerprint_)
    write_table_atomic(table, out_path)
    return table


def read_embeddings(path: str | os.PathLike, key: str) -> tuple[list[str], np.ndarray]:
    """The ``key`` column and float32 embeddings of a table written by :func:`write_embeddings`."""
    table = pq.read_table(path)
    emb = table["embedding"].combine_chunks()
    return table[key].to_pylist(), emb.flatten().to_numpy().reshape(len(emb), emb.type.list_size).astype(
        np.float32, copy=False)


def read_gallery(path: str | os.PathLike, image_ids: Sequence[str]) -> np.ndarray:
    """The gallery embeddings of ``image_ids`` (in that order) from :func:`embed_gallery`'s file."""
    ids, emb = read_embeddings(path, "image_id")
    if ids != list(image_ids):
        raise ValueError(f"{path}: gallery images ({len(ids)}) are not the {len(image_ids)} images evaluated "
                         "(made from another images table?)")
    return l2_normalise(emb, "gallery embeddings")


def _stable_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def pick_examples(caption_ids: Sequence[str], image_of: Sequence[str], n: int = N_EXAMPLES) -> list[int]:
    """Indices of ``n`` queries chosen by a fixed rule (smallest SHA-1 of caption_id, distinct images first).

    The rule ignores system and seed, so every system of a dataset/language shows the same queries.
    """
    order = sorted(range(len(caption_ids)), key=lambda i: _stable_key(caption_ids[i]))
    chosen, seen = [], set()
    for i in order:
        if image_of[i] not in seen:
            chosen.append(i)
            seen.add(image_of[i])
        if len(chosen) == n:
            return chosen
    taken = set(chosen)
    rest = [i for i in order if i not in taken]
    return chosen + rest[: n - len(chosen)]


def _check_tags(tags: dict, lang: str, metric_names: Sequence[str]) -> dict:
    tags = dict(tags)
    if tags.setdefault("lang", lang) != lang:
        raise ValueError(f"tags['lang']={tags['lang']!r} disagrees with lang={lang!r}")
    for key, value in list(tags.items()):
        if isinstance(value, np.generic):
            value = tags[key] = value.item()
        if key in metric_names:
            raise ValueError(f"tag '{key}' collides with a metric column name")
        if not isinstance(value, str | int | float | bool):
            raise ValueError(f"tag '{key}' must be a str/int/float/bool, got {type(value).__name__}")
    return tags


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def human_captions(captions: pa.Table, split: str, lang: str, pattern: str | None = None) -> pa.Table:
    """The human captions of ``split`` in ``lang`` whose caption_id matches ``pattern`` (a regular
    expression; every one when None): a query set, its val reference text, or the English training
    captions."""
    queries = captions.filter(pc.and_(pc.and_(pc.equal(captions["split"], split), pc.equal(captions["lang"], lang)),
                                      pc.equal(captions["origin"], "human")))
    if pattern:
        queries = queries.filter(pc.match_substring_regex(queries["caption_id"], pattern))
    return queries


def evaluate(
    retriever: Retriever,
    inputs: Any,
    lang: str,
    ks: Sequence[int] = (1, 5, 10),
    out_dir: str | os.PathLike = ".",
    tags: dict | None = None,
    use_gpu: bool | str = "auto",
    query_lang: str | None = None,
    query_pattern: str | None = None,
    split: str = "test",
    gallery: str | os.PathLike | None = None,
) -> dict:
    """Evaluate ``retriever`` on ``split`` (the test split; ``val`` for choosing settings) for captions in
    ``lang``; returns the metrics row.

    ``lang`` names the query set in the tags (e.g. ``de-task2``); the queries are the human test
    captions in ``query_lang`` (default: ``lang``) whose caption_id matches the regular expression
    ``query_pattern`` when given (e.g. ``#t2-`` for Multi30K task2 captions).

    ``gallery``: the split's image embeddings made once by :func:`embed_gallery` (shared by every query
    set a model is evaluated on), else they are embedded here.

    Writes ``out_dir/metrics.parquet`` (one row: tags, n_queries, n_images, recalls, mr, MedR, MeanR),
    ``out_dir/metrics.json`` (same values) and ``out_dir/examples.parquet`` (top-5 for 20 fixed queries).
    """
    out_dir = Path(out_dir)
    images_path, captions_path = Path(inputs.images), Path(inputs.captions)
    images = read_images(images_path)
    captions = read_captions(captions_path)

    if split not in ("val", "test"):
        raise ValueError(f"evaluate: split must be 'val' or 'test', got {split!r}")
    images = images.filter(pc.equal(images["split"], split))
    if images.num_rows == 0:
        raise ValueError(f"{images_path}: no images with split == '{split}'")
    query_lang = query_lang or lang
    queries = human_captions(captions, split, query_lang, query_pattern)
    if queries.num_rows == 0:
        langs = sorted(set(captions.filter(pc.equal(captions["split"], split))["lang"].to_pylist()))
        raise ValueError(f"{captions_path}: no human {split} captions with lang == '{query_lang}'"
                         f"{f' and caption_id matching {query_pattern!r}' if query_pattern else ''}"
                         f" ({split} langs present: {langs})")

    image_ids = images["image_id"].to_pylist()
    image_paths = images["path"].to_pylist()
    row_of = {iid: i for i, iid in enumerate(image_ids)}
    caption_ids = queries["caption_id"].to_pylist()
    caption_images = queries["image_id"].to_pylist()
    missing = sorted({iid for iid in caption_images if iid not in row_of})
    if missing:
        raise ValueError(f"{captions_path}: field 'image_id' of {lang} test captions names images that are not test "
                         f"images in {images_path}: {missing[:5]}")
    q2g = np.array([row_of[iid] for iid in caption_images], dtype=np.int64)

    log.info("evaluate %s: %d queries, %d gallery images", lang, len(caption_ids), len(image_ids))
    if gallery is None:
        gallery = embed_in_batches(retriever.embed_images, image_ids, f"{split} images", IMAGE_BATCH)
    else:
        gallery = read_gallery(gallery, image_ids)
    query = embed_in_batches(retriever.embed_texts, caption_ids, f"{split} captions ({lang})", TEXT_BATCH)
    if gallery.shape[1] != query.shape[1]:
        raise ValueError(f"image embeddings have dim {gallery.shape[1]} but text embeddings dim {query.shape[1]}")

    ranks = retrieval_ranks(query, gallery, q2g, use_gpu=use_gpu)
    metrics = summarise_ranks(ranks, ks)
    metrics["n_images"] = len(image_ids)
    tags = _check_tags({**(tags or {}), "split": split}, lang, list(metrics))
    row = {**tags, "n_queries": metrics.pop("n_queries"), "n_images": metrics.pop("n_images"), **metrics}

    # Examples: top-5 retrievals for a fixed set of queries.
    pick = pick_examples(caption_ids, caption_images)
    scores, idx = search(query[pick], gallery, TOP_K_EXAMPLES, use_gpu=use_gpu)
    texts = queries["text"].to_pylist()
    examples = pa.table({
        **{k: pa.array([v] * len(pick)) for k, v in tags.items()},
        "caption_id": pa.array([caption_ids[i] for i in pick], pa.string()),
        "query_text": pa.array([texts[i] for i in pick], pa.string()),
        "true_image_id": pa.array([caption_images[i] for i in pick], pa.string()),
        "true_image_path": pa.array([image_paths[q2g[i]] for i in pick], pa.string()),
        "true_rank": pa.array([int(ranks.t2i[i]) for i in pick], pa.int64()),
        "top_image_ids": pa.array([[image_ids[j] for j in r] for r in idx], pa.list_(pa.string())),
        "top_image_paths": pa.array([[image_paths[j] for j in r] for r in idx], pa.list_(pa.string())),
        "top_scores": pa.array([list(map(float, r)) for r in scores], pa.list_(pa.float32())),
    })

    write_table_atomic(examples, out_dir / "examples.parquet")
    write_text_atomic(json.dumps({k: _json_value(v) for k, v in row.items()}, indent=2) + "\n", out_dir / "metrics.json")
    # metrics.parquet last: its presence marks a finished evaluation.
    write_table_atomic(pa.Table.from_pylist([row]), out_dir / "metrics.parquet")
    log.info("evaluate %s: mR %.2f (T2I R@1 %.2f, I2T R@1 %.2f)", lang, row["mr"],
             row.get("t2i_r1", float("nan")), row.get("i2t_r1", float("nan")))
    return row
