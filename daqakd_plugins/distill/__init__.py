"""Knowledge distillation into quantized students: the drop-in :class:`Distiller` for a user's own
QAT loop, and the reference loop (:func:`run_distill`) behind ``daqakd distill``."""

from __future__ import annotations

from .checkpoint import load_checkpoint
from .distiller import Distiller, NoQuantizersWarning, TeacherFrozenWarning, as_tensor, resolve_loss
from .loop import DistillConfig, evaluate_student, load_student, render_markdown, run_distill

__all__ = [
    "Distiller",
    "DistillConfig",
    "run_distill",
    "load_student",
    "load_checkpoint",
    "evaluate_student",
    "resolve_loss",
    "render_markdown",
    "as_tensor",
    "NoQuantizersWarning",
    "TeacherFrozenWarning",
]
