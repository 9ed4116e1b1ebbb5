"""Trainable heads on frozen features: CL2CM teacher/student and LECCR semantic slots (docs/methods.md)."""

from ccr.models.heads import MLP, AttentionPool, TextHead, VisualHead
from ccr.models.slots import SemanticSlots
from ccr.models.student import CrossModalStudent, ImageOutput
from ccr.models.teacher import CrossLingualTeacher

__all__ = ["MLP", "AttentionPool", "CrossLingualTeacher", "CrossModalStudent", "ImageOutput", "SemanticSlots",
           "TextHead", "VisualHead"]
