"""The generated default dataset: determinism, sizes, grammars and rendering."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccr.data import synthetic
from ccr.data.synthetic import EN_COLOUR, EN_SHAPE, Obj, Scene
from ccr.data.tables import CAPTIONS_SCHEMA, IMAGES_SCHEMA

SMALL = {"n_train": 6, "n_val": 3, "n_test": 5, "captions_per_image": 2, "image_size": 64}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, object, object]:
    out = tmp_path_factory.mktemp("syn")
    images, captions = synthetic.build(out, seed=3, **SMALL)
    return out, images, captions


def _png_bytes(root: Path, images) -> list[bytes]:
    return [(root / p).read_bytes() for p in images.column("path").to_pylist()]


def test_same_seed_same_tables_and_bytes(built, tmp_path):
    out, images, captions = built
    images2, captions2 = synthetic.build(tmp_path, seed=3, **SMALL)
    assert images2.equals(images) and captions2.equals(captions)
    assert _png_bytes(tmp_path, images2) == _png_bytes(out, images)


def test_different_seed_differs(built, tmp_path):
    out, images, captions = built
    images2, captions2 = synthetic.build(tmp_path, seed=4, **SMALL)
    assert captions2.column("text").to_pylist() != captions.column("text").to_pylist()
    assert _png_bytes(tmp_path, images2) != _png_bytes(out, images)


def test_sizes_splits_and_ids(built):
    out, images, captions = built
    assert images.schema.equals(IMAGES_SCHEMA) and captions.schema.equals(CAPTIONS_SCHEMA)
    splits = images.column("split").to_pylist()
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (6, 3, 5)
    rows = captions.to_pylist()
    en = [r for r in rows if r["lang"] == "en"]
    assert len(en) == 2 * 14
    for iid in images.column("image_id").to_pylist():
        texts = [r["text"] for r in en if r["image_id"] == iid]
        assert len(texts) == 2 and len(set(texts)) == 2, "captions of one image must differ"
        assert {r["caption_id"] for r in en if r["image_id"] == iid} == {f"{iid}#en0", f"{iid}#en1"}
    for path in images.column("path").to_pylist():
        assert re.fullmatch(r"images/syn-(train|val|test)-\d{5}\.png", path)
        with Image.open(out / path) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    assert all(r["text"].strip() and r["text"][0].isupper() and r["text"].endswith(".") for r in rows)
    assert all(r["origin"] == "human" and r["source_id"] is None for r in rows)


def test_french_references_only_on_test_and_human(built):
    _, images, captions = built
    rows = captions.to_pylist()
    fr = [r for r in rows if r["lang"] == "fr"]
    test_ids = [i for i, s in zip(images.column("image_id").to_pylist(), images.column("split").to_pylist(),
                                  strict=True) if s == "test"]
    assert sorted(r["image_id"] for r in fr) == sorted(test_ids)
    assert all(r["split"] == "test" and r["caption_id"] == f"{r['image_id']}#fr0" for r in fr)
    # Written by the French grammar, not machine-translated: origin human, no source caption.
    assert all(r["origin"] == "human" and r["source_id"] is None for r in fr)
    en_texts = {r["text"] for r in rows if r["lang"] == "en"}
    assert not en_texts & {r["text"] for r in fr}
    assert {r["lang"] for r in rows} == {"en", "fr"}  # no German unless asked for


def test_german_only_when_asked(tmp_path):
    _, captions = synthetic.build(tmp_path, seed=1, n_train=2, n_val=1, n_test=3, image_size=32,
                                  target_langs=["fr", "de"])
    de = [r for r in captions.to_pylist() if r["lang"] == "de"]
    assert len(de) == 3 and all(r["split"] == "test" for r in de)
    # Adding a language must not reword the French references.
    _, fr_only = synthetic.build(tmp_path / "b", seed=1, n_train=2, n_val=1, n_test=3, image_size=32)
    fr = lambda t: [r["text"] for r in t.to_pylist() if r["lang"] == "fr"]  # noqa: E731
    assert fr(captions) == fr(fr_only)


def test_val_references_when_asked_leave_the_test_ones_as_they_were(tmp_path):
    _, both = synthetic.build(tmp_path, seed=1, n_train=2, n_val=2, n_test=3, image_size=32,
                              reference_splits=["val", "test"])
    _, test_only = synthetic.build(tmp_path / "b", seed=1, n_train=2, n_val=2, n_test=3, image_size=32)
    fr = lambda t, split: [(r["caption_id"], r["text"]) for r in t.to_pylist()  # noqa: E731
                           if r["lang"] == "fr" and r["split"] == split]
    assert len(fr(both, "val")) == 2 and not fr(test_only, "val")
    assert fr(both, "test") == fr(test_only, "test")
    assert not [r for r in both.to_pylist() if r["lang"] == "fr" and r["split"] == "train"]


def test_bad_params(tmp_path):
    with pytest.raises(ValueError, match="target_langs.*supported"):
        synthetic.build(tmp_path, seed=0, n_train=1, n_val=0, n_test=1, target_langs=("cs",))
    with pytest.raises(ValueError, match="n_train"):
        synthetic.build(tmp_path, seed=0, n_train=-1)
    with pytest.raises(ValueError, match="captions_per_image"):
        synthetic.build(tmp_path, seed=0, n_train=1, captions_per_image=0)
    with pytest.raises(ValueError, match="reference_splits"):
        synthetic.build(tmp_path, seed=0, n_train=1, reference_splits=["train"])


def test_scenes_are_unique_at_default_size():
    scenes = synthetic.sample_scenes(700, seed=0)
    assert len(set(scenes)) == 700
    for s in scenes:
        assert not any(o.colour in synthetic.CLASHES[s.background] for o in s.objects)
    counts = np.bincount([len(s.objects) for s in scenes])
    assert all(counts[1:] > 100)  # 1, 2 and 3 objects all well represented


def _words(options: tuple[str, ...]) -> str:
    return "|".join(re.escape(o) for o in options)


def test_english_captions_name_every_object_and_relation():
    scenes = synthetic.sample_scenes(300, seed=5)
    rng = np.random.default_rng(0)
    for scene in scenes:
        text = synthetic.english_caption(scene, rng)
        for obj in scene.objects:
            assert re.search(rf"\b({_words(EN_COLOUR[obj.colour])})\b", text), (obj, text)
            assert re.search(rf"\b({_words(EN_SHAPE[obj.shape])})\b", text), (obj, text)
        if len(scene.objects) > 1:
            words = ("left", "right") if scene.place == "horizontal" else ("above", "below", "over", "under", "top")
            assert any(w in text for w in words), text
        # a/an agreement
        assert not re.search(r"\ba [aeiou]", text, re.I) and not re.search(r"\ban [^aeiou]", text, re.I), text
        assert "  " not in text and " ," not in text and " ." not in text


def test_french_gender_agreement():
    rng = np.random.default_rng(0)
    star = Scene("grass", "centre", (Obj("star", "blue", "small"),))
    circle = Scene("grass", "centre", (Obj("circle", "red", "large"),))
    for _ in range(30):
        t = synthetic.french_caption(star, rng)
        assert re.search(r"\bune (petite )?étoile bleue\b", t, re.I), t
        assert not re.search(r"\b(placé|situé|petit) ", t), t
        t = synthetic.french_caption(circle, rng)
        assert re.search(r"\bun (grand |gros )?(cercle|disque) rouge\b", t, re.I), t
        assert not re.search(r"\b(une|grande|grosse) (cercle|disque)", t, re.I), t
    pair = Scene("white", "horizontal", (Obj("cross", "white", "small"), Obj("square", "purple", "large")))
    seen = set()
    for _ in range(40):
        t = synthetic.french_caption(pair, rng)
        assert re.search(r"\bune (petite )?croix blanche\b", t, re.I), t
        assert re.search(r"\bun (grand |gros )?carré violet\b", t, re.I), t
        if "gauche d" in t:
            assert "à gauche d'un" in t  # de + un contracts
            seen.add("contraction")
        if "droite d" in t:
            assert "à droite d'une" in t
    assert seen
    feminine = Scene("sky", "vertical", (Obj("star", "red", "small"), Obj("cross", "black", "large"),
                                        Obj("star", "yellow", "large")))
    for _ in range(30):
        t = synthetic.french_caption(feminine, rng)
        assert "empilés" not in t, t  # all-feminine plural: empilées


def test_german_case_endings():
    assert synthetic._de_np(Obj("circle", "red", "large"), "nom") == "ein großer roter Kreis"
    assert synthetic._de_np(Obj("diamond", "blue", "small"), "nom") == "eine kleine blaue Raute"
    assert synthetic._de_np(Obj("square", "orange", "large"), "nom") == "ein großes orangefarbenes Quadrat"
    assert synthetic._de_np(Obj("square", "green", "small"), "dat") == "einem kleinen grünen Quadrat"
    assert synthetic._de_np(Obj("diamond", "green", "small"), "dat") == "einer kleinen grünen Raute"


def _centroid(img: np.ndarray, rgb: tuple[int, int, int]) -> tuple[float, float, int]:
    mask = (np.abs(img.astype(int) - np.array(rgb)).sum(-1) < 40)
    ys, xs = np.nonzero(mask)
    return (xs.mean() if len(xs) else -1.0), (ys.mean() if len(ys) else -1.0), int(mask.sum())


def test_rendering_matches_the_scene():
    rng = np.random.default_rng(0)
    red = synthetic.COLOURS["red"]
    img = np.asarray(synthetic.render(Scene("white", "top left", (Obj("circle", "red", "large"),)), 96, rng))
    x, y, n = _centroid(img, red)
    assert n > 200 and x < 48 and y < 48
    blue = synthetic.COLOURS["blue"]
    pair = Scene("grass", "horizontal", (Obj("star", "red", "small"), Obj("square", "blue", "large")))
    img = np.asarray(synthetic.render(pair, 96, rng))
    (xr, _, nr), (xb, _, nb) = _centroid(img, red), _centroid(img, blue)
    assert xr < xb and nb > nr > 20  # red left of blue, and the large one is bigger
    pair = Scene("sky", "vertical", (Obj("ring", "yellow", "large"), Obj("cross", "black", "large")))
    img = np.asarray(synthetic.render(pair, 96, rng))
    (_, yy, _), (_, yk, _) = _centroid(img, synthetic.COLOURS["yellow"]), _centroid(img, synthetic.COLOURS["black"])
    assert 0 < yy < yk
