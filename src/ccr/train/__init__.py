"""Training stages: CL2CM teacher -> student (with LECCR semantic slots), and retrievers for evaluation.

Public API (docs/CONTRACTS.md): :class:`TrainInputs`, :func:`train_teacher`, :func:`train_student`,
:func:`load_retriever`; params are a dict of :class:`TrainParams` fields (optionally ``preset``, see
:data:`PRESETS`).  Formulas and rationale: docs/methods.md.
"""

from ccr.train.inputs import LeakageError, TrainInputs, load_split
from ccr.train.loop import TrainingInterrupted
from ccr.train.params import ParamError, TrainParams, resolve_params
from ccr.train.presets import PRESETS, needs_teacher, needs_training, preset_params
from ccr.train.retriever import Retriever, StudentRetriever, ZeroShotRetriever, load_retriever
from ccr.train.stages import train_student, train_teacher

__all__ = ["PRESETS", "LeakageError", "ParamError", "Retriever", "StudentRetriever", "TrainInputs", "TrainParams",
           "TrainingInterrupted", "ZeroShotRetriever", "load_retriever", "load_split", "needs_teacher",
           "needs_training", "preset_params", "resolve_params", "train_student", "train_teacher"]
