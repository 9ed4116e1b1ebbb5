"""Hand-computed and brute-force checks of exact ranks / Recall@K (pessimistic ties)."""

from __future__ import annotations

import numpy as np
import pytest

from ccr.evaluate import metrics
from ccr.evaluate.metrics import recall_at_k, retrieval_ranks, search

# Gallery: 4 one-hot images.  Queries have dyadic entries and unit norm, so every score is exact.
GALLERY = np.eye(4, dtype=np.float32)
QUERIES = np.array(
    [
        [1.0, 0.0, 0.0, 0.0],  # q0 -> img0: rank 1
        [0.5, 0.5, 0.5, 0.5],  # q1 -> img1: all four tie -> pessimistic rank 4
        [0.5, -0.5, 0.5, 0.5],  # q2 -> img2: img0, img3 tie with it -> rank 3
        [0.5, 0.5, -0.5, 0.5],  # q3 -> img3: img0, img1 tie -> rank 3
        [0.0, 0.0, 1.0, 0.0],  # q4 -> img2 (second caption of img2): rank 1
    ],
    dtype=np.float32,
)
Q2G = np.array([0, 1, 2, 3, 2])


def test_hand_computed_ranks():
    r = retrieval_ranks(QUERIES, GALLERY, Q2G, use_gpu=False)
    assert r.t2i.tolist() == [1, 4, 3, 3, 1]
    # img0: best caption q0 (1.0), nothing else >= 1 -> 1
    # img1: q1 = 0.5, q3 (img3's caption) also 0.5 -> 2
    # img2: best of q2 (0.5) and q4 (1.0) = 1.0 -> 1 (q2 alone would rank behind q1)
    # img3: q3 = 0.5, q1 and q2 also 0.5 -> 3
    assert r.i2t.tolist() == [1, 2, 1, 3]
    assert r.i2t_images.tolist() == [0, 1, 2, 3]


def test_hand_computed_recalls():
    m = recall_at_k(QUERIES, GALLERY, Q2G, ks=(1, 5, 10), use_gpu=False)
    assert m["t2i_r1"] == pytest.approx(40.0)
    assert m["t2i_r5"] == m["t2i_r10"] == pytest.approx(100.0)
    assert m["i2t_r1"] == pytest.approx(50.0)
    assert m["mr"] == pytest.approx((40 + 100 + 100 + 50 + 100 + 100) / 6)
    assert m["t2i_medr"] == 3.0 and m["t2i_meanr"] == pytest.approx(2.4)
    assert m["i2t_medr"] == 1.5 and m["i2t_meanr"] == pytest.approx(1.75)
    assert (m["n_queries"], m["n_images"], m["n_i2t_queries"]) == (5, 4, 4)
    m = recall_at_k(QUERIES, GALLERY, Q2G, ks=(3, 1, 2), use_gpu=False)
    assert [m["t2i_r1"], m["t2i_r2"], m["t2i_r3"]] == pytest.approx([40, 40, 80])
    assert [m["i2t_r1"], m["i2t_r2"], m["i2t_r3"]] == pytest.approx([50, 75, 100])


def test_3x3_identity_is_perfect_and_scale_invariant():
    g = np.eye(3, dtype=np.float32)
    m = recall_at_k(7.0 * g, g, np.arange(3), ks=(1,), use_gpu=False)  # not normalised on purpose
    assert m["t2i_r1"] == m["i2t_r1"] == m["mr"] == 100.0
    assert m["t2i_medr"] == m["i2t_medr"] == 1.0


def test_identical_gallery_items_tie_pessimistically():
    g = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)  # img0 and img1 are the same vector
    r = retrieval_ranks(g, g, np.array([0, 1, 2]), use_gpu=False)
    assert r.t2i.tolist() == [2, 2, 1]  # neither twin gets the lucky rank 1 from gallery order
    assert r.i2t.tolist() == [2, 2, 1]


def test_constant_model_gets_worst_rank():
    r = retrieval_ranks(np.ones((6, 4)), np.ones((3, 4)), np.array([0, 0, 1, 1, 2, 2]), use_gpu=False)
    assert r.t2i.tolist() == [3] * 6
    assert r.i2t.tolist() == [5] * 3  # 1 + the 4 captions of the other images


def test_image_without_captions_is_left_out_of_i2t():
    g = np.eye(3, dtype=np.float32)
    m = recall_at_k(g[:2], g, np.array([0, 1]), ks=(1,), use_gpu=False)
    assert m["n_images"] == 3 and m["n_i2t_queries"] == 2 and m["i2t_r1"] == 100.0


def _brute_force(q, g, q2g):
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    s = q @ g.T
    t2i = [1 + sum(s[i, j] >= s[i, q2g[i]] for j in range(len(g)) if j != q2g[i]) for i in range(len(q))]
    i2t = []
    for j in range(len(g)):
        pos = [i for i in range(len(q)) if q2g[i] == j]
        if pos:
            best = max(s[i, j] for i in pos)
            i2t.append(1 + sum(s[i, j] >= best for i in range(len(q)) if q2g[i] != j))
    return np.array(t2i), np.array(i2t)


@pytest.mark.parametrize("block_bytes", [4 * 10**6, 28])
def test_matches_brute_force_with_many_ties(block_bytes):
    # 28 bytes = 7 scores -> one query row per product
    rng = np.random.default_rng(0)
    # Embeddings on a coarse grid of unit-norm dyadic vectors: many exact ties.
    basis = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float32)
    g = basis[rng.integers(0, 4, size=12)]
    q2g = rng.integers(0, 12, size=30)
    q = basis[rng.integers(0, 4, size=30)]
    r = retrieval_ranks(q, g, q2g, use_gpu=False, block_bytes=block_bytes)
    t2i, i2t = _brute_force(q, g, q2g)
    assert r.t2i.tolist() == t2i.tolist()
    assert r.i2t.tolist() == i2t.tolist()
    # and on continuous random data
    g, q = rng.normal(size=(15, 8)), rng.normal(size=(40, 8))
    r = retrieval_ranks(q, g, q2g := rng.integers(0, 15, size=40), use_gpu=False, block_bytes=block_bytes)
    t2i, i2t = _brute_force(q.astype(np.float32), g.astype(np.float32), q2g)
    assert r.t2i.tolist() == t2i.tolist() and r.i2t.tolist() == i2t.tolist()


def test_search_top_k():
    scores, idx = search(QUERIES[:1], GALLERY, k=10, use_gpu=False)
    assert idx.shape == (1, 4) and idx[0, 0] == 0 and scores[0, 0] == pytest.approx(1.0)


def test_bad_inputs():
    g = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="dim"):
        recall_at_k(np.ones((2, 4)), g, np.array([0, 1]), use_gpu=False)
    with pytest.raises(ValueError, match="query_to_gallery"):
        recall_at_k(g, g, np.array([0, 1]), use_gpu=False)
    with pytest.raises(ValueError, match="outside"):
        recall_at_k(g, g, np.array([0, 1, 3]), use_gpu=False)
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.full((3, 3), np.nan), g, np.arange(3), use_gpu=False)
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(g, g, np.arange(3), ks=(0,), use_gpu=False)
    with pytest.raises(ValueError, match="use_gpu"):
        recall_at_k(g, g, np.arange(3), use_gpu="yes")


@pytest.mark.skipif(metrics.gpu_available(), reason="a GPU is present")
def test_use_gpu_true_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="faiss-gpu"):
        recall_at_k(np.eye(2), np.eye(2), np.arange(2), use_gpu=True)


def test_gpu_path_wiring(monkeypatch):
    """With a GPU 'present', scores come from pairwise_distance_gpu (faked here by the CPU kernel)."""
    calls = []

    def fake_gpu(res, xq, xb, metric):
        calls.append(xq.shape)
        return metrics.faiss.pairwise_distances(xq, xb, metric=metric)

    monkeypatch.setattr(metrics, "gpu_available", lambda: True)
    monkeypatch.setattr(metrics, "_gpu_resources", lambda: None)
    monkeypatch.setattr(metrics.faiss, "pairwise_distance_gpu", fake_gpu)
    r = retrieval_ranks(QUERIES, GALLERY, Q2G, use_gpu="auto")
    assert r.t2i.tolist() == [1, 4, 3, 3, 1] and calls == [(5, 4), (5, 4)]


# --- blocked scoring (memory budget) -------------------------------------------------------------

def _grid_unit_vectors(rng, n: int, d: int = 16) -> np.ndarray:
    """Unit vectors with four entries +-0.5: every dot product is a multiple of 0.25, exact in any
    summation order, so ranks from any blocking must equal the reference exactly (and ties abound)."""
    x = np.zeros((n, d), dtype=np.float32)
    for row in x:
        row[rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def _reference_ranks(q, g, q2g):
    """Pessimistic ranks from one full score matrix (vectorised version of _brute_force)."""
    s = q @ g.T
    pos = s[np.arange(len(q)), q2g]
    t2i = (s >= pos[:, None]).sum(axis=1)
    images = np.unique(q2g)
    own = q2g[:, None] == images[None, :]
    best = np.where(own, s[:, images], -np.inf).max(axis=0)
    i2t = 1 + ((s[:, images] >= best[None, :]) & ~own).sum(axis=0)
    return t2i, i2t, images


@pytest.mark.parametrize("block_bytes", [metrics.SCORE_BLOCK_BYTES, 4 * 700, 4 * 64, 4])
def test_blocked_ranks_equal_reference(block_bytes):
    """Galleries of 300 and up to 7 captions per image, tiled over rows and columns by small budgets."""
    rng = np.random.default_rng(3)
    g = _grid_unit_vectors(rng, 300)
    q2g = np.concatenate([np.repeat(rng.choice(300, 60, replace=False), rng.integers(1, 8, 60)),
                          rng.integers(0, 300, 100)])
    q = _grid_unit_vectors(rng, len(q2g))
    r = retrieval_ranks(q, g, q2g, use_gpu=False, block_bytes=block_bytes)
    t2i, i2t, images = _reference_ranks(q, g, q2g)
    assert r.t2i.tolist() == t2i.tolist()
    assert r.i2t_images.tolist() == images.tolist() and r.i2t.tolist() == i2t.tolist()
    assert metrics.text_to_image_ranks(q, g, q2g, use_gpu=False, block_bytes=block_bytes).tolist() == t2i.tolist()
    i2t_only, images_only = metrics.image_to_text_ranks(q, g, q2g, use_gpu=False, block_bytes=block_bytes)
    assert i2t_only.tolist() == i2t.tolist() and images_only.tolist() == images.tolist()


def test_twins_in_different_tiles_still_tie():
    """Continuous vectors (ties only bit-for-bit): a twin of the positive in another column tile ties with it."""
    rng = np.random.default_rng(4)
    g = metrics.l2_normalise(rng.normal(size=(300, 16)))
    g[250] = g[10]
    q = metrics.l2_normalise(rng.normal(size=(40, 16)))
    q[1] = q[0]
    q2g = rng.integers(0, 300, 40)
    q2g[0], q2g[1] = 10, 250
    plan = metrics._plan_tiles(40, 300, q2g, q2g + 1, 4 * 64 * 8 // 4)
    assert len(plan.starts) - 1 >= 3  # 10 and 250 are owned by different tiles
    r = retrieval_ranks(q, g, q2g, use_gpu=False, block_bytes=4 * 64 * 8)
    assert r.t2i[0] == r.t2i[1] >= 2
    s = q[0] @ g.T
    assert r.t2i[0] == (s >= s[10]).sum()


def test_one_million_gallery_keeps_large_query_blocks():
    """The point of the budget: 10k queries x 1M items get blocks hundreds of rows tall within 256 MiB."""
    q2g = np.sort(np.random.default_rng(0).integers(0, 10**6, 10_000))
    plan = metrics._plan_tiles(10_000, 10**6, q2g, q2g + 1, metrics.SCORE_BLOCK_BYTES // 4)
    assert plan.rows * plan.width * 4 <= metrics.SCORE_BLOCK_BYTES
    assert plan.rows >= 500 and plan.width >= 50_000
    rows_per_tile = np.bincount(np.searchsorted(plan.starts, q2g, "right") - 1)
    assert rows_per_tile.mean() >= 500  # each tile owns enough queries to fill tall blocks


def test_i2t_scores_only_captioned_images(monkeypatch):
    """image->text products see the captioned images only, not the whole gallery."""
    calls = []

    def fake_gpu(res, xq, xb, metric):
        calls.append((xq.shape[0], xb.shape[0]))
        return metrics.faiss.pairwise_distances(xq, xb, metric=metric)

    monkeypatch.setattr(metrics, "gpu_available", lambda: True)
    monkeypatch.setattr(metrics, "_gpu_resources", lambda: None)
    monkeypatch.setattr(metrics.faiss, "pairwise_distance_gpu", fake_gpu)
    rng = np.random.default_rng(5)
    g, q = rng.normal(size=(1000, 8)), rng.normal(size=(6, 8))
    q2g = np.array([7, 7, 300, 300, 999, 999])
    r = retrieval_ranks(q, g, q2g, use_gpu=True)
    assert calls == [(6, 1000), (6, 3)] and r.i2t_images.tolist() == [7, 300, 999]


def test_l2_normalise_blocks_and_copy(monkeypatch):
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(50, 7)) * 10).astype(np.float32)
    x[3] = 0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    expected = x / np.where(norms > 0, norms, 1.0)  # the one-shot formula
    monkeypatch.setattr(metrics, "_NORM_ROWS", 4)
    before = x.copy()
    out = metrics.l2_normalise(x)
    assert np.array_equal(out, expected) and np.array_equal(x, before)  # bit-identical, input untouched
    assert not out[3].any()
    same = metrics.l2_normalise(x, copy=False)
    assert same is x and np.array_equal(x, expected)  # in place on request


def test_unit_rows_copies_only_when_needed():
    rng = np.random.default_rng(7)
    unit = metrics.l2_normalise(rng.normal(size=(20, 5)))
    unit[0] = 0  # zero rows count as normalised
    assert metrics.unit_rows(unit) is unit
    raw = (3 * unit).astype(np.float32)
    out = metrics.unit_rows(raw)
    assert not np.shares_memory(out, raw) and np.allclose(raw, 3 * unit)
    assert np.allclose(np.linalg.norm(out[1:], axis=1), 1, atol=1e-6)
    slightly_off = unit * np.float32(1 + 1e-4)  # not unit within tolerance: normalised
    assert not np.shares_memory(metrics.unit_rows(slightly_off), slightly_off)
    with pytest.raises(ValueError, match="NaN"):
        metrics.unit_rows(np.array([[np.inf, 0.0]]))


def test_bad_block_bytes_is_named():
    g = np.eye(3, dtype=np.float32)
    for bad in (0, 3, True, 2.5, "1MB"):
        with pytest.raises(ValueError, match="block_bytes"):
            retrieval_ranks(g, g, np.arange(3), use_gpu=False, block_bytes=bad)
