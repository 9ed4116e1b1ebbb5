"""Every loss against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ccr.models.losses import (
    info_nce,
    kl_teacher_student,
    max_over_slots,
    minmax_rows,
    multi_positive_nce,
    ot_contrastive,
    ot_distance,
    relation_kd,
    sinkhorn,
    slot_diversity,
    slot_token_alignment,
    soft_matching,
    soft_targets,
)

torch.set_num_threads(1)


def close(a: torch.Tensor | float, b: float, tol: float = 1e-5) -> bool:
    return abs(float(a) - b) < tol


def test_info_nce_identity_and_temperature():
    e = torch.eye(2)
    # logits = I / tau: each row -log(e^{1/tau} / (e^{1/tau} + 1)) = log(1 + e^{-1/tau})
    assert close(info_nce(e, e, tau=0.5), math.log(1 + math.exp(-2)))
    assert close(info_nce(e, e, tau=1.0), math.log(1 + math.exp(-1)))


def test_info_nce_masks_captions_of_the_same_image_as_positives():
    # 3 texts, 2 images; texts 0 and 1 describe image 0, text 2 image 1; tau = 1
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    v = torch.eye(2)
    pos = torch.tensor([[True, False], [True, False], [False, True]])
    rows = math.log(1 + math.exp(-1))                      # text -> image, one positive each
    col0 = -math.log(2 * math.e / (2 * math.e + 1))        # image 0: both its captions are positives
    col1 = -math.log(math.e / (math.e + 2))
    expected = 0.5 * (rows + 0.5 * (col0 + col1))
    assert close(info_nce(t, v, 1.0, pos), expected)
    # the naive version (second caption of image 0 as a negative) gives a different value
    naive_col0 = -math.log(math.e / (2 * math.e + 1))
    assert not close(info_nce(t, v, 1.0, pos), 0.5 * (rows + 0.5 * (naive_col0 + col1)), 1e-3)


def test_info_nce_needs_mask_for_rectangular():
    with pytest.raises(ValueError, match="pos_mask"):
        info_nce(torch.ones(3, 2), torch.ones(2, 2), 1.0)


def test_info_nce_is_invariant_to_batch_permutation():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    b = F.normalize(torch.randn(3, 4, generator=g), dim=1)
    img = torch.tensor([0, 0, 1, 2, 2, 2])
    pos = img[:, None] == torch.arange(3)[None]
    perm = torch.randperm(6, generator=g)
    cperm = torch.tensor([2, 0, 1])
    ref = info_nce(a, b, 0.1, pos)
    assert torch.allclose(info_nce(a[perm], b, 0.1, pos[perm]), ref, atol=1e-6)
    assert torch.allclose(info_nce(a, b[cperm], 0.1, pos[:, cperm]), ref, atol=1e-6)


def test_multi_positive_skips_rows_without_positive():
    logits = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    pos = torch.tensor([[True, False], [False, False]])
    assert close(multi_positive_nce(logits, pos), math.log(1 + math.exp(-1)))


def test_kl_direction_is_teacher_to_student():
    teacher = torch.log(torch.tensor([[0.5, 0.5]]))
    student = torch.log(torch.tensor([[0.9, 0.1]]))
    forward = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)   # KL(teacher || student)
    reverse = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    got = kl_teacher_student(teacher, student, tau=1.0)
    assert close(got, forward)
    assert not close(got, reverse, 1e-2)


def test_kl_gradient_only_reaches_student():
    teacher = torch.randn(3, 3, requires_grad=True)
    student = torch.randn(3, 3, requires_grad=True)
    kl_teacher_student(teacher, student, 0.5).backward()
    assert teacher.grad is None and student.grad is not None


def test_relation_kd_averages_rows_and_columns():
    t = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    s = torch.tensor([[0.0, 1.0], [0.5, 0.0]])

    def kl_rows(pt, ps):
        p = torch.softmax(pt, 1)
        q = torch.softmax(ps, 1)
        return float((p * (p / q).log()).sum(1).mean())

    expected = 0.5 * (kl_rows(t, s) + kl_rows(t.t(), s.t()))
    assert close(relation_kd(t, s, 1.0), expected)
    assert close(relation_kd(t, t, 1.0), 0.0)


def test_soft_targets_by_hand():
    s_v = torch.tensor([[0.2, 0.6, 0.4]])
    s_slot = torch.tensor([[0.5, 0.1, 0.3]])
    # mm(s_v) = [0, 1, .5]; mm(slot) = [1, 0, .5]; 0.8/0.2 mix = [.2, .8, .5]; / tau(.5) = [.4, 1.6, 1.0]
    z = [math.exp(0.4), math.exp(1.6), math.exp(1.0)]
    expected = [x / sum(z) for x in z]
    got = soft_targets(s_v, s_slot, alpha=0.8, tau=0.5)
    assert torch.allclose(got, torch.tensor([expected]), atol=1e-6)
    assert not got.requires_grad
    # without slots only the English-visual term remains
    z2 = [math.exp(0.0), math.exp(2.0), math.exp(1.0)]
    assert torch.allclose(soft_targets(s_v, None, 0.8, 0.5), torch.tensor([[x / sum(z2) for x in z2]]), atol=1e-6)


def test_soft_matching_kl():
    targets = torch.tensor([[0.7, 0.3]])
    t_v = torch.tensor([[0.5, 0.0]])
    q = torch.softmax(t_v / 0.5, 1)[0]
    expected = 0.7 * math.log(0.7 / float(q[0])) + 0.3 * math.log(0.3 / float(q[1]))
    assert close(soft_matching(t_v, targets, 0.5), expected)


def test_minmax_rows():
    out = minmax_rows(torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]]))
    assert torch.allclose(out, torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]))


def test_slot_diversity():
    assert close(slot_diversity(torch.eye(3).unsqueeze(0) * 2.0), 0.0)      # orthogonal slots: no penalty
    same = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])                          # identical directions, K = 2
    assert close(slot_diversity(same), 2.0 / 4.0)                            # ||[[1,1],[1,1]] - I||^2 / K^2


def test_sinkhorn_marginals_and_2x2_distance():
    x = torch.eye(2).unsqueeze(0)          # tokens e1, e2
    y = torch.eye(2).unsqueeze(0)
    mask = torch.ones(1, 2, dtype=torch.bool)
    eps = 0.5
    k = math.exp(-1 / eps)                 # cost [[0, 1], [1, 0]] -> P = 0.5 / (1 + k) * [[1, k], [k, 1]]
    d = ot_distance(x, mask, y, mask, eps=eps, iters=10)
    assert close(d, k / (1 + k))
    cost = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    plan = sinkhorn(cost, torch.full((1, 2), 0.5), torch.full((1, 2), 0.5), eps, 10)
    assert torch.allclose(plan[0], torch.tensor([[1, k], [k, 1]]) * 0.5 / (1 + k), atol=1e-6)
    # a padding token (masked) changes nothing
    xp = torch.cat([x, torch.tensor([[[0.3, -0.7]]])], dim=1)
    mp = torch.tensor([[True, True, False]])
    assert close(ot_distance(xp, mp, y, mask, eps, 10), k / (1 + k))


def test_ot_contrastive_prefers_matched_pair():
    s = torch.eye(2).reshape(2, 1, 2)      # sentence 0 = token e1, sentence 1 = token e2
    m = torch.ones(2, 1, dtype=torch.bool)
    neg = torch.tensor([[1], [0]])
    loss, dpos = ot_contrastive(s, m, s, m, neg, eps=0.1, iters=5, tau=1.0)
    # matched distance 0, mismatched 1 -> CE = log(1 + e^{-1})
    assert close(dpos, 0.0) and close(loss, math.log(1 + math.exp(-1)))


def test_ot_gradients_finite_with_padding():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 5, generator=g, requires_grad=True)
    y = torch.randn(3, 6, 5, generator=g, requires_grad=True)
    xm = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    ym = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    ot_distance(x, xm, y, ym, 0.1, 5).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert x.grad[0, 2:].abs().sum() == 0 and x.grad[0, :2].abs().sum() > 0


def test_max_over_slots_and_alignment():
    text = torch.tensor([[1.0, 0.0]])
    slots = torch.tensor([[[0.2, 0.0], [0.9, 0.1]], [[-1.0, 0.0], [0.0, 1.0]]])
    assert torch.allclose(max_over_slots(text, slots), torch.tensor([[0.9, 0.0]]))
    a = torch.eye(4).reshape(2, 2, 4)
    b = torch.stack([a[1], a[0]])
    assert slot_token_alignment(a, a, 0.1) < slot_token_alignment(a, b, 0.1)


def test_soft_targets_matrix_norm_is_leccr_as_published():
    """LECCR: min-max over the whole matrix, the mixture softmaxed per row without a temperature."""
    import torch

    from ccr.models.losses import soft_targets

    s_v = torch.tensor([[0.9, 0.1], [0.3, 0.5]])
    s_slot = torch.tensor([[0.2, 0.6], [0.4, 0.0]])
    got = soft_targets(s_v, s_slot, alpha=0.8, tau=0.05, norm="matrix")
    mm_v = (s_v - 0.1) / 0.8
    mm_s = (s_slot - 0.0) / 0.6
    want = torch.softmax(0.8 * mm_v + 0.2 * mm_s, dim=1)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, soft_targets(s_v, s_slot, alpha=0.8, tau=0.05, norm="row"))
