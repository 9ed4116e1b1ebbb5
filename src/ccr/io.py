"""Crash-safe output: atomic table writes, resumable sharded writers and progress logging.

Long stages (translation, descriptions, feature extraction) process rows in shards.  Every shard
is written atomically to ``<output>.shards/part-NNNNN.parquet`` and records which keys it holds,
so a crashed run resumes where it stopped without losing or duplicating rows.  The final output
file appears only once every row is done (written to a temporary name, then renamed), so a
partial output never looks complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("ccr")


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to ``log_file`` (the Snakemake rule's ``log:``)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
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


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename (JSON, HTML, PNG outputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_table_atomic(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write ``table`` to Parquet at ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


class Progress:
    """Logs rows done, rate and ETA at most every ``every_s`` seconds (and at the end)."""

    def __init__(self, total: int, what: str, every_s: float = 5.0, logger: logging.Logger = log):
        self.total, self.what, self.every_s, self.log = total, what, every_s, logger
        self.done = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            elapsed = max(now - self.start, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.log.info(
                "%s: %d/%d rows (%.1f%%), %.1f rows/s, elapsed %.0fs, ETA %.0fs",
                self.what, self.done, self.total, 100.0 * self.done / max(self.total, 1),
                rate, elapsed, eta,
            )


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ShardedWriter:
    """Resumable, sharded production of one Parquet table keyed by a string column.

    Usage::

        writer = ShardedWriter(out_path, key="caption_id", schema=schema)
        todo = writer.pending(all_keys)          # keys not yet in a finished shard
        for chunk in batched(todo, 256):
            writer.write(make_rows(chunk))       # one atomic shard per call
        writer.finish(order=all_keys)            # concatenates, checks, renames, removes shards
    """

    def __init__(self, out_path: str | os.PathLike, key: str, schema: pa.Schema):
        self.out_path = Path(out_path)
        self.key, self.schema = key, schema
        self.shard_dir = self.out_path.with_name(self.out_path.name + ".shards")
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        # Leftover temporary files are shards a crash interrupted mid-write: never trusted.
        for tmp in self.shard_dir.glob(".*.tmp-*"):
            tmp.unlink()
        self._shards = sorted(self.shard_dir.glob("part-*.parquet"))
        self._done: set[str] = set()
        for shard in self._shards:
            keys = pq.read_table(shard, columns=[key]).column(key).to_pylist()
            self._done.update(keys)
        if self._done:
            log.info("resuming %s: %d rows already done in %d shard(s)",
                     self.out_path, len(self._done), len(self._shards))

    @property
    def done_keys(self) -> set[str]:
        return set(self._done)

    def pending(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self._done]

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        table = table.select(self.schema.names).cast(self.schema)
        keys = table.column(self.key).to_pylist()
        dup = self._done.intersection(keys)
        if dup:
            raise ValueError(f"{self.out_path}: shard repeats {len(dup)} key(s) already written, e.g. {sorted(dup)[:3]}")
        shard = self.shard_dir / f"part-{len(self._shards):05d}.parquet"
        write_table_atomic(table, shard)
        self._shards.append(shard)
        self._done.update(keys)

    def finish(self, order: Sequence[str] | None = None) -> pa.Table:
        """Concatenate the shards into the final file (rows in ``order`` when given)."""
        tables = [pq.read_table(s) for s in self._shards]
        table = pa.concat_tables(tables).cast(self.schema) if tables else self.schema.empty_table()
        if order is not None:
            missing = set(order) - self._done
            if missing:
                raise RuntimeError(f"{self.out_path}: {len(missing)} row(s) never written, e.g. {sorted(missing)[:3]}")
            index = {k: i for i, k in enumerate(table.column(self.key).to_pylist())}
            table = table.take(pa.array([index[k] for k in order], pa.int64()))
        write_table_atomic(table, self.out_path)
        shutil.rmtree(self.shard_dir, ignore_errors=True)
        return table
