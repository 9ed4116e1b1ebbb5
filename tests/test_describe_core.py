"""describe_images: row layout, every split, resume after a crash, bad images; the imagenet-tags backend."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from ccr.data.tables import read_captions
from ccr.describe import DESCRIBERS, DescribeError, Describer, describe_images
from ccr.describe.imagenet_tags import colour_names, imagenet_classes


def _drawn(path: Path, seed: int = 0) -> Path:
    im = Image.new("RGB", (300, 200), (30, 140, 40))  # green field
    ImageDraw.Draw(im).ellipse((100 + seed, 50, 200 + seed, 150), fill=(220, 30, 30))  # red ball
    im.save(path)
    return path


def _photo() -> Path | None:
    try:
        import matplotlib.cbook as cbook

        return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except Exception:  # matplotlib sample data not installed
        return None


def _images_table(tmp_path: Path, n: int = 5) -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    splits = ["train", "train", "val", "test", "test", "train", "val"][:n]
    rows = {"image_id": [], "path": [], "split": []}
    for i, split in enumerate(splits):
        _drawn(tmp_path / "img" / f"{i}.png", seed=i)
        rows["image_id"].append(f"im{i}")
        rows["path"].append(f"img/{i}.png")  # relative to the table's folder
        rows["split"].append(split)
    pq.write_table(pa.table(rows), tmp_path / "images.parquet")
    return tmp_path / "images.parquet"


# A crash is simulated from outside the params (params are part of the output's fingerprint).
CRASH: dict[str, int | None] = {"on_call": None}


class Toy:
    """Deterministic describer: the sharding/resume logic is what is under test here."""

    def __init__(self, views: int = 2):
        self.views, self.fail_on_call, self.calls, self.seen = views, CRASH["on_call"], 0, []

    def describe(self, paths: list[str]) -> list[list[str]]:
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise RuntimeError("simulated crash")
        self.seen.extend(paths)
        return [[f"view {k} of {Path(p).name}" for k in range(self.views)] for p in paths]


@pytest.fixture
def toy():
    made: list[Toy] = []

    def factory(**params):
        made.append(Toy(**params))
        return made[-1]

    DESCRIBERS.register("test-toy", factory)
    yield made
    DESCRIBERS._factories.pop("test-toy", None)
    CRASH["on_call"] = None


def test_rows_every_split(tmp_path, toy):
    out = tmp_path / "desc.parquet"
    describe_images(_images_table(tmp_path), "test-toy", {"views": 2}, out, shard_size=2)
    t = read_captions(out)
    assert t.num_rows == 10
    assert t.column("caption_id").to_pylist()[:3] == ["im0#desc0", "im0#desc1", "im1#desc0"]
    assert set(t.column("split").to_pylist()) == {"train", "val", "test"}
    assert set(t.column("origin").to_pylist()) == {"description"} and set(t.column("lang").to_pylist()) == {"en"}
    assert t.column("source_id").null_count == 10
    assert t.column("text")[1].as_py() == "view 1 of 0.png"
    assert toy[0].calls == 3 and isinstance(toy[0], Describer)


def test_resume_after_crash(tmp_path, toy):
    images = _images_table(tmp_path)
    out = tmp_path / "desc.parquet"
    CRASH["on_call"] = 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        describe_images(images, "test-toy", {}, out, shard_size=2)
    assert not out.exists()
    CRASH["on_call"] = None
    describe_images(images, "test-toy", {}, out, shard_size=2)
    assert [Path(p).name for p in toy[1].seen] == ["2.png", "3.png", "4.png"]  # the first shard was kept
    ids = read_captions(out).column("caption_id").to_pylist()
    assert len(ids) == len(set(ids)) == 10
    assert not (tmp_path / "desc.parquet.shards").exists()


def test_crash_then_data_change_never_mixes_shards(tmp_path, toy, caplog):
    from ccr.data.prepare import image_files_digest
    from ccr.io import fingerprint, stamp

    def images_table(paths: list[str]) -> Path:
        # as prepare_dataset writes it: stamped with the content fingerprint of the image files
        table = pa.table({"image_id": [f"im{i}" for i in range(len(paths))], "path": paths,
                          "split": ["train"] * len(paths)})
        fp = fingerprint("dataset.images", {}, {"files": image_files_digest(table, tmp_path)})
        pq.write_table(stamp(table, fp), tmp_path / "images.parquet")
        return tmp_path / "images.parquet"

    (tmp_path / "img").mkdir()
    old = [str(_drawn(tmp_path / "img" / f"{i}.png", seed=i).relative_to(tmp_path)) for i in range(5)]
    out = tmp_path / "desc.parquet"
    CRASH["on_call"] = 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        describe_images(images_table(old), "test-toy", {}, out, shard_size=2)
    CRASH["on_call"] = None
    # same ids and paths, other pixels: the 4 finished rows describe images that are gone
    for i in range(5):
        _drawn(tmp_path / "img" / f"{i}.png", seed=40 + i)
    with caplog.at_level("WARNING", logger="ccr"):
        describe_images(images_table(old), "test-toy", {}, out, shard_size=2)
    assert "discarded 2 leftover shard(s)" in caplog.text
    assert [Path(p).name for p in toy[1].seen] == [f"{i}.png" for i in range(5)]  # all described again
    assert read_captions(out).num_rows == 10


def test_wrong_number_of_views_names_file(tmp_path):
    class Bad(Toy):
        def describe(self, paths):
            return [["only one"] for _ in paths]

    DESCRIBERS.register("test-bad", Bad)
    try:
        with pytest.raises(DescribeError, match=r"0\.png"):
            describe_images(_images_table(tmp_path, 2), "test-bad", {}, tmp_path / "o.parquet")
    finally:
        DESCRIBERS._factories.pop("test-bad", None)


def test_missing_image_names_file(tmp_path, toy):
    images = _images_table(tmp_path, 2)
    (tmp_path / "img" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"img/1\.png"):
        describe_images(images, "test-toy", {}, tmp_path / "o.parquet")


@pytest.fixture(scope="module")
def tagger():
    return DESCRIBERS.create("imagenet-tags", views=3, threads=1, batch_size=2, source="pixels")


def test_imagenet_tags_two_images(tmp_path, tagger):
    drawn = _drawn(tmp_path / "ball.png")
    photo = _photo() or _drawn(tmp_path / "other.png", seed=40)
    out = tagger.describe([str(drawn), str(photo)])
    assert len(out) == 2
    names = set(imagenet_classes())
    for views in out:
        assert len(views) == 3 and len(set(views)) == 3 and all(v.strip() for v in views)
        assert views[0].startswith("a photo") and any(n in views[0] for n in names)
        assert views[1].startswith("a photo showing")
    assert "green" in out[0][2] and "red" in out[0][2]  # measured on the pixels
    assert out[0] != out[1]
    assert tagger.describe([str(drawn)]) == out[:1]  # deterministic, independent of batch


def test_imagenet_tags_through_describe_images(tmp_path, tagger):
    images = _images_table(tmp_path, 2)
    out = tmp_path / "desc.parquet"
    describe_images(images, "imagenet-tags", {"views": 4, "threads": 1, "source": "pixels"}, out)
    t = read_captions(out)
    assert t.column("caption_id").to_pylist() == [f"im{i}#desc{k}" for i in range(2) for k in range(4)]
    assert t.column("text")[3].as_py().startswith("it could also be")


def test_corrupt_image_names_file(tmp_path, tagger):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        tagger.describe([str(_drawn(tmp_path / "ok.png")), str(bad)])
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_drawn(tmp_path / "full.png").read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.png"):
        tagger.describe([str(truncated)])


def test_imagenet_tags_params():
    with pytest.raises(ValueError, match="views"):
        DESCRIBERS.create("imagenet-tags", views=9)
    with pytest.raises(ValueError, match="bad params"):
        DESCRIBERS.create("imagenet-tags", colour=True)
    with pytest.raises(ValueError, match="source"):
        DESCRIBERS.create("imagenet-tags", source="crop")


def test_class_names_and_colours():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet tissue"
    shares, brightness = colour_names(Image.new("RGB", (10, 10), (0, 0, 255)))
    assert shares == [("blue", 1.0)] and 0.9 < brightness <= 1.0


def test_knn_captions_through_the_stage_reads_tables_not_pixels(tmp_path):
    """The describe stage hands knn-captions the captions table and the image features (one pass over
    the images), shards and resumes like any describer, and refuses to run without those inputs."""
    from ccr.train.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "syn", n_images={"train": 12, "val": 4, "test": 4})
    params = {"k": 3, "views": 2, "view": "caption", "captions_per_neighbour": 1}
    kwargs = {"images_path": data.images, "backend": "knn-captions", "params": params,
              "captions_path": data.captions, "image_features_path": data.image_features}
    describe_images(out_path=tmp_path / "a.parquet", shard_size=5, **kwargs)
    describe_images(out_path=tmp_path / "b.parquet", shard_size=100, **kwargs)
    a = read_captions(tmp_path / "a.parquet")
    assert a.num_rows == 20 * 2 and a.equals(read_captions(tmp_path / "b.parquet"))  # shards change nothing
    train_text = {r["text"] for r in pq.read_table(data.captions).to_pylist()
                  if r["split"] == "train" and r["lang"] == "en"}
    assert set(a.column("text").to_pylist()) <= train_text  # train captions only, never val/test ones
    with pytest.raises(ValueError, match="needs captions and image_features"):
        describe_images(data.images, "knn-captions", params, tmp_path / "c.parquet")
