"""ccr.io (atomic + sharded, resumable writes), ccr.registry (backend lookup) and the data tables' checks."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.data.tables import TableError, validate_captions
from ccr.io import FINGERPRINT_KEY, ShardedWriter, atomic_path, batched, read_fingerprint
from ccr.registry import Registry, UnknownBackendError

SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.int64())])


def rows(keys):
    return pa.table({"key": keys, "value": [int(k[1:]) for k in keys]}, schema=SCHEMA)


def test_sharded_writer_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "table.parquet"
    keys = [f"k{i}" for i in range(10)]
    writer = ShardedWriter(out, key="key", schema=SCHEMA, fingerprint="fp-a")
    writer.write(rows(keys[:4]))
    assert not out.exists()  # nothing that looks complete before finish()
    # a "crash", then a new writer picks up the finished shard
    writer = ShardedWriter(out, key="key", schema=SCHEMA, fingerprint="fp-a")
    todo = writer.pending(keys)
    assert todo == keys[4:]
    for chunk in batched(todo, 4):
        writer.write(rows(list(chunk)))
    table = writer.finish(order=keys)
    assert table.column("key").to_pylist() == keys
    assert pq.read_table(out).column("value").to_pylist() == list(range(10))
    assert not (tmp_path / "table.parquet.shards").exists()
    assert read_fingerprint(out) == "fp-a"


def test_sharded_writer_discards_shards_of_another_fingerprint(tmp_path, caplog):
    out = tmp_path / "table.parquet"
    keys = [f"k{i}" for i in range(6)]
    ShardedWriter(out, key="key", schema=SCHEMA, fingerprint="old").write(rows(keys[:3]))
    with caplog.at_level("WARNING", logger="ccr"):
        writer = ShardedWriter(out, key="key", schema=SCHEMA, fingerprint="new")
    assert "discarded 1 leftover shard(s)" in caplog.text and "old" in caplog.text
    assert writer.pending(keys) == keys
    writer.write(rows(keys))
    assert writer.finish(order=keys).schema.metadata[FINGERPRINT_KEY] == b"new"


def test_byte_identical_whatever_the_shard_boundaries(tmp_path):
    keys = [f"k{i}" for i in range(10)]
    for name, size in (("a", 3), ("b", 10)):
        writer = ShardedWriter(tmp_path / f"{name}.parquet", key="key", schema=SCHEMA, fingerprint="fp")
        for chunk in batched(keys, size):
            writer.write(rows(list(chunk)))
        writer.finish(order=keys)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


def test_sharded_writer_refuses_repeated_keys_and_missing_rows(tmp_path):
    writer = ShardedWriter(tmp_path / "t.parquet", key="key", schema=SCHEMA, fingerprint="fp")
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


def test_progress_lines_in_logs_and_a_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    import logging

    import ccr.io as io_mod
    from ccr.io import Progress, setup_logging

    log_file = tmp_path / "rule.log"
    setup_logging(log_file)
    monkeypatch.setattr(io_mod, "_on_terminal", lambda: False)
    progress = Progress(4, "embed demo", every_s=0.0)
    assert progress.bar is None
    progress.update(4)
    assert "embed demo: 4/4 rows (100.0%)" in log_file.read_text()
    assert "embed demo: 4/4 rows" in capsys.readouterr().err  # plain lines when stderr is not a terminal
    monkeypatch.setattr(io_mod, "_on_terminal", lambda: True)
    progress = Progress(4, "embed tty", every_s=0.0)
    assert progress.bar is not None
    progress.update(2)
    progress.update(2)
    err = capsys.readouterr().err
    assert "embed tty: 4/4 rows" in log_file.read_text() and "embed tty: 4/4 rows (" not in err  # the bar shows it
    assert "embed tty" in err  # the tqdm bar itself
    logging.getLogger().handlers.clear()
