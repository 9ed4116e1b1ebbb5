"""Trainable heads on frozen features: CL2CM teacher/student and LECCR semantic slots (docs/methods.md).

* :mod:`ccr.models.factory`: build from an architecture dict, load from a checkpoint.
* :mod:`ccr.models.fusion`: inference embeddings whose inner product is the fused score.
* :mod:`ccr.models.checkpoint`: tensors + plain metadata, loaded with ``weights_only=True``.
* :mod:`ccr.models.losses`: the loss terms as pure functions.
"""

from ccr.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ccr.models.factory import (
    create_student,
    create_teacher,
    load_student,
    load_teacher,
    student_arch,
    teacher_arch,
)
from ccr.models.fusion import embed_image_arrays, embed_text_arrays, fuse_image, fuse_text
from ccr.models.heads import MLP, AttentionPool, TextHead, VisualHead
from ccr.models.slots import SemanticSlots
from ccr.models.student import CrossModalStudent, ImageOutput
from ccr.models.teacher import CrossLingualTeacher

__all__ = ["MLP", "AttentionPool", "CheckpointError", "CrossLingualTeacher", "CrossModalStudent", "ImageOutput",
           "SemanticSlots", "TextHead", "VisualHead", "create_student", "create_teacher", "embed_image_arrays",
           "embed_text_arrays", "fuse_image", "fuse_text", "load_checkpoint", "load_student", "load_teacher",
           "save_checkpoint", "student_arch", "teacher_arch"]
