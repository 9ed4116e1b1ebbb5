"""Inference: one vector per image and per text whose inner product is the fused retrieval score.

LECCR matches at two levels: the global image embedding and the slot-level local features.
``[sqrt(1-b) g ; sqrt(b) m]`` with ``m = normalise(mean_k local_k)`` scored against
``[sqrt(1-b) t ; sqrt(b) t]`` gives exactly ``(1-b) t.g + b t.m`` while both vectors stay unit-norm,
so an exact or approximate inner-product index (FAISS) serves the fused score.  (The max over
slots is not an inner product; at inference it is replaced by the mean slot.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ccr.models.student import CrossModalStudent


def fuse_image(glob: Tensor, local: Tensor | None, beta: float) -> Tensor:
    """(B, D) global + (B, K, D) local -> (B, D) or (B, 2D) fused image embedding."""
    if local is None or beta <= 0:
        return glob
    m = torch.nn.functional.normalize(local.mean(dim=1), dim=-1)
    return torch.cat([math.sqrt(1 - beta) * glob, math.sqrt(beta) * m], dim=-1)


def fuse_text(t: Tensor, beta: float, fused: bool) -> Tensor:
    """(B, D) text embedding -> its partner of :func:`fuse_image` ((B, 2D) when ``fused``)."""
    if not fused or beta <= 0:
        return t
    return torch.cat([math.sqrt(1 - beta) * t, math.sqrt(beta) * t], dim=-1)


def _t(x: np.ndarray | None, device: torch.device) -> Tensor | None:
    return None if x is None else torch.from_numpy(np.ascontiguousarray(x)).to(device)


@torch.no_grad()
def embed_image_arrays(model: CrossModalStudent, pooled: np.ndarray, tokens: np.ndarray | None,
                       desc: np.ndarray | None, desc_mask: np.ndarray | None, beta: float, bs: int,
                       device: torch.device) -> np.ndarray:
    """Fused image embeddings (n, D or 2D) of feature arrays, ``bs`` rows per forward pass."""
    out = []
    for i in range(0, len(pooled), bs):
        sl = slice(i, i + bs)
        o = model.encode_images(_t(pooled[sl], device), None if tokens is None else _t(tokens[sl], device),
                                None if desc is None else _t(desc[sl], device),
                                None if desc_mask is None else _t(desc_mask[sl], device), need_fine=False)
        out.append(fuse_image(o.glob, o.local, beta).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def embed_text_arrays(model: CrossModalStudent, pooled: np.ndarray, beta: float, bs: int, device: torch.device,
                      side: str = "t") -> np.ndarray:
    """Text embeddings (n, D or 2D) of pooled sentence features, fused like the images'."""
    fused = model.slot_module is not None
    out = [fuse_text(model.encode_text(_t(pooled[i: i + bs], device), side), beta, fused).float().cpu()
           for i in range(0, len(pooled), bs)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
