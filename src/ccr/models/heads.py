"""Small trainable heads on top of frozen features (text: pooled + word tokens; image: pooled + grid tokens)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """``Linear -> GELU -> Dropout -> Linear`` plus a linear skip, then LayerNorm.

    The skip keeps the frozen encoder's geometry reachable from the first step (a randomly initialised
    deep head alone would first have to re-learn it), which matters with a few hundred images.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden_dim, out_dim))
        self.skip = nn.Linear(in_dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.body(x) + self.skip(x))


class TextHead(nn.Module):
    """Projects a pooled sentence vector (and optionally its word tokens) into the joint space."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.mlp = MLP(in_dim, hidden_dim, out_dim, dropout)

    def forward(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.mlp(pooled), dim=-1)

    def tokens(self, tokens: Tensor) -> Tensor:
        """(B, L, Dt) -> (B, L, D) normalised (padding rows are ignored by the caller's mask)."""
        return F.normalize(self.mlp(tokens), dim=-1)


class AttentionPool(nn.Module):
    """One self-attention layer over the tokens, then a learned-query attention pooling.

    Works for any number of tokens (7x7 image grids, or T video frames), with an optional padding mask.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.1):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                                batch_first=True, norm_first=True)
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, tokens: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Returns (pooled (B, D), contextualised tokens (B, T, D))."""
        ctx = self.layer(tokens, src_key_padding_mask=pad_mask)
        pooled, _ = self.attn(self.query.expand(tokens.shape[0], -1, -1), ctx, ctx, key_padding_mask=pad_mask,
                              need_weights=False)
        return pooled.squeeze(1), ctx


class VisualHead(nn.Module):
    """Image (or video) head: ``proj(pooled) + pool(proj(tokens))``.

    ``pooling``: ``"mean"`` (mean of projected tokens) or ``"attention"`` (:class:`AttentionPool`).
    Without tokens (encoders that give none) only the pooled branch is used.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, pooling: str = "mean", heads: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        if pooling not in ("mean", "attention"):
            raise ValueError(f"visual_pooling must be 'mean' or 'attention', got {pooling!r}")
        self.pooling = pooling
        self.global_proj = MLP(in_dim, hidden_dim, out_dim, dropout)
        self.token_proj = nn.Linear(in_dim, out_dim)
        self.attn_pool = AttentionPool(out_dim, heads, dropout) if pooling == "attention" else None

    def project_tokens(self, tokens: Tensor) -> Tensor:
        return self.token_proj(tokens)

    def pool(self, tok: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Pool projected tokens (B, T, D) -> ((B, D), contextualised tokens)."""
        if self.attn_pool is not None:
            return self.attn_pool(tok, pad_mask)
        if pad_mask is None:
            return tok.mean(dim=1), tok
        keep = (~pad_mask).unsqueeze(-1).float()
        return (tok * keep).sum(1) / keep.sum(1).clamp_min(1.0), tok
