"""Feature tables: one row per id, vectors as ``fixed_size_list<float32>[D]`` (see docs/data-model.md).

* image features: ``image_id``, ``pooled`` [D] and, when the encoder has a grid, ``tokens``
  (``fixed_size_list<fixed_size_list<float32>[D]>[T]``: T visual tokens, e.g. 7x7 = 49).
* text features: ``caption_id``, ``pooled`` [D] and, when the encoder gives them, ``tokens``
  (``list<fixed_size_list<float32>[Dt]>``: one vector per word/token, variable length).

The encoder's name and settings are stored in the schema metadata under ``ccr.encoder``; text tables of
the ``concat`` backend add ``blocks`` there (each part's encoder, dimension and languages, in column order).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

META_KEY = b"ccr.encoder"


def image_feature_schema(dim: int, n_tokens: int | None, meta: dict | None = None) -> pa.Schema:
    fields = [pa.field("image_id", pa.string(), nullable=False),
              pa.field("pooled", pa.list_(pa.float32(), dim), nullable=False)]
    if n_tokens:
        fields.append(pa.field("tokens", pa.list_(pa.list_(pa.float32(), dim), n_tokens), nullable=False))
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta or {}, sort_keys=True)})


def text_feature_schema(dim: int, token_dim: int | None, meta: dict | None = None) -> pa.Schema:
    fields = [pa.field("caption_id", pa.string(), nullable=False),
              pa.field("pooled", pa.list_(pa.float32(), dim), nullable=False)]
    if token_dim:
        fields.append(pa.field("tokens", pa.list_(pa.list_(pa.float32(), token_dim)), nullable=False))
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta or {}, sort_keys=True)})


def fixed_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """(n, D) float array -> ``fixed_size_list<float32>[D]``."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def fixed_grid(grid: np.ndarray) -> pa.FixedSizeListArray:
    """(n, T, D) float array -> ``fixed_size_list<fixed_size_list<float32>[D]>[T]``."""
    grid = np.ascontiguousarray(grid, dtype=np.float32)
    n, t, d = grid.shape
    return pa.FixedSizeListArray.from_arrays(fixed_list(grid.reshape(n * t, d)), t)


def ragged_tokens(seqs: list[np.ndarray], dim: int) -> pa.ListArray:
    """list of (L_i, D) arrays -> ``list<fixed_size_list<float32>[D]>``."""
    offsets = np.zeros(len(seqs) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    flat = np.concatenate([np.asarray(s, np.float32).reshape(-1, dim) for s in seqs]) if seqs else np.zeros((0, dim), np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), fixed_list(flat) if len(flat) else pa.array([], pa.list_(pa.float32(), dim)))


@dataclass
class Features:
    """Features read back into numpy, rows aligned with ``ids``."""

    ids: list[str]
    pooled: np.ndarray                     # (n, D)
    tokens: np.ndarray | None = None       # images: (n, T, D)
    token_list: list[np.ndarray] | None = None  # texts: n arrays of (L_i, Dt)
    meta: dict | None = None

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.ids)}

    def concat(self, other: Features) -> Features:
        """These rows, then ``other``'s (same feature sizes; tokens kept only when both have them)."""
        if self.pooled.shape[1:] != other.pooled.shape[1:]:
            raise ValueError(f"cannot join features of sizes {self.pooled.shape[1:]} and {other.pooled.shape[1:]}")
        tokens = None
        if self.tokens is not None and other.tokens is not None:
            tokens = np.concatenate([self.tokens, other.tokens])
        token_list = None
        if self.token_list is not None and other.token_list is not None:
            token_list = self.token_list + other.token_list
        return Features(ids=self.ids + other.ids, pooled=np.concatenate([self.pooled, other.pooled]), tokens=tokens,
                        token_list=token_list, meta=self.meta)

    def take(self, ids: list[str]) -> Features:
        """Rows for ``ids`` in that order (KeyError names the first missing id)."""
        idx = self.index()
        missing = [i for i in ids if i not in idx]
        if missing:
            raise KeyError(f"{len(missing)} id(s) have no features, e.g. {missing[:3]}")
        rows = np.array([idx[i] for i in ids], dtype=np.int64)
        return Features(
            ids=list(ids),
            pooled=self.pooled[rows],
            tokens=None if self.tokens is None else self.tokens[rows],
            token_list=None if self.token_list is None else [self.token_list[r] for r in rows],
            meta=self.meta,
        )


def to_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A ``fixed_size_list<float32>[D]`` column as an (n, D) float32 array."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(arr), dim)


def read_rows(path: str | Path, key: str, ids: Iterable[str], columns: list[str] | None = None) -> pa.Table:
    """The rows of the Parquet table ``path`` whose ``key`` is in ``ids`` (file order), read batch by
    batch through a small buffer and filtered as they come.

    Why not ``pq.read_table(filters=...)``: it decodes a whole row group before filtering, and a feature
    table is one row group, so a training job held the whole column of every table it read at once
    (bench/load_memory.py: a full student's loading peaked at 13.7 GB that way, 6.5 GB now).
    """
    wanted = pa.array(sorted(set(ids)), pa.string())
    parquet = pq.ParquetFile(path, buffer_size=1 << 23, pre_buffer=False)
    names = columns or parquet.schema_arrow.names
    schema = pa.schema([parquet.schema_arrow.field(name) for name in names])
    batches = [batch.filter(pc.is_in(batch.column(key), value_set=wanted))
               for batch in parquet.iter_batches(batch_size=2048, columns=names)]
    return pa.Table.from_batches(batches, schema=schema)


def _fixed_shape(field_type: pa.DataType) -> tuple[int, ...]:
    shape = []
    while pa.types.is_fixed_size_list(field_type):
        shape.append(field_type.list_size)
        field_type = field_type.value_type
    return tuple(shape)


def read_fixed_rows(path: str | Path, key: str, ids: list[str], columns: list[str]) -> tuple[np.ndarray, dict]:
    """Fixed-size list columns (vectors (n, D), grids (n, T, D)) at exactly ``ids`` (repeats allowed),
    streamed from the Parquet table ``path`` straight into float32 arrays: nothing is held but the
    result and one batch.  Returns ``found`` (n,) bool and column -> array (rows not found: undefined).
    """
    positions: dict[str, list[int]] = {}
    for pos, row_id in enumerate(ids):
        positions.setdefault(row_id, []).append(pos)
    parquet = pq.ParquetFile(path, buffer_size=1 << 23, pre_buffer=False)
    shapes = {c: _fixed_shape(parquet.schema_arrow.field(c).type) for c in columns}
    out = {c: np.empty((len(ids), *shapes[c]), np.float32) for c in columns}
    found = np.zeros(len(ids), bool)
    for batch in parquet.iter_batches(batch_size=1024, columns=[key, *columns]):
        pairs = [(row, pos) for row, row_id in enumerate(batch.column(key).to_pylist())
                 for pos in positions.get(row_id, ())]
        if not pairs:
            continue
        src, dst = (np.array(side, np.int64) for side in zip(*pairs, strict=True))
        for c in columns:
            values = batch.column(c)
            for _ in shapes[c]:
                values = values.flatten()
            out[c][dst] = values.to_numpy(zero_copy_only=False).reshape(len(batch), *shapes[c])[src]
        found[dst] = True
    pa.default_memory_pool().release_unused()  # the reader's pages are free again: give them back
    return found, out


def encoder_meta(schema: pa.Schema) -> dict:
    """What made a feature table: the ``ccr.encoder`` entry of its schema metadata ({} when absent)."""
    return json.loads((schema.metadata or {}).get(META_KEY, b"{}"))


def read_features(path: str | Path, with_tokens: bool = True) -> Features:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"feature table not found: {path}")
    schema = pq.read_schema(path)
    key = "image_id" if "image_id" in schema.names else "caption_id"
    columns = [key, "pooled"] + (["tokens"] if with_tokens and "tokens" in schema.names else [])
    table = pq.read_table(path, columns=columns)
    feats = Features(ids=table.column(key).to_pylist(), pooled=to_matrix(table.column("pooled")),
                     meta=encoder_meta(schema))
    if "tokens" in columns:
        tok = table.column("tokens").combine_chunks()
        if pa.types.is_fixed_size_list(tok.type):  # image grid (n, T, D)
            n, t = len(tok), tok.type.list_size
            inner = to_matrix(tok.flatten())
            feats.tokens = inner.reshape(n, t, inner.shape[1])
        else:  # ragged text tokens
            inner = to_matrix(tok.flatten())
            offsets = tok.offsets.to_numpy()
            feats.token_list = [inner[offsets[i] : offsets[i + 1]] for i in range(len(tok))]
    return feats


def _blocks(path: str | Path) -> list[dict] | None:
    """The ``blocks`` entry of a text feature table's metadata (concat: one per encoder, in column order),
    checked against the width of its ``pooled`` field; None for a single encoder's table."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"feature table not found: {path}")
    schema = pq.read_schema(path)
    blocks = encoder_meta(schema).get("blocks")
    if not blocks:
        return None
    dim = schema.field("pooled").type.list_size
    if sum(int(b["dim"]) for b in blocks) != dim:
        raise ValueError(f"{path}: metadata 'blocks' add up to {sum(int(b['dim']) for b in blocks)} columns, "
                         f"field 'pooled' has {dim}")
    return blocks


def droppable_columns(path: str | Path) -> np.ndarray | None:
    """(D,) bool: the columns of the text feature table ``path`` that come from an encoder which lacks some
    languages (``concat``'s USE block: a Czech row has zeros there); None when there are none (one encoder,
    or every part knows every language).  Read from the ``blocks`` entry of the table's metadata.
    """
    blocks = _blocks(path)
    if not blocks:
        return None
    mask = np.concatenate([np.full(int(b["dim"]), b.get("langs") is not None) for b in blocks])
    return mask if mask.any() else None


def block_spans(path: str | Path) -> list[tuple[int, int]]:
    """The columns ``[start, stop)`` of every encoder's block of the text feature table ``path``, in order:
    one span over every column for a single encoder's table."""
    blocks = _blocks(path)
    if not blocks:
        return [(0, pq.read_schema(path).field("pooled").type.list_size)]
    stops = np.cumsum([int(b["dim"]) for b in blocks])
    return [(int(stop) - int(b["dim"]), int(stop)) for b, stop in zip(blocks, stops, strict=True)]


def block_span(path: str | Path, encoder: str) -> tuple[int, int]:
    """The columns ``[start, stop)`` of ``encoder``'s block in the concat text feature table ``path``;
    a ValueError naming the file and the blocks it has when there is no such block."""
    blocks = _blocks(path) or []
    start = 0
    for block in blocks:
        stop = start + int(block["dim"])
        if block["encoder"] == encoder:
            return start, stop
        start = stop
    have = [b["encoder"] for b in blocks]
    raise ValueError(f"{path}: param 'text_block' is '{encoder}' but these text features have "
                     + (f"the blocks {have}" if have else "no blocks (one encoder: use text_block 'all')"))
