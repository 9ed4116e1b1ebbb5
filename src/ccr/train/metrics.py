"""Validation mR for model selection (same conventions as ccr.evaluate: pessimistic ties, R@1/5/10)."""

from __future__ import annotations

import numpy as np

KS = (1, 5, 10)


def mean_recall(text_emb: np.ndarray, image_emb: np.ndarray, text_to_image: np.ndarray, ks=KS) -> float:
    """mR (0-100) = mean of text->image and image->text R@K over ``ks``.

    ``text_to_image[i]`` is the gallery row of query ``i``'s image.  Ties count against the model
    (rank = 1 + number of wrong items scoring >= the correct one), so a constant model scores low.
    """
    text_to_image = np.asarray(text_to_image, np.int64)
    sim = np.asarray(text_emb, np.float64) @ np.asarray(image_emb, np.float64).T  # (nq, ni)
    nq, ni = sim.shape
    gt = sim[np.arange(nq), text_to_image]
    t2i_rank = 1 + (sim >= gt[:, None]).sum(1) - 1  # the gt itself is counted once by >=
    # image -> text: best caption of each image vs captions of other images
    images = np.unique(text_to_image)
    own = np.zeros((ni, nq), bool)
    own[text_to_image, np.arange(nq)] = True
    simT = sim.T  # (ni, nq)
    best = np.where(own, simT, -np.inf).max(1)
    i2t_rank = 1 + ((simT >= best[:, None]) & ~own).sum(1)
    i2t_rank = i2t_rank[images]
    recalls = [100.0 * float((t2i_rank <= k).mean()) for k in ks]
    recalls += [100.0 * float((i2t_rank <= k).mean()) for k in ks]
    return float(np.mean(recalls))
