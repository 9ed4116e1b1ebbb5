"""Build the teacher and the student from their architecture, and load them from checkpoints.

The architecture (``arch``) is the keyword arguments of the model's constructor, stored as JSON in
every checkpoint, so loading a trained model needs this module only, not the trainer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from ccr.models.checkpoint import CheckpointError, load_checkpoint
from ccr.models.student import CrossModalStudent, LinearStudent
from ccr.models.teacher import CrossLingualTeacher


def pick_device(device: str) -> torch.device:
    """``auto``: CUDA when torch sees one, else the CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("param 'device' is 'cuda' but torch sees no CUDA device")
    return torch.device(device)


def teacher_arch(text_dim: int, params: Any) -> dict[str, Any]:
    """Constructor arguments of :class:`CrossLingualTeacher` from teacher params."""
    return {"text_dim": int(text_dim), "hidden_dim": params.hidden_dim, "dim": params.embed_dim,
            "shared": params.teacher_shared, "dropout": params.dropout}


def student_arch(image_dim: int, text_dim: int, params: Any,
                 text_columns: tuple[int, int] | None = None) -> dict[str, Any]:
    """Constructor arguments of the student (:class:`CrossModalStudent`, or :class:`LinearStudent` for
    ``head: linear``, marked by ``"head": "linear"``) from student params; ``text_columns`` is the
    ``[start, stop)`` block of the text features it reads (``text_block``), absent when it reads all."""
    columns = {} if text_columns is None else {"text_columns": [int(text_columns[0]), int(text_columns[1])]}
    if params.head == "linear":
        return {"head": "linear", "image_dim": int(image_dim), "text_dim": int(text_dim), **columns}
    return {"image_dim": int(image_dim), "text_dim": int(text_dim), "hidden_dim": params.hidden_dim,
            "dim": params.embed_dim, "pooling": params.visual_pooling, "heads": params.attn_heads,
            "use_slots": params.use_slots, "n_slots": params.n_slots, "share_text_head": params.share_text_head,
            "dropout": params.dropout, **columns}


def create_teacher(arch: Mapping[str, Any]) -> CrossLingualTeacher:
    return CrossLingualTeacher(**arch)


def create_student(arch: Mapping[str, Any]) -> CrossModalStudent | LinearStudent:
    arch = dict(arch)
    if arch.pop("head", "mlp") == "linear":
        return LinearStudent(**arch)
    return CrossModalStudent(**arch)


def embedding_dim(arch: Mapping[str, Any], slot_fusion: float) -> int:
    """Size of the student's retrieval embeddings (slot fusion concatenates global and slot parts)."""
    if arch.get("head") == "linear":  # the text space: the width of the text block it reads
        start, stop = arch.get("text_columns") or (0, arch["text_dim"])
        return int(stop) - int(start)
    return int(arch["dim"]) * (2 if arch.get("use_slots") and slot_fusion > 0 else 1)


def _load(path: str | os.PathLike, kind: str, create: Any, device: torch.device | str) -> tuple[Any, dict]:
    ckpt = load_checkpoint(path, kind)
    meta = ckpt["meta"]
    if meta.get("trivial"):
        return None, meta
    if "arch" not in meta:
        raise CheckpointError(f"{path}: field 'arch' is missing from the checkpoint meta")
    model = create(meta["arch"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the architecture in its meta: {err}") from err
    model.to(device).eval()
    return model, meta


def load_teacher(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[CrossLingualTeacher | None, dict]:
    """The frozen teacher of ``path`` (None when the teacher is trivial: no MT) and its meta."""
    teacher, meta = _load(path, "teacher", create_teacher, device)
    if teacher is not None:
        for prm in teacher.parameters():
            prm.requires_grad_(False)
    return teacher, meta


def load_student(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[CrossModalStudent, dict]:
    """The trained student of ``path`` (eval mode) and its meta."""
    student, meta = _load(path, "student", create_student, device)
    return student, meta
