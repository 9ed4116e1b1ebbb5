"""Evaluation: exact Recall@K / MedR (``metrics``) and the ``evaluate`` stage (``run``)."""

from ccr.evaluate.metrics import (
    image_to_text_ranks,
    recall_at_k,
    retrieval_ranks,
    search,
    summarise_ranks,
    text_to_image_ranks,
)
from ccr.evaluate.run import evaluate, pick_examples

__all__ = ["evaluate", "image_to_text_ranks", "pick_examples", "recall_at_k", "retrieval_ranks", "search",
           "summarise_ranks", "text_to_image_ranks"]
