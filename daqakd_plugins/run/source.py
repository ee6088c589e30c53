"""The batch-source protocol: what differs between a run on real data and a data-free run, and nothing else.

The engine (:mod:`daqakd_plugins.run.engine`) owns the lifecycle: run directory, teacher, normaliser,
evaluation, the student (quantize, calibrate, restore, ``requires_grad``), DDP, the Distiller, the
optimizer, the epoch loop, checkpoints, the student file, export and the report. A batch source owns
where the training batches come from; the engine calls it at fixed points, in this order::

    Source(cfg)                             before any work: refusals that need no data
    open(cfg) -> bundle                     the data bundle, read only as far as the source may
    example(ctx) -> images                  the student's example input (normalised)
    choose_augmentation(ctx)                here when ranks_before_student (ranking on real data) ...
    start(ctx, fresh=...)                   after the run's seed: the source's own models and baselines
    calibration_batches(ctx) -> [images]    between quantize and calibrate (fresh runs only)
    attach(student)                         the student the batches are made for
    choose_augmentation(ctx)                ... or here (a generator must be warmed up first)
    prepare_training(ctx, kd)               the Distiller exists; make the loader
    batches_per_epoch() -> int              optimizer steps per epoch (the cosine's length)
    samples_per_epoch() -> int              this rank's training samples per epoch
    state() / load_state(d)                 into / out of the checkpoint (the source's own keys)
    before_training(ctx, resumed=...)       the last thing before the first epoch
    epoch(e) -> iterable of (x, target)     one epoch's training batches
    epoch_summary() -> dict                 extra history fields for the epoch just run
    close()                                 training is over (hooks off)
    export_example(ctx) -> images           the example input the export traces with
    finish(ctx) -> Finish                   files it wrote, student-file meta, its report section
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["RunContext", "BatchSource", "SourceDefaults", "AugmentationChoice", "Finish"]


@dataclass
class AugmentationChoice:
    """The augmentation a run trains with and how it was chosen (``ranking``: the ranking's dict, if ranked)."""

    name: str
    ranking: dict[str, Any] | None = None


@dataclass
class RunContext:
    """What every stage may read: the settings and the pieces the engine has made so far."""

    cfg: Any  # DistillConfig
    out: Path
    dist: Any  # distributed.Dist
    bundle: Any
    teacher: nn.Module
    teacher_meta: dict[str, Any]
    teacher_path: str
    norm: Any  # streams.Normalizer
    workers: int
    evaluate: Callable[[nn.Module], float]
    example: torch.Tensor | None = None
    student_before: float = float("nan")  # the student's accuracy after calibration (the PTQ baseline)
    #: the QuantConfig the student is built with, its ``layer_bits`` the explicit bit plan (:mod:`.plan`)
    quant: Any = None
    plan: dict[str, Any] | None = None  # the plan's record for the report and the checkpoint


@dataclass
class Finish:
    """What a source adds at the end: its files (``files`` in the report), the student file's extra meta,
    what it read (``data``), how it calibrated, and its own report section (merged into report.json)."""

    files: dict[str, str]
    student_meta: dict[str, Any]
    data: dict[str, Any]
    calibration: dict[str, Any]
    section: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)  # baselines beside teacher/before/after


@runtime_checkable
class BatchSource(Protocol):
    """Where a run's training batches come from (see the module's notes for when each method runs)."""

    mode: str
    ranks_before_student: bool
    trains_with_base: bool  # whether --base-augment's transform runs before the augmentation

    def open(self, cfg: Any) -> Any: ...
    def example(self, ctx: RunContext) -> torch.Tensor: ...
    def choose_augmentation(self, ctx: RunContext) -> AugmentationChoice: ...
    def start(self, ctx: RunContext, *, fresh: bool) -> None: ...
    def calibration_batches(self, ctx: RunContext) -> list[torch.Tensor]: ...
    def attach(self, student: nn.Module) -> None: ...
    def prepare_training(self, ctx: RunContext, kd: Any) -> None: ...
    def batches_per_epoch(self) -> int: ...
    def samples_per_epoch(self) -> int: ...
    def state(self) -> dict[str, Any]: ...
    def load_state(self, state: dict[str, Any]) -> None: ...
    def before_training(self, ctx: RunContext, *, resumed: bool) -> None: ...
    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]: ...
    def epoch_summary(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    def export_example(self, ctx: RunContext) -> torch.Tensor: ...
    def finish(self, ctx: RunContext) -> Finish: ...


class SourceDefaults:
    """What a source that needs no such step does at the optional points of the protocol: nothing."""

    def start(self, ctx: RunContext, *, fresh: bool) -> None:
        pass

    def attach(self, student: nn.Module) -> None:
        pass

    def prepare_training(self, ctx: RunContext, kd: Any) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def before_training(self, ctx: RunContext, *, resumed: bool) -> None:
        pass

    def epoch_summary(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
