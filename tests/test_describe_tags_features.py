"""imagenet-tags from the image features (its default, ``source: image-features``): the ImageNet head of the
EfficientNet-Lite encoder on the pooled features the features stage cached, so a run sends the images
through the network once. On square images of the encoder's input size it writes what the pixel path
(its own Lite0 on a centre crop) writes; features it cannot read are refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from ccr.data.tables import read_captions, read_images
from ccr.describe import DESCRIBERS, describe_images
from ccr.features import embed_images
from ccr.features.store import Features, read_features
from ccr.jobs import check_describer, describer_needs


def _scene(path: Path, i: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(i)
    im = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(4):
        x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        box = (int(x0), int(y0), int(x0 + rng.integers(20, size[0] // 2)), int(y0 + rng.integers(20, size[1] // 2)))
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    im.save(path)


def _images(tmp_path: Path, n: int, size: tuple[int, int] = (224, 224)) -> Path:
    (tmp_path / "img").mkdir(parents=True, exist_ok=True)
    rows = {"image_id": [], "path": [], "split": []}
    for i in range(n):
        _scene(tmp_path / "img" / f"{i}.png", i, size)
        rows["image_id"].append(f"im{i}")
        rows["path"].append(f"img/{i}.png")
        rows["split"].append(["train", "val", "test"][i % 3])
    pq.write_table(pa.table(rows), tmp_path / "images.parquet")
    return tmp_path / "images.parquet"


@pytest.fixture(scope="module")
def square(tmp_path_factory) -> tuple[Path, Path]:
    """Six 224x224 images and their EfficientNet-Lite0 features, made by the features stage."""
    root = tmp_path_factory.mktemp("square")
    images = _images(root, 6)
    features = root / "lite0.parquet"
    embed_images(images, "efficientnet-lite0", {"batch_size": 4, "threads": 1}, features, shard_size=4)
    return images, features


def test_from_the_features_the_descriptions_are_those_of_the_pixels(tmp_path, square):
    images, features = square
    by_pixels, by_features = tmp_path / "pixels.parquet", tmp_path / "features.parquet"
    describe_images(images, "imagenet-tags", {"views": 4, "threads": 1, "source": "pixels"}, by_pixels)
    describe_images(images, "imagenet-tags", {"views": 4, "threads": 1}, by_features, shard_size=4,
                    image_features_path=features)
    a, b = read_captions(by_pixels), read_captions(by_features)
    assert a.num_rows == 6 * 4 and a.equals(b)
    assert len(set(a.column("text").to_pylist())) > 6  # the images are told apart


def test_the_stage_needs_the_features_and_reads_no_other_encoder(tmp_path, square):
    images, features = square
    with pytest.raises(ValueError, match="needs image_features"):
        describe_images(images, "imagenet-tags", {"views": 3}, tmp_path / "a.parquet")
    assert not (tmp_path / "a.parquet").exists()
    tagger = DESCRIBERS.create("imagenet-tags", views=3)
    feats = read_features(features, with_tokens=False)
    alien = Features(ids=feats.ids, pooled=feats.pooled, meta={"backend": "hf-clip"})
    with pytest.raises(ValueError, match=r"'hf-clip'.*source: pixels"):
        tagger.describe_table(read_images(images), None, alien)
    with pytest.raises(ValueError, match="has no row in the image features"):
        tagger.describe_table(read_images(images), None, feats.take(feats.ids[:2]))
    with pytest.raises(ValueError, match="describe_table or describe_pooled"):
        tagger.describe([str(images.parent / "img" / "0.png")])


def test_other_shapes_are_described_as_the_encoder_saw_them(tmp_path):
    """A non-square photo: the tags come from what the image encoder saw (the whole image, squashed), so
    they are the pixel path's tags of that squashed image, not of the centre crop."""
    images = _images(tmp_path, 2, size=(320, 200))
    features = tmp_path / "lite0.parquet"
    embed_images(images, "efficientnet-lite0", {"batch_size": 2, "threads": 1}, features)
    tagger = DESCRIBERS.create("imagenet-tags", views=4)
    got = (tagger.describe_table(read_images(images), None, features,
                                           image_ids=["im1", "im0"])).to_pylist()
    assert [r["image_id"] for r in got][::4] == ["im1", "im0"]  # in the order asked for
    squashed = []
    for i in (1, 0):
        path = tmp_path / f"squashed{i}.png"
        Image.open(tmp_path / "img" / f"{i}.png").convert("RGB").resize((224, 224), Image.Resampling.BILINEAR).save(path)
        squashed.append(str(path))
    pixels = DESCRIBERS.create("imagenet-tags", views=4, source="pixels").describe(squashed)
    # the classes agree; the colour view is measured on the original pixels in both
    assert [[r["text"] for r in got[k * 4:(k + 1) * 4]][i] for k in range(2) for i in (0, 1, 3)] == \
        [pixels[k][i] for k in range(2) for i in (0, 1, 3)]


def test_the_workflow_refuses_tags_from_features_without_an_imagenet_head():
    from ccr.features.images import LITE_VARIANTS
    from ccr.jobs import IMAGENET_HEAD_ENCODERS

    assert set(IMAGENET_HEAD_ENCODERS) == set(LITE_VARIANTS)  # the scheduler's copy (it imports no numpy)
    tags = {"backend": "imagenet-tags", "params": {"views": 3}}
    assert describer_needs("imagenet-tags", {}) == ("image_features",)
    assert describer_needs("imagenet-tags", {"source": "pixels"}) == ()
    check_describer(tags, {"backend": "efficientnet-lite2", "params": {}})
    with pytest.raises(ValueError, match=r"describe\.params\.source.*hf-clip.*source: pixels"):
        check_describer(tags, {"backend": "hf-clip", "params": {}})
    check_describer({"backend": "imagenet-tags", "params": {"source": "pixels"}}, {"backend": "hf-clip"})
