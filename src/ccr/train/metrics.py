"""Validation mR for model selection, computed exactly like the evaluation stage (ccr.evaluate.metrics)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ccr.evaluate.metrics import recall_at_k


def mean_recall(text_emb: np.ndarray, image_emb: np.ndarray, text_to_image: Sequence[int] | np.ndarray,
                ks: Sequence[int] = (1, 5, 10)) -> float:
    """mR (0-100): mean of text->image and image->text R@K over ``ks`` (pessimistic ties).

    ``text_to_image[i]`` is the gallery row of query ``i``'s image.  Searched on CPU: validation sets
    are small, and the CPU index keeps selection deterministic.
    """
    return float(recall_at_k(text_emb, image_emb, np.asarray(text_to_image, np.int64), ks, use_gpu=False)["mr"])
