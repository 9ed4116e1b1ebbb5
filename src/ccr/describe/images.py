"""Image loading shared by the describers: every failure names the file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError


class ImageLoadError(ValueError):
    pass


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` fully (so truncated files fail here, not later) and convert it to RGB."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"image file not found: {path}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"cannot read image file {path}: corrupt or not an image ({err})") from err
