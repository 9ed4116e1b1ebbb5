"""Evaluation: exact Recall@K / MedR (``metrics``) and the ``evaluate`` stage (``run``)."""

from ccr.evaluate.metrics import (
    image_to_text_ranks,
    recall_at_k,
    retrieval_ranks,
    search,
    summarise_ranks,
    text_to_image_ranks,
)
from ccr.evaluate.run import embed_gallery, evaluate, pick_examples, read_gallery

__all__ = ["embed_gallery", "evaluate", "image_to_text_ranks", "read_gallery", "pick_examples", "recall_at_k", "retrieval_ranks", "search",
           "summarise_ranks", "text_to_image_ranks"]
