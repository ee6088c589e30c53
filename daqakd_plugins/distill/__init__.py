"""Knowledge distillation into quantized students: the drop-in :class:`Distiller` for a user's own
QAT loop, and the reference loop (:func:`run_distill`) behind ``daqakd distill``: its config
(config.py), its front on the run engine (pipeline.py; the engine is :mod:`daqakd_plugins.run`), the report
renderer (report.py) and student file (student_file.py)."""

from __future__ import annotations

from .checkpoint import load_checkpoint
from .config import DistillConfig
from .distiller import Distiller, NoQuantizersWarning, TeacherFrozenWarning, as_tensor, resolve_loss
from .pipeline import evaluate_student, run_distill
from .report import render_markdown
from .student_file import load_student

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
