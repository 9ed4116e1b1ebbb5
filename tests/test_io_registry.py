"""ccr.io (atomic + sharded, resumable writes), ccr.registry (backend lookup) and the data tables' checks."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.data.tables import TableError, validate_captions
from ccr.io import ShardedWriter, batched
from ccr.registry import Registry, UnknownBackendError

SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.int64())])


def rows(keys):
    return pa.table({"key": keys, "value": [int(k[1:]) for k in keys]}, schema=SCHEMA)


def test_sharded_writer_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "table.parquet"
    keys = [f"k{i}" for i in range(10)]
    writer = ShardedWriter(out, key="key", schema=SCHEMA)
    writer.write(rows(keys[:4]))
    assert not out.exists()  # nothing that looks complete before finish()
    # a "crash", then a new writer picks up the finished shard
    writer = ShardedWriter(out, key="key", schema=SCHEMA)
    todo = writer.pending(keys)
    assert todo == keys[4:]
    for chunk in batched(todo, 4):
        writer.write(rows(list(chunk)))
    table = writer.finish(order=keys)
    assert table.column("key").to_pylist() == keys
    assert pq.read_table(out).column("value").to_pylist() == list(range(10))
    assert not (tmp_path / "table.parquet.shards").exists()


def test_sharded_writer_refuses_repeated_keys_and_missing_rows(tmp_path):
    writer = ShardedWriter(tmp_path / "t.parquet", key="key", schema=SCHEMA)
    writer.write(rows(["k1", "k2"]))
    with pytest.raises(ValueError, match="repeats"):
        writer.write(rows(["k2", "k3"]))
    with pytest.raises(RuntimeError, match="never written"):
        writer.finish(order=["k1", "k2", "k3"])
    assert not (tmp_path / "t.parquet").exists()


def test_registry_names_known_backends_and_passes_hints_only_when_accepted():
    registry: Registry = Registry("demo")
    registry.register("with-threads", lambda threads=1, size=0: ("with", threads, size))
    registry.register("without", lambda size=0: ("without", size))
    with pytest.raises(UnknownBackendError, match="known backends: with-threads, without"):
        registry.create("nope")
    assert registry.create("with-threads", hints={"threads": 2}, size=3) == ("with", 2, 3)
    assert registry.create("with-threads", hints={"threads": 2}, threads=5) == ("with", 5, 0)
    assert registry.create("without", hints={"threads": 2}, size=1) == ("without", 1)
    with pytest.raises(ValueError, match="bad params"):
        registry.create("without", colour="red")


def test_empty_caption_is_named():
    table = pa.table({"caption_id": ["a#en0", "b#en0"], "image_id": ["a", "b"], "lang": ["en", "en"],
                      "text": ["a dog", "  "], "origin": ["human", "human"], "split": ["train", "train"]})
    with pytest.raises(TableError, match="'text' is empty for caption_id 'b#en0'"):
        validate_captions(table, where="captions.parquet")
