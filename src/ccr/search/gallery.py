"""Search your own images: a folder (or manifest) of images embedded with a bundle into a FAISS index.

An index folder (``ccr index --out INDEX``) holds:

* ``embeddings/batch-NNNNN.parquet``: one file per ``ccr index`` run (the first, then one per
  ``--add``): ``path`` (absolute), ``embedding`` (``fixed_size_list<float32>[D]``; zeros for a
  skipped file) and ``error`` (null, or why the file was skipped).  Each is written through
  :class:`ccr.io.ShardedWriter`, fingerprinted by the bundle's checksum and the list of files, so a
  crashed run resumes from its finished shards without losing or repeating a row;
* ``index.faiss``: the :mod:`ccr.search.ann` index (``exact``, ``ivf`` or ``hnsw``) of every
  embedded image, in batch order;
* ``images.parquet``: ``path`` and ``batch`` of each index row (row i of the index = row i here);
* ``index.json``: the bundle that made it (path and checksum), the index kind and params, the rows
  and skipped files per batch.  It is written last: it is the commit point of a run.

Searching needs the same bundle (:func:`open_index` compares checksums).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ccr.features.stage import ImageLoadError, load_image
from ccr.features.store import fixed_list
from ccr.io import Progress, ShardedWriter, batched, fingerprint, write_table_atomic, write_text_atomic
from ccr.keys import stable_hash
from ccr.search import ann
from ccr.search.bundle import Bundle, BundleError, load_bundle

log = logging.getLogger("ccr.search")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
PATH_COLUMNS = ("path", "image_path")
META_FILE, INDEX_FILE, PATHS_FILE, BATCH_DIR = "index.json", "index.faiss", "images.parquet", "embeddings"
INDEX_FORMAT = 1


class IndexFolderError(ValueError):
    """An index folder that cannot be used as asked (the message names the folder and the problem)."""


# ---- which images --------------------------------------------------------------------------------


def read_table_file(path: Path, what: str) -> pa.Table:
    """A CSV, JSON-lines or Parquet file as a table (ValueError naming the file otherwise)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            return pacsv.read_csv(path)
        if suffix == ".jsonl":
            import pyarrow.json as pajson

            return pajson.read_json(path)
        if suffix == ".parquet":
            return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{path}: cannot read {what}: {err}") from err
    raise ValueError(f"{path}: {what} must be .csv, .jsonl or .parquet (or a folder of images)")


def list_images(source: str | os.PathLike) -> list[str]:
    """Absolute paths of the images to index, de-duplicated, in a stable order.

    ``source`` is a folder (searched recursively for image extensions, sorted by path) or a manifest
    (CSV / JSON lines / Parquet with a ``path`` or ``image_path`` column; relative paths are relative
    to the manifest's folder; manifest order is kept).
    """
    source = Path(source)
    if source.is_dir():
        found = [p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        paths = sorted(str(p.resolve()) for p in found)
        if not paths:
            raise ValueError(f"{source}: no image files found (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
        return paths
    if not source.is_file():
        raise FileNotFoundError(f"--images: no such folder or manifest: {source}")
    table = read_table_file(source, "the image manifest")
    column = next((c for c in PATH_COLUMNS if c in table.column_names), None)
    if column is None:
        raise ValueError(f"{source}: the manifest needs a column {' or '.join(map(repr, PATH_COLUMNS))} with the "
                         f"image files; its columns are {table.column_names}")
    values = table.column(column).to_pylist()
    blank = [i for i, v in enumerate(values) if v is None or not str(v).strip()]
    if blank:
        raise ValueError(f"{source}: field '{column}' is empty in row {blank[0] + 1}")
    base = source.resolve().parent
    paths = [str(p if (p := Path(str(v))).is_absolute() else (base / p).resolve()) for v in values]
    unique = list(dict.fromkeys(paths))
    if len(unique) < len(paths):
        log.warning("%s: %d duplicate path(s) indexed once", source, len(paths) - len(unique))
    return unique


# ---- the index folder ----------------------------------------------------------------------------


BUNDLE_KEY = b"ccr.bundle"


def batch_schema(dim: int, checksum: str) -> pa.Schema:
    """A batch file's schema; its metadata names the bundle whose embeddings it holds."""
    return pa.schema([pa.field("path", pa.string(), nullable=False),
                      pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
                      pa.field("error", pa.string())], metadata={BUNDLE_KEY: checksum.encode()})


def _batch_path(folder: Path, number: int) -> Path:
    return folder / BATCH_DIR / f"batch-{number:05d}.parquet"


def _finished_batches(folder: Path) -> list[Path]:
    return sorted((folder / BATCH_DIR).glob("batch-*.parquet"))


def read_meta(folder: Path) -> dict[str, Any] | None:
    path = folder / META_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise IndexFolderError(f"{path}: not valid JSON: {err}") from err
    if meta.get("format") != INDEX_FORMAT:
        raise IndexFolderError(f"{path}: index format {meta.get('format')!r}, this ccr reads {INDEX_FORMAT}")
    return meta


def _ok_rows(batch: Path, checksum: str) -> tuple[list[str], np.ndarray, int]:
    """(paths, embeddings (n, D)) of a batch's embedded files, and how many it skipped."""
    table = pq.read_table(batch)
    made_by = (table.schema.metadata or {}).get(BUNDLE_KEY, b"?").decode()
    if made_by != checksum:
        raise IndexFolderError(f"{batch}: holds embeddings of bundle {made_by}, not {checksum}: index the images "
                               "into a new folder")
    ok = np.asarray(table.column("error").is_null().to_numpy(zero_copy_only=False), bool)
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    matrix = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(emb), dim)
    paths = table.column("path").to_pylist()
    return [p for p, good in zip(paths, ok, strict=True) if good], matrix[ok], int((~ok).sum())


def _commit(folder: Path, bundle: Bundle, kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Make index.faiss, images.parquet and index.json agree with every finished batch file.

    Appends the batches that index.json does not list yet to the saved index when that index holds
    exactly the listed ones, else (a crash between two of these writes) rebuilds it from all batches.
    """
    meta = read_meta(folder)
    batches = _finished_batches(folder)
    listed = [b["file"] for b in meta["batches"]] if meta else []
    names = [b.name for b in batches]
    if names[: len(listed)] != listed:
        raise IndexFolderError(f"{folder}: the batch files {names} do not start with those index.json lists "
                               f"{listed}; the folder was changed by hand: index the images into a new folder")
    if meta is not None and len(batches) == len(listed):
        return meta
    if meta is not None:
        kind, params = meta["kind"], meta["params"]
    index_path = folder / INDEX_FILE
    index = ann.load_index(index_path) if meta is not None and index_path.is_file() else None
    if index is not None and index.ntotal != meta["rows"]:
        log.warning("%s holds %d rows, index.json %d (an interrupted run): rebuilding it from the embeddings",
                    index_path, index.ntotal, meta["rows"])
        index = None
    first_new = len(listed) if index is not None else 0  # batches whose embeddings go into the index now
    entries = list(meta["batches"][:first_new]) if meta else []
    all_paths: list[str] = []
    batch_of: list[int] = []
    fresh: list[np.ndarray] = []
    for number, batch in enumerate(batches):
        if number >= first_new:
            paths, emb, skipped = _ok_rows(batch, bundle.checksum)
            fresh.append(emb)
            entries.append({"file": batch.name, "rows": len(paths), "skipped": skipped})
        else:
            paths = pq.read_table(batch, columns=["path", "error"]).filter(
                pc.is_null(pc.field("error"))).column("path").to_pylist()
        all_paths += paths
        batch_of += [number] * len(paths)
    new = np.concatenate(fresh) if fresh else np.zeros((0, bundle.dim), np.float32)
    if index is None:
        if not len(new):
            raise IndexFolderError(f"{folder}: no image could be read, nothing to index (the log names each "
                                   "skipped file)")
        params = ann.index_params(kind, params, len(new))
        index = ann.build_index(new, kind, params)
    elif len(new):
        ann.add(index, new)
    if index.ntotal != len(all_paths):
        raise RuntimeError(f"{folder}: the index holds {index.ntotal} rows but the batches {len(all_paths)}")
    ann.save_index(index, index_path)
    write_table_atomic(pa.table({"path": pa.array(all_paths, pa.string()),
                                 "batch": pa.array(batch_of, pa.int32())}), folder / PATHS_FILE)
    meta = {"format": INDEX_FORMAT, "bundle": {"path": str(bundle.path.resolve()), "checksum": bundle.checksum},
            "embed_dim": bundle.dim, "kind": kind, "params": params, "rows": int(index.ntotal),
            "skipped": sum(e["skipped"] for e in entries), "batches": entries}
    write_text_atomic(json.dumps(meta, indent=2) + "\n", folder / META_FILE)
    return meta


@dataclass
class IndexRun:
    """What one ``ccr index`` run did."""

    folder: Path
    added: int          # images embedded and added by this run
    skipped: int        # unreadable files skipped by this run
    already: int        # files of the list that the index already held (``--add``)
    rows: int           # rows of the index now
    skipped_files: list[tuple[str, str]]  # (path, why) of this run's skipped files


def index_images(bundle: Bundle | str | os.PathLike, images: str | os.PathLike | Sequence[str],
                 out_dir: str | os.PathLike, kind: str | None = None, params: dict[str, Any] | None = None,
                 add: bool = False, shard_size: int = 64) -> IndexRun:
    """Embed the images of ``images`` (a folder, a manifest, or a list of files) with ``bundle`` into the
    index folder ``out_dir``.  ``kind``: ``exact`` (default), ``ivf`` or ``hnsw`` with ``params`` (see
    :mod:`ccr.search.ann`).  ``add``: append the files not yet indexed to an existing index (which keeps
    its kind).

    Unreadable files are logged (with their path) and skipped.  A crashed run resumes when run again.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if kind is not None:
        ann.index_params(kind, params, 10**9)  # a bad kind or param name fails before any work
    folder = Path(out_dir)
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    paths = list(images) if isinstance(images, list | tuple) else list_images(images)
    if isinstance(images, list | tuple):
        paths = list(dict.fromkeys(str(Path(p).resolve()) for p in paths))
    meta = read_meta(folder)
    if meta is not None:
        if not add:
            raise IndexFolderError(f"{folder}: already holds an index of {meta['rows']} images; pass --add to append "
                                   "new images to it, or choose another --out folder")
        if meta["bundle"]["checksum"] != bundle.checksum:
            raise IndexFolderError(f"{folder}: was made with bundle {meta['bundle']['path']} ({meta['bundle']['checksum']}), "
                                   f"not {bundle.path} ({bundle.checksum}); embeddings of two models cannot share an index")
        if kind is not None and kind != meta["kind"]:
            raise IndexFolderError(f"{folder}: is a {meta['kind']} index; --kind {kind} cannot change it on --add")
    else:
        kind = kind or "exact"
        ann.index_params(kind, params, len(paths))  # e.g. an IVF nlist larger than the gallery
    # a run that finished its batch but crashed before committing it: commit it first
    if len(_finished_batches(folder)) > (len(meta["batches"]) if meta else 0):
        log.info("%s: committing a batch an interrupted run finished", folder)
        meta = _commit(folder, bundle, kind, params)
    indexed: set[str] = set()
    if meta is not None:
        indexed = set(pq.read_table(folder / PATHS_FILE, columns=["path"]).column("path").to_pylist())
    todo_paths = [p for p in paths if p not in indexed]
    already = len(paths) - len(todo_paths)
    if not todo_paths:
        log.info("%s: all %d image(s) are already indexed; nothing to add", folder, len(paths))
        return IndexRun(folder, 0, 0, already, meta["rows"] if meta else 0, [])
    bundle.load_encoders(images=True)
    number = len(_finished_batches(folder))
    out = _batch_path(folder, number)
    fp = fingerprint("index_images", {"bundle": bundle.checksum, "batch": number},
                     {"files": stable_hash(todo_paths, length=16)})
    writer = ShardedWriter(out, key="path", schema=batch_schema(bundle.dim, bundle.checksum), fingerprint=fp,
                           resume_key={"shard_size": shard_size})
    shards = writer.pending_shards([list(c) for c in batched(todo_paths, shard_size)])
    n_todo = sum(len(s) for s in shards)
    log.info("index %s: %d image(s) to embed (%d already done in shards, %d already indexed) with bundle %s",
             folder, n_todo, len(todo_paths) - n_todo, already, bundle.path)
    progress = Progress(n_todo, "index images", logger=log)
    for chunk in shards:
        loaded, good, errors = [], [], {}
        for path in chunk:
            try:
                loaded.append(load_image(path))
                good.append(path)
            except ImageLoadError as err:
                log.warning("skipping unreadable image %s: %s", path, err)
                errors[path] = str(err)
        emb = bundle.embed_loaded(loaded, good) if loaded else np.zeros((0, bundle.dim), np.float32)
        row = {p: i for i, p in enumerate(good)}
        matrix = np.zeros((len(chunk), bundle.dim), np.float32)
        for i, path in enumerate(chunk):
            if path in row:
                matrix[i] = emb[row[path]]
        writer.write(pa.table({"path": pa.array(list(chunk), pa.string()), "embedding": fixed_list(matrix),
                               "error": pa.array([errors.get(p) for p in chunk], pa.string())}))
        progress.update(len(chunk))
    table = writer.finish(order=todo_paths)
    errors_col = table.column("error").to_pylist()
    skipped_files = [(p, e) for p, e in zip(table.column("path").to_pylist(), errors_col, strict=True) if e]
    meta = _commit(folder, bundle, kind, params)
    run = IndexRun(folder, len(todo_paths) - len(skipped_files), len(skipped_files), already, meta["rows"],
                   skipped_files)
    log.info("index %s: added %d image(s), skipped %d unreadable, %d already indexed; the index holds %d (%s)",
             folder, run.added, run.skipped, run.already, run.rows, meta["kind"])
    return run


# ---- searching -----------------------------------------------------------------------------------


@dataclass
class Hit:
    rank: int
    score: float
    row: int
    path: str


class ImageIndex:
    """An index folder opened for search (use :func:`open_index`)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta = read_meta(self.folder)
        if meta is None:
            raise IndexFolderError(f"{self.folder}: not an index folder (no {META_FILE}; make one with `ccr index`)")
        self.meta = meta
        self.index = ann.load_index(self.folder / INDEX_FILE)
        self.paths: list[str] = pq.read_table(self.folder / PATHS_FILE, columns=["path"]).column("path").to_pylist()
        if not self.index.ntotal == len(self.paths) == meta["rows"]:
            raise IndexFolderError(f"{self.folder}: {INDEX_FILE} holds {self.index.ntotal} rows, {PATHS_FILE} "
                                   f"{len(self.paths)}, {META_FILE} {meta['rows']}: an interrupted `ccr index --add`; "
                                   "run it again to finish")

    @property
    def checksum(self) -> str:
        return str(self.meta["bundle"]["checksum"])

    def check_bundle(self, bundle: Bundle) -> None:
        if bundle.checksum != self.checksum:
            raise IndexFolderError(f"{self.folder}: was made with bundle {self.meta['bundle']['path']} ({self.checksum}); "
                                   f"refusing to search it with {bundle.path} ({bundle.checksum}): the embeddings of "
                                   "two models are not comparable")

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-``k`` hits per query embedding (best first)."""
        scores, ids = ann.search(self.index, queries, k)
        return [[Hit(rank=r + 1, score=float(s), row=int(i), path=self.paths[int(i)])
                 for r, (s, i) in enumerate(zip(srow, irow, strict=True)) if i >= 0]
                for srow, irow in zip(scores, ids, strict=True)]


def open_index(folder: str | os.PathLike, model: str | os.PathLike | None = None, device: str = "cpu",
               threads: int | None = None) -> tuple[ImageIndex, Bundle]:
    """The index folder and its bundle (``model``, default: the bundle recorded in the index); a bundle
    other than the one that made the index is refused."""
    index = ImageIndex(folder)
    path = Path(model) if model is not None else Path(index.meta["bundle"]["path"])
    try:
        bundle = load_bundle(path, device=device, threads=threads)
    except BundleError as err:
        if model is None and not path.exists():
            raise IndexFolderError(f"{index.folder}: the bundle that made it, {path}, is gone; pass --model") from err
        raise
    index.check_bundle(bundle)
    return index, bundle


def read_captions_corpus(path: str | os.PathLike) -> list[str]:
    """A caption corpus: a text file (one caption per non-blank line) or a table with a ``text`` or
    ``caption`` column (.csv, .jsonl, .parquet)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--captions: no such file: {path}")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        table = read_table_file(path, "the caption corpus")
        column = next((c for c in ("text", "caption") if c in table.column_names), None)
        if column is None:
            raise ValueError(f"{path}: the corpus needs a 'text' or 'caption' column; its columns are "
                             f"{table.column_names}")
        texts = [str(t) for t in table.column(column).to_pylist() if t is not None and str(t).strip()]
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"{path}: the caption corpus is empty")
    return list(dict.fromkeys(texts))


def search_captions(bundle: Bundle, images: Sequence[str | os.PathLike], captions: Sequence[str], k: int,
                    batch_size: int = 256) -> list[list[dict[str, Any]]]:
    """Image -> text: the ``k`` captions of ``captions`` (embedded with the bundle's text side) that best
    match each image, as ``{"rank", "score", "text"}``."""
    parts = [bundle.embed_texts(list(chunk)) for chunk in batched(list(captions), batch_size)]
    log.info("embedded %d caption(s) of the corpus", sum(len(p) for p in parts))
    index = ann.build_index(np.concatenate(parts), "exact")
    scores, ids = ann.search(index, bundle.embed_images(list(images)), k)
    return [[{"rank": r + 1, "score": float(s), "text": captions[int(i)]}
             for r, (s, i) in enumerate(zip(srow, irow, strict=True)) if i >= 0]
            for srow, irow in zip(scores, ids, strict=True)]
