"""NRCCR / LECCR layout importer on a tiny TextData + BigFile fixture."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from ccr.data.importers import nrccr
from ccr.data.importers._common import ImporterError
from ccr.data.tables import validate_captions, validate_images
from ccr.features.store import read_features

FIX = Path(__file__).parent / "fixtures" / "nrccr"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "VisualSearch"
    shutil.copytree(FIX, r)
    return r


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    for i in ("img1", "img2", "img3", "img4", "img5", "img9"):
        (d / f"{i}.jpg").write_bytes(b"")
    return d


def test_parse_caption_id() -> None:
    assert nrccr.parse_caption_id("v1#enc#3") == ("v1", "human", "en", "3")
    assert nrccr.parse_caption_id("v1#enc2zh#0") == ("v1", "mt", "zh", "0")
    assert nrccr.parse_caption_id("v1#de#2") == ("v1", "human", "de", "2")
    assert nrccr.parse_caption_id("v1#0") == ("v1", "human", "en", "0")
    assert nrccr.parse_caption_id("v1#enc2zh2enc#0")[0] is None
    assert nrccr.parse_caption_id("v1#zh2enc#0")[0] is None
    assert nrccr.parse_caption_id("v1")[0] is None


def test_splits_from_file_names(root: Path, images: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        im, cap = nrccr.build(tmp_path / "out", 0, root, "mini", image_dir=images)
    validate_images(im), validate_captions(cap)
    split = dict(zip(im.column("image_id").to_pylist(), im.column("split").to_pylist(), strict=True))
    assert split == {"img1": "train", "img2": "train", "img3": "val", "img4": "test", "img5": "test"}
    rows = {r["caption_id"]: r for r in cap.to_pylist()}
    mt = rows["img1#enc#1#mt-de"]
    assert mt["origin"] == "mt" and mt["lang"] == "de" and mt["source_id"] == "img1#enc#1"
    assert rows[mt["source_id"]]["text"] == "a rider on a brown horse"
    assert rows["img2#enc#0"]["text"] == "two kids play  football"  # split on the first space only
    assert rows["img4#de#1"] == {"caption_id": "img4#de#1", "image_id": "img4", "lang": "de",
                                 "text": "ein Vogel über dem Meer", "origin": "human", "split": "test",
                                 "source_id": None}
    assert not any("2enc" in i for i in rows)
    assert "img9" not in split  # its only caption is an MT line whose English source does not exist
    assert "English source" in caplog.text
    assert "back-translation" in caplog.text and "weird-tag" in caplog.text
    assert "not imported" in caplog.text


def test_id_lists_langs_and_features(root: Path, tmp_path: Path) -> None:
    ids = ["img1", "img2", "img3", "img4", "img5"]
    feat_dir = root / "mini" / "FeatureData" / "resnet"
    feat_dir.mkdir(parents=True)
    m = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    m.astype("<f4").tofile(feat_dir / "feature.bin")
    (feat_dir / "id.txt").write_text(" ".join(ids[:4]) + " imgX")
    (feat_dir / "shape.txt").write_text("5 3")
    id_lists = {s: f"ImageSets/{s}.txt" for s in ("train", "val", "test")}
    im, cap = nrccr.build(tmp_path / "out", 0, root, "mini", id_lists=id_lists, features="resnet",
                          langs=["en", "de"], include_mt=False)
    # img5 is in no id list; features come from the BigFile
    assert im.column("image_id").to_pylist() == ["img1", "img2", "img3", "img4"]
    assert set(cap.column("origin").to_pylist()) == {"human"}
    feats = read_features(tmp_path / "out" / "features" / "resnet.parquet")
    assert feats.ids == ["img1", "img2", "img3", "img4", "imgX"] and np.array_equal(feats.pooled, m)
    assert im.column("path").to_pylist()[0].endswith("resnet.parquet#img1")


def test_errors(root: Path, images: Path, tmp_path: Path) -> None:
    with pytest.raises(ImporterError, match="image_dir"):
        nrccr.build(tmp_path, 0, root, "mini")
    with pytest.raises(FileNotFoundError, match="TextData"):
        nrccr.build(tmp_path, 0, root, "nope", image_dir=images)
    bad = root / "mini" / "TextData" / "minitrain_enc.caption.txt"
    bad.write_text("img1#enc#0 fine\nimg1#enc#1\n")
    with pytest.raises(ImporterError, match=r"minitrain_enc\.caption\.txt:2: field 'text' is empty"):
        nrccr.build(tmp_path, 0, root, "mini", image_dir=images)
    bad.write_text("img4#enc#7 an image of the test split in a train file\n")
    with pytest.raises(ImporterError, match="img4"):
        nrccr.build(tmp_path, 0, root, "mini", image_dir=images)
