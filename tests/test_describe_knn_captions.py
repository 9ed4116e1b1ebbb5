"""knn-captions describer: leak rules, row layout, ranking, determinism, scale (chunked search), bad params."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import ccr.describe.knn_captions as knn
from ccr.data.tables import CAPTIONS_SCHEMA
from ccr.describe.knn_captions import KnnCaptionDescriber, LeakError, describe_by_neighbours, normalise_text
from ccr.features.store import Features


def _images(splits: list[str]) -> pa.Table:
    return pa.table({"image_id": [f"im{i}" for i in range(len(splits))],
                     "path": [f"{i}.png" for i in range(len(splits))], "split": splits})


def _captions(rows: list[tuple[str, str, str, str, str]]) -> pa.Table:
    """rows: (caption_id, image_id, lang, text, origin); split taken from the image's split."""
    return pa.table({"caption_id": [r[0] for r in rows], "image_id": [r[1] for r in rows],
                     "lang": [r[2] for r in rows], "text": [r[3] for r in rows], "origin": [r[4] for r in rows],
                     "split": [r[5] for r in rows], "source_id": pa.nulls(len(rows), pa.string())},
                    schema=CAPTIONS_SCHEMA)


def _world(n_train: int = 30, n_val: int = 6, n_test: int = 6, per_image: int = 3, dim: int = 16, seed: int = 0):
    """Clustered features; every caption names its image (unique), val/test captions carry a sentinel word."""
    rng = np.random.default_rng(seed)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    images = _images(splits)
    centres = rng.normal(size=(4, dim))
    pooled = (centres[np.arange(len(splits)) % 4] + 0.3 * rng.normal(size=(len(splits), dim))).astype(np.float32)
    feats = Features(ids=images.column("image_id").to_pylist(), pooled=pooled)
    rows = []
    for i, split in enumerate(splits):
        for j in range(per_image):
            word = "leakword" if split != "train" else "cluster"
            rows.append((f"im{i}#en{j}", f"im{i}", "en", f"a {word} {i % 4} photo number {i} caption {j}", "human",
                         split))
        rows.append((f"im{i}#fr0", f"im{i}", "fr", f"une photo {i}", "human", split))  # never English
        rows.append((f"im{i}#mt", f"im{i}", "en", f"machine text {i}", "mt", split))   # never human
    return images, _captions(rows), feats


def _texts_by_image(table: pa.Table) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for iid, text in zip(table.column("image_id").to_pylist(), table.column("text").to_pylist(), strict=True):
        out.setdefault(iid, []).append(text)
    return out


@pytest.mark.parametrize("params", [
    {}, {"view": "caption", "order": "consensus", "captions_per_neighbour": None}, {"view": "caption", "k": 10},
    {"view": "neighbour", "views": 3, "k": 5, "order": "consensus"}, {"dedup": False, "center": False},
    {"captions_per_neighbour": 1, "k": 4, "views": 4},
])
def test_leak_rules(params):
    images, captions, feats = _world()
    table, sources = KnnCaptionDescriber(**params).describe_with_sources(images, captions, feats)
    cap = {c: (i, lg, o, s) for c, i, lg, o, s in zip(*(captions.column(n).to_pylist() for n in
                                                         ("caption_id", "image_id", "lang", "origin", "split")),
                                                       strict=True)}
    own_texts: dict[str, set[str]] = {}
    for cid, text in zip(captions.column("caption_id").to_pylist(), captions.column("text").to_pylist(), strict=True):
        own_texts.setdefault(cap[cid][0], set()).add(text)
    non_train = [t for t, s in zip(captions.column("text").to_pylist(), captions.column("split").to_pylist(),
                                   strict=True) if s != "train"]
    for iid, texts in _texts_by_image(table).items():
        for text in texts:
            assert "leakword" not in text and "machine" not in text and "une" not in text
            assert not any(own in text for own in own_texts[iid]), (iid, text)   # never its own caption
            assert not any(t in text for t in non_train)
    for views in sources:
        for unit in views:
            for cid in unit:
                assert cap[cid][1:] == ("en", "human", "train")


def test_nothing_depends_on_val_or_test_captions():
    images, captions, feats = _world()
    base = describe_by_neighbours(images, captions, feats, k=5, views=4)
    split = captions.column("split").to_pylist()
    train_only = captions.filter(pa.array([s == "train" for s in split]))
    changed = captions.set_column(3, "text", pa.array(
        [t if s == "train" else f"totally different {i}" for i, (t, s) in
         enumerate(zip(captions.column("text").to_pylist(), split, strict=True))]))
    assert describe_by_neighbours(images, train_only, feats, k=5, views=4).equals(base)
    assert describe_by_neighbours(images, changed, feats, k=5, views=4).equals(base)


def test_rows_layout_views_order_and_determinism():
    images, captions, feats = _world()
    out = describe_by_neighbours(images, captions, feats, k=6, views=5)
    ids = images.column("image_id").to_pylist()
    assert out.schema == CAPTIONS_SCHEMA
    assert out.column("caption_id").to_pylist() == [f"{i}#desc{v}" for i in ids for v in range(5)]
    assert out.column("split").to_pylist() == [s for s in images.column("split").to_pylist() for _ in range(5)]
    assert set(out.column("lang").to_pylist()) == {"en"}
    assert set(out.column("origin").to_pylist()) == {"description"}
    assert out.column("source_id").null_count == out.num_rows
    # deterministic, also when the captions table comes in another row order
    shuffled = captions.take(pa.array(np.random.default_rng(1).permutation(captions.num_rows)))
    assert describe_by_neighbours(images, shuffled, feats, k=6, views=5).equals(out)
    # a subset of images (any order) gets exactly its rows of the full output
    some = [ids[7], ids[40], ids[2]]
    sub = describe_by_neighbours(images, captions, feats, k=6, views=5, image_ids=some)
    full = dict(zip(out.column("caption_id").to_pylist(), out.column("text").to_pylist(), strict=True))
    assert sub.column("text").to_pylist() == [full[c] for c in sub.column("caption_id").to_pylist()]
    assert sub.column("image_id").to_pylist()[::5] == some
    # dedup on: the views of an image are different sentences
    for texts in _texts_by_image(out).values():
        assert len({normalise_text(t) for t in texts}) == 5


def test_nearest_order_is_round_robin_over_neighbours_and_own_text_dropped():
    # 1-d world: image 0 at 0.0; train images 1, 2, 3 at 1, 2, 3 (neighbours of image 0 in that order).
    images = _images(["train", "train", "train", "train", "val"])
    feats = Features(ids=[f"im{i}" for i in range(5)],
                     pooled=np.array([[1, 0.0], [1, 0.1], [1, 0.2], [1, 0.3], [1, 0.05]], np.float32))
    rows = [("im0#a", "im0", "en", "A dog runs.", "human", "train")]
    for i in (1, 2, 3):
        rows += [(f"im{i}#a", f"im{i}", "en", f"first of {i}", "human", "train"),
                 (f"im{i}#b", f"im{i}", "en", f"second of {i}", "human", "train")]
    rows.append(("im2#c", "im2", "en", "a dog  runs", "human", "train"))  # same sentence as im0's own caption
    rows.append(("im4#a", "im4", "en", "val caption", "human", "val"))
    d = KnnCaptionDescriber(k=3, views=7, view="caption", order="nearest", captions_per_neighbour=None, center=False)
    table, sources = d.describe_with_sources(images, _captions(rows), feats)
    # im2#c (= im0's own sentence) is never offered to im0: 6 candidates left, the 7th view cycles
    assert sources[0] == [["im1#a"], ["im2#a"], ["im3#a"], ["im1#b"], ["im2#b"], ["im3#b"], ["im1#a"]]
    # image 1: neighbours 2 (0.1 away; im2#c sorts after a, b) then 0 then 3 (ties broken by position)
    assert sources[1][:3] == [["im2#a"], ["im0#a"], ["im3#a"]]
    # val image 4 may get im2's "a dog runs" (not its own), and nothing from itself
    assert all(cid != "im4#a" for unit in sources[4] for cid in unit)
    neighbour = KnnCaptionDescriber(k=3, views=2, view="neighbour", order="nearest", captions_per_neighbour=None,
                                    center=False)
    t2 = neighbour.describe_table(images, _captions(rows), feats)
    assert t2.column("text").to_pylist()[:2] == ["first of 1. second of 1.", "first of 2. second of 2."]


def test_own_text_dropped_even_when_not_a_candidate_caption():
    # captions_per_neighbour=1 keeps only im0#a as im0's candidate, but im0's OTHER caption (im0#b) is still
    # its own: the neighbour caption with the same words must not describe im0.
    images = _images(["train", "train", "train", "train"])
    feats = Features(ids=[f"im{i}" for i in range(4)],
                     pooled=np.array([[1, 0.0], [1, 0.1], [1, 0.2], [1, 0.3]], np.float32))
    rows = [("im0#a", "im0", "en", "zero a", "human", "train"), ("im0#b", "im0", "en", "A cat sleeps", "human", "train"),
            ("im1#a", "im1", "en", "a cat sleeps.", "human", "train"), ("im2#a", "im2", "en", "two a", "human", "train"),
            ("im3#a", "im3", "en", "three a", "human", "train")]
    _, sources = KnnCaptionDescriber(k=2, views=2, view="caption", order="nearest", captions_per_neighbour=1,
                                     center=False).describe_with_sources(images, _captions(rows), feats)
    assert sources[0] == [["im2#a"], ["im2#a"]]  # im1's only candidate is im0's own sentence


def test_consensus_prefers_what_neighbours_agree_on():
    images = _images(["val", "train", "train", "train", "train"])
    feats = Features(ids=[f"im{i}" for i in range(5)],
                     pooled=np.array([[1, 0.0], [1, 0.1], [1, 0.2], [1, 0.3], [1, 0.4]], np.float32))
    rows = [("im1#a", "im1", "en", "a red car parked on a street", "human", "train"),   # nearest, the odd one
            ("im2#a", "im2", "en", "a brown dog runs on the grass", "human", "train"),
            ("im3#a", "im3", "en", "a dog running on green grass", "human", "train"),
            ("im4#a", "im4", "en", "the dog plays in the grass", "human", "train")]
    d = KnnCaptionDescriber(k=3, views=3, view="caption", order="consensus", center=False)
    _, sources = d.describe_with_sources(images, _captions(rows), feats)
    assert sources[0][-1] == ["im1#a"] and sources[0][0] != ["im1#a"]
    _, near = KnnCaptionDescriber(k=3, views=3, view="caption", order="nearest", center=False).describe_with_sources(
        images, _captions(rows), feats)
    assert near[0][0] == ["im1#a"]


@pytest.mark.parametrize("params", [{}, {"view": "caption", "k": 5, "views": 3}])
def test_synthetic_default_dataset(tmp_path, params):
    from ccr.data import synthetic

    images, captions = synthetic.build(tmp_path, seed=0, n_train=24, n_val=4, n_test=6, image_size=32)
    rng = np.random.default_rng(0)
    feats = Features(ids=images.column("image_id").to_pylist(),
                     pooled=rng.normal(size=(images.num_rows, 8)).astype(np.float32))
    d = KnnCaptionDescriber(**params)
    out, sources = d.describe_with_sources(images, captions, feats)
    assert out.num_rows == d.views * images.num_rows
    cols = {c: captions.column(c).to_pylist() for c in ("caption_id", "image_id", "text", "split", "lang", "origin")}
    by_id = {cid: i for i, cid in enumerate(cols["caption_id"])}
    own = {}
    for iid, text, split in zip(cols["image_id"], cols["text"], cols["split"], strict=True):
        if split == "train":
            own.setdefault(iid, set()).add(normalise_text(text))
    for iid, split, views in zip(images.column("image_id").to_pylist(), images.column("split").to_pylist(), sources,
                                 strict=True):
        for unit in views:
            for cid in unit:
                i = by_id[cid]
                assert (cols["split"][i], cols["lang"][i], cols["origin"][i]) == ("train", "en", "human")
                assert cols["image_id"][i] != iid
                if split == "train":  # grammar captions repeat across images: the sentence is still not its own
                    assert normalise_text(cols["text"][i]) not in own[iid]
    # 2 captions per image: a 'neighbour' view joins both; the French test queries never appear
    french = [t for t, lg in zip(cols["text"], cols["lang"], strict=True) if lg != "en"]
    assert french and not any(f in t for f in french for t in out.column("text").to_pylist())


def test_chunked_search_matches_full_sort(monkeypatch):
    rng = np.random.default_rng(3)
    n_train, n = 50, 70
    images = _images(["train"] * n_train + ["val"] * (n - n_train))
    pooled = rng.normal(size=(n, 5)).astype(np.float32)
    pooled[7] = pooled[3]  # an exact tie for everyone
    rows = [(f"im{i}#a", f"im{i}", "en", f"text {i}", "human", "train") for i in range(n_train)]
    d = KnnCaptionDescriber(k=6, views=1, center=False)
    pool = d._pool(images, _captions(rows))
    monkeypatch.setattr(knn, "_SIM_BUDGET", 7 * n_train)  # 7 query rows per chunk
    got = d._search(pooled, pool.image_rows)
    x = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    sims = x @ x[:n_train].T
    for i in range(n_train):
        sims[i, i] = -np.inf
    for i in range(n):
        expect = np.argsort(-sims[i], kind="stable")[:6]
        assert got[i].tolist() == expect.tolist(), i


def test_leak_check_catches_an_own_caption(monkeypatch):
    images, captions, feats = _world()
    d = KnnCaptionDescriber(k=3, views=2)
    real = KnnCaptionDescriber._units
    monkeypatch.setattr(KnnCaptionDescriber, "_units", lambda self, pool, nb, own, idf, w: (
        [[0]] + real(self, pool, nb, own, idf, w)))  # caption 0 is im0's own caption
    with pytest.raises(LeakError, match="im0"):
        d.describe_table(images, captions, feats)


@pytest.mark.parametrize(("params", "named"), [
    ({"k": 0}, "'k'"), ({"views": 0}, "'views'"), ({"view": "sentence"}, "'view'"), ({"order": "random"}, "'order'"),
    ({"captions_per_neighbour": 0}, "'captions_per_neighbour'"), ({"dedup": "yes"}, "'dedup'"),
    ({"center": 1}, "'center'"), ({"feature": "tokens"}, "'feature'"),
    ({"view": "neighbour", "views": 5, "k": 3}, "'views'"),
    ({"k": 2, "captions_per_neighbour": 1, "views": 3}, "'views'"),
])
def test_bad_params_named(params, named):
    with pytest.raises(ValueError, match=named):
        KnnCaptionDescriber(**params)


def test_bad_data_named():
    images, captions, feats = _world(n_train=4)
    with pytest.raises(ValueError, match=r"'k' \(5\).*data has 4"):
        describe_by_neighbours(images, captions, feats, k=5)
    with pytest.raises(KeyError, match="im3"):
        describe_by_neighbours(images, captions, feats.take([f"im{i}" for i in range(16) if i != 3]), k=2, views=2)
    val_only = captions.filter(pa.array([s != "train" for s in captions.column("split").to_pylist()]))
    with pytest.raises(ValueError, match="no English human training captions"):
        describe_by_neighbours(images, val_only, feats, k=2, views=2)
    # a caption that claims to be train while its image is val is refused, not used
    bad = pa.concat_tables([captions, _captions([("x", "im5", "en", "sneaky", "human", "train")])])
    with pytest.raises(LeakError, match="'x'"):
        describe_by_neighbours(images, bad, feats, k=2, views=2)
