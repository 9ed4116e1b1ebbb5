"""CL2CM stage 1: the cross-lingual teacher (English s <-> target-language t text heads)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ccr.models.heads import TextHead


class CrossLingualTeacher(nn.Module):
    """Text heads for English (s) and target-language (t) sentences, shared by default.

    Sharing is natural because the frozen encoder is already multilingual: one head keeps s and t in
    the same space and halves the parameters (separate heads via ``shared=False``).
    """

    def __init__(self, text_dim: int, hidden_dim: int, dim: int, shared: bool = True, dropout: float = 0.1):
        super().__init__()
        self.head_s = TextHead(text_dim, hidden_dim, dim, dropout)
        self.head_t = self.head_s if shared else TextHead(text_dim, hidden_dim, dim, dropout)

    def encode(self, pooled: Tensor, side: str) -> Tensor:
        return self._head(side)(pooled)

    def encode_tokens(self, tokens: Tensor, side: str) -> Tensor:
        return self._head(side).tokens(tokens)

    def token_summary(self, tokens: Tensor, mask: Tensor, side: str) -> Tensor:
        """Normalised mean of the normalised projected word tokens (the teacher's token-level view)."""
        tok = self.encode_tokens(tokens, side) * mask.unsqueeze(-1).float()
        return F.normalize(tok.sum(1) / mask.float().sum(1, keepdim=True).clamp_min(1.0), dim=-1)

    def _head(self, side: str) -> nn.Module:
        if side == "s":
            return self.head_s
        if side == "t":
            return self.head_t
        raise ValueError(f"teacher side must be 's' or 't', got {side!r}")
