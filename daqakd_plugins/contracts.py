"""The objects that travel through the hooks (see :mod:`daqakd_plugins.hookspecs`).

Each hook takes one object rather than many arguments, so a hook can gain a field without breaking
every plugin that implements it.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

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
ImageFn = Callable[["torch.Tensor"], "torch.Tensor"]


def _call_target(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What to inspect: an ``nn.Module``'s ``forward`` (its ``__call__`` is ``(*args, **kwargs)``)."""
    torch_mod = sys.modules.get("torch")  # a Module instance implies torch is imported; never import it here
    if torch_mod is not None and isinstance(fn, torch_mod.nn.Module):
        return fn.forward  # type: ignore[no-any-return]
    return fn


def _takes_targets(fn: Callable[..., Any]) -> bool | None:
    """``True`` for ``fn(images, targets)``, ``False`` for an image-only ``fn(images)``, ``None`` when the
    signature cannot tell (see :meth:`Augmentation.takes_targets`)."""
    tv2 = sys.modules.get("torchvision.transforms.v2")
    if tv2 is not None and isinstance(fn, tv2.Transform):
        return False  # forward(*inputs): one image (or batch) in, one out; daqakd passes the images only
    try:
        sig = inspect.signature(_call_target(fn))
    except (TypeError, ValueError):  # builtins / C callables without a signature
        return None
    params = list(sig.parameters.values())
    if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params):
        return None  # a required keyword-only argument: cannot be called as fn(images[, targets])
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(required) == 1:
        return False
    if len(required) == 2:
        return True
    return None


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

    An image-only ``fn(images) -> images`` (most transforms) works too: the targets then pass through
    unchanged. ``image_only=None`` (the default) decides from ``fn``'s signature
    (:meth:`takes_targets`): exactly one required positional parameter means image-only; anything
    undecidable is called as ``fn(images, targets)``, the contract above. Pass ``image_only=True`` or
    ``False`` to say it yourself. An image-only ``fn`` gets the whole batch in one call, so a torchvision
    random transform draws its parameters once per batch; wrap it with
    :func:`daqakd_plugins.augment.per_sample` for one draw per image.
    """

    name: str
    fn: Callable[..., Any]  # an AugmentFn, or an ImageFn when image_only
    description: str = ""
    family: str = "user"  # "none", "torchvision", "kornia", "user"
    mixes_labels: bool = False
    image_only: bool | None = None  # None: decided from fn's signature in __post_init__ (always a bool after)

    def __post_init__(self) -> None:
        if self.image_only is None:
            object.__setattr__(self, "image_only", _takes_targets(self.fn) is False)

    @staticmethod
    def takes_targets(fn: Callable[..., Any]) -> bool | None:
        """How daqakd calls a candidate callable, decided from its signature alone (never by calling it):
        ``False`` (image-only, ``fn(images) -> images``) for exactly one required positional parameter
        (for an ``nn.Module``, of its ``forward``) and for torchvision v2 transforms; ``True``
        (``fn(images, targets) -> (images, targets)``) for exactly two; ``None`` when it cannot tell
        (only ``*args``, no or more than two required positional parameters, a required keyword-only
        parameter, or no signature)."""
        return _takes_targets(fn)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.image_only:
            x: Any = cast(ImageFn, self.fn)(images)
            if isinstance(x, tuple):
                raise DataError(
                    f"augmentation {self.name!r} is called as fn(images) (image-only: its signature has one "
                    f"required positional parameter) but returned a {len(x)}-tuple; return the images only, or "
                    "if it takes targets give it two required parameters fn(images, targets) or pass "
                    "Augmentation(..., image_only=False)."
                )
            t = targets
        else:
            out = cast(AugmentFn, self.fn)(images, targets)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise DataError(
                    f"augmentation {self.name!r} returned {type(out).__name__}; called as fn(images, targets) it "
                    "must return the pair (images, targets). For an image-only transform pass "
                    "Augmentation(..., image_only=True); to draw per image wrap it with "
                    "daqakd_plugins.augment.per_sample()."
                )
            x, t = out
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise DataError(
                f"augmentation {self.name!r} returned {type(x).__name__} as images; it must return an image "
                "tensor [B, C, H, W] (a PIL-only transform needs daqakd_plugins.augment.per_sample)."
            )
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
