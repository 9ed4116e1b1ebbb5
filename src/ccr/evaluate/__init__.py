"""Evaluation: exact Recall@K / MedR (``metrics``) and the ``evaluate`` stage (``run``)."""

from ccr.evaluate.metrics import recall_at_k, retrieval_ranks, search, summarise_ranks
from ccr.evaluate.run import evaluate, pick_examples

__all__ = ["evaluate", "pick_examples", "recall_at_k", "retrieval_ranks", "search", "summarise_ranks"]
