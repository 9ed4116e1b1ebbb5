"""Multi30K importer: tiny fixture tree, then the real /work/shared/data (M30K-F8K protocol)."""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from ccr.data.importers import multi30k
from ccr.data.importers._common import ImporterError
from ccr.data.tables import validate_captions, validate_images

FIX = Path(__file__).parent / "fixtures"
ALL_IDS = ["1001", "1002", "1003", "1004", "2001", "2002", "3001", "3002"]


def shared_data() -> Path:
    env = os.environ.get("CCR_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    for i in ALL_IDS:
        (d / f"{i}.jpg").write_bytes(b"")  # existence only: the importer never decodes images
    return d


def counts(cap) -> Counter:
    return Counter(zip(cap.column("split").to_pylist(), cap.column("lang").to_pylist(), strict=True))


def test_task1_default_splits(images: Path, tmp_path: Path) -> None:
    im, cap = multi30k.build(tmp_path, 0, FIX / "multi30k", images)
    validate_images(im), validate_captions(cap)
    assert Counter(im.column("split").to_pylist()) == {"train": 4, "val": 2, "test": 2}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in im.column("path").to_pylist())
    assert counts(cap)["test", "cs"] == 2 and counts(cap)["train", "en"] == 4
    rows = {r["caption_id"]: r for r in cap.to_pylist()}
    r = rows["3002#t1-fr"]  # line 2 of test_2016_flickr.fr.gz describes image 2 of the split file
    assert r["image_id"] == "3002" and r["text"] == "Un chien court (test_2016_flickr 3002 t1)." and r["split"] == "test"
    assert set(cap.column("origin").to_pylist()) == {"human"}


def test_task2_and_split_files(images: Path, tmp_path: Path, caplog) -> None:
    split_files = {s: FIX / "m30k-split" / f"{s}.txt" for s in ("train", "val", "test")}
    with caplog.at_level(logging.INFO):
        im, cap = multi30k.build(tmp_path, 0, FIX / "multi30k", images, tasks=("task1", "task2"),
                                 split_files=split_files)
    split = dict(zip(im.column("image_id").to_pylist(), im.column("split").to_pylist(), strict=True))
    assert split == {"1001": "train", "1002": "train", "2001": "val", "2002": "val",
                     "3001": "test", "3002": "test", "1004": "test"}  # 1003 is in no list: dropped
    rows = {r["caption_id"]: r for r in cap.to_pylist()}
    # 1004 is a Multi30K *train* image moved to test: its captions keep their text, get split test.
    assert rows["1004#t1-de"]["split"] == "test" and "(train 1004 t1)" in rows["1004#t1-de"]["text"]
    assert rows["1004#t2-de3"]["text"] == "Ein Hund läuft (train 1004 t2 #3)."
    assert counts(cap)["test", "de"] == 3 * (1 + 5) and counts(cap)["test", "fr"] == 3
    assert not any(i.startswith("1003#") for i in rows)
    assert "image in no split_files list" in caplog.text and "1003.jpg" in caplog.text


def test_require_images(images: Path, tmp_path: Path, caplog) -> None:
    (images / "1002.jpg").unlink()
    with caplog.at_level(logging.INFO):
        im, cap = multi30k.build(tmp_path, 0, FIX / "multi30k", images)
    assert "1002" not in im.column("image_id").to_pylist()
    assert not any(i.startswith("1002#") for i in cap.column("caption_id").to_pylist())
    assert "image file missing" in caplog.text and "1002.jpg" in caplog.text
    with pytest.raises(FileNotFoundError, match="1002.jpg"):
        multi30k.build(tmp_path, 0, FIX / "multi30k", images, require_images="all")


def test_bad_inputs(images: Path, tmp_path: Path) -> None:
    root = tmp_path / "m30k"
    shutil.copytree(FIX / "multi30k", root)
    with pytest.raises(ValueError, match="require_images"):
        multi30k.build(tmp_path, 0, root, images, require_images="some")
    with pytest.raises(ValueError, match="splits"):
        multi30k.build(tmp_path, 0, root, images, splits={"train": "training"})
    with pytest.raises(FileNotFoundError, match="test_2017_flickr"):
        multi30k.build(tmp_path, 0, root, images, splits={"test_2017_flickr": "test"})
    (root / "task1/image_splits/val.txt").write_text("2001.jpg\n")  # 1 image, 2 caption lines
    with pytest.raises(ImporterError, match=r"val\.\w\w\.gz has 2 captions but its image list has 1"):
        multi30k.build(tmp_path, 0, root, images)


# ---- the real data ------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_real_m30k_f8k() -> None:
    data = shared_data()
    if not (data / "multi30k").is_dir():
        pytest.skip(f"shared benchmark data not found at {data} (set CCR_SHARED_DATA)")
    im, cap = multi30k.build(
        Path("/nonexistent-out"), 0, data / "multi30k", data / "flickr30k-images-subset",
        tasks=("task1", "task2"), require_images="available",
        split_files={s: data / "m30k-f8k" / f"{s}.txt" for s in ("train", "val", "test")})
    assert im.num_rows == 7478
    assert Counter(im.column("split").to_pylist()) == {"train": 6236, "val": 242, "test": 1000}
    kind = Counter((r["split"], r["lang"], r["caption_id"].split("#")[1][:2]) for r in
                   cap.select(["split", "lang", "caption_id"]).to_pylist())
    for lang in ("fr", "de", "cs"):
        assert kind["test", lang, "t1"] == 1000
    assert kind["test", "de", "t2"] == 5000
    # English, as observed: one task1 + five task2 captions per image.
    assert kind["test", "en", "t1"] == 1000 and kind["test", "en", "t2"] == 5000
    assert kind["train", "en", "t1"] == 6236 and kind["train", "en", "t2"] == 31180
    assert kind["val", "en", "t1"] == 242 and kind["val", "en", "t2"] == 1210
    assert cap.num_rows == 104692
    # Human de/fr/cs captions of train/val ARE in the table (the training loaders' filter
    # lang == "en" & origin == "human" keeps them out); make sure that filter can work.
    rows = cap.select(["lang", "origin", "split", "caption_id"]).to_pylist()
    assert {r["origin"] for r in rows} == {"human"}
    for lang in ("de", "fr", "cs"):
        assert all(r["caption_id"].split("#")[1].startswith(("t1-" + lang, "t2-" + lang))
                   for r in rows if r["lang"] == lang)
        for split in ("train", "val"):
            assert kind[split, lang, "t1"] > 0
    trainable = [r for r in rows if r["lang"] == "en" and r["origin"] == "human" and r["split"] == "train"]
    assert len(trainable) == 6236 + 31180
    assert all("#t1-en" in r["caption_id"] or "#t2-en" in r["caption_id"] for r in trainable)
    test_ids = {i for i, s in zip(im.column("image_id").to_pylist(), im.column("split").to_pylist(), strict=True)
                if s == "test"}
    assert len(test_ids) == 1000
    assert not test_ids & {r["caption_id"].split("#")[0] for r in trainable}


def test_unknown_param_is_type_error(images: Path, tmp_path: Path) -> None:
    # the prepare registry turns this TypeError into a clear config error
    with pytest.raises(TypeError, match="image_folder"):
        multi30k.build(tmp_path, 0, FIX / "multi30k", images, image_folder="x")
