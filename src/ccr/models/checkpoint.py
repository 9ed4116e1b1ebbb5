"""Checkpoint files that hold tensors and plain metadata only, loaded without running pickled code.

A checkpoint is ``torch.save`` of ``{"format", "version", "kind", "meta", "state_dict", ...}`` where
``meta`` is JSON (checked when saving) and everything else is tensors, numbers, strings, lists and
dicts.  :func:`load_checkpoint` reads it with ``torch.load(..., weights_only=True)``: a file that
carries any other Python object (a crafted pickle that would run a command) is refused with
:class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ccr.io import atomic_path

FORMAT = "ccr-checkpoint"
VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or used (the message names the file)."""


def save_checkpoint(path: str | os.PathLike, kind: str, meta: dict[str, Any], state_dict: dict[str, torch.Tensor],
                    **extra: Any) -> Path:
    """Atomically write a checkpoint of ``kind`` (``teacher``, ``student``, ``resume``, ...).

    ``meta`` must be JSON; ``extra`` holds other plain values (optimizer/scheduler state, RNG states).
    """
    try:
        json.dumps(meta, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: checkpoint meta must be plain JSON: {err}") from err
    payload = {"format": FORMAT, "version": VERSION, "kind": kind, "meta": meta,
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """The checkpoint dict of ``path`` (tensors on the CPU), read with ``weights_only=True``.

    ``kind`` (optional) is checked against the file's kind.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler's refusal comes as UnpicklingError or RuntimeError
        raise CheckpointError(f"{path}: refused to load: not a plain tensors-and-metadata checkpoint "
                              f"(loading it would need arbitrary Python objects): {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ccr checkpoint (field 'format' is not {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')!r}, this ccr reads {VERSION}; "
                              "retrain, or use the ccr version that wrote it")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: a {ckpt.get('kind')!r} checkpoint, expected {kind!r}")
    return ckpt
