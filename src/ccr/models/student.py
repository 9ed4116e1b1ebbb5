"""CL2CM stage 2: the cross-modal student, with LECCR's semantic slots as an option."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ccr.models.heads import TextHead, VisualHead
from ccr.models.slots import SemanticSlots


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
                 dropout: float = 0.1):
        super().__init__()
        self.visual = VisualHead(image_dim, hidden_dim, dim, pooling, heads, dropout)
        self.text_t = TextHead(text_dim, hidden_dim, dim, dropout)
        self.text_s = self.text_t if share_text_head else TextHead(text_dim, hidden_dim, dim, dropout)
        self.slot_module = SemanticSlots(text_dim, hidden_dim, dim, n_slots, heads, dropout) if use_slots else None

    def encode_text(self, pooled: Tensor, side: str = "t") -> Tensor:
        if side not in ("s", "t"):
            raise ValueError(f"text side must be 's' or 't', got {side!r}")
        return (self.text_s if side == "s" else self.text_t)(pooled)

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
            slots, tok, local = self.slot_module(tok, desc, desc_mask)
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

    def __init__(self, image_dim: int, text_dim: int):
        super().__init__()
        self.visual = nn.Linear(image_dim, text_dim)
        self.slot_module = None

    def encode_text(self, pooled: Tensor, side: str = "t") -> Tensor:
        if side not in ("s", "t"):
            raise ValueError(f"text side must be 's' or 't', got {side!r}")
        return F.normalize(pooled, dim=-1)

    def encode_images(self, pooled: Tensor, tokens: Tensor | None = None, desc: Tensor | None = None,
                      desc_mask: Tensor | None = None, need_fine: bool = True) -> ImageOutput:
        glob = F.normalize(self.visual(pooled), dim=-1)
        return ImageOutput(glob=glob, fine=glob.unsqueeze(1) if need_fine else None, slots=None, local=None)
