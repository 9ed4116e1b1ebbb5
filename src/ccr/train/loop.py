"""The training loop shared by the teacher and the student.

AdamW, linear warm-up + cosine decay (per step), bfloat16 autocast on CUDA, gradient clipping, early
stopping and checkpoint selection on the validation mR only, and crash-safe resumption:

* ``out_dir/last.pt`` (written atomically after every epoch) holds model, optimizer, scheduler, RNG
  states, epoch, best epoch/score, patience counter and history.  A rerun with the same stage, seed
  and params continues from it and, because batch order is seeded per epoch and all RNG states are
  restored, ends with the same history and best-epoch selection as an uninterrupted run (on CPU).
* the best weights go to ``out_dir/best.pt`` during training; the public ``out_dir/<stage>.pt`` and
  ``out_dir/history.parquet`` are written only when training has finished, so a crashed run never
  leaves an output that looks complete.
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
from ccr.train.params import TrainParams

log = logging.getLogger("ccr.train")

# Params that do not change the result: a resumed run may differ in these.
_RUNTIME_KEYS = ("device", "num_threads", "stop_after_epochs", "eval_batch_size", "amp")
CHECKPOINT_VERSION = 1


class TrainingInterrupted(RuntimeError):
    """Raised by the ``stop_after_epochs`` test hook to simulate a crash (last.pt is already saved)."""


@dataclass
class FitResult:
    best_epoch: int
    best_val_mr: float
    history: list[dict[str, Any]]


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("param 'device' is 'cuda' but torch sees no CUDA device")
    return torch.device(device)


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def signature(stage: str, params: TrainParams, seed: int, n_train: int) -> dict[str, Any]:
    p = {k: v for k, v in params.to_dict().items() if k not in _RUNTIME_KEYS}
    return {"stage": stage, "seed": seed, "n_train": n_train, "params": p, "version": CHECKPOINT_VERSION}


def fit(
    stage: str,
    model: nn.Module,
    params: TrainParams,
    seed: int,
    out_dir: Path,
    n_train: int,
    batch_loss: Callable[[Tensor], dict[str, Tensor]],
    validate: Callable[[], float],
    meta: dict[str, Any],
    device: torch.device,
    epoch_order: Callable[[torch.Generator], Tensor] | None = None,
    rows_per_epoch: int | None = None,
) -> FitResult:
    """Train ``model`` on ``n_train`` rows; ``batch_loss(row_idx)`` returns {"loss": total, term: value}.

    ``validate()`` returns the val mR (model already in eval mode, no grad).  ``epoch_order(gen)`` gives
    the rows of one epoch in batch order (default: a permutation of all ``n_train`` rows), with
    ``rows_per_epoch`` rows.  Writes out_dir/{stage}.pt (best weights + ``meta``), out_dir/last.pt and
    out_dir/history.parquet.
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
    sig = signature(stage, params, seed, n_train)

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
        if last_path.exists():
            ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
            if ckpt.get("signature") == sig:
                model.load_state_dict(ckpt["model"])
                optim.load_state_dict(ckpt["optimizer"])
                sched.load_state_dict(ckpt["scheduler"])
                _set_rng_state(ckpt["rng"])
                start_epoch, best_epoch, best_mr = ckpt["epoch"], ckpt["best_epoch"], ckpt["best_val_mr"]
                bad, step, history, finished = ckpt["bad_epochs"], ckpt["step"], ckpt["history"], ckpt["finished"]
                log.info("%s: resuming from %s after epoch %d (best val mR %.2f at epoch %d)", stage, last_path,
                         start_epoch, best_mr, best_epoch)
            else:
                log.warning("%s: %s belongs to another run (stage/seed/params/data differ): starting afresh",
                            stage, last_path)

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
                save_atomic({"model": model.state_dict(), "epoch": epoch + 1, "val_mr": val_mr}, best_path)
            else:
                bad += 1
            finished = (params.patience > 0 and bad >= params.patience) or epoch + 1 >= params.epochs
            save_atomic({"signature": sig, "model": model.state_dict(), "optimizer": optim.state_dict(),
                         "scheduler": sched.state_dict(), "rng": _rng_state(), "epoch": epoch + 1,
                         "best_epoch": best_epoch, "best_val_mr": best_mr, "bad_epochs": bad, "step": step,
                         "history": history, "finished": finished}, last_path)
            took = time.monotonic() - ep_start
            left = (time.monotonic() - t0) / (epoch + 1 - start_epoch) * (params.epochs - epoch - 1)
            log.info("%s epoch %d/%d: loss %.4f, val mR %.2f (best %.2f @ %d), %.1fs, ETA %.0fs%s", stage,
                     epoch + 1, params.epochs, row["train_loss"], val_mr, best_mr, best_epoch, took,
                     0.0 if finished else left,
                     f" - early stop: no val gain for {bad} epochs" if finished and bad >= params.patience > 0
                     else "")
            if params.stop_after_epochs is not None and not finished and epoch + 1 >= params.stop_after_epochs:
                raise TrainingInterrupted(f"{stage}: stopped after epoch {epoch + 1} (stop_after_epochs)")

        if best_epoch < 0 or not best_path.exists():
            raise RuntimeError(f"{stage}: no checkpoint was selected ({best_path} missing)")
        best = torch.load(best_path, map_location="cpu", weights_only=False)
        save_atomic({**meta, "stage": stage, "seed": seed, "params": params.to_dict(), "state_dict": best["model"],
                     "epoch": best["epoch"], "val_mr": best["val_mr"], "version": CHECKPOINT_VERSION},
                    out_dir / f"{stage}.pt")
        write_table_atomic(pa.Table.from_pylist(history), out_dir / "history.parquet")
        log.info("%s: selected epoch %d (val mR %.2f) -> %s", stage, best_epoch, best_mr, out_dir / f"{stage}.pt")
        return FitResult(best_epoch=best_epoch, best_val_mr=best_mr, history=history)
    finally:
        torch.use_deterministic_algorithms(prev_det)
