"""Training's ragged word tokens (ccr.train.inputs.TokenRows): a batch padded from them is exactly the
slice of the zero-padded array of the whole split that training used to hold."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.features.store import ragged_tokens, text_feature_schema
from ccr.train.inputs import TokenRows, read_text_token_rows, token_rows


def padded_reference(seqs: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole split zero-padded to min(max_len, longest), as training held it before."""
    length = max(1, min(max_len, max(len(s) for s in seqs)))
    out = np.zeros((len(seqs), length, seqs[0].shape[1]), np.float32)
    mask = np.zeros((len(seqs), length), bool)
    for i, s in enumerate(seqs):
        k = min(len(s), length)
        out[i, :k], mask[i, :k] = s[:k], True
    return out, mask


def ragged_column(seqs: list[np.ndarray], dim: int, chunk: int) -> pa.ChunkedArray:
    """The same rows as a feature table's `tokens` column, in several chunks (as Parquet reads give)."""
    return pa.chunked_array([ragged_tokens(seqs[i: i + chunk], dim) for i in range(0, len(seqs), chunk)])


@pytest.mark.parametrize("max_len", [3, 32])
def test_padded_batches_equal_the_padded_split(max_len: int) -> None:
    rng = np.random.default_rng(0)
    dim = 5
    table_rows = [rng.standard_normal((int(n), dim)).astype(np.float32) for n in rng.integers(1, 8, size=40)]
    column = ragged_column(table_rows, dim, chunk=7)
    order = rng.permutation(40)[:30]
    order = np.concatenate([order, order[:5]])  # repeats: one caption, several translations
    tokens = token_rows(column, order, max_len, "t")
    want_tok, want_mask = padded_reference([table_rows[i] for i in order], max_len)
    assert len(tokens) == len(order) and tokens.length == want_tok.shape[1]
    for rows in (np.arange(len(order)), rng.permutation(len(order))[:9], range(3, 11)):
        tok, mask = tokens.padded(rows)
        np.testing.assert_array_equal(tok, want_tok[np.asarray(rows)])
        np.testing.assert_array_equal(mask, want_mask[np.asarray(rows)])
    # back-translated paraphrases are appended to the English rows
    more = token_rows(column, np.arange(4), max_len, "t")
    both = tokens.concat(more)
    ref_tok, _ = padded_reference([table_rows[i] for i in order] + table_rows[:4], max_len)
    np.testing.assert_array_equal(both.padded(np.arange(len(both)))[0], ref_tok)


def test_read_text_token_rows_orders_by_ids_and_names_the_file(tmp_path) -> None:
    rng = np.random.default_rng(1)
    dim, ids = 4, [f"c{i}" for i in range(12)]
    seqs = [rng.standard_normal((int(n), dim)).astype(np.float32) for n in rng.integers(1, 6, size=12)]
    pooled = rng.standard_normal((12, dim)).astype(np.float32)
    schema = text_feature_schema(dim, dim)
    table = pa.table({"caption_id": ids,
                      "pooled": pa.FixedSizeListArray.from_arrays(pa.array(pooled.reshape(-1)), dim),
                      "tokens": ragged_tokens(seqs, dim)}, schema=schema)
    path = tmp_path / "captions.parquet"
    pq.write_table(table, path, row_group_size=5)
    want = ["c7", "c2", "c7", "c11"]
    got_pooled, got_tokens = read_text_token_rows(path, want, 32, "caption features")
    rows = [ids.index(i) for i in want]
    np.testing.assert_array_equal(got_pooled, pooled[rows])
    np.testing.assert_array_equal(got_tokens.padded(range(4))[0], padded_reference([seqs[r] for r in rows], 32)[0])
    with pytest.raises(KeyError, match="captions.parquet"):
        read_text_token_rows(path, ["c1", "nope"], 32, "caption features")


def test_a_text_without_tokens_is_an_error_naming_the_file() -> None:
    column = pa.chunked_array([ragged_tokens([np.ones((2, 3), np.float32), np.zeros((0, 3), np.float32)], 3)])
    with pytest.raises(ValueError, match="feats.parquet: text #1 has no word tokens"):
        token_rows(column, np.array([0, 1]), 8, "feats.parquet")
    assert isinstance(token_rows(column, np.array([0]), 8, "x"), TokenRows)


def test_feature_rows_are_streamed_in_the_asked_order(tmp_path) -> None:
    """Image features (vectors and grids) read batch by batch: order, repeats, several batches, and
    missing ids (an error naming the file, or skipped with allow_missing)."""
    from ccr.features.store import fixed_grid, fixed_list, image_feature_schema
    from ccr.train.inputs import read_feature_rows

    rng = np.random.default_rng(2)
    n, tokens, dim = 2500, 3, 4  # more rows than one read batch (1,024)
    ids = [f"img{i:05d}" for i in range(n)]
    pooled = rng.standard_normal((n, dim)).astype(np.float32)
    grid = rng.standard_normal((n, tokens, dim)).astype(np.float32)
    table = pa.table({"image_id": ids, "pooled": fixed_list(pooled), "tokens": fixed_grid(grid)},
                     schema=image_feature_schema(dim, tokens))
    path = tmp_path / "images.parquet"
    pq.write_table(table, path, row_group_size=700)
    want = ["img02400", "img00003", "img01500", "img00003"]
    feats = read_feature_rows(path, want, True, "image features")
    rows = [ids.index(i) for i in want]
    assert feats.ids == want
    np.testing.assert_array_equal(feats.pooled, pooled[rows])
    np.testing.assert_array_equal(feats.tokens, grid[rows])
    with pytest.raises(KeyError, match=r"images.parquet \(image features\): 1 id\(s\) have no features"):
        read_feature_rows(path, ["img00001", "nope"], False, "image features")
    kept = read_feature_rows(path, ["nope", "img00001"], False, "image features", allow_missing=True)
    assert kept.ids == ["img00001"]
    np.testing.assert_array_equal(kept.pooled, pooled[[1]])
