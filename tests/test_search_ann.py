"""ccr.search.ann: exact equals brute force, approximate kinds recall well on clustered data, save/load, param errors."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from ccr.search import add, build_index, index_kind, index_params, load_index, save_index, search


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(rng: np.random.Generator, n: int, d: int = 32, clusters: int = 40) -> np.ndarray:
    """Unit vectors around 40 fixed centres (the same for gallery and queries), noise norm ~0.57."""
    centres = _unit(np.random.default_rng(99).normal(size=(clusters, d)))
    return _unit(centres[rng.integers(0, clusters, n)] + 0.1 * rng.normal(size=(n, d)))


def _recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    gallery = _clustered(rng, 4000)
    queries = _clustered(np.random.default_rng(1), 200)
    return gallery, queries


def test_exact_equals_brute_force():
    rng = np.random.default_rng(2)
    gallery, queries = rng.normal(size=(500, 16)) * 3, rng.normal(size=(20, 16))  # raw: normalised inside
    scores, ids = search(build_index(gallery, "exact"), queries, 10)
    cos = _unit(queries) @ _unit(gallery).T
    expected = np.argsort(-cos, axis=1, kind="stable")[:, :10]
    assert ids.tolist() == expected.tolist()
    assert np.allclose(scores, np.take_along_axis(cos, expected, axis=1), atol=1e-5)
    assert search(build_index(gallery, "exact"), queries, 10_000)[1].shape == (20, 500)  # k capped at n


@pytest.mark.parametrize(("kind", "params"), [("ivf", {"nlist": 40, "nprobe": 4}),
                                              ("hnsw", {"M": 16, "efConstruction": 64, "efSearch": 64})])
def test_approximate_recall_on_clustered_data(data, kind, params):
    gallery, queries = data
    truth = search(build_index(gallery, "exact"), queries, 10)[1]
    index = build_index(gallery, kind, params)
    assert index_kind(index) == kind and index.ntotal == len(gallery)
    recall = _recall_at_k(search(index, queries, 10)[1], truth)
    assert recall >= 0.95, f"{kind} recall@10 {recall:.3f}"


def test_ivf_scanning_every_list_is_exact(data):
    gallery, queries = data
    exact_scores, exact_ids = search(build_index(gallery, "exact"), queries, 10)
    index = build_index(gallery, "ivf", {"nlist": 40, "nprobe": 1})
    scores, ids = search(index, queries, 10, params={"nprobe": 40})
    assert ids.tolist() == exact_ids.tolist() and np.allclose(scores, exact_scores, atol=1e-5)
    assert index.nprobe == 1  # the per-call override left the index as it was
    narrow = _recall_at_k(search(index, queries, 10)[1], exact_ids)
    assert narrow < 1.0  # one list is not enough: the override above did change something


def test_hnsw_search_time_ef(data):
    gallery, queries = data
    truth = search(build_index(gallery, "exact"), queries, 10)[1]
    index = build_index(gallery, "hnsw", {"M": 16, "efSearch": 64})
    wide = _recall_at_k(search(index, queries, 10)[1], truth)
    narrow = _recall_at_k(search(index, queries, 10, params={"efSearch": 1})[1], truth)
    assert narrow < wide and index.hnsw.efSearch == 64


@pytest.mark.parametrize(("kind", "params"), [("exact", None), ("ivf", {"nlist": 20, "nprobe": 3}),
                                              ("hnsw", {"M": 8, "efSearch": 21})])
def test_save_load_roundtrip(tmp_path, data, kind, params):
    gallery, queries = data
    index = build_index(gallery[:1000], kind, params)
    path = tmp_path / "sub" / f"{kind}.faiss"
    save_index(index, path)
    loaded = load_index(path)
    assert index_kind(loaded) == kind and loaded.ntotal == 1000
    if kind == "ivf":
        assert loaded.nprobe == 3 and loaded.nlist == 20
    if kind == "hnsw":
        assert loaded.hnsw.efSearch == 21
    for a, b in zip(search(index, queries, 5), search(loaded, queries, 5), strict=True):
        assert np.array_equal(a, b)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_add_continues_ids(data):
    gallery, queries = data
    index = build_index(gallery[:3000], "exact")
    add(index, gallery[3000:])
    ids = search(index, gallery[3500:3501] * 2.0, 1)[1]  # a gallery row (scaled) finds itself
    assert index.ntotal == 4000 and ids[0, 0] == 3500


def test_defaults_and_derived_ivf_params():
    p = index_params("ivf", n=1_000_000)
    assert p["nlist"] == 1000 and p["train_size"] == 64_000 and p["nprobe"] == 125
    assert index_params("ivf", n=100) == {"nlist": 2, "nprobe": 1, "train_size": 100, "niter": 20, "seed": 0}
    assert index_params("ivf", {"nlist": 64, "nprobe": 3}, n=10_000)["nprobe"] == 3
    assert index_params("hnsw") == {"M": 32, "efConstruction": 100, "efSearch": 128}
    assert index_params("exact") == {}


@pytest.mark.parametrize(("kind", "params", "match"), [
    ("annoy", {}, "unknown index kind 'annoy'"),
    ("exact", {"nprobe": 2}, "unknown exact param.*'nprobe'"),
    ("ivf", {"nlists": 8}, "unknown ivf param.*'nlists'.*known: nlist"),
    ("ivf", {"nlist": 8, "nprobe": 9}, "'nprobe' must be an integer in \\[1, 8\\]"),
    ("ivf", {"nlist": 0}, "'nlist'"),
    ("ivf", {"nlist": 5000}, "'nlist' must be .* \\(at most the number of embeddings\\)"),
    ("ivf", {"nlist": 8, "train_size": 4}, "'train_size'"),
    ("ivf", {"nlist": 8.0}, "'nlist' must be an integer"),
    ("ivf", {"nlist": True}, "'nlist' must be an integer"),
    ("hnsw", {"M": 1}, "hnsw param 'M'"),
    ("hnsw", {"efSearch": "64"}, "hnsw param 'efSearch'"),
])
def test_bad_params_are_refused_by_name(data, kind, params, match):
    with pytest.raises(ValueError, match=match):
        build_index(data[0][:1000], kind, params)


def test_bad_inputs_and_files(tmp_path, data):
    gallery, queries = data
    index = build_index(gallery[:500], "ivf", {"nlist": 8})
    with pytest.raises(ValueError, match="cannot change at search time.*allowed: nprobe"):
        search(index, queries, 5, params={"nlist": 4})
    with pytest.raises(ValueError, match="'nprobe' must be an integer in \\[1, 8\\]"):
        search(index, queries, 5, params={"nprobe": 9})
    with pytest.raises(ValueError, match="dim 8 but the index has dim 32"):
        search(index, queries[:, :8], 5)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        search(index, queries, 0)
    with pytest.raises(ValueError, match="2-D"):
        build_index(gallery[0], "exact")
    with pytest.raises(FileNotFoundError, match="no such index file"):
        load_index(tmp_path / "missing.faiss")
    faiss.write_index(faiss.IndexFlatL2(4), str(tmp_path / "l2.faiss"))
    with pytest.raises(ValueError, match="not a ccr search index"):
        load_index(tmp_path / "l2.faiss")
