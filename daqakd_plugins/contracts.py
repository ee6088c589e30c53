"""The objects that travel through the hooks (see :mod:`daqakd_plugins.hookspecs`).

Each hook takes one object rather than many arguments, so a hook can gain a field without breaking
every plugin that implements it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import DataError

if TYPE_CHECKING:  # keep `import daqakd_plugins` light
    import numpy as np
    import torch
    from torch import nn

    from .config import QuantConfig

__all__ = [
    "Augmentation",
    "Metric",
    "MetricAccumulator",
    "MetricBatch",
    "MetricResult",
    "LossComponent",
    "LossTerm",
    "LossPreset",
    "LossContext",
    "LossResult",
    "BackendInfo",
    "QuantizeRequest",
    "CalibrateRequest",
    "ExportRequest",
    "ExportedModel",
]

AugmentFn = Callable[["torch.Tensor", "torch.Tensor"], "tuple[torch.Tensor, torch.Tensor]"]


# --------------------------------------------------------------------------------------------------
# augmentations
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Augmentation:
    """A candidate data augmentation acting on a *batch*.

    ``fn(images, targets) -> (images, targets)`` where ``images`` is a float tensor ``[B, C, H, W]``
    with values in ``[0, 1]`` on any device, and ``targets`` a float tensor ``[B, K]`` of label
    distributions (one-hot for plain labels). Label-mixing candidates (CutMix, MixUp) return soft
    targets. Randomness comes from torch's global RNG, which the caller seeds.
    """

    name: str
    fn: AugmentFn
    description: str = ""
    family: str = "user"  # "none", "torchvision", "kornia", "user"
    mixes_labels: bool = False

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.fn(images, targets)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise DataError(
                f"augmentation {self.name!r} returned {type(out).__name__}; it must return the pair "
                "(images, targets). Wrap a torchvision transform with daqakd_plugins.augment.per_sample()."
            )
        x, t = out
        if x.shape != images.shape or x.dtype != images.dtype:
            raise DataError(
                f"augmentation {self.name!r} changed the batch from {tuple(images.shape)} {images.dtype} "
                f"to {tuple(x.shape)} {x.dtype}; a candidate must keep shape and dtype (crop/resize "
                "back to the input size and convert back to the input dtype inside the candidate)."
            )
        if t.shape != targets.shape:
            raise DataError(
                f"augmentation {self.name!r} changed the targets from {tuple(targets.shape)} to "
                f"{tuple(t.shape)}; targets must stay [batch, classes] label distributions."
            )
        return x, t


# --------------------------------------------------------------------------------------------------
# ranking metrics
# --------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class MetricBatch:
    """What a ranking metric sees of one batch: teacher logits on the augmented batch, its label
    distributions, and (only for metrics with ``needs_clean``) teacher logits on the clean batch."""

    logits: torch.Tensor
    targets: torch.Tensor
    clean_logits: torch.Tensor | None = None
    candidate: str = ""
    batch_index: int = 0


@dataclass(kw_only=True)
class MetricResult:
    """A candidate's score (``lower_is_better`` as the metric says) and every component of it."""

    score: float
    components: dict[str, float] = field(default_factory=dict)
    n: int = 0
    classes_seen: int = 0
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not math.isfinite(self.score):
            self.notes.append("score is not finite")


class MetricAccumulator(Protocol):
    """Accumulates sufficient statistics batch by batch; ``result()`` computes the score."""

    def update(self, batch: MetricBatch) -> None: ...

    def result(self) -> MetricResult: ...


@dataclass(frozen=True, kw_only=True)
class Metric:
    """A ranking metric. ``create(num_classes, **params)`` returns a fresh accumulator."""

    name: str
    create: Callable[..., MetricAccumulator]
    description: str = ""
    needs_clean: bool = False
    lower_is_better: bool = True


# --------------------------------------------------------------------------------------------------
# KD losses
# --------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class LossContext:
    """Everything a loss term may need for one training step.

    ``targets`` are label distributions ``[B, C]`` (soft after CutMix/MixUp); ``labels`` the hard
    labels when the batch has them. ``teacher_logits`` were computed under ``torch.inference_mode``
    and never carry gradients. ``student_features``/``teacher_features`` hold the outputs of named
    layers when a loss term asked for them. ``terms`` is the list of terms to compute this step.
    """

    student_logits: torch.Tensor
    teacher_logits: torch.Tensor | None
    targets: torch.Tensor
    labels: torch.Tensor | None = None
    inputs: torch.Tensor | None = None
    teacher_inputs: torch.Tensor | None = None
    student: nn.Module | None = None
    teacher: nn.Module | None = None
    step: int = 0
    terms: tuple[LossTerm, ...] = ()
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)
    extra_teacher_logits: tuple[torch.Tensor, ...] = ()
    state: dict[str, Any] = field(default_factory=dict)  # per-Distiller state (e.g. learned projections)


@dataclass(frozen=True, kw_only=True)
class LossComponent:
    """A loss term: ``fn(ctx, **params) -> scalar tensor`` (unweighted)."""

    name: str
    fn: Callable[..., torch.Tensor]
    description: str = ""
    needs_teacher: bool = True


@dataclass(frozen=True, kw_only=True)
class LossTerm:
    """One weighted use of a registered component in a loss recipe."""

    component: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""  # key in LossResult.terms; defaults to the component name

    @property
    def key(self) -> str:
        return self.label or self.component


@dataclass(frozen=True, kw_only=True)
class LossPreset:
    """A named recipe of weighted terms, e.g. ``paper`` = 1·CE + 2·τ²·KL(τ=4)."""

    name: str
    terms: tuple[LossTerm, ...]
    description: str = ""


@dataclass(kw_only=True)
class LossResult:
    """The weighted terms of one step. Wrappers of ``daqakd_compute_loss`` may add, drop or re-weight
    entries; ``total`` is always their sum."""

    terms: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def total(self) -> torch.Tensor:
        if not self.terms:
            raise DataError("the loss has no terms; pass loss='paper' or a list of LossTerm to Distiller")
        vals = list(self.terms.values())
        out = vals[0]
        for v in vals[1:]:
            out = out + v
        return out


# --------------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class BackendInfo:
    """What an adapter says about its backend; ``daqakd plugins`` prints it."""

    name: str  # "brevitas"
    module: str  # import name, e.g. "brevitas"
    distribution: str  # PyPI name, e.g. "brevitas"
    install: str  # exact command, e.g. 'pip install "daqakd[brevitas]"'
    weight_bits: tuple[int, int] = (2, 8)
    act_bits: tuple[int, int] = (2, 8)
    export_formats: tuple[str, ...] = ()
    description: str = ""
    implemented: bool = True  # False: the adapter only reports availability so far


@dataclass(kw_only=True)
class QuantizeRequest:
    """Turn ``model`` (full precision, never modified in place) into a QAT student."""

    backend: str
    model: nn.Module
    config: QuantConfig
    example_input: torch.Tensor
    calib_data: Iterable[Any] | None = None


@dataclass(kw_only=True)
class CalibrateRequest:
    """Set the student's quantizer ranges from data (images only; batches of ``[B, C, H, W]``)."""

    backend: str
    model: nn.Module
    data: Iterable[torch.Tensor]
    num_batches: int = 8


@dataclass(kw_only=True)
class ExportRequest:
    """Export a trained student into ``out_dir``; ``formats`` None means the backend's defaults."""

    backend: str
    model: nn.Module
    example_input: torch.Tensor
    out_dir: Path
    formats: tuple[str, ...] | None = None


@dataclass(kw_only=True)
class ExportedModel:
    """One exported artefact and a way to run it (``predict(float32 NCHW array) -> logits array``)."""

    format: str
    path: Path
    runtime: str
    predict: Callable[[np.ndarray], np.ndarray]
    notes: str = ""

    @property
    def size_bytes(self) -> int:
        return Path(self.path).stat().st_size
