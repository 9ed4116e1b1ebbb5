"""Read "BigFile" pre-extracted features (the W2VV / dual-encoding / NRCCR format) into feature tables.

A BigFile is a folder with::

    feature.bin   n rows of ``dim`` little-endian float32, row i belongs to id i
    id.txt        the n ids, separated by whitespace (one line in the published files)
    shape.txt     "n dim"

Image features become an image feature table (``pooled`` only).  Video *frame* features (ids
``<video><sep><frame>``, e.g. ``video7_12``) are grouped per video and sampled or padded to a fixed
number T of frames: ``tokens`` (n, T, D) are the frames, ``n_frames`` the real (not padded) count,
and ``pooled`` the mean over those real frames.  A Parquet frame table (``video_id``,
``frame_index``, ``feature``) is accepted in place of a BigFile folder.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ccr.features.store import fixed_grid, fixed_list, image_feature_schema
from ccr.io import write_table_atomic

log = logging.getLogger("ccr.data.bigfile")


class BigFileError(ValueError):
    """A malformed BigFile / frame table; the message names the file at fault."""


def read_bigfile(path: str | Path) -> tuple[list[str], np.ndarray]:
    """(ids, (n, dim) float32 matrix) of a BigFile folder, after checking the three files agree."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"BigFile folder not found: {path}")
    files = {name: path / name for name in ("feature.bin", "id.txt", "shape.txt")}
    for name, file in files.items():
        if not file.is_file():
            raise FileNotFoundError(f"BigFile {path}: {name} not found: {file}")
    shape_text = files["shape.txt"].read_text(encoding="utf-8").split()
    try:
        n, dim = (int(v) for v in shape_text)
    except ValueError as err:
        raise BigFileError(f"{files['shape.txt']}: expected two integers 'n dim', got {shape_text!r}") from err
    if n < 0 or dim <= 0:
        raise BigFileError(f"{files['shape.txt']}: bad shape n={n} dim={dim}")
    ids = files["id.txt"].read_text(encoding="utf-8").split()
    if len(ids) != n:
        raise BigFileError(f"{files['id.txt']} has {len(ids)} ids but {files['shape.txt']} says n={n}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise BigFileError(f"{files['id.txt']}: duplicate id {dup!r}")
    size = files["feature.bin"].stat().st_size
    if size != n * dim * 4:
        raise BigFileError(f"{files['feature.bin']} has {size} bytes; shape.txt ({n} x {dim} float32) needs {n * dim * 4}")
    matrix = np.fromfile(files["feature.bin"], dtype="<f4").reshape(n, dim)
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise BigFileError(f"{files['feature.bin']}: non-finite values in the row of id {ids[bad]!r}")
    return ids, matrix.astype(np.float32, copy=False)


def sample_frames(frames: np.ndarray, n_out: int) -> tuple[np.ndarray, int]:
    """(T, D) frames from (n, D): uniform sampling (segment centres) when n >= T, else pad with the last frame.

    Returns the frames and how many of them are real (not padding).
    """
    n = len(frames)
    if n == 0:
        raise ValueError("a video has no frames")
    if n >= n_out:
        idx = ((np.arange(n_out) + 0.5) * n / n_out).astype(np.int64)
        return frames[idx], n_out
    pad = np.repeat(frames[-1:], n_out - n, axis=0)
    return np.concatenate([frames, pad]), n


def _split_frame_id(frame_id: str, sep: str, where: Path) -> tuple[str, int]:
    video, found, frame = frame_id.rpartition(sep)
    if not found or not video:
        raise BigFileError(f"{where}: frame id {frame_id!r} is not '<video>{sep}<frame>'")
    try:
        return video, int(frame)
    except ValueError as err:
        raise BigFileError(f"{where}: frame id {frame_id!r}: frame part {frame!r} is not an integer") from err


def _read_frame_parquet(path: Path) -> tuple[list[str], list[int], np.ndarray]:
    table = pq.read_table(path)
    missing = [c for c in ("video_id", "frame_index", "feature") if c not in table.column_names]
    if missing:
        raise BigFileError(f"{path}: missing column(s) {missing}; expected video_id, frame_index, feature")
    feat = table.column("feature").combine_chunks()
    if not pa.types.is_fixed_size_list(feat.type):
        raise BigFileError(f"{path}: column 'feature' must be fixed_size_list<float32>[D], got {feat.type}")
    if feat.null_count or table.column("video_id").null_count or table.column("frame_index").null_count:
        raise BigFileError(f"{path}: null values in video_id / frame_index / feature")
    matrix = feat.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(feat), feat.type.list_size)
    return table.column("video_id").to_pylist(), [int(i) for i in table.column("frame_index").to_pylist()], matrix


def bigfile_to_feature_table(
    src: str | Path,
    out_path: str | Path,
    frames_per_video: int | None = None,
    frame_id_sep: str = "_",
    meta: dict | None = None,
) -> pa.Table:
    """Convert a BigFile folder (or a Parquet frame table) into a feature table written atomically.

    ``frames_per_video=None``: one row per id, ``pooled`` only (image features).  An integer T:
    ids are video frames, grouped per video into ``tokens`` (T, D) plus ``n_frames`` and ``pooled``.
    """
    src, out_path = Path(src), Path(out_path)
    is_parquet = src.suffix == ".parquet"
    info = {"source": "bigfile" if not is_parquet else "frame-parquet", "path": str(src)} | (meta or {})
    if is_parquet and frames_per_video is None:
        raise BigFileError(f"{src}: a Parquet frame table needs frames_per_video")
    if frames_per_video is not None and frames_per_video <= 0:
        raise BigFileError(f"frames_per_video must be a positive integer, got {frames_per_video}")

    if frames_per_video is None:
        ids, matrix = read_bigfile(src)
        table = pa.Table.from_arrays([pa.array(ids, pa.string()), fixed_list(matrix)],
                                     schema=image_feature_schema(matrix.shape[1], None, info))
        write_table_atomic(table, out_path)
        log.info("BigFile %s: %d image feature rows (dim %d) -> %s", src, len(ids), matrix.shape[1], out_path)
        return table

    if is_parquet:
        if not src.is_file():
            raise FileNotFoundError(f"frame table not found: {src}")
        videos, frame_idx, matrix = _read_frame_parquet(src)
    else:
        ids, matrix = read_bigfile(src)
        parsed = [_split_frame_id(i, frame_id_sep, src / "id.txt") for i in ids]
        videos, frame_idx = [p[0] for p in parsed], [p[1] for p in parsed]
    rows: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row, (video, frame) in enumerate(zip(videos, frame_idx, strict=True)):
        rows[video].append((frame, row))
    video_ids = sorted(rows)
    dim, t = matrix.shape[1], frames_per_video
    tokens = np.empty((len(video_ids), t, dim), np.float32)
    n_frames = np.empty(len(video_ids), np.int32)
    for v, video in enumerate(video_ids):
        order = sorted(rows[video])
        frames = [f for f, _ in order]
        if len(set(frames)) != len(frames):
            raise BigFileError(f"{src}: video {video!r} has a repeated frame index")
        tokens[v], n_frames[v] = sample_frames(matrix[[r for _, r in order]], t)
    pooled = np.stack([tokens[v, : n_frames[v]].mean(axis=0) for v in range(len(video_ids))]) if video_ids \
        else np.zeros((0, dim), np.float32)
    schema = image_feature_schema(dim, t, info | {"frames_per_video": t}).append(
        pa.field("n_frames", pa.int32(), nullable=False))
    table = pa.Table.from_arrays(
        [pa.array(video_ids, pa.string()), fixed_list(pooled), fixed_grid(tokens), pa.array(n_frames, pa.int32())],
        schema=schema)
    write_table_atomic(table, out_path)
    short = int((n_frames < t).sum())
    log.info("frames %s: %d frames of %d videos -> %d x %d tokens (dim %d; %d videos padded) -> %s",
             src, len(videos), len(video_ids), len(video_ids), t, dim, short, out_path)
    return table
