"""Datasets: the images/captions tables, the generated default dataset and the ``prepare_dataset`` stage.

Importers for real datasets live in ``ccr.data.importers`` and are imported only when chosen.
"""

from ccr.data.prepare import DATASETS, check_dataset, prepare_dataset

__all__ = ["DATASETS", "check_dataset", "prepare_dataset"]
