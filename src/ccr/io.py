"""Crash-safe output: atomic table writes, resumable sharded writers and progress logging.

Long stages (translation, descriptions, feature extraction) process rows in shards.  Every shard
is written atomically to ``<output>.shards/part-NNNNN.parquet`` and records which keys it holds,
so a crashed run resumes where it stopped without losing or duplicating rows.  The final output
file appears only once every row is done (written to a temporary name, then renamed), so a
partial output never looks complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ccr.keys import stable_hash

log = logging.getLogger("ccr")


def _on_terminal() -> bool:
    return sys.stderr.isatty()


class _NotProgressOnTerminal(logging.Filter):
    """Progress lines go to the log file; on a terminal the progress bar shows them instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, "progress", False) and _on_terminal())


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to ``log_file`` (the Snakemake rule's ``log:``)."""
    console = logging.StreamHandler()
    console.addFilter(_NotProgressOnTerminal())
    handlers: list[logging.Handler] = [console]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )

    # An uncaught error must land in the rule's log too, not only on the terminal.
    def log_uncaught(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        logging.getLogger("ccr").critical("failed: %s", exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = log_uncaught


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, make it ``path`` durably.

    The one atomic-write helper of the library: the caller writes the temporary file, which is then
    fsynced, renamed over ``path`` and its directory fsynced, so after a crash (even of the machine)
    ``path`` holds either the old content or the complete new one, never a torn file.  On error the
    temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    # makes the rename itself durable; some file systems refuse to open directories (then skip)
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically and durably (JSON, HTML, PNG outputs)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_table_atomic(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write ``table`` to Parquet at ``path`` atomically and durably.

    Chunks are combined and metadata keys sorted first, so the file's bytes depend only on the
    table's content and schema (a table assembled from resumed shards or gathered parts is
    byte-identical to one written in one go).
    """
    if table.schema.metadata:
        table = table.replace_schema_metadata(dict(sorted(table.schema.metadata.items())))
    table = table.cast(pa.schema([_as_read(f) for f in table.schema], metadata=table.schema.metadata))
    with atomic_path(path) as tmp:
        pq.write_table(table.combine_chunks(), tmp)
    return Path(path)


def _as_read(field: pa.Field) -> pa.Field:
    """``field`` with list items named as Parquet names them ("element"), so a table written from
    memory and one written from tables read back from Parquet store the same schema."""
    kind = field.type
    if pa.types.is_fixed_size_list(kind):
        kind = pa.list_(_as_read(kind.value_field).with_name("element"), kind.list_size)
    elif pa.types.is_list(kind):
        kind = pa.list_(_as_read(kind.value_field).with_name("element"))
    elif pa.types.is_large_list(kind):
        kind = pa.large_list(_as_read(kind.value_field).with_name("element"))
    return field.with_type(kind)


# ---- fingerprints: what made an output ---------------------------------------------------------

FINGERPRINT_KEY = b"ccr.fingerprint"


def fingerprint(stage: str, settings: Any, inputs: Mapping[str, str]) -> str:
    """The fingerprint of an output: its stage, the settings that change it and its inputs' fingerprints."""
    return stable_hash({"stage": stage, "settings": settings, "inputs": dict(inputs)}, length=16)


def stamp(table: pa.Table | pa.Schema, fingerprint_: str) -> Any:
    """``table`` (or schema) with ``fingerprint_`` added to its schema metadata."""
    meta = dict(table.schema.metadata or {}) if isinstance(table, pa.Table) else dict(table.metadata or {})
    meta[FINGERPRINT_KEY] = fingerprint_.encode()
    return table.replace_schema_metadata(meta) if isinstance(table, pa.Table) else table.with_metadata(meta)


def table_digest(table: pa.Table) -> str:
    """SHA-256 of a table's content (data and schema without metadata): for tables made from outside data."""
    sink = pa.BufferOutputStream()
    plain = table.replace_schema_metadata(None).combine_chunks()
    with pa.ipc.new_stream(sink, plain.schema) as writer:
        writer.write_table(plain)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_fingerprint(path: str | os.PathLike) -> str:
    """The fingerprint stored in a Parquet file's metadata, else (a file from outside) the file's digest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    if path.suffix == ".parquet":
        meta = pq.read_schema(path).metadata or {}
        if FINGERPRINT_KEY in meta:
            return meta[FINGERPRINT_KEY].decode()
    return "sha256:" + file_digest(path)


def path_fingerprint(path: str | os.PathLike) -> str:
    """:func:`read_fingerprint` of a file, or the digest of every file under a folder (e.g. a BigFile)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return "tree:" + stable_hash({str(p.relative_to(path)): file_digest(p) for p in files}, length=16)
    return read_fingerprint(path)


def named_fingerprints(named: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """name -> :func:`path_fingerprint` of each named input (e.g. Snakemake's ``input.items()``), a list of
    them for a name that holds several paths (an ensemble's students)."""
    return {name: [path_fingerprint(p) for p in path] if isinstance(path, list | tuple) else path_fingerprint(path)
            for name, path in named}


def input_fingerprints(paths: Mapping[str, str | os.PathLike | None]) -> dict[str, str]:
    """name -> fingerprint of each given input (None entries skipped)."""
    return {name: read_fingerprint(p) for name, p in sorted(paths.items()) if p is not None}


class Progress:
    """Rows done, rate and ETA: a line in the log at most every ``every_s`` seconds (and at the end),
    and a tqdm progress bar when stderr is a terminal."""

    def __init__(self, total: int, what: str, every_s: float = 5.0, logger: logging.Logger = log):
        self.total, self.what, self.every_s, self.log = total, what, every_s, logger
        self.done = 0
        self.start = self.last = time.monotonic()
        self.bar = None
        if _on_terminal() and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit="row", dynamic_ncols=True, leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if self.done >= self.total:
                self.bar.close()
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            elapsed = max(now - self.start, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.log.info(
                "%s: %d/%d rows (%.1f%%), %.1f rows/s, elapsed %.0fs, ETA %.0fs",
                self.what, self.done, self.total, 100.0 * self.done / max(self.total, 1),
                rate, elapsed, eta, extra={"progress": True},
            )


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- scatter/gather: a stage's rows split into parts, each its own job --------------------------

Part = tuple[int, int]  # (index from 0, number of parts)
PART_KEY = b"ccr.part"
POSITION = "_pos"  # a part's column: each row's position in the whole output (dropped when gathered)


def parse_part(scatteritem: str | None) -> Part | None:
    """Snakemake's scatter item ``"2-of-3"`` -> ``(1, 3)``; None (or ``"1-of-1"``) -> None (the whole)."""
    if not scatteritem:
        return None
    index, _, count = scatteritem.partition("-of-")
    part = (int(index) - 1, int(count))
    if not 0 <= part[0] < part[1]:
        raise ValueError(f"bad scatter item {scatteritem!r}: expected '<i>-of-<n>' with 1 <= i <= n")
    return None if part[1] == 1 else part


def plan_shards(keys: Sequence[str], shard_size: int, part: Part | None = None) -> list[list[str]]:
    """The shards (key lists, in processing order) a job produces: all of them, or part ``i`` of ``n``.

    A part is a contiguous run of whole shards, so a scattered run batches every row exactly as an
    unscattered run does: the gathered output holds the same values, byte for byte.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    shards = [list(chunk) for chunk in batched(keys, shard_size)]
    if part is None:
        return shards
    index, count = part
    return shards[index * len(shards) // count: (index + 1) * len(shards) // count]


def gather_parts(part_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> pa.Table:
    """Join the parts of a scattered stage into its output, identical to an unscattered run's.

    Checks that the parts are all the parts (1..n) of one output (same fingerprint), that together
    they hold every row once, puts the rows back in order and writes the table atomically.
    """
    if not part_paths:
        raise ValueError(f"{out_path}: no parts to gather")
    tables, seen = [], set()
    for path in part_paths:
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        if PART_KEY not in meta or POSITION not in table.column_names:
            raise ValueError(f"{path}: not a part of a scattered stage (no {PART_KEY.decode()} metadata)")
        seen.add(meta[PART_KEY].decode())
        tables.append(table)
    fingerprints = {t.schema.metadata.get(FINGERPRINT_KEY) for t in tables}
    if len(fingerprints) != 1:
        raise ValueError(f"{out_path}: the parts were made from different inputs or settings: "
                         f"{sorted(f.decode() if f else 'none' for f in fingerprints)}")
    count = int(next(iter(seen)).split("/")[1])
    if seen != {f"{i}/{count}" for i in range(count)}:
        raise ValueError(f"{out_path}: parts {sorted(seen)} are not all {count} parts")
    table = pa.concat_tables(tables)
    table = table.take(pc.sort_indices(table[POSITION]))
    positions = table[POSITION].to_numpy()
    if len(positions) and not (positions == range(len(positions))).all():
        raise ValueError(f"{out_path}: the parts do not hold every row exactly once")
    meta = {k: v for k, v in tables[0].schema.metadata.items() if k != PART_KEY}
    table = table.drop_columns([POSITION]).replace_schema_metadata(meta)
    write_table_atomic(table, out_path)
    log.info("gathered %d part(s), %d rows -> %s", count, table.num_rows, out_path)
    return table


class ShardedWriter:
    """Resumable, sharded production of one Parquet table keyed by a string column.

    Usage::

        writer = ShardedWriter(out_path, key="caption_id", schema=schema, fingerprint=fp)
        todo = writer.pending(all_keys)          # keys not yet in a finished shard
        for chunk in batched(todo, 256):
            writer.write(make_rows(chunk))       # one atomic shard per call
        writer.finish(order=all_keys)            # concatenates, checks, renames, removes shards

    ``fingerprint`` names what the rows are made from (stage, backend, settings, the inputs'
    fingerprints: :func:`fingerprint`); the final table carries it.  Every shard carries it too,
    combined with ``resume_key`` (how the work is cut: shard size, part); leftover shards of another
    combination (a crash, then a change of data or settings) are discarded with a log line, so a
    resume only ever continues work made from the same inputs, cut the same way.
    """

    def __init__(self, out_path: str | os.PathLike, key: str, schema: pa.Schema, fingerprint: str,
                 resume_key: Any = None):
        self.out_path = Path(out_path)
        self.key, self.output_fingerprint = key, fingerprint
        fingerprint = fingerprint if resume_key is None else stable_hash([fingerprint, resume_key], length=16)
        self.fingerprint = fingerprint
        self.schema = stamp(schema, fingerprint)
        self.shard_dir = self.out_path.with_name(self.out_path.name + ".shards")
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        # Leftover temporary files are shards a crash interrupted mid-write: never trusted.
        for tmp in self.shard_dir.glob(".*.tmp-*"):
            tmp.unlink()
        self._shards: list[Path] = []
        self._done: set[str] = set()
        stale: list[str] = []
        for shard in sorted(self.shard_dir.glob("part-*.parquet")):
            old = pq.read_schema(shard)
            found = (old.metadata or {}).get(FINGERPRINT_KEY, b"none").decode()
            if found != fingerprint or old.remove_metadata() != schema.remove_metadata():
                stale.append(found)
                shard.unlink()
                continue
            self._shards.append(shard)
            self._done.update(pq.read_table(shard, columns=[key]).column(key).to_pylist())
        if stale:
            log.warning("%s: discarded %d leftover shard(s) made from other inputs or settings (fingerprint %s, "
                        "now %s)", self.out_path, len(stale), ", ".join(sorted(set(stale))), fingerprint)
        if self._done:
            log.info("resuming %s: %d rows already done in %d shard(s) (fingerprint %s)",
                     self.out_path, len(self._done), len(self._shards), fingerprint)

    @property
    def done_keys(self) -> set[str]:
        return set(self._done)

    def pending(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self._done]

    def pending_shards(self, shards: Sequence[Sequence[str]]) -> list[list[str]]:
        """The planned shards (see :func:`plan_shards`) not yet written, each with its pending keys."""
        todo = [self.pending(shard) for shard in shards]
        return [shard for shard in todo if shard]

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        table = table.select(self.schema.names).cast(self.schema)
        keys = table.column(self.key).to_pylist()
        dup = self._done.intersection(keys)
        if dup:
            raise ValueError(f"{self.out_path}: shard repeats {len(dup)} key(s) already written, e.g. {sorted(dup)[:3]}")
        # numbered after the highest existing shard: discarded shards leave gaps, never clashes
        number = int(self._shards[-1].stem.split("-")[1]) + 1 if self._shards else 0
        shard = self.shard_dir / f"part-{number:05d}.parquet"
        write_table_atomic(table, shard)
        self._shards.append(shard)
        self._done.update(keys)

    def finish(self, order: Sequence[str] | None = None, part: Part | None = None,
               positions: Mapping[str, int] | None = None) -> pa.Table:
        """Concatenate the shards into the final file (rows in ``order`` when given).

        For part ``(i, n)`` of a scattered stage, ``positions`` maps each key to its row in the whole
        output: the file gets a ``_pos`` column and the part in its metadata (see :func:`gather_parts`).
        """
        tables = [pq.read_table(s) for s in self._shards]
        table = pa.concat_tables(tables).cast(self.schema) if tables else self.schema.empty_table()
        if order is not None:
            missing = set(order) - self._done
            if missing:
                raise RuntimeError(f"{self.out_path}: {len(missing)} row(s) never written, e.g. {sorted(missing)[:3]}")
            index = {k: i for i, k in enumerate(table.column(self.key).to_pylist())}
            table = table.take(pa.array([index[k] for k in order], pa.int64()))
        meta = {**self.schema.metadata, FINGERPRINT_KEY: self.output_fingerprint.encode()}
        if part is not None:
            if positions is None:
                raise ValueError("a part's output needs the positions of its rows in the whole output")
            keys = table.column(self.key).to_pylist()
            table = table.append_column(POSITION, pa.array([positions[k] for k in keys], pa.int64()))
            meta[PART_KEY] = f"{part[0]}/{part[1]}".encode()
        table = table.replace_schema_metadata(meta)
        write_table_atomic(table, self.out_path)
        shutil.rmtree(self.shard_dir, ignore_errors=True)
        return table
