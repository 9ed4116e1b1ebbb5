"""CL2CM stage 2: the cross-modal student, with LECCR's semantic slots as an option."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ccr.models.heads import TextHead, VisualHead
from ccr.models.slots import SemanticSlots


def _text_span(text_dim: int, text_columns: Sequence[int] | None) -> tuple[int, int]:
    """The columns ``[start, stop)`` of the text features a student reads (all of them by default)."""
    start, stop = (0, text_dim) if text_columns is None else (int(text_columns[0]), int(text_columns[1]))
    if not 0 <= start < stop <= text_dim:
        raise ValueError(f"text_columns {list(text_columns or [])} do not fit text features of {text_dim} columns")
    return start, stop


class _TextColumns(nn.Module):
    """Reads one block ``[start, stop)`` of concat text features, re-normalised (as that encoder alone
    would give it); the identity when the block is every column. Text features in, text features out,
    so trainers, retrievers and bundles feed a student the whole feature and never slice it themselves."""

    def __init__(self, text_dim: int, text_columns: Sequence[int] | None):
        super().__init__()
        self.start, self.stop = _text_span(text_dim, text_columns)
        self.whole = (self.start, self.stop) == (0, text_dim)

    @property
    def dim(self) -> int:
        return self.stop - self.start

    def forward(self, x: Tensor) -> Tensor:
        return x if self.whole else F.normalize(x[..., self.start: self.stop], dim=-1)


@dataclass
class ImageOutput:
    """What the student computes for a batch of images."""

    glob: Tensor               # (B, D) normalised global embedding (slot-enhanced when slots are on)
    fine: Tensor | None        # (B, K, D) local slot features, or (B, T, D) visual tokens (None if not asked)
    slots: Tensor | None       # (B, K, D) semantic slots (before normalisation), None without slots
    local: Tensor | None       # (B, K, D) normalised slot-level local features, None without slots


class CrossModalStudent(nn.Module):
    """Visual head + text head(s) (+ semantic slots) mapping frozen features into one D-dim space."""

    def __init__(self, image_dim: int, text_dim: int, hidden_dim: int, dim: int, pooling: str = "mean",
                 heads: int = 4, use_slots: bool = True, n_slots: int = 4, share_text_head: bool = True,
                 dropout: float = 0.1, text_columns: Sequence[int] | None = None):
        super().__init__()
        self.text_columns = _TextColumns(text_dim, text_columns)  # sentences and description views alike
        read = self.text_columns.dim
        self.visual = VisualHead(image_dim, hidden_dim, dim, pooling, heads, dropout)
        self.text_t = TextHead(read, hidden_dim, dim, dropout)
        self.text_s = self.text_t if share_text_head else TextHead(read, hidden_dim, dim, dropout)
        self.slot_module = SemanticSlots(read, hidden_dim, dim, n_slots, heads, dropout) if use_slots else None

    def encode_text(self, pooled: Tensor, side: str = "t") -> Tensor:
        if side not in ("s", "t"):
            raise ValueError(f"text side must be 's' or 't', got {side!r}")
        return (self.text_s if side == "s" else self.text_t)(self.text_columns(pooled))

    def encode_images(self, pooled: Tensor, tokens: Tensor | None, desc: Tensor | None = None,
                      desc_mask: Tensor | None = None, need_fine: bool = True) -> ImageOutput:
        """pooled (B, Di); tokens (B, T, Di) or None (then the pooled vector is the only token);
        desc (B, V, Dt) description-view features with desc_mask (B, V) (required with slots).
        ``need_fine=False`` allows skipping the per-token projection when nothing needs it."""
        g = self.visual.global_proj(pooled)
        if self.slot_module is None and self.visual.pooling == "mean" and not need_fine:
            # mean(token_proj(tok)) == token_proj(mean(tok)) (linear): 1/T of the cost, same result
            pooled_in = pooled if tokens is None else tokens.mean(dim=1)
            glob = F.normalize(g + self.visual.project_tokens(pooled_in), dim=-1)
            return ImageOutput(glob=glob, fine=None, slots=None, local=None)
        tok = self.visual.project_tokens(pooled.unsqueeze(1) if tokens is None else tokens)
        slots = local = None
        if self.slot_module is not None:
            if desc is None or desc_mask is None:
                raise ValueError("the student has semantic slots: description features are required")
            slots, tok, local = self.slot_module(tok, self.text_columns(desc), desc_mask)
        pooled_tok, ctx = self.visual.pool(tok)
        glob = F.normalize(g + pooled_tok, dim=-1)
        fine = local if local is not None else F.normalize(ctx, dim=-1)
        return ImageOutput(glob=glob, fine=fine, slots=slots, local=local)


class LinearStudent(nn.Module):
    """The baseline: one linear map of the pooled image features into the frozen text space.

    Texts are their frozen features as they are (normalised): only the image side learns, with
    InfoNCE, so the value of the teacher, slots and softened matching is measured against the
    simplest model on the same features and captions. Tokens and descriptions are ignored.
    """

    def __init__(self, image_dim: int, text_dim: int, text_columns: Sequence[int] | None = None):
        super().__init__()
        self.text_columns = _TextColumns(text_dim, text_columns)
        self.visual = nn.Linear(image_dim, self.text_columns.dim)
        self.slot_module = None

    def encode_text(self, pooled: Tensor, side: str = "t") -> Tensor:
        if side not in ("s", "t"):
            raise ValueError(f"text side must be 's' or 't', got {side!r}")
        return F.normalize(self.text_columns(pooled), dim=-1)

    def encode_images(self, pooled: Tensor, tokens: Tensor | None = None, desc: Tensor | None = None,
                      desc_mask: Tensor | None = None, need_fine: bool = True) -> ImageOutput:
        glob = F.normalize(self.visual(pooled), dim=-1)
        return ImageOutput(glob=glob, fine=glob.unsqueeze(1) if need_fine else None, slots=None, local=None)
