"""The training loop shared by the teacher and the student.

AdamW, linear warm-up + cosine decay (per step), bfloat16 autocast on CUDA, gradient clipping, early
stopping and checkpoint selection on the validation mR only, and crash-safe resumption:

* ``out_dir/last.pt`` (written atomically after every epoch) holds model, optimizer, scheduler, RNG
  states, epoch, best epoch/score, patience counter and history, under a *signature*: stage, seed,
  the params that change the weights (``amp`` included) and the fingerprints of every input.  A
  rerun with the same signature continues from it and, because batch order is seeded per epoch and
  all RNG states are restored, ends with the same weights as an uninterrupted run (on CPU); any
  other signature (new data, new params) starts afresh.
* the best weights go to ``out_dir/best.pt`` during training; the public ``out_dir/<stage>.pt`` and
  ``out_dir/history.parquet`` are written only when training has finished, so a crashed run never
  leaves an output that looks complete.  Then last.pt and best.pt are removed: the working files of
  a finished run never stand in for a new one.
* every file holds tensors and plain values only and is read with ``weights_only=True``
  (:mod:`ccr.models.checkpoint`).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor, nn

from ccr.io import write_table_atomic
from ccr.keys import stable_hash
from ccr.models.checkpoint import load_checkpoint, save_checkpoint
from ccr.params import _Params

log = logging.getLogger("ccr.train")

# cuBLAS needs a fixed workspace for deterministic results; it is read when CUDA starts, so it is set
# here, at import, before any CUDA call (a value the user set wins).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class TrainingInterrupted(RuntimeError):
    """Raised by the ``stop_after_epochs`` test hook to simulate a crash (last.pt is already saved)."""


@dataclass
class FitResult:
    best_epoch: int
    best_val_mr: float
    history: list[dict[str, Any]]


def lr_lambda(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to 0."""
    warmup = max(1, int(round(warmup_frac * total_steps))) if warmup_frac > 0 else 0

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                      gauss], "python": list(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def signature(stage: str, params: _Params, seed: int, inputs: dict[str, str]) -> dict[str, Any]:
    """What a training run is made of; a resume continues only a run with the same signature."""
    return {"stage": stage, "seed": seed, "params": params.numeric_dict(), "inputs": dict(sorted(inputs.items()))}


def fit(
    stage: str,
    model: nn.Module,
    params: _Params,
    seed: int,
    out_dir: Path,
    n_train: int,
    batch_loss: Callable[[Tensor], dict[str, Tensor]],
    validate: Callable[[], float],
    meta: dict[str, Any],
    device: torch.device,
    inputs: dict[str, str],
    epoch_order: Callable[[torch.Generator], Tensor] | None = None,
    rows_per_epoch: int | None = None,
    stop_after_epochs: int | None = None,
) -> FitResult:
    """Train ``model`` on ``n_train`` rows; ``batch_loss(row_idx)`` returns {"loss": total, term: value}.

    ``validate()`` returns the val mR (model already in eval mode, no grad).  ``inputs`` maps each
    input to its fingerprint (part of the resume signature and of the checkpoint's meta).
    ``epoch_order(gen)`` gives the rows of one epoch in batch order (default: a permutation of all
    ``n_train`` rows), with ``rows_per_epoch`` rows.  Writes out_dir/{stage}.pt (best weights + ``meta``)
    and out_dir/history.parquet.  ``stop_after_epochs`` is a test hook: raise
    :class:`TrainingInterrupted` after that many epochs, as a crash would (last.pt is saved).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if n_train < 2:
        raise ValueError(f"{stage}: need at least 2 training rows, got {n_train}")
    per_epoch = rows_per_epoch or n_train
    if per_epoch < 2:
        raise ValueError(f"{stage}: need at least 2 rows per epoch, got {per_epoch}")
    bs = min(params.batch_size, per_epoch)
    steps_per_epoch = per_epoch // bs  # drop the ragged last batch (a batch of 1 has no negatives)
    total_steps = steps_per_epoch * params.epochs
    sig = signature(stage, params, seed, inputs)

    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        seed_everything(seed)
        model.to(device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(total_steps, params.warmup_frac))
        amp = params.amp and device.type == "cuda"

        start_epoch, best_epoch, best_mr, bad, step = 0, -1, -math.inf, 0, 0
        history: list[dict[str, Any]] = []
        finished = False
        if not last_path.exists():
            best_path.unlink(missing_ok=True)  # a best.pt without its last.pt belongs to no resumable run
        if last_path.exists():
            ckpt = load_checkpoint(last_path, "resume")
            state = ckpt["meta"]
            if state["signature"] == sig:
                model.load_state_dict(ckpt["state_dict"])
                optim.load_state_dict(ckpt["optimizer"])
                sched.load_state_dict(ckpt["scheduler"])
                _set_rng_state(ckpt["rng"])
                start_epoch, best_epoch, best_mr = state["epoch"], state["best_epoch"], state["best_val_mr"]
                bad, step, history, finished = state["bad_epochs"], state["step"], state["history"], state["finished"]
                log.info("%s: resuming from %s after epoch %d (best val mR %.2f at epoch %d)", stage, last_path,
                         start_epoch, best_mr, best_epoch)
            else:
                changed = sorted(k for k in sig if state["signature"].get(k) != sig[k])
                log.warning("%s: %s was made by another run (%s differ): starting afresh", stage, last_path,
                            ", ".join(changed))
                best_path.unlink(missing_ok=True)

        t0 = time.monotonic()
        for epoch in range(start_epoch, params.epochs):
            if finished:
                break
            ep_start = time.monotonic()
            model.train()
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(n_train, generator=gen) if epoch_order is None else epoch_order(gen)
            if len(order) != per_epoch:
                raise RuntimeError(f"{stage}: epoch_order gave {len(order)} rows, expected {per_epoch}")
            sums: dict[str, float] = {}
            last_note = ep_start
            for b in range(steps_per_epoch):
                idx = order[b * bs: (b + 1) * bs]
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                    terms = batch_loss(idx)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{stage}: non-finite loss at epoch {epoch + 1} step {b + 1}: "
                                             + ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items()))
                optim.zero_grad(set_to_none=True)
                loss.backward()
                if params.grad_clip > 0:
                    nn.utils.clip_grad_norm_(trainable, params.grad_clip)
                optim.step()
                sched.step()
                step += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if time.monotonic() - last_note > 30.0:  # in-epoch progress, only for long epochs
                    last_note = time.monotonic()
                    rate = (b + 1) / (last_note - ep_start)
                    log.info("%s epoch %d: step %d/%d, %.2f steps/s, epoch ETA %.0fs", stage, epoch + 1, b + 1,
                             steps_per_epoch, rate, (steps_per_epoch - b - 1) / rate)
            model.eval()
            with torch.no_grad():
                val_mr = float(validate())
            row: dict[str, Any] = {"stage": stage, "epoch": epoch + 1, "step": step,
                                   "train_loss": sums.get("loss", 0.0) / steps_per_epoch, "val_mr": val_mr,
                                   "lr": float(optim.param_groups[0]["lr"])}
            row.update({(k if k.startswith("metric_") else f"loss_{k}"): v / steps_per_epoch
                        for k, v in sorted(sums.items()) if k != "loss"})
            history.append(row)
            if val_mr > best_mr + 1e-9:
                best_mr, best_epoch, bad = val_mr, epoch + 1, 0
                save_checkpoint(best_path, "best", {"signature": sig, "epoch": epoch + 1, "val_mr": val_mr},
                                model.state_dict())
            else:
                bad += 1
            finished = (params.patience > 0 and bad >= params.patience) or epoch + 1 >= params.epochs
            save_checkpoint(last_path, "resume",
                            {"signature": sig, "epoch": epoch + 1, "best_epoch": best_epoch, "best_val_mr": best_mr,
                             "bad_epochs": bad, "step": step, "history": history, "finished": finished},
                            model.state_dict(), optimizer=optim.state_dict(), scheduler=sched.state_dict(),
                            rng=_rng_state())
            took = time.monotonic() - ep_start
            left = (time.monotonic() - t0) / (epoch + 1 - start_epoch) * (params.epochs - epoch - 1)
            log.info("%s epoch %d/%d: loss %.4f, val mR %.2f (best %.2f @ %d), %.1fs, ETA %.0fs%s", stage,
                     epoch + 1, params.epochs, row["train_loss"], val_mr, best_mr, best_epoch, took,
                     0.0 if finished else left,
                     f" - early stop: no val gain for {bad} epochs" if finished and bad >= params.patience > 0
                     else "")
            if stop_after_epochs is not None and not finished and epoch + 1 >= stop_after_epochs:
                raise TrainingInterrupted(f"{stage}: stopped after epoch {epoch + 1} (stop_after_epochs)")

        if best_epoch < 0 or not best_path.exists():
            raise RuntimeError(f"{stage}: no checkpoint was selected ({best_path} missing)")
        best = load_checkpoint(best_path, "best")
        if best["meta"]["signature"] != sig:
            raise RuntimeError(f"{stage}: {best_path} was made by another run; delete {out_dir} and rerun")
        meta = {**meta, "stage": stage, "seed": seed, "params": params.to_dict(), "inputs": dict(sorted(inputs.items())),
                "fingerprint": stable_hash(sig, length=16), "epoch": best["meta"]["epoch"],
                "val_mr": best["meta"]["val_mr"]}
        save_checkpoint(out_dir / f"{stage}.pt", stage, meta, best["state_dict"])
        write_table_atomic(pa.Table.from_pylist(history), out_dir / "history.parquet")
        # the finished run's working files must never stand in for a new run
        last_path.unlink(missing_ok=True)
        best_path.unlink(missing_ok=True)
        log.info("%s: selected epoch %d (val mR %.2f) -> %s", stage, best_epoch, best_mr, out_dir / f"{stage}.pt")
        return FitResult(best_epoch=best_epoch, best_val_mr=best_mr, history=history)
    finally:
        torch.use_deterministic_algorithms(prev_det)
