"""The objects that travel through the hooks (see :mod:`daqakd_plugins.hookspecs`).

Each hook takes one object rather than many arguments, so a hook can gain a field without breaking
every plugin that implements it.
"""

from __future__ import annotations

import inspect
import math
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from .errors import DataError

if TYPE_CHECKING:  # keep `import daqakd_plugins` light
    import numpy as np
    import torch
    from torch import nn

    from .config import QuantConfig

__all__ = [
    "Augmentation",
    "SearchSpace",
    "Metric",
    "MetricAccumulator",
    "PlannedMetricAccumulator",
    "ReducibleMetricAccumulator",
    "MetricBatch",
    "MetricResult",
    "LossComponent",
    "LossTerm",
    "LossPreset",
    "LossContext",
    "LossResult",
    "Architecture",
    "BackendInfo",
    "QuantizerInfo",
    "QuantizeRequest",
    "SaveRequest",
    "RestoreRequest",
    "CalibrateRequest",
    "ExportRequest",
    "ExportedModel",
]

AugmentFn = Callable[["torch.Tensor", "torch.Tensor"], "tuple[torch.Tensor, torch.Tensor]"]
ImageFn = Callable[["torch.Tensor"], "torch.Tensor"]
#: ``notes(image_shape) -> list[str]``: what a candidate cannot fully do on images of shape (C, H, W)
NotesFn = Callable[[tuple[int, ...]], list[str]]


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

    ``notes(image_shape) -> list[str]`` (optional) says what the candidate cannot fully do on images
    of shape ``(C, H, W)``, e.g. a colour operation that is the identity on 1-channel images; the
    ranking copies the notes into its report (:func:`daqakd_plugins.augment.candidate_notes`).

    Where the candidate runs in a data pipeline (docs/data.md) — ``stage``:

    * ``"sample"``: ``sample_fn(image [C, H, W]) -> image`` transforms one image; a DataLoader runs it
      in its worker processes (:func:`daqakd_plugins.augment.per_sample` sets it). ``fn`` still works on
      a batch, one call per image.
    * ``"batch"``: a whole-batch CPU step (CutMix, MixUp), run in the DataLoader's collate function.
    * ``"device"`` (the default, and every user callable): on the batch, where the models run (kornia).

    ``parts``: the pieces of a composed candidate (:func:`daqakd_plugins.augment.compose`), in order, so a
    pipeline can run each piece at its own stage.
    """

    name: str
    fn: Callable[..., Any]  # an AugmentFn, or an ImageFn when image_only
    description: str = ""
    family: str = "user"  # "none", "torchvision", "kornia", "user"
    mixes_labels: bool = False
    image_only: bool | None = None  # None: decided from fn's signature in __post_init__ (always a bool after)
    notes: NotesFn | None = None
    stage: str = "device"
    sample_fn: ImageFn | None = None
    parts: tuple[Augmentation, ...] = ()

    def __post_init__(self) -> None:
        if self.stage not in ("sample", "batch", "device"):
            raise ValueError(f"Augmentation.stage must be 'sample', 'batch' or 'device', got {self.stage!r}")
        if self.stage == "sample" and self.sample_fn is None:
            raise ValueError(f"augmentation {self.name!r}: stage='sample' needs sample_fn (one image in, one out)")
        if self.image_only is None:
            object.__setattr__(self, "image_only", _takes_targets(self.fn) is False)
        if self.notes is None:
            legacy = getattr(self.fn, "daqakd_notes", None)  # before the field existed; kept for old plugins
            if callable(legacy):
                warnings.warn(
                    f"augmentation {self.name!r}: fn.daqakd_notes is deprecated; pass "
                    "Augmentation(..., notes=fn.daqakd_notes) instead.",
                    DeprecationWarning,
                    stacklevel=3,
                )
                object.__setattr__(self, "notes", legacy)

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
# augmentation policy search
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """A named space of augmentation policies that ``daqakd search`` draws from (docs/ranking.md#search).

    ``policy(seed) -> Augmentation`` returns the policy numbered ``seed`` (an integer ≥ 0); it must be a pure
    function of ``seed`` — the same seed, the same policy, in any process — because a drawn policy is stored
    by its name ``search:<space>:<seed>`` alone and re-created from it (in reports, checkpoints, ``--augment``).
    The core renames the returned augmentation; its ``description`` should say what the policy does (e.g.
    ``"Rotate ≤ 45° → Solarize ≤ 128"``). Randomness *within* a policy (which magnitude an image gets) comes
    from torch's global RNG, which the ranking and the data pipeline seed per sample.
    """

    name: str
    policy: Callable[[int], Augmentation]
    description: str = ""
    size: int | None = None  # distinct policies, when the space can say (the report states it)

    def __post_init__(self) -> None:
        if not self.name or any(ch in self.name for ch in ":+,/ ") or self.name != self.name.lower():
            raise ValueError(f"search space name {self.name!r} must be lower-case, non-empty and free of ':', '+', "
                             "',', '/' and spaces (it becomes part of the policy names search:<space>:<seed>)")


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
    """Accumulates sufficient statistics batch by batch; ``result()`` computes the score.

    An accumulator may also implement :class:`PlannedMetricAccumulator`'s ``check_plan``."""

    def update(self, batch: MetricBatch) -> None: ...

    def result(self) -> MetricResult: ...


@runtime_checkable
class PlannedMetricAccumulator(MetricAccumulator, Protocol):
    """An accumulator that checks the ranking's plan before any batch is computed (optional).

    The ranking calls ``check_plan(num_batches, batch_size, num_samples)`` once, on a fresh accumulator,
    when the accumulator has the method (``isinstance(acc, PlannedMetricAccumulator)``). It raises
    (e.g. :class:`~daqakd_plugins.errors.ConfigError` naming a batch size that works) to refuse a plan
    the metric cannot score, such as ``tstddev`` with fewer batches than its group size needs."""

    def check_plan(self, num_batches: int, batch_size: int, num_samples: int) -> None: ...


@runtime_checkable
class ReducibleMetricAccumulator(MetricAccumulator, Protocol):
    """An accumulator whose state is a sum over samples, so a ranking split over processes (torchrun)
    sums the ranks' states and gets the single-process score (optional).

    ``state_vector()`` returns the state as one float64 tensor; the ranking sums it over the ranks and
    hands the sum to ``load_state_vector(vec)`` before ``result()``. An accumulator without the two
    methods is not split: every rank then runs the whole ranking (docs/scaling.md)."""

    def state_vector(self) -> torch.Tensor: ...

    def load_state_vector(self, vec: torch.Tensor) -> None: ...


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

    What the :class:`~daqakd_plugins.distill.Distiller` adds for the built-in terms (a direct call of
    ``daqakd_compute_loss`` may leave them at their defaults):

    * ``feature_pairs``: ``{student layer: teacher layer}`` of the Distiller's ``features=``; empty means
      "pair the layers captured under the same name".
    * ``projections``: the Distiller's learned projections (an ``nn.ModuleDict`` keyed by
      :func:`daqakd_plugins.projections.projection_key`; its parameters are what
      ``Distiller.parameters()`` hands to the optimizer); ``None`` when there is no store.
    * ``components``: the recipe's registered components by name (saves a registry look-up per step);
      ``None``: the implementation looks them up.

    ``state`` is scratch space for third-party plugins, e.g. for a ``wrapper=True`` implementation to
    hand a value to an inner one. It is a fresh empty dict every step and the core never reads it.
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
    feature_pairs: Mapping[str, str] = field(default_factory=dict)
    projections: nn.ModuleDict | None = None
    components: Mapping[str, LossComponent] | None = None
    state: dict[str, Any] = field(default_factory=dict)  # third-party scratch space, fresh each step


@dataclass(frozen=True, kw_only=True)
class LossComponent:
    """A loss term: ``fn(ctx, **params) -> scalar tensor`` (unweighted).

    ``needs_teacher=False`` lets a recipe made only of such terms skip the teacher's forward pass.
    ``two_views=True`` makes a Distiller whose recipe contains the term feed the teacher and the student
    two independent augmented views of each batch (``ctx.teacher_inputs`` and ``ctx.inputs``), as the
    built-in ``dual_view`` does; otherwise both see the same augmented batch.

    What the term reads besides logits, so the core never has to know components by name:

    * ``needs_features=True``: it always reads named layers (``ctx.student_features`` /
      ``ctx.teacher_features``; the built-in ``feature``). ``feature_param``: the name of a parameter
      that, when a term sets it, makes the term read named layers (the built-in ``rkd_*`` with
      ``layer=...``; on logits otherwise). The command line, which cannot name layers, refuses such terms;
      a Distiller given ``features=`` warns when no term of its recipe can use them.
    * ``needs_teachers=True``: it combines extra teachers (``ctx.extra_teacher_logits``; the built-in
      ``multi_teacher``); a Distiller without ``teachers=[...]`` warns that it is plain KD.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    description: str = ""
    needs_teacher: bool = True
    two_views: bool = False
    needs_features: bool = False
    feature_param: str = ""
    needs_teachers: bool = False

    def reads_features(self, params: Mapping[str, Any]) -> bool:
        """Whether a term of this component with ``params`` reads named layers."""
        return self.needs_features or bool(self.feature_param and params.get(self.feature_param))

    def may_read_features(self) -> bool:
        """Whether some term of this component can read named layers (with some parameters)."""
        return self.needs_features or bool(self.feature_param)

    def __post_init__(self) -> None:
        if not self.two_views and getattr(self.fn, "two_views", False) is True:  # before the field existed
            warnings.warn(
                f"loss component {self.name!r}: fn.two_views = True is deprecated; pass "
                "LossComponent(..., two_views=True) instead.",
                DeprecationWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "two_views", True)


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
# architectures
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Architecture:
    """A model family daqakd can build from an architecture spec (a dict saved next to the weights).

    ``name`` is either one architecture (``"small_resnet"``) or a family prefix ending in ``":"``
    (``"torchvision:"`` builds ``torchvision:resnet18``, ``torchvision:mobilenet_v2``, ...).
    ``build(spec)`` returns the float model; ``spec`` holds ``name``, ``num_classes``,
    ``in_channels`` and any options the family documents (e.g. ``small_input``). ``requires``: the
    module that must import for the family to be usable (its absence gives the install command
    ``install``)."""

    name: str
    build: Callable[[Mapping[str, Any]], Any]
    description: str = ""
    requires: str = ""
    install: str = ""


# --------------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class BackendInfo:
    """What an adapter says about its backend; ``daqakd plugins`` prints it.

    The plugin that registers a backend *owns* it: the core sends that backend's quantize, calibrate,
    export, save and restore calls to this plugin alone (see docs/adapters.md).
    """

    name: str  # "brevitas"
    module: str  # import name, e.g. "brevitas"
    distribution: str  # PyPI name, e.g. "brevitas"
    install: str  # exact command, e.g. 'pip install "daqakd[brevitas]"'
    weight_bits: tuple[int, int] = (2, 8)
    act_bits: tuple[int, int] = (2, 8)
    #: why the bit ranges are what they are; the core appends it to its out-of-range error
    bits_note: str = ""
    #: the (weight, activation) bit combinations that work, when not every pair in the ranges does
    #: (NNCF: W8A8, W4A4, W4A8); empty: every pair in the ranges. The core refuses the others up front.
    bit_pairs: tuple[tuple[int, int], ...] = ()
    export_formats: tuple[str, ...] = ()
    #: a frozen dataclass of the adapter's options (``QuantConfig.options`` is converted to it, and a
    #: student file stores it with ``dataclasses.asdict``); ``None``: the backend takes no options
    options_type: type | None = None
    description: str = ""
    implemented: bool = True  # False: the adapter only reports availability so far
    #: the student can train wrapped in ``DistributedDataParallel`` (torchrun); ``ddp_note`` says why not
    ddp: bool = True
    ddp_note: str = ""
    #: DDP's ``find_unused_parameters``: the student has parameters some steps do not use
    ddp_find_unused: bool = False
    #: the adapter honours a bit plan (``QuantizeRequest.layer_bits``/``RestoreRequest.layer_bits``): per-layer
    #: weight widths from ``layer_weight_bits`` (empty: any in ``weight_bits``), and per-layer input-activation
    #: widths when ``layer_act_bits``. An adapter without it gets uniform plans only (the core refuses others).
    bit_plans: bool = False
    layer_weight_bits: tuple[int, ...] = ()
    layer_act_bits: bool = False
    #: which backend runs when none is named (``--backend``, ``DistillConfig.backend``): of the implemented
    #: backends, the one with the highest priority (ties: by name); :func:`daqakd_plugins.plugins.default_backend`
    default_priority: int = 0


@dataclass(frozen=True, kw_only=True)
class QuantizerInfo:
    """One fake-quantizer of a student: where it is, what it quantizes and with how many bits.

    ``role`` is ``"weight"`` or ``"activation"`` for the quantizers the requested bit widths apply to,
    ``"input"`` / ``"output"`` for fixed-width quantizers an adapter adds at the network's edges (e.g.
    Brevitas' 8-bit input and logit quantizers), ``"other"`` for anything else (biases, ...)."""

    name: str
    role: str
    bits: int
    #: the module path of the weight layer it belongs to (its weights; or its input, where a backend quantizes
    #: each layer's input), as the float model names it; ``""``: none (a ReLU's output, an edge quantizer).
    #: The conformance kit compares these against a bit plan.
    layer: str = ""


@dataclass(kw_only=True)
class QuantizeRequest:
    """Turn ``model`` (full precision, never modified in place) into a QAT student.

    ``options`` is ``config.options`` already converted to the backend's ``options_type`` (or
    ``None`` when the backend takes none): adapters read it, not ``config.options``."""

    backend: str
    model: nn.Module
    config: QuantConfig
    example_input: torch.Tensor
    calib_data: Iterable[Any] | None = None
    options: Any = None
    #: the resolved bit plan, ``{module path: {"weight": w, "act": a}}`` for every weight layer
    #: (:func:`daqakd_plugins.bitplan.resolve_plan`); the adapter sets the layers whose widths differ from
    #: ``config``'s uniform ones (:func:`daqakd_plugins.bitplan.plan_differences`)
    layer_bits: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


@dataclass(kw_only=True)
class CalibrateRequest:
    """Set the student's quantizer ranges from data (images only; batches of ``[B, C, H, W]``).

    ``config``/``options``: what the student was quantized with (``options`` already converted to the
    backend's ``options_type``, as in :class:`QuantizeRequest`), so an adapter reads its calibration
    settings here instead of keeping them on the model. ``None`` when the caller does not know them (a
    student made outside daqakd, or a caller written before the fields existed): the adapter then uses
    what it can read from the student's quantizers, or its defaults."""

    backend: str
    model: nn.Module
    data: Iterable[torch.Tensor]
    num_batches: int = 8
    config: QuantConfig | None = None
    options: Any = None


@dataclass(kw_only=True)
class ExportRequest:
    """Export a trained student into ``out_dir``; ``formats`` None means the backend's defaults."""

    backend: str
    model: nn.Module
    example_input: torch.Tensor
    out_dir: Path
    formats: tuple[str, ...] | None = None


@dataclass(kw_only=True)
class SaveRequest:
    """Turn a trained student into a payload that :class:`RestoreRequest` can rebuild it from.

    The payload must load with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and
    dicts only (no classes, no functions)."""

    backend: str
    model: nn.Module
    config: QuantConfig
    options: Any = None


@dataclass(kw_only=True)
class RestoreRequest:
    """Rebuild a student from a fresh full-precision ``model`` and the ``payload`` of a save.

    ``config``/``options`` are those the student was quantized with (read back from the student file,
    so no command line is needed); ``example_input`` is a batch of the right shape."""

    backend: str
    model: nn.Module
    config: QuantConfig
    payload: Mapping[str, Any]
    example_input: torch.Tensor
    options: Any = None
    layer_bits: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # as in QuantizeRequest


@dataclass(kw_only=True)
class ExportedModel:
    """One exported artefact and a way to run it (``predict(float32 NCHW array) -> logits array``).

    ``u8s8_guard``: the file is an ONNX graph that a default onnxruntime session may run with its integer
    kernels, so the core refuses it when it still pairs uint8 activations with full-range int8 weights
    (wrong on x86 CPUs without VNNI; :func:`daqakd_plugins.onnx_qdq.u8s8_hazards`) and the runtime report
    lists the integer kernels it runs. ``False``: another runtime's file (OpenVINO, qonnx), or one meant for
    a session without Q/DQ fusion (TensorRT's Q/DQ file). ``None`` (an adapter written before the field
    existed): decided as before, ``runtime == "onnxruntime"`` and a ``.onnx`` path; a bool after."""

    format: str
    path: Path
    runtime: str
    predict: Callable[[np.ndarray], np.ndarray]
    notes: str = ""
    u8s8_guard: bool | None = None

    def __post_init__(self) -> None:
        if self.u8s8_guard is None:
            self.u8s8_guard = self.runtime == "onnxruntime" and Path(self.path).suffix == ".onnx"

    @property
    def size_bytes(self) -> int:
        return Path(self.path).stat().st_size
