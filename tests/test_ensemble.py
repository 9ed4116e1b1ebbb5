"""Score fusion of several students (ccr.train.EnsembleRetriever): its unit vectors' inner products are
the weighted sum of the members' scores, so the gallery cache, FAISS and the querybank take it as one."""

from __future__ import annotations

import numpy as np
import pytest

from ccr.train import EnsembleRetriever, load_job_retriever


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class TableRetriever:
    """Embeddings looked up by row number in ``'i<n>'`` / ``'q<n>'`` ids (a student without the model)."""

    def __init__(self, images: np.ndarray, texts: np.ndarray):
        self.images, self.texts, self.dim = images, texts, images.shape[1]

    def embed_images(self, ids):
        return self.images[[int(i[1:]) for i in ids]]

    def embed_texts(self, ids):
        return self.texts[[int(i[1:]) for i in ids]]


@pytest.fixture
def members():
    rng = np.random.default_rng(0)
    return [TableRetriever(unit(rng.normal(size=(30, d))), unit(rng.normal(size=(50, d)))) for d in (8, 5)]


def test_fused_inner_products_are_the_weighted_scores(members):
    ensemble = EnsembleRetriever(members, [3, 1])  # relative weights: 0.75 and 0.25
    images, texts = [f"i{i}" for i in range(30)], [f"q{i}" for i in range(50)]
    fused_i, fused_t = ensemble.embed_images(images), ensemble.embed_texts(texts)
    assert ensemble.dim == 13 and fused_i.shape == (30, 13) and fused_t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fused_i, axis=1), 1, atol=1e-6)
    expected = sum(w * m.texts @ m.images.T for w, m in zip((0.75, 0.25), members, strict=True))
    np.testing.assert_allclose(fused_t @ fused_i.T, expected, atol=1e-6)
    assert not np.allclose(fused_t @ fused_i.T, members[0].texts @ members[0].images.T, atol=1e-3)
    np.testing.assert_allclose(EnsembleRetriever(members, [0.75, 0.25]).embed_texts(texts), fused_t)


@pytest.mark.parametrize("weights", [[1], [1, 0], [1, -1], [1, float("nan")], [1, 1, 1]])
def test_bad_weights_are_refused(members, weights):
    with pytest.raises(ValueError, match="ensemble"):
        EnsembleRetriever(members, weights)


def test_a_job_with_several_students_needs_weights(tmp_path):
    mapping = {"images": "a", "captions": "b", "caption_features": "c", "student": ["x/student.pt", "y/student.pt"]}
    with pytest.raises(ValueError, match="no ensemble weights"):
        load_job_retriever(mapping, "fr", [{}, {}])
    with pytest.raises(ValueError, match="2 student"):
        load_job_retriever(mapping, "fr", [{}], [0.5, 0.5])
