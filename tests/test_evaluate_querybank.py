"""Querybank normalisation (ccr.evaluate.querybank): the folded embeddings rank exactly as QB-Norm's
inverted softmax in each direction, a bank on one side leaves the other direction's ranks alone, the
banks hold training rows only, bad params are refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.evaluate.metrics import image_to_text_ranks, text_to_image_ranks
from ccr.evaluate.querybank import (
    QuerybankNormalised,
    bank_caption_ids,
    bank_image_ids,
    embed_image_bank,
    with_querybank,
)
from ccr.params import ParamError, QuerybankParams


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class TableRetriever:
    """Embeddings looked up by id (what a trained student returns, without the model)."""

    def __init__(self, images: dict[str, np.ndarray], texts: dict[str, np.ndarray]):
        self.images, self.texts = images, texts

    def embed_images(self, ids):
        return np.stack([self.images[i] for i in ids])

    def embed_texts(self, ids):
        return np.stack([self.texts[i] for i in ids])


@pytest.fixture
def space():
    rng = np.random.default_rng(0)
    dim, n_img, n_q, n_bank = 16, 40, 120, 300
    images = unit(rng.normal(size=(n_img, dim)))
    images[:3] = unit(images[:3] * 0.2 + images[3:].mean(0))  # three hubs near the centre of the data
    queries = unit(images[rng.integers(0, n_img, n_q)] + 0.9 * rng.normal(size=(n_q, dim)))
    bank = unit(images[rng.integers(0, n_img, n_bank)] + 0.9 * rng.normal(size=(n_bank, dim)))
    image_bank = unit(queries[rng.integers(0, n_q, 200)] + 0.9 * rng.normal(size=(200, dim)))
    texts = {f"q{i}": v for i, v in enumerate(queries)} | {f"b{i}": v for i, v in enumerate(bank)}
    retriever = TableRetriever({f"i{i}": v for i, v in enumerate(images)}
                               | {f"j{i}": v for i, v in enumerate(image_bank)}, texts)
    q2g = np.array([int(np.argmax(images @ q)) for q in queries])  # a positive per query
    return SimpleNamespace(images=images, queries=queries, bank=bank, image_bank=image_bank, retriever=retriever,
                           q2g=q2g, image_ids=[f"i{i}" for i in range(n_img)], query_ids=[f"q{i}" for i in range(n_q)],
                           bank_ids=[f"b{i}" for i in range(n_bank)], image_bank_ids=[f"j{i}" for i in range(200)])


def inverted_softmax(scores: np.ndarray, bank_scores: np.ndarray, beta: float) -> np.ndarray:
    """QB-Norm's inverted softmax written out: exp(beta s(q, x)) / sum_b exp(beta s(b, x)), per column x."""
    return np.exp(beta * scores) / np.exp(beta * bank_scores).sum(0)


@pytest.mark.parametrize("beta", [1.0, 10.0, 50.0])
def test_folded_embeddings_rank_as_the_inverted_softmax_both_ways(space, beta):
    qb = QuerybankNormalised(space.retriever, space.bank_ids, space.image_bank_ids, beta)
    g, q = qb.embed_images(space.image_ids), qb.embed_texts(space.query_ids)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    s = space.queries @ space.images.T
    t2i = inverted_softmax(s, space.bank @ space.images.T, beta)                 # (queries, images)
    i2t = inverted_softmax(s.T, space.image_bank @ space.queries.T, beta)        # (images, queries)
    want_t2i = (t2i > t2i[np.arange(len(space.q2g)), space.q2g][:, None]).sum(1) + 1
    np.testing.assert_array_equal(text_to_image_ranks(q, g, space.q2g, use_gpu=False), want_t2i)
    ranks, imgs = image_to_text_ranks(q, g, space.q2g, use_gpu=False)
    for rank, img in zip(ranks, imgs, strict=True):  # best rank of the image's own captions among all
        own = np.flatnonzero(space.q2g == img)
        assert rank == (i2t[img] > i2t[img, own].max()).sum() + 1


def test_a_text_bank_alone_leaves_image_to_text_ranks_alone(space):
    qb = QuerybankNormalised(space.retriever, space.bank_ids, [], 10.0)
    plain, _ = image_to_text_ranks(space.queries, space.images, space.q2g, use_gpu=False)
    folded, _ = image_to_text_ranks(qb.embed_texts(space.query_ids), qb.embed_images(space.image_ids), space.q2g,
                                    use_gpu=False)
    np.testing.assert_array_equal(plain, folded)
    assert not np.array_equal(text_to_image_ranks(space.queries, space.images, space.q2g, use_gpu=False),
                              text_to_image_ranks(qb.embed_texts(space.query_ids), qb.embed_images(space.image_ids),
                                                  space.q2g, use_gpu=False))


def test_an_image_bank_alone_leaves_text_to_image_ranks_alone(space):
    qb = QuerybankNormalised(space.retriever, [], space.image_bank_ids, 10.0)
    plain = text_to_image_ranks(space.queries, space.images, space.q2g, use_gpu=False)
    folded = text_to_image_ranks(qb.embed_texts(space.query_ids), qb.embed_images(space.image_ids), space.q2g,
                                 use_gpu=False)
    np.testing.assert_array_equal(plain, folded)


def test_hubs_lose_rank_one_queries(space):
    """The point of it: images near everything stop taking the top rank of queries that are not theirs."""
    qb = QuerybankNormalised(space.retriever, space.bank_ids, [], 10.0)
    top_plain = np.argmax(space.queries @ space.images.T, axis=1)
    top_qb = np.argmax(qb.embed_texts(space.query_ids) @ qb.embed_images(space.image_ids).T, axis=1)
    hubs = [0, 1, 2]
    assert np.isin(top_qb, hubs).sum() < np.isin(top_plain, hubs).sum()


def test_embedding_in_chunks_matches_one_pass(space):
    qb = QuerybankNormalised(space.retriever, space.bank_ids, space.image_bank_ids, 10.0)
    for fn, ids in ((qb.embed_images, space.image_ids), (qb.embed_texts, space.query_ids)):
        whole = fn(ids)
        np.testing.assert_allclose(whole, np.concatenate([fn(ids[:7]), fn(ids[7:])]), atol=1e-6)


def test_a_stored_image_bank_gives_the_same_embeddings(space, tmp_path):
    inputs = SimpleNamespace(images=tmp_path / "images.parquet")
    pq.write_table(pa.table({"image_id": space.image_bank_ids + ["v0", "t0"], "path": ["x.jpg"] * 202,
                             "split": ["train"] * 200 + ["val", "test"]}), inputs.images)
    params = {"images": 500, "beta": 10.0}
    embed_image_bank(space.retriever, inputs, params, tmp_path / "bank.parquet")
    stored = with_querybank(space.retriever, inputs, params, tmp_path / "bank.parquet")
    fresh = with_querybank(space.retriever, inputs, params)
    np.testing.assert_allclose(stored.embed_texts(space.query_ids), fresh.embed_texts(space.query_ids), atol=1e-6)
    # a bank drawn with other params is refused, naming the file
    with pytest.raises(ValueError, match="bank.parquet: its images are not"):
        with_querybank(space.retriever, inputs, {"images": 50, "beta": 10.0}, tmp_path / "bank.parquet")


def _tables(tmp_path):
    captions = pa.table({
        "caption_id": ["a#en0", "a#en1", "b#en0", "v#en0", "t#en0", "a#fr0", "t#fr0", "a#desc0"],
        "image_id": ["a", "a", "b", "v", "t", "a", "t", "a"],
        "lang": ["en", "en", "en", "en", "en", "fr", "fr", "en"],
        "text": ["x"] * 8,
        "split": ["train", "train", "train", "val", "test", "train", "test", "train"],
        "origin": ["human"] * 7 + ["description"],
    })
    pq.write_table(captions, tmp_path / "captions.parquet")
    translations = tmp_path / "mt.parquet"
    pq.write_table(pa.table({"caption_id": ["a#en0>fr", "v#en0>fr", "t#en0>fr"], "split": ["train", "val", "test"]}),
                   translations)
    return SimpleNamespace(captions=tmp_path / "captions.parquet", translations=translations)


def test_the_banks_hold_training_rows_only(tmp_path):
    inputs = _tables(tmp_path)
    pq.write_table(pa.table({"image_id": ["a", "b", "v", "t"], "path": ["x.jpg"] * 4,
                             "split": ["train", "train", "val", "test"]}), tmp_path / "images.parquet")
    inputs.images = tmp_path / "images.parquet"
    assert bank_image_ids(inputs, 100, 0) == ["a", "b"]
    assert bank_caption_ids(inputs, 100, 0) == ["a#en0", "a#en0>fr", "a#en1", "b#en0"]
    inputs.translations = None  # a system trained without MT: its bank is English only
    assert bank_caption_ids(inputs, 100, 0) == ["a#en0", "a#en1", "b#en0"]


def test_the_bank_draw_is_seeded(tmp_path):
    inputs = _tables(tmp_path)
    first = bank_caption_ids(inputs, 2, 0)
    assert len(first) == 2 and first == bank_caption_ids(inputs, 2, 0)
    assert {tuple(bank_caption_ids(inputs, 2, s)) for s in range(20)} != {tuple(first)}


@pytest.mark.parametrize("values, message", [
    ({"texts": -1}, "'texts' must be an integer >= 0"),
    ({"images": 2.5}, "'images' must be an integer >= 0"),
    ({"beta": 0}, "'beta' must be a number > 0"),
    ({"beta": "10"}, "'beta' must be a number > 0"),
    ({"size": 10}, r"unknown querybank param\(s\) \['size'\]"),
])
def test_bad_params_are_refused_naming_the_key(values, message):
    with pytest.raises(ParamError, match=message):
        QuerybankParams.from_dict(values)


def test_off_leaves_the_retriever_as_it_is(space):
    assert with_querybank(space.retriever, None, {}) is space.retriever
    assert with_querybank(space.retriever, None, {"texts": 0, "images": 0, "beta": 5}) is space.retriever
