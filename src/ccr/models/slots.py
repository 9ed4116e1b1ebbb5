"""LECCR semantic slots: learnable queries read the image's description views, then meet its visual tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccr.models.heads import MLP


class SemanticSlots(nn.Module):
    """K learnable queries -> K semantic slots from the encoded description views of one image.

    * ``slots = LN(Q + CrossAttn(Q, desc, desc))`` with ``desc = MLP(description pooled features)``;
    * ``enhanced tokens = LN(tok + CrossAttn(tok, slots, slots))`` (visual tokens read the slots);
    * ``local_k = LN(CrossAttn(slots, tok, tok))`` (each slot gathers its visual evidence; no residual
      to the slot, so aligning slot and local feature is a real cross-modal constraint).
    """

    def __init__(self, desc_dim: int, hidden_dim: int, dim: int, n_slots: int = 4, heads: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        self.n_slots = n_slots
        self.desc_enc = MLP(desc_dim, hidden_dim, dim, dropout)
        self.queries = nn.Parameter(torch.randn(n_slots, dim) * dim ** -0.5)
        self.q_from_desc = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.tok_from_slot = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.slot_from_tok = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_slot = nn.LayerNorm(dim)
        self.norm_tok = nn.LayerNorm(dim)
        self.norm_local = nn.LayerNorm(dim)

    def slots(self, desc: Tensor, desc_mask: Tensor) -> Tensor:
        """desc (B, V, Dd) description features, desc_mask (B, V) True for real views -> (B, K, D)."""
        enc = self.desc_enc(desc)
        q = self.queries.unsqueeze(0).expand(desc.shape[0], -1, -1)
        out, _ = self.q_from_desc(q, enc, enc, key_padding_mask=~desc_mask, need_weights=False)
        return self.norm_slot(q + out)

    def forward(self, tok: Tensor, desc: Tensor, desc_mask: Tensor,
                tok_pad: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (slots (B,K,D), enhanced visual tokens (B,T,D), normalised local slot features (B,K,D))."""
        slots = self.slots(desc, desc_mask)
        upd, _ = self.tok_from_slot(tok, slots, slots, need_weights=False)
        enhanced = self.norm_tok(tok + upd)
        local, _ = self.slot_from_tok(slots, tok, tok, key_padding_mask=tok_pad, need_weights=False)
        local = F.normalize(self.norm_local(local), dim=-1)
        return slots, enhanced, local
