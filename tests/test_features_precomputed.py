"""embed_images with backend 'precomputed': features shipped with a dataset, selected in image order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.features import embed_images
from ccr.features.store import fixed_list, image_feature_schema, read_features


def write_images(path, ids):
    pq.write_table(pa.table({"image_id": ids, "path": [f"{i}.jpg" for i in ids], "split": ["test"] * len(ids)}), path)


def test_precomputed_selects_rows_in_image_order_and_names_missing_ids(tmp_path):
    feats = tmp_path / "feats.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["b", "a"]), fixed_list(np.array([[2.0, 2.0], [1.0, 1.0]]))],
                                        schema=image_feature_schema(2, None)), feats)
    write_images(tmp_path / "images.parquet", ["a", "b"])
    out = tmp_path / "out.parquet"
    embed_images(tmp_path / "images.parquet", "precomputed", {"path": str(feats)}, out)
    got = read_features(out)
    assert got.ids == ["a", "b"] and got.pooled[:, 0].tolist() == [1.0, 2.0]

    write_images(tmp_path / "more.parquet", ["a", "b", "c"])
    with pytest.raises(KeyError, match=r"1 image_id\(s\).*'c'"):
        embed_images(tmp_path / "more.parquet", "precomputed", {"path": str(feats)}, tmp_path / "o2.parquet")
    assert not (tmp_path / "o2.parquet").exists()
    with pytest.raises(ValueError, match="unknown param"):
        embed_images(tmp_path / "images.parquet", "precomputed", {"path": str(feats), "fps": 2}, tmp_path / "o3.parquet")
