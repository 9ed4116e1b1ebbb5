"""COCO (Karpathy JSON + STAIR / COCO-CN extra captions) and generic manifest importers."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.data.importers import coco, manifest
from ccr.data.importers._common import ImporterError
from ccr.data.tables import validate_captions, validate_images

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture()
def coco_root(tmp_path: Path) -> Path:
    for cid, folder in ((1, "train2014"), (2, "val2014"), (3, "val2014"), (4, "val2014")):  # 5 is missing
        d = tmp_path / "coco" / folder
        d.mkdir(parents=True, exist_ok=True)
        (d / f"COCO_{folder}_{cid:012d}.jpg").write_bytes(b"")
    return tmp_path / "coco"


def test_coco(coco_root: Path, tmp_path: Path, caplog) -> None:
    extra = [{"path": str(FIX / "coco" / "stair_ja.json"), "lang": "ja"},
             {"path": str(FIX / "coco" / "coco-cn_zh.txt"), "lang": "zh", "origin": "human"}]
    with caplog.at_level(logging.INFO):
        im, cap = coco.build(tmp_path, 0, FIX / "coco" / "dataset_coco.json", coco_root, extra_captions=extra)
    validate_images(im), validate_captions(cap)
    split = dict(zip(im.column("image_id").to_pylist(), im.column("split").to_pylist(), strict=True))
    assert split == {"COCO_train2014_000000000001": "train", "COCO_val2014_000000000002": "train",  # restval
                     "COCO_val2014_000000000003": "val", "COCO_val2014_000000000004": "test"}
    assert im.column("path").to_pylist()[0] == str(coco_root / "train2014" / "COCO_train2014_000000000001.jpg")
    rows = {r["caption_id"]: r for r in cap.to_pylist()}
    assert rows["COCO_train2014_000000000001#en1"]["text"] == "A sleepy cat."
    assert rows["COCO_train2014_000000000001#ja0"]["text"] == "マットの上の猫"  # STAIR, matched by COCO id
    assert rows["COCO_val2014_000000000004#ja0"]["split"] == "test"
    assert rows["COCO_val2014_000000000002#zh0"]["text"] == "一辆红色公共汽车"  # COCO-CN key with #k
    assert Counter(cap.column("lang").to_pylist()) == {"en": 6, "ja": 2, "zh": 2}
    assert "image file missing" in caplog.text and "not in the Karpathy" in caplog.text
    with pytest.raises(FileNotFoundError, match="COCO_val2014_000000000005.jpg"):
        coco.build(tmp_path, 0, FIX / "coco" / "dataset_coco.json", coco_root, require_images="all")
    with pytest.raises(ImporterError, match="extra_captions"):
        coco.build(tmp_path, 0, FIX / "coco" / "dataset_coco.json", coco_root, extra_captions=[{"path": "x"}])


def test_coco_bad_json(tmp_path: Path) -> None:
    bad = tmp_path / "k.json"
    bad.write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "train"}]}))
    with pytest.raises(ImporterError, match=r"images\[0\] lacks field 'sentences'"):
        coco.build(tmp_path, 0, bad, tmp_path)
    bad.write_text("{not json")
    with pytest.raises(ImporterError, match="invalid JSON"):
        coco.build(tmp_path, 0, bad, tmp_path)


@pytest.fixture()
def mf_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mf"
    (d / "imgs").mkdir(parents=True)
    for name in ("000123.jpg", "b.jpg", "a.jpg"):
        (d / "imgs" / name).write_bytes(b"")
    for name in ("manifest.csv", "manifest.jsonl", "missing_cols.csv"):
        (d / name).write_bytes((FIX / "manifest" / name).read_bytes())
    return d


def test_manifest_csv(mf_dir: Path, tmp_path: Path) -> None:
    im, cap = manifest.build(tmp_path, 0, mf_dir / "manifest.csv")
    assert im.column("image_id").to_pylist() == ["000123", "b"]  # CSV ids keep leading zeros
    assert im.column("path").to_pylist()[0] == str(mf_dir.resolve() / "imgs" / "000123.jpg")
    rows = {r["caption_id"]: r for r in cap.to_pylist()}
    assert set(rows) == {"000123#en0", "000123#de0", "b#en0"}
    assert rows["b#en0"]["text"] == "A tree, green." and rows["b#en0"]["split"] == "test"
    assert rows["000123#de0"]["origin"] == "human"


def test_manifest_jsonl_parquet_and_missing(mf_dir: Path, tmp_path: Path, caplog) -> None:
    im, cap = manifest.build(tmp_path, 0, mf_dir / "manifest.jsonl", image_root=mf_dir)
    rows = cap.to_pylist()
    assert [r["caption_id"] for r in rows] == ["a#en0", "a#en1"]
    assert rows[0]["origin"] == "mt" and rows[0]["source_id"] == "x#en0" and rows[1]["origin"] == "human"
    pq.write_table(pa.table({"path": ["imgs/a.jpg", "imgs/zz.jpg"], "caption": ["x", "y"], "lang": ["en", "en"],
                             "split": ["train", "train"]}), mf_dir / "m.parquet")
    with caplog.at_level(logging.INFO):
        im, cap = manifest.build(tmp_path, 0, mf_dir / "m.parquet")
    assert im.column("image_id").to_pylist() == ["a"] and "zz.jpg" in caplog.text
    with pytest.raises(FileNotFoundError, match="zz.jpg"):
        manifest.build(tmp_path, 0, mf_dir / "m.parquet", require_images="all")


def test_manifest_errors(mf_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ImporterError, match=r"missing column\(s\) \['caption', 'lang'\]"):
        manifest.build(tmp_path, 0, mf_dir / "missing_cols.csv")
    (mf_dir / "e.csv").write_text("path,caption,lang,split\nimgs/a.jpg, ,en,train\n")
    with pytest.raises(ImporterError, match="row 1: field 'caption' is empty"):
        manifest.build(tmp_path, 0, mf_dir / "e.csv")
    (mf_dir / "s.csv").write_text("path,caption,lang,split\nimgs/a.jpg,x,en,dev\n")
    with pytest.raises(ImporterError, match="field 'split' is 'dev'"):
        manifest.build(tmp_path, 0, mf_dir / "s.csv")
    (mf_dir / "t.csv").write_text("path,caption,lang,split\nimgs/a.jpg,x,en,train\nimgs/a.jpg,y,en,test\n")
    with pytest.raises(ImporterError, match="row 2: image 'a' is in split 'train' and 'test'"):
        manifest.build(tmp_path, 0, mf_dir / "t.csv")
    with pytest.raises(ImporterError, match="unknown format"):
        manifest.build(tmp_path, 0, FIX / "coco" / "coco-cn_zh.txt")


def test_manifest_in_a_wrong_encoding_names_file_and_line(mf_dir: Path, tmp_path: Path) -> None:
    text = "path,caption,lang,split\nimgs/a.jpg,a dog,en,train\nimgs/b.jpg,un café au lait,fr,test\n"
    (mf_dir / "latin1.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(ImporterError, match=r"latin1\.csv line 3, column 18: not UTF-8 \(bytes b'\\xe9"):
        manifest.build(tmp_path, 0, mf_dir / "latin1.csv")
    (mf_dir / "latin1.jsonl").write_bytes('{"path": "imgs/a.jpg", "caption": "café", "lang": "fr", "split": "test"}\n'
                                          .encode("latin-1"))
    with pytest.raises(ImporterError, match=r"latin1\.jsonl line 1"):
        manifest.build(tmp_path, 0, mf_dir / "latin1.jsonl")
    (mf_dir / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # a BOM is fine
    im, _ = manifest.build(tmp_path, 0, mf_dir / "bom.csv")
    assert im.column("image_id").to_pylist() == ["a", "b"]
