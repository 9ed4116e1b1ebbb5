"""The prepare_dataset stage: registry, checks and atomic outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pytest

from ccr.data import prepare
from ccr.data.prepare import DATASETS, check_dataset, prepare_dataset
from ccr.data.tables import CAPTIONS_SCHEMA, TableError, read_captions, read_images
from ccr.registry import Registry, UnknownBackendError

SMALL = {"n_train": 4, "n_val": 2, "n_test": 3, "captions_per_image": 2, "image_size": 48}


def test_registry_names():
    assert {"synthetic", "multi30k", "nrccr", "coco", "manifest"} <= set(DATASETS.names())


def test_prepare_synthetic_writes_valid_tables(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    prepare_dataset("synthetic", dict(SMALL), seed=7, out_dir=tmp_path)
    images = read_images(tmp_path / "images.parquet")
    captions = read_captions(tmp_path / "captions.parquet")
    assert images.num_rows == 9 and captions.num_rows == 9 * 2 + 3
    assert all(Path(p).is_file() for p in images.column("path").to_pylist())
    assert "split=test lang=fr origin=human: 3" in caplog.text
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_unknown_source_lists_known_names(tmp_path):
    with pytest.raises(UnknownBackendError) as err:
        prepare_dataset("flickr9000", {}, seed=0, out_dir=tmp_path)
    for name in ("synthetic", "multi30k", "manifest"):
        assert name in str(err.value)
    assert "flickr9000" in str(err.value)


def test_bad_param_is_reported(tmp_path):
    with pytest.raises(ValueError, match="n_imagez"):
        prepare_dataset("synthetic", {"n_imagez": 3}, seed=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        prepare_dataset("synthetic", {"seed": 3}, seed=0, out_dir=tmp_path)


def _fake_registry(tmp_path: Path, images: pa.Table, captions: pa.Table) -> Registry:
    reg: Registry = Registry("dataset")
    reg.register("fake", lambda out_dir, seed: (images, captions))
    return reg


def _captions(rows: list[tuple[str, str, str]]) -> pa.Table:
    return pa.table({
        "caption_id": [r[0] for r in rows], "image_id": [r[1] for r in rows], "lang": ["en"] * len(rows),
        "text": ["a red circle"] * len(rows), "origin": ["human"] * len(rows), "split": [r[2] for r in rows],
    })


def test_missing_image_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"x")
    images = pa.table({"image_id": ["a", "b"], "path": ["a.png", "pics/b.png"], "split": ["train", "test"]})
    captions = _captions([("a#en0", "a", "train"), ("b#en0", "b", "test")])
    monkeypatch.setattr(prepare, "DATASETS", _fake_registry(tmp_path, images, captions))
    (tmp_path / "images.parquet").write_bytes(b"stale")  # a previous run's output must not survive a failure
    with pytest.raises(FileNotFoundError, match=r"pics/b\.png.*image_id 'b'"):
        prepare_dataset("fake", {}, seed=0, out_dir=tmp_path)
    assert not (tmp_path / "images.parquet").exists() and not (tmp_path / "captions.parquet").exists()


def test_captions_must_reference_images_of_their_split(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    images = pa.table({"image_id": ["a"], "path": [str(tmp_path / "a.png")], "split": ["train"]})
    with pytest.raises(TableError, match="'zz'.*not in the images table"):
        check_dataset(images, _captions([("zz#en0", "zz", "train")]), tmp_path, "t")
    with pytest.raises(TableError, match="field 'split' of caption 'a#en0'"):
        check_dataset(images, _captions([("a#en0", "a", "test")]), tmp_path, "t")
    imgs, caps = check_dataset(images, _captions([("a#en0", "a", "train")]), tmp_path, "t")
    assert caps.schema.equals(CAPTIONS_SCHEMA) and imgs.num_rows == 1


def test_invalid_table_from_builder(tmp_path, monkeypatch):
    images = pa.table({"image_id": ["a"], "path": ["a.png"], "split": ["holdout"]})
    monkeypatch.setattr(prepare, "DATASETS", _fake_registry(tmp_path, images, _captions([])))
    with pytest.raises(TableError, match="split"):
        prepare_dataset("fake", {}, seed=0, out_dir=tmp_path)
