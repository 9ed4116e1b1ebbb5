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


@pytest.mark.parametrize("chunk", [10**6, 7])
def test_matches_brute_force_with_many_ties(monkeypatch, chunk):
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", chunk)  # 7 -> one query row per FAISS call
    rng = np.random.default_rng(0)
    # Embeddings on a coarse grid of unit-norm dyadic vectors: many exact ties.
    basis = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float32)
    g = basis[rng.integers(0, 4, size=12)]
    q2g = rng.integers(0, 12, size=30)
    q = basis[rng.integers(0, 4, size=30)]
    r = retrieval_ranks(q, g, q2g, use_gpu=False)
    t2i, i2t = _brute_force(q, g, q2g)
    assert r.t2i.tolist() == t2i.tolist()
    assert r.i2t.tolist() == i2t.tolist()
    # and on continuous random data
    g, q = rng.normal(size=(15, 8)), rng.normal(size=(40, 8))
    r = retrieval_ranks(q, g, q2g := rng.integers(0, 15, size=40), use_gpu=False)
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
