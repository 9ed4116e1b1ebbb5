"""The ``features`` stage: run a frozen encoder once over a dataset and cache the vectors in Parquet.

Output files are keyed by :func:`encoder_key` (backend + the settings that change the numbers), are
written shard by shard with :class:`ccr.io.ShardedWriter` (a crashed run resumes without lost or
duplicated rows) and appear only when complete.  The encoder name and settings go into the schema
metadata (``ccr.encoder``) so a feature file says what produced it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from ccr.data.tables import concat_captions, read_captions, read_images
from ccr.features.images import IMAGE_ENCODERS, ImageEncoder
from ccr.features.store import (
    encoder_meta,
    fixed_grid,
    fixed_list,
    image_feature_schema,
    ragged_tokens,
    read_rows,
    text_feature_schema,
)
from ccr.features.texts import TEXT_ENCODERS, TextEncoder, check_langs
from ccr.io import (
    Part,
    Progress,
    ShardedWriter,
    fingerprint,
    path_fingerprint,
    plan_shards,
    read_fingerprint,
)
from ccr.keys import encoder_key

log = logging.getLogger("ccr.features")

class ImageLoadError(ValueError):
    """An image file that is missing or cannot be decoded; the message names the file and the image_id."""


def load_image(path: str | os.PathLike, image_id: str | None = None) -> Image.Image:
    """Open and fully decode ``path`` as RGB, or raise :class:`ImageLoadError` naming file and image_id."""
    who = f"image_id '{image_id}' " if image_id is not None else ""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{who}file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not later inside the encoder
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"{who}cannot read image file {path}: {err}") from err


def _meta(kind: str, backend: str, params: dict) -> dict[str, Any]:
    return {"kind": kind, "backend": backend, "params": params or {}, "key": encoder_key(backend, params)}


def embed_images(images_path: str | os.PathLike, backend: str, params: dict, out_path: str | os.PathLike,
                 shard_size: int = 64, hints: dict | None = None, part: Part | None = None) -> None:
    """Image features for every row of ``images_path`` -> ``out_path`` (image_feature_schema).

    ``part=(i, n)``: only the i-th of n parts of the images (a scattered job; see :func:`ccr.io.gather_parts`).
    """
    params = dict(params or {})
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    images = read_images(images_path)
    ids = images.column("image_id").to_pylist()
    position = {k: i for i, k in enumerate(ids)}
    inputs = {"images": read_fingerprint(images_path)}
    shards = plan_shards(ids, shard_size, part)
    mine = [k for shard in shards for k in shard]
    if backend == PRECOMPUTED:
        _select_precomputed(mine, images_path, params, out_path, inputs, part, position)
        return
    paths = dict(zip(ids, images.column("path").to_pylist(), strict=True))
    missing = [(i, paths[i]) for i in mine if not Path(paths[i]).is_file()]
    if missing:  # fail before hours of encoding, naming what is missing
        raise ImageLoadError(
            f"{images_path}: {len(missing)} image file(s) not found, e.g. "
            + "; ".join(f"image_id '{i}': {p}" for i, p in missing[:3])
        )

    encoder: ImageEncoder = IMAGE_ENCODERS.create(backend, hints=hints, **params)
    schema = image_feature_schema(encoder.dim, encoder.n_tokens, _meta("image", backend, params))
    fp = fingerprint("embed_images", {"encoder": encoder_key(backend, params)}, inputs)
    writer = ShardedWriter(out_path, key="image_id", schema=schema, fingerprint=fp,
                           resume_key={"shard_size": shard_size, "part": part})
    todo = writer.pending_shards(shards)
    n_todo = sum(len(chunk) for chunk in todo)
    log.info("embed_images %s (%s): %d images%s, %d to do -> %s", backend, encoder_key(backend, params),
             len(mine), f" (part {part[0] + 1} of {part[1]})" if part else "", n_todo, out_path)
    progress = Progress(n_todo, f"embed_images {backend}")
    for chunk in todo:
        pils = [load_image(paths[i], i) for i in chunk]
        pooled, tokens = encoder.encode(pils)
        if pooled.shape != (len(chunk), encoder.dim):
            raise RuntimeError(f"image encoder '{backend}' returned pooled {pooled.shape}, expected {(len(chunk), encoder.dim)}")
        columns: dict[str, pa.Array] = {"image_id": pa.array(list(chunk), pa.string()), "pooled": fixed_list(pooled)}
        if encoder.n_tokens:
            if tokens is None or tokens.shape != (len(chunk), encoder.n_tokens, encoder.dim):
                got = None if tokens is None else tokens.shape
                raise RuntimeError(f"image encoder '{backend}' returned tokens {got}, expected {(len(chunk), encoder.n_tokens, encoder.dim)}")
            columns["tokens"] = fixed_grid(tokens)
        writer.write(pa.table(columns))
        progress.update(len(chunk))
    writer.finish(order=mine, part=part, positions=position if part else None)
    log.info("embed_images: wrote %d rows to %s", len(mine), out_path)


PRECOMPUTED = "precomputed"


def _select_precomputed(ids: list[str], images_path: str | os.PathLike, params: dict,
                        out_path: str | os.PathLike, inputs: dict[str, str], part: Part | None,
                        position: dict[str, int]) -> None:
    """Backend ``precomputed``: features that come with the dataset (image or video-frame features).

    ``params.path`` is a feature table (e.g. the one the ``nrccr`` importer writes), a BigFile folder
    (feature.bin, id.txt, shape.txt) or a Parquet frame table; for video frames, ``frames_per_video``
    (T) and ``frame_id_sep`` group and sample frames into T visual tokens (see ccr.data.bigfile), which
    the student's visual head pools (``visual_pooling: mean | attention``).
    """
    import tempfile

    from ccr.data.bigfile import bigfile_to_feature_table

    unknown = sorted(set(params) - {"path", "frames_per_video", "frame_id_sep"})
    if unknown:
        raise ValueError(f"image encoder '{PRECOMPUTED}': unknown param(s) {unknown}; "
                         "known: path, frames_per_video, frame_id_sep")
    if "path" not in params:
        raise ValueError(f"image encoder '{PRECOMPUTED}': param 'path' is required")
    source = Path(params["path"])
    if not source.exists():
        raise FileNotFoundError(f"image encoder '{PRECOMPUTED}': param 'path' not found: {source}")
    fp = fingerprint("embed_images", {"encoder": encoder_key(PRECOMPUTED, params)},
                     {**inputs, "source": path_fingerprint(source)})
    with tempfile.TemporaryDirectory() as tmp:
        if source.is_dir() or "frames_per_video" in params:
            converted = Path(tmp) / "features.parquet"
            bigfile_to_feature_table(source, converted, frames_per_video=params.get("frames_per_video"),
                                     frame_id_sep=params.get("frame_id_sep", "_"))
            source = converted
        table = pq.read_table(source)
        if "image_id" not in table.column_names or "pooled" not in table.column_names:
            raise ValueError(f"{source}: not an image feature table (needs columns image_id, pooled)")
        row_of = {k: i for i, k in enumerate(table.column("image_id").to_pylist())}
        missing = [i for i in ids if i not in row_of]
        if missing:
            raise KeyError(f"{params['path']}: {len(missing)} image_id(s) of {images_path} have no features, "
                           f"e.g. {missing[:3]}")
        table = table.take(pa.array([row_of[i] for i in ids], pa.int64()))
        writer = ShardedWriter(out_path, key="image_id", schema=table.schema, fingerprint=fp,
                               resume_key={"part": part})
        writer.write(table)
        writer.finish(order=ids, part=part, positions=position if part else None)
    log.info("embed_images: %d precomputed rows from %s -> %s", len(ids), params["path"], out_path)


ROLES = ("passage", "query")


def _role(origin: str, description_role: str = "passage") -> str:
    # e5 convention: MLLM descriptions are documents about the image (passages); captions are queries.
    # Descriptions that are captions themselves (knn-captions) may be embedded as queries too.
    return description_role if origin == "description" else "query"


def _reusable(reuse: Sequence[tuple[str | os.PathLike, str | os.PathLike]], wanted: set[tuple[str, str, str]],
              key: str, with_tokens: bool) -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray | None]]:
    """(role, text, lang) -> (pooled, tokens) already computed by the same encoder in other feature tables."""
    found: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray | None]] = {}
    for captions_path, features_path in reuse:
        meta = encoder_meta(pq.read_schema(features_path))
        if meta.get("key") != key:
            raise ValueError(f"{features_path}: made by encoder {meta.get('key')}, not {key}: its vectors cannot be reused")
        caps = read_captions(captions_path)
        ids_of: dict[str, tuple[str, str, str]] = {}
        for cid, origin, text, lang in zip(caps["caption_id"].to_pylist(), caps["origin"].to_pylist(),
                                           caps["text"].to_pylist(), caps["lang"].to_pylist(), strict=True):
            row_key = (_role(origin), text, lang)
            if row_key in wanted and row_key not in found:
                ids_of.setdefault(cid, row_key)
        if not ids_of:
            continue
        table = read_rows(features_path, "caption_id", ids_of)
        pooled = table["pooled"].combine_chunks()
        vectors = pooled.flatten().to_numpy().reshape(len(pooled), pooled.type.list_size)
        tokens = table["tokens"].combine_chunks() if with_tokens and "tokens" in table.column_names else None
        for i, cid in enumerate(table["caption_id"].to_pylist()):
            tok = None
            if tokens is not None:
                cell = tokens[i].values
                tok = cell.flatten().to_numpy().reshape(len(cell), cell.type.list_size)
            found.setdefault(ids_of[cid], (vectors[i], tok))
    return found


def embed_texts(captions_paths: list, backend: str, params: dict, out_path: str | os.PathLike,
                with_tokens: bool, shard_size: int = 256, hints: dict | None = None,
                skip_unused_human: bool = False, part: Part | None = None, description_role: str = "passage",
                query_langs: Sequence[str] | None = None,
                reuse: Sequence[tuple[str | os.PathLike, str | os.PathLike]] = ()) -> None:
    """Text features for every row of the caption tables -> ``out_path`` (text_feature_schema).

    Identical (role, text) pairs are encoded once: rows are processed sorted by (role, text) so
    repeats fall into the same shard, where they are de-duplicated. ``part=(i, n)``: only the i-th
    of n parts of that order (a scattered job; see :func:`ccr.io.gather_parts`).

    ``skip_unused_human``: leave out human captions in languages other than English of the train
    split. Nothing may read them (training is English + MT only; they are queries on val, for choosing
    settings, and on test), and on Multi30K they are most of the rows.

    ``query_langs``: with ``skip_unused_human``, also leave out human test captions in other languages
    (e.g. the English test captions when no query set is English).

    ``description_role``: the e5 role of description rows (``passage``; ``query`` for descriptions that
    are captions, knn-captions). ``reuse``: (captions table, its features by the same encoder) pairs
    whose vectors are copied for identical (role, text, language) rows instead of encoding them again.
    """
    if description_role not in ROLES:
        raise ValueError(f"embed_texts: description_role must be one of {ROLES}, got {description_role!r}")
    params = dict(params or {})
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if isinstance(captions_paths, (str, os.PathLike)):
        captions_paths = [captions_paths]
    table = concat_captions([read_captions(p) for p in captions_paths])
    if skip_unused_human:
        unused = pc.and_(pc.and_(pc.equal(table["origin"], "human"), pc.not_equal(table["lang"], "en")),
                         pc.equal(table["split"], "train"))
        if query_langs is not None:
            unused = pc.or_(unused, pc.and_(pc.and_(pc.equal(table["origin"], "human"), pc.equal(table["split"], "test")),
                                            pc.invert(pc.is_in(table["lang"], pa.array(sorted(query_langs))))))
        log.info("embed_texts: skipping %d human captions nothing reads (non-English train%s)",
                 pc.sum(unused.cast("int64")).as_py() or 0,
                 f", test not in {sorted(query_langs)}" if query_langs is not None else "")
        table = table.filter(pc.invert(unused))
    ids = table.column("caption_id").to_pylist()
    rows = {
        cid: (_role(origin, description_role), text, lang)
        for cid, origin, text, lang in zip(
            ids, table.column("origin").to_pylist(), table.column("text").to_pylist(),
            table.column("lang").to_pylist(), strict=True,
        )
    }

    encoder: TextEncoder = TEXT_ENCODERS.create(backend, hints=hints, **params)
    if with_tokens and not encoder.token_dim:
        raise ValueError(f"text encoder '{backend}' gives no token features; set with_tokens=False")
    # Fail now, not after hours, when a language is unsupported (USE has no Czech).
    check_langs(backend, getattr(encoder, "supported_langs", None), sorted(set(table.column("lang").to_pylist())))
    token_dim = encoder.token_dim if with_tokens else None
    meta = _meta("text", backend, params)
    if getattr(encoder, "blocks", None):  # concat: which columns come from which encoder (and its languages)
        meta["blocks"] = encoder.blocks
    schema = text_feature_schema(encoder.dim, token_dim, meta)
    inputs = {f"captions{i}": read_fingerprint(p) for i, p in enumerate(captions_paths)}
    inputs.update({f"reuse{i}": read_fingerprint(f) for i, (_, f) in enumerate(reuse)})
    # the descriptions' role changes nothing in a table without descriptions (captions, MT): such tables
    # are the same whatever it is, and configs differing only there share them
    has_descriptions = pc.any(pc.equal(table["origin"], "description")).as_py() or False
    fp = fingerprint("embed_texts", {"encoder": encoder_key(backend, params), "with_tokens": with_tokens,
                                     "skip_unused_human": skip_unused_human,
                                     "description_role": description_role if has_descriptions else None,
                                     "query_langs": sorted(query_langs) if query_langs is not None else None},
                     inputs)
    reused = _reusable(reuse, set(rows.values()), encoder_key(backend, params), with_tokens) if reuse else {}
    if reuse:
        log.info("embed_texts: %d of %d distinct texts reused from %d feature table(s)", len(reused),
                 len(set(rows.values())), len(reuse))
    writer = ShardedWriter(out_path, key="caption_id", schema=schema, fingerprint=fp,
                           resume_key={"shard_size": shard_size, "part": part})
    shards = plan_shards(sorted(ids, key=lambda c: (rows[c][0], rows[c][1], c)), shard_size, part)
    todo = writer.pending_shards(shards)
    mine = [c for shard in shards for c in shard]
    n_todo = sum(len(chunk) for chunk in todo)
    n_unique = len({rows[c] for chunk in todo for c in chunk})
    log.info("embed_texts %s (%s): %d captions from %d table(s)%s, %d to do (%d distinct texts) -> %s",
             backend, encoder_key(backend, params), len(mine), len(captions_paths),
             f" (part {part[0] + 1} of {part[1]})" if part else "", n_todo, n_unique, out_path)
    progress = Progress(n_todo, f"embed_texts {backend}")
    for chunk in todo:
        # each distinct (role, text, language) is encoded once: a language-aware encoder (concat) may
        # embed the same string differently in two languages
        pooled_of: dict[tuple[str, str, str], int] = {}
        parts = []
        for role in ("query", "passage"):
            uniq = list(dict.fromkeys((text, lang) for c in chunk for r, text, lang in [rows[c]]
                                      if r == role and rows[c] not in reused))
            if uniq:
                vecs = encoder.encode([t for t, _ in uniq], role=role, langs=[lang for _, lang in uniq])
                if vecs.shape != (len(uniq), encoder.dim):
                    raise RuntimeError(f"text encoder '{backend}' returned {vecs.shape}, expected "
                                       f"{(len(uniq), encoder.dim)}")
                base = sum(len(p) for p in parts)
                pooled_of.update({(role, t, lang): base + k for k, (t, lang) in enumerate(uniq)})
                parts.append(vecs)
        copied = list(dict.fromkeys(rows[c] for c in chunk if rows[c] in reused))
        if copied:
            base = sum(len(p) for p in parts)
            pooled_of.update({row_key: base + k for k, row_key in enumerate(copied)})
            parts.append(np.stack([reused[row_key][0] for row_key in copied]).astype(np.float32))
        all_vecs = np.concatenate(parts)
        columns: dict[str, pa.Array] = {
            "caption_id": pa.array(list(chunk), pa.string()),
            "pooled": fixed_list(all_vecs[[pooled_of[rows[c]] for c in chunk]]),
        }
        if token_dim:
            # (text, lang) -> tokens: copied where a reused row has them, else encoded
            by_text = {rows[c][1:]: reused[rows[c]][1] for c in chunk
                       if rows[c] in reused and reused[rows[c]][1] is not None}
            uniq_tok = list(dict.fromkeys(rows[c][1:] for c in chunk if rows[c][1:] not in by_text))
            seqs = encoder.encode_tokens([t for t, _ in uniq_tok], langs=[lang for _, lang in uniq_tok])
            for (t, _), s in zip(uniq_tok, seqs, strict=True):
                if s.ndim != 2 or s.shape[1] != token_dim or len(s) == 0:
                    raise RuntimeError(f"text encoder '{backend}' returned tokens {s.shape} for {t!r}, expected (L>=1, {token_dim})")
            by_text.update(zip(uniq_tok, seqs, strict=True))
            columns["tokens"] = ragged_tokens([by_text[rows[c][1:]] for c in chunk], token_dim)
        writer.write(pa.table(columns))
        progress.update(len(chunk))
    position = {c: i for i, c in enumerate(ids)}
    mine_set = set(mine)
    writer.finish(order=[c for c in ids if c in mine_set], part=part, positions=position if part else None)
    log.info("embed_texts: wrote %d rows to %s", len(mine), out_path)
