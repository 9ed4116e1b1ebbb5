"""BigFile reading and conversion to feature tables (images and video frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.data.bigfile import BigFileError, bigfile_to_feature_table, read_bigfile, sample_frames
from ccr.features.store import fixed_list, read_features


def write_bigfile(d: Path, ids: list[str], matrix: np.ndarray) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    np.asarray(matrix, "<f4").tofile(d / "feature.bin")
    (d / "id.txt").write_text(" ".join(ids))
    (d / "shape.txt").write_text(f"{len(ids)} {matrix.shape[1]}")
    return d


def test_read_and_image_table(tmp_path: Path) -> None:
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = write_bigfile(tmp_path / "bf", ["a", "b", "c"], m)
    ids, got = read_bigfile(d)
    assert ids == ["a", "b", "c"] and np.array_equal(got, m)
    table = bigfile_to_feature_table(d, tmp_path / "f.parquet")
    assert table.column_names == ["image_id", "pooled"]
    feats = read_features(tmp_path / "f.parquet")
    assert feats.ids == ids and np.array_equal(feats.pooled, m) and feats.tokens is None
    assert feats.meta["source"] == "bigfile"


@pytest.mark.parametrize(("damage", "match"), [
    (lambda d: (d / "shape.txt").write_text("3 5"), "feature.bin has 48 bytes"),
    (lambda d: (d / "id.txt").write_text("a b"), "id.txt has 2 ids"),
    (lambda d: (d / "id.txt").write_text("a b a"), "duplicate id 'a'"),
    (lambda d: (d / "shape.txt").write_text("three 4"), "shape.txt: expected two integers"),
    (lambda d: (d / "feature.bin").unlink(), "feature.bin not found"),
])
def test_read_errors(tmp_path: Path, damage, match: str) -> None:
    d = write_bigfile(tmp_path / "bf", ["a", "b", "c"], np.zeros((3, 4), np.float32))
    damage(d)
    with pytest.raises((BigFileError, FileNotFoundError), match=match):
        read_bigfile(d)


def test_sample_frames() -> None:
    frames = np.arange(10, dtype=np.float32)[:, None]
    out, n = sample_frames(frames, 4)
    assert n == 4 and out[:, 0].tolist() == [1, 3, 6, 8]  # segment centres of 4 equal segments
    out, n = sample_frames(frames[:2], 4)
    assert n == 2 and out[:, 0].tolist() == [0, 1, 1, 1]  # padded by repeating the last frame


def test_video_frames(tmp_path: Path) -> None:
    # v1 has 5 frames (stored out of order), v_2 has 2 frames; ids are <video>_<frame>.
    ids = ["v1_3", "v1_0", "v1_1", "v1_2", "v1_4", "v_2_0", "v_2_1"]
    m = np.array([[3, 30], [0, 0], [1, 10], [2, 20], [4, 40], [7, 70], [9, 90]], np.float32)
    d = write_bigfile(tmp_path / "frames", ids, m)
    table = bigfile_to_feature_table(d, tmp_path / "v.parquet", frames_per_video=3)
    feats = read_features(tmp_path / "v.parquet")
    assert feats.ids == ["v1", "v_2"] and feats.tokens.shape == (2, 3, 2)
    assert feats.tokens[0, :, 0].tolist() == [0, 2, 4]
    assert feats.tokens[1, :, 0].tolist() == [7, 9, 9]
    assert table.column("n_frames").to_pylist() == [3, 2]
    assert np.allclose(feats.pooled[1], [8, 80])  # mean over the real frames only, not the padding
    assert np.allclose(feats.pooled[0], [2, 20])
    bad = write_bigfile(tmp_path / "bad", ["v1_x"], np.zeros((1, 2), np.float32))
    with pytest.raises(BigFileError, match="'v1_x'"):
        bigfile_to_feature_table(bad, tmp_path / "b.parquet", frames_per_video=2)
    assert not (tmp_path / "b.parquet").exists()


def test_parquet_frames(tmp_path: Path) -> None:
    m = np.array([[1, 1], [3, 3], [5, 5]], np.float32)
    src = tmp_path / "frames.parquet"
    pq.write_table(pa.table({"video_id": ["a", "a", "b"], "frame_index": [1, 0, 0], "feature": fixed_list(m)}), src)
    bigfile_to_feature_table(src, tmp_path / "v.parquet", frames_per_video=2)
    feats = read_features(tmp_path / "v.parquet")
    assert feats.ids == ["a", "b"] and feats.tokens[0, :, 0].tolist() == [3, 1]
    assert feats.tokens[1, :, 0].tolist() == [5, 5] and np.allclose(feats.pooled[:, 0], [2, 5])
    pq.write_table(pa.table({"video": ["a"], "feature": fixed_list(m[:1])}), tmp_path / "bad.parquet")
    with pytest.raises(BigFileError, match=r"missing column\(s\) \['video_id', 'frame_index'\]"):
        bigfile_to_feature_table(tmp_path / "bad.parquet", tmp_path / "x.parquet", frames_per_video=2)
