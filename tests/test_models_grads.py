"""Gradients reach every trainable parameter; the batch loss does not depend on batch order."""

from __future__ import annotations

import pytest
import torch

from ccr.models import (
    CrossLingualTeacher,
    CrossModalStudent,
    create_student,
    create_teacher,
    student_arch,
    teacher_arch,
)
from ccr.params import resolve_student_params, resolve_teacher_params
from ccr.train import load_split
from ccr.train.stages import _student_loss, _teacher_loss
from ccr.train.synthetic import make_synthetic

torch.set_num_threads(1)
CPU = torch.device("cpu")
T = {"embed_dim": 16, "hidden_dim": 32, "max_text_tokens": 8, "dropout": 0.0}
P = {**T, "attn_heads": 2, "n_slots": 3}


def build_teacher(text_dim: int, p) -> CrossLingualTeacher:
    return create_teacher(teacher_arch(text_dim, p))


def build_student(image_dim: int, text_dim: int, p) -> CrossModalStudent:
    return create_student(student_arch(image_dim, text_dim, p))


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    inputs = make_synthetic(tmp_path_factory.mktemp("g"), n_images={"train": 10, "val": 2, "test": 1})
    return load_split(inputs, "train", text_tokens=True)


def _teacher(train) -> CrossLingualTeacher:
    torch.manual_seed(0)
    t = build_teacher(train.s_pooled.shape[1], resolve_teacher_params(T)).eval()
    for prm in t.parameters():
        prm.requires_grad_(False)
    return t


def _assert_all_grads(model: torch.nn.Module) -> None:
    for name, prm in model.named_parameters():
        if prm.requires_grad:
            assert prm.grad is not None, f"no gradient reaches {name}"
            assert torch.isfinite(prm.grad).all(), f"non-finite gradient in {name}"
            assert prm.grad.abs().sum() > 0, f"zero gradient in {name}"


@pytest.mark.parametrize("pooling", ["mean", "attention"])
@pytest.mark.parametrize("shared", [True, False])
def test_student_gradients_reach_every_parameter(train, pooling, shared):
    p = resolve_student_params({**P, "visual_pooling": pooling, "share_text_head": shared})
    torch.manual_seed(0)
    model: CrossModalStudent = build_student(train.img_pooled.shape[1], train.s_pooled.shape[1], p)
    loss_fn = _student_loss(model, _teacher(train), train, p, CPU)
    terms = loss_fn(torch.arange(len(train.caption_ids)))
    assert {"vt", "vs", "soft", "slot", "div", "align", "kd", "kd_fine"} <= set(terms)
    terms["loss"].backward()
    _assert_all_grads(model)


@pytest.mark.parametrize("shared", [True, False])
def test_teacher_gradients_reach_every_parameter(train, shared):
    p = resolve_teacher_params({**T, "teacher_shared": shared})
    torch.manual_seed(0)
    model = build_teacher(train.s_pooled.shape[1], p)
    terms = _teacher_loss(model, train, p, CPU)(torch.arange(len(train.caption_ids)))
    assert terms["ot"] > 0 and terms["sent"] > 0
    terms["loss"].backward()
    _assert_all_grads(model)


def test_student_batch_loss_is_permutation_invariant(train):
    p = resolve_student_params(P)
    torch.manual_seed(0)
    model = build_student(train.img_pooled.shape[1], train.s_pooled.shape[1], p).eval()
    loss_fn = _student_loss(model, _teacher(train), train, p, CPU)
    idx = torch.arange(len(train.caption_ids))
    perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(3))
    a, b = loss_fn(idx), loss_fn(idx[perm])
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_teacher_batch_loss_is_permutation_invariant(train):
    p = resolve_teacher_params(T)
    torch.manual_seed(0)
    model = build_teacher(train.s_pooled.shape[1], p).eval()
    loss_fn = _teacher_loss(model, train, p, CPU)
    idx = torch.arange(len(train.caption_ids))
    perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(4))
    a, b = loss_fn(idx), loss_fn(idx[perm])
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_attention_pooling_handles_any_token_count():
    """Video-style inputs: the same head works for 49 grid tokens or 3 frames."""
    p = resolve_student_params({**P, "visual_pooling": "attention", "use_slots": False})
    model = build_student(8, 6, p).eval()
    for n_tok in (49, 3):
        out = model.encode_images(torch.randn(2, 8), torch.randn(2, n_tok, 8))
        assert out.glob.shape == (2, 16) and torch.allclose(out.glob.norm(dim=1), torch.ones(2), atol=1e-5)


def test_losses_run_under_bfloat16_autocast(train):
    """The CUDA path trains under bfloat16 autocast: the same mixed dtypes, checked here on CPU."""
    p = resolve_student_params(P)
    tp = resolve_teacher_params(T)
    torch.manual_seed(0)
    student = build_student(train.img_pooled.shape[1], train.s_pooled.shape[1], p)
    teacher = build_teacher(train.s_pooled.shape[1], tp)
    idx = torch.arange(len(train.caption_ids))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        ts = _teacher_loss(teacher, train, tp, CPU)(idx)
        ss = _student_loss(student, _teacher(train), train, p, CPU)(idx)
    for terms, model in ((ts, teacher), (ss, student)):
        assert all(torch.isfinite(v) for v in terms.values())
        assert terms["loss"].dtype == torch.float32
        terms["loss"].backward()
        assert all(torch.isfinite(x.grad).all() for x in model.parameters() if x.grad is not None)
