"""The reference DA-QAKD loop behind ``daqakd distill`` (METRIC.md section 5): :func:`run_distill`.

A thin front on the run engine (:mod:`daqakd_plugins.run`, docs/architecture.md): the settings
(:class:`DistillConfig`) choose the batch source — the real training data, or with ``data_free`` a
generator (docs/datafree.md) — and the engine runs the one lifecycle: teacher (frozen) → rank candidate
augmentations (or take one by name) → quantized student through the backend hook, calibrated (its
accuracy now is the PTQ baseline) → KD training with the chosen DA → clean-test evaluation → export and
side-by-side measurement → report.json / report.md / student.pt.

A checkpoint is written atomically after every epoch; ``resume`` continues from it and ends with the
same weights as an uninterrupted run (bitwise on CPU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..train import evaluate_loader
from .config import DistillConfig

__all__ = ["run_distill", "evaluate_student", "evaluate_loader", "batch_source"]


def evaluate_student(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512,
                     device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy on clean data (eval mode, no grad, QuantTensor outputs unwrapped): train.evaluate."""
    from ..train import evaluate

    return evaluate(model, x, y, batch_size=batch_size, device=device)


def batch_source(config: DistillConfig) -> Any:
    """The batch source ``config`` asks for: a generator with ``data_free``, else the real training data.
    Refusals that need no data (a data-free run without a teacher) are raised here, before any work."""
    if config.data_free:
        from ..datafree.loop import GeneratorSource

        return GeneratorSource(config)
    from ..run.real import RealData

    return RealData(config)


def run_distill(config: DistillConfig) -> dict[str, Any]:
    """Run (or resume) DA-QAKD end to end and return the report (also written to ``out/report.json``).

    A run that fails (refused input, Ctrl-C, a crash) removes the directories it created and left
    empty, so a refused run leaves no empty ``out`` behind (a checkpoint or teacher.pt keeps them)."""
    from ..run import RunConfig, run

    return run(RunConfig(config, batch_source(config))).to_dict()
