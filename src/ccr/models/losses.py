"""Loss functions of the CL2CM teacher/student and of LECCR's semantic slots (formulas: docs/methods.md).

All functions are pure (no parameters) and work on small batches; every one is unit-tested on tiny
tensors against values computed by hand (tests/test_models_losses.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def multi_positive_nce(logits: Tensor, pos_mask: Tensor) -> Tensor:
    """Mean over rows of ``-log(sum_{j in P(i)} exp(l_ij) / sum_j exp(l_ij))``.

    ``pos_mask[i, j]`` marks every positive of row ``i`` (e.g. all captions of the same image), so a
    second caption of the same image counts as a positive, never as a negative.  Rows without any
    positive are skipped.
    """
    logits = logits.float()
    pos_mask = pos_mask.bool()
    has_pos = pos_mask.any(dim=1)
    if not bool(has_pos.any()):
        return logits.sum() * 0.0
    log_den = torch.logsumexp(logits, dim=1)
    log_num = torch.logsumexp(logits.masked_fill(~pos_mask, float("-inf")), dim=1)
    return (log_den - log_num)[has_pos].mean()


def info_nce(a: Tensor, b: Tensor, tau: float, pos_mask: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between rows of ``a`` (n, D) and ``b`` (m, D) (already normalised).

    ``pos_mask`` (n, m) gives the positives (default: the diagonal, n == m).  The loss is the mean of
    the a->b (rows) and b->a (columns) multi-positive cross-entropies at temperature ``tau``.
    """
    logits = a @ b.t() / tau
    if pos_mask is None:
        if a.shape[0] != b.shape[0]:
            raise ValueError("info_nce: pos_mask is required when a and b have different lengths")
        pos_mask = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    return 0.5 * (multi_positive_nce(logits, pos_mask) + multi_positive_nce(logits.t(), pos_mask.t()))


def kl_teacher_student(teacher_logits: Tensor, student_logits: Tensor, tau: float) -> Tensor:
    """KL(P_teacher || P_student), rows as distributions, averaged over rows ("batchmean").

    ``P = softmax(logits / tau)`` per row; the teacher side is detached (it is frozen).  This direction
    is mode-covering: the student must put mass wherever the teacher does.
    """
    p_t = F.softmax(teacher_logits.detach().float() / tau, dim=1)
    log_p_s = F.log_softmax(student_logits.float() / tau, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean")


def relation_kd(teacher_sim: Tensor, student_sim: Tensor, tau: float) -> Tensor:
    """In-batch relational distillation: KL(teacher || student) over rows and over columns, averaged."""
    return 0.5 * (kl_teacher_student(teacher_sim, student_sim, tau)
                  + kl_teacher_student(teacher_sim.t(), student_sim.t(), tau))


def sinkhorn(cost: Tensor, mu: Tensor, nu: Tensor, eps: float, iters: int) -> Tensor:
    """Entropic OT plan (log-domain Sinkhorn) for batched costs.

    ``cost`` (..., n, m); ``mu`` (..., n) and ``nu`` (..., m) are marginals that sum to 1 (zeros mark
    padding, which then gets no mass).  Returns the plan ``P`` (..., n, m) after ``iters`` iterations.
    """
    cost = cost.float()
    log_mu = torch.log(mu.float().clamp_min(1e-30)).masked_fill(mu <= 0, float("-inf"))
    log_nu = torch.log(nu.float().clamp_min(1e-30)).masked_fill(nu <= 0, float("-inf"))
    k = -cost / eps
    f = torch.zeros_like(log_mu)
    g = torch.zeros_like(log_nu)
    for _ in range(iters):
        f = log_mu - _safe_lse(k + g.unsqueeze(-2), dim=-1)
        g = log_nu - _safe_lse(k + f.unsqueeze(-1), dim=-2)
    log_p = k + f.unsqueeze(-1) + g.unsqueeze(-2)
    return torch.exp(log_p).nan_to_num(0.0)


def _safe_lse(x: Tensor, dim: int) -> Tensor:
    """logsumexp that returns -inf (not NaN) for all -inf slices and keeps gradients finite."""
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    out = torch.log(torch.exp(x - m).sum(dim=dim).clamp_min(1e-30)) + m.squeeze(dim)
    all_inf = torch.isinf(x).all(dim=dim) & (x < 0).all(dim=dim)
    return out.masked_fill(all_inf, float("-inf"))


def ot_distance(x: Tensor, x_mask: Tensor, y: Tensor, y_mask: Tensor, eps: float, iters: int) -> Tensor:
    """Entropic OT distance between token sets with cosine cost ``1 - cos(x_i, y_j)``.

    ``x`` (..., n, D), ``y`` (..., m, D), masks (..., n) / (..., m) True for real tokens.  Uniform mass
    over the real tokens; returns ``<P, C>`` (...,).
    """
    xn = F.normalize(x.float(), dim=-1)
    yn = F.normalize(y.float(), dim=-1)
    cost = 1.0 - xn @ yn.transpose(-1, -2)
    mu = x_mask.float() / x_mask.float().sum(-1, keepdim=True).clamp_min(1.0)
    nu = y_mask.float() / y_mask.float().sum(-1, keepdim=True).clamp_min(1.0)
    plan = sinkhorn(cost, mu, nu, eps, iters)
    return (plan * cost).sum(dim=(-1, -2))


def ot_contrastive(
    s_tok: Tensor, s_mask: Tensor, t_tok: Tensor, t_mask: Tensor, neg_index: Tensor, eps: float, iters: int, tau: float
) -> tuple[Tensor, Tensor]:
    """Token-level cross-lingual alignment: matched pairs must have a smaller OT distance than mismatched.

    For row ``i`` the candidates are its own translation and the ``neg_index[i]`` (B, n_neg) other
    translations of the batch; the loss is a cross-entropy over ``-d(s_i, t_j) / tau`` with the matched
    pair as target (relative, so a noisy translation is only asked to be closer than the others, not
    to reach zero distance).  Returns (loss, mean matched distance).
    """
    b = s_tok.shape[0]
    cand = torch.cat([torch.arange(b, device=s_tok.device).unsqueeze(1), neg_index], dim=1)  # (B, 1+n)
    n = cand.shape[1]
    xs = s_tok.unsqueeze(1).expand(-1, n, -1, -1)
    xm = s_mask.unsqueeze(1).expand(-1, n, -1)
    ys = t_tok[cand]
    ym = t_mask[cand]
    dist = ot_distance(xs, xm, ys, ym, eps, iters)  # (B, 1+n)
    target = torch.zeros(b, dtype=torch.long, device=s_tok.device)
    return F.cross_entropy(-dist / tau, target), dist[:, 0].mean()


def minmax_rows(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Min-max normalise each row to [0, 1] (a constant row becomes all zeros)."""
    lo = x.amin(dim=1, keepdim=True)
    hi = x.amax(dim=1, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


def minmax_all(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Min-max normalise the whole matrix to [0, 1] (LECCR's ``norm_score``)."""
    return (x - x.min()) / (x.max() - x.min()).clamp_min(eps)


SOFT_NORMS = ("row", "matrix")


def soft_targets(s_v: Tensor, s_slot: Tensor | None, alpha: float, tau: float, norm: str = "row") -> Tensor:
    """LECCR softened-matching targets under English guidance (detached).

    ``softmax_row((alpha * mm(s v^T) + (1 - alpha) * mm(max_k s slot_k^T)) / tau)``; without slots the
    slot term is dropped (``alpha`` becomes 1). ``norm="row"``: ``mm`` min-max normalises each row and
    ``tau`` sharpens; ``norm="matrix"``: as LECCR publishes it, ``mm`` normalises the whole matrix and
    no temperature is applied (``tau`` is ignored).
    """
    if norm not in SOFT_NORMS:
        raise ValueError(f"soft_targets: norm must be one of {SOFT_NORMS}, got {norm!r}")
    mm = minmax_rows if norm == "row" else minmax_all
    with torch.no_grad():
        score = mm(s_v.float())
        if s_slot is not None:
            score = alpha * score + (1.0 - alpha) * mm(s_slot.float())
        return F.softmax(score / (tau if norm == "row" else 1.0), dim=1)


def soft_matching(t_v: Tensor, targets: Tensor, tau: float) -> Tensor:
    """``KL(targets || softmax(t v^T / tau))`` with batchmean reduction (targets are fixed)."""
    return F.kl_div(F.log_softmax(t_v.float() / tau, dim=1), targets.detach(), reduction="batchmean")


def slot_diversity(slots: Tensor) -> Tensor:
    """Mean squared Frobenius distance of the normalised slots' Gram matrix to the identity, per K^2.

    ``slots`` (B, K, D); pushes the K slots of an image to describe different things.
    """
    s = F.normalize(slots.float(), dim=-1)
    gram = s @ s.transpose(1, 2)
    eye = torch.eye(s.shape[1], device=s.device)
    return ((gram - eye) ** 2).sum(dim=(1, 2)).mean() / (s.shape[1] ** 2)


def max_over_slots(text: Tensor, slots: Tensor) -> Tensor:
    """Similarity ``max_k text_i . slot_{j,k}``: text (n, D), slots (m, K, D) -> (n, m)."""
    return torch.einsum("nd,mkd->nmk", text, slots).amax(dim=-1)


def slot_token_alignment(slots: Tensor, local: Tensor, tau: float) -> Tensor:
    """Align description slots with their visual-token-attended local features, contrastively over images.

    ``sim_ij = mean_k cos(slot_{i,k}, local_{j,k})``; symmetric InfoNCE with image ``i`` <-> ``i``.
    """
    s = F.normalize(slots.float(), dim=-1)
    v = F.normalize(local.float(), dim=-1)
    sim = torch.einsum("ikd,jkd->ij", s, v) / s.shape[1]
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    logits = sim / tau
    return 0.5 * (multi_positive_nce(logits, eye) + multi_positive_nce(logits.t(), eye))
