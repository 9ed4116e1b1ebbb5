"""Training stages: CL2CM teacher -> student (with LECCR semantic slots), and retrievers for evaluation.

Public API (docs/CONTRACTS.md): :class:`TrainInputs`, :func:`train_teacher`, :func:`train_student`,
:func:`load_retriever`; params are dicts of :class:`ccr.params.TeacherParams` /
:class:`ccr.params.StudentParams` fields (the student's optionally with a ``preset``, see
:data:`PRESETS`).  Formulas and rationale: docs/methods.md.  ``ccr.train`` imports the library
(models, features); the library never imports ``ccr.train``.
"""

from ccr.params import (
    PRESETS,
    ParamError,
    StudentParams,
    TeacherParams,
    preset_params,
    resolve_student_params,
    resolve_teacher_params,
)
from ccr.train.inputs import LeakageError, TrainInputs, load_split
from ccr.train.loop import TrainingInterrupted
from ccr.train.retriever import (
    EnsembleRetriever,
    Retriever,
    StudentRetriever,
    ZeroShotRetriever,
    load_job_retriever,
    load_retriever,
)
from ccr.train.stages import train_student, train_teacher

__all__ = ["PRESETS", "EnsembleRetriever", "LeakageError", "ParamError", "Retriever", "StudentParams", "StudentRetriever", "TeacherParams",
           "TrainInputs", "TrainingInterrupted", "ZeroShotRetriever", "load_job_retriever", "load_retriever", "load_split",
           "preset_params", "resolve_student_params", "resolve_teacher_params", "train_student", "train_teacher"]
