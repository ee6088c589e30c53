"""The configuration of a ``daqakd distill`` run: every value checked before any work starts."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DEFAULT_METRIC, QuantConfig
from ..errors import ConfigError, UnknownNameError
from .distiller import resolve_loss

__all__ = ["DistillConfig", "DEFAULT_CALIB_IMAGES"]

#: the real-data calibration sample without ``calib_images``/``calib_batches`` (8 batches of the default 64)
DEFAULT_CALIB_IMAGES = 512

# Fields that define the training trajectory: a resumed run must agree on all of them.
TRAJECTORY = (
    "backend", "bits", "act_bits", "data", "epochs", "augment", "loss", "lr", "batch_size", "seed",
    "optimizer", "weight_decay", "candidates", "metric", "rank_per_class", "rank_repeats",
    "train_per_class", "teacher_epochs", "calib_batches", "calib_images", "per_channel", "backend_options",
    "arch", "num_classes", "small_input", "image_size", "mean", "std", "train_crop", "data_free", "generator_options",
    "base_augment", "search_n", "search_top_k", "layer_bits", "first_last_bits", "bits_budget", "size_budget_kb",
)
#: What a checkpoint written before a field existed means by it (those runs ran without it).
LEGACY_DEFAULTS: dict[str, Any] = {"base_augment": "none", "search_n": 100, "search_top_k": 5,
                                   "first_last_bits": None}


def _default_backend() -> str:
    from ..plugins import default_backend

    return default_backend()


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _export_formats(value: Any, backend: str) -> tuple[str, ...] | None:
    """``export_formats`` as a tuple of the backend's format names (``BackendInfo.export_formats``), checked
    before any work: a typo must not surface after hours of training."""
    if value is None:
        return None
    from ..plugins import get_backend

    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    known = tuple(get_backend(backend).export_formats)
    if not names:
        raise ConfigError(f"export_formats (--export-formats) is empty; name one or more of backend {backend!r}'s "
                          f"formats ({', '.join(known)}), or skip export with --no-export (export=False).")
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"backend {backend!r} cannot export {', '.join(repr(b) for b in bad)} (--export-formats); "
                          f"its formats: {', '.join(known) or '(none)'}.")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """Everything ``daqakd distill`` needs; invalid values fail here, before any training.

    ``bits``/``act_bits``: weight / activation bits (``act_bits`` None = same as ``bits``), checked
    against the backend's range. ``augment``: a registered name, ``"none"``, or ``"auto"`` (rank
    ``candidates`` with ``metric`` and use the best). ``base_augment``: the base transform every candidate
    (and ``none``) runs after, in ranking and training (``auto``: crop-with-padding + flip for 16-64 px
    images, random-resized crop + flip above, nothing below; ``crop-flip``, ``rrc-flip``, ``none``). ``loss``: a preset/component name or ``a+b``.
    ``teacher``: a model file (``daqakd teacher``); None = train one into ``out/teacher.pt``.
    ``train_per_class``: a class-stratified training subset (for scaled runs). ``resume``: a run
    directory to continue (``out`` defaults to it). ``fresh``: ``out`` holds an earlier run and it is to be
    started over (its checkpoint, student, report, export and trained teacher are deleted first);
    without ``fresh`` or ``resume`` such a directory is refused, so no finished run is overwritten. ``backend_options``: the backend's options (a dict
    of its options dataclass's fields, see docs/backends/<name>.md). ``arch`` / ``num_classes`` /
    ``small_input``: the teacher's architecture (docs/models.md) when ``teacher`` is a plain state_dict or
    when a teacher is trained here (``None``: the default ``small_resnet``).
    """

    backend: str = field(default_factory=_default_backend)  # the adapters' declared default (brevitas)
    bits: int = 4
    act_bits: int | None = None
    data: str = "digits"
    teacher: str | None = None
    epochs: int = 8
    out: str | None = None
    augment: str = "auto"
    base_augment: str = "auto"
    loss: str = "paper"
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    resume: str | None = None
    export: bool = True
    #: an exported format whose test accuracy differs from the torch student's by more than this many
    #: percentage points is flagged (report.json ``export.outside_bound``, report.md, a console WARNING)
    export_bound_pp: float = 0.5
    #: export only these of the backend's formats (``BackendInfo.export_formats``; None: the backend's
    #: defaults for the student's bit widths); a comma-separated string is accepted too
    export_formats: tuple[str, ...] | None = None
    fresh: bool = False
    device: str = "cpu"
    optimizer: str = "adam"
    weight_decay: float = 0.0
    candidates: str | None = None
    metric: str = DEFAULT_METRIC
    rank_per_class: int | None = None
    rank_repeats: int = 1
    #: ``augment="search:<space>"``: policies to score and how many of the best to combine (docs/ranking.md, section 10)
    search_n: int = 100
    search_top_k: int = 5
    train_per_class: int | None = None
    teacher_epochs: int = 15
    #: real data: the calibration sample is ``calib_images`` training images (default
    #: :data:`DEFAULT_CALIB_IMAGES`), whatever the batch size; ``calib_batches`` (the older option) instead
    #: takes ``calib_batches × batch_size`` images, as runs did before ``calib_images`` existed. Data-free:
    #: ``calib_batches`` generated batches (default 8).
    calib_batches: int | None = None
    calib_images: int | None = None
    per_channel: bool = True
    #: a bit plan (docs/models.md, "Bit plans"): per-layer overrides (module-path glob → bits, or the CLI's
    #: ``"PATTERN=BITS"`` strings), the first/last layers' width (8; ``None`` or 0: like the others), and
    #: ``bits_budget``: an average of weight bits (parameter-weighted) the teacher's sensitivity pass plans to,
    #: or ``size_budget_kb``: the same as the quantized layers' weight storage in KiB (weights × bits / 8)
    layer_bits: Any = field(default_factory=dict)
    first_last_bits: int | None = 8
    bits_budget: float | None = None
    size_budget_kb: float | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    arch: str | None = None
    num_classes: int | None = None
    small_input: bool = False
    workers: int | None = None
    image_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    train_crop: str = "center"
    data_free: bool = False
    generator_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.out is None and self.resume is None:
            raise ConfigError("pass out= (a run directory), or resume= an earlier run directory")
        if self.fresh and self.resume is not None:
            raise ConfigError("fresh=True (--fresh) starts over and resume= continues a run: pass one of them")
        from ..checks import check_device, check_out_outside_data

        check_device(self.device)
        check_out_outside_data(self.out_dir, self.data, flag="--out" if self.out is not None else "--resume")
        if self.data_free and self.calib_batches is None:
            object.__setattr__(self, "calib_batches", 8)  # generated batches
        self._check_numbers()
        self._check_backend()
        self._check_data()
        self._check_names()

    def _check_numbers(self) -> None:
        """Counts, rates and bounds: integers where integers are meant, in range."""
        for name in ("bits", "epochs", "batch_size", "seed", "rank_repeats", "teacher_epochs", "calib_batches",
                     "calib_images", "search_n", "search_top_k"):
            v = getattr(self, name)
            if v is None and name in ("calib_batches", "calib_images"):
                continue
            lo = 0 if name == "seed" else 1
            if not _is_int(v) or v < lo:
                raise ConfigError(f"{name} must be an integer ≥ {lo}, got {v!r}")
        if self.calib_images is not None and self.calib_batches is not None:
            raise ConfigError(f"calib_images={self.calib_images} (--calib-images) and calib_batches={self.calib_batches} "
                              "(--calib-batches) both size the calibration sample; pass one (--calib-images N: N "
                              "images whatever the batch size).")
        if self.calib_images is not None and self.data_free:
            raise ConfigError("calib_images (--calib-images) counts real training images; a data-free run calibrates "
                              "on --calib-batches generated batches.")
        for name in ("act_bits", "rank_per_class", "train_per_class", "num_classes"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number (e.g. 1e-3), got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be ≥ 0, got {self.weight_decay!r}")
        if isinstance(self.export_bound_pp, bool) or not (isinstance(self.export_bound_pp, (int, float))
                                                          and math.isfinite(self.export_bound_pp)
                                                          and self.export_bound_pp >= 0):
            raise ConfigError(f"export_bound_pp (--export-bound-pp) must be a number of percentage points ≥ 0 "
                              f"(default 0.5), got {self.export_bound_pp!r}")

    def _check_backend(self) -> None:
        """Export formats, optimizer, and bits and options against what the backend registered."""
        from ..plugins import get_backend

        object.__setattr__(self, "export_formats", _export_formats(self.export_formats, self.backend))
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        info = get_backend(self.backend)  # UnknownNameError listing the registered backends
        for what, val, (lo, hi) in (
            ("weight bits (--bits)", self.bits, info.weight_bits),
            ("activation bits (--act-bits)", self.weight_act_bits, info.act_bits),
        ):
            if not lo <= val <= hi:
                raise ConfigError(
                    f"{what} {val} are outside what backend {self.backend!r} supports ({lo}..{hi}); "
                    "pass a value in that range."
                )
        from ..backends import check_bits, resolve_options

        check_bits(self.backend, QuantConfig(weight_bits=self.bits, act_bits=self.weight_act_bits))  # bit_pairs
        self._check_plan()

        resolve_options(self.backend, self.backend_options)  # unknown or bad options, before any work

    def _check_plan(self) -> None:
        """The bit plan's patterns, widths and budget, before any work (patterns meet the model later)."""
        from ..bitplan import normalize_layer_bits

        object.__setattr__(self, "layer_bits", normalize_layer_bits(self.layer_bits))
        if self.first_last_bits == 0:
            object.__setattr__(self, "first_last_bits", None)
        from ..backends import plan_config

        plan_config(self.backend, self.quant_config())  # QuantConfig's checks; a backend without plans refuses
        b, kb = self.bits_budget, self.size_budget_kb
        if b is None and kb is None:
            return
        if b is not None and kb is not None:
            raise ConfigError("bits_budget (--bits-budget) and size_budget_kb (--size-budget-kb) both set the plan's "
                              "budget; pass one.")
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b)
                              or not 1 <= b <= 16):
            raise ConfigError(f"bits_budget (--bits-budget) must be an average number of weight bits, e.g. 3.0, got {b!r}")
        if kb is not None and (isinstance(kb, bool) or not isinstance(kb, (int, float)) or not math.isfinite(kb)
                               or kb <= 0):
            raise ConfigError(f"size_budget_kb (--size-budget-kb) must be a positive number of KiB, got {kb!r}")
        from ..plugins import get_backend

        if not get_backend(self.backend).bit_plans:
            raise ConfigError(f"--bits-budget / --size-budget-kb plan per-layer widths; backend {self.backend!r} takes none (its adapter "
                              "does not declare bit_plans). Use a backend that does (see `daqakd plugins`).")
        if self.data_free:
            raise ConfigError("--bits-budget / --size-budget-kb plan from the teacher's sensitivity on real calibration images; a "
                              "data-free run has none. Give the plan yourself with --layer-bits PATTERN=BITS.")

    def _check_data(self) -> None:
        """Workers, image size, normalisation, crop and (data-free) generator options."""
        from ..checks import check_image_size, check_normalization, check_workers

        check_workers(self.workers)
        check_image_size(self.image_size)
        mean, std = check_normalization(self.mean, self.std)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if self.train_crop not in ("center", "random"):
            raise ConfigError(f"train_crop must be 'center' or 'random' (--train-crop), got {self.train_crop!r}")
        if self.data_free:
            from ..datafree.options import resolve_generator_options

            resolve_generator_options(self.generator_options)  # unknown or bad options, before any work
        elif self.generator_options:
            raise ConfigError("generator options (--generator-option) apply only with --data-free; add --data-free "
                              "or drop them.")

    def _check_names(self) -> None:
        """Loss, base augmentation, augmentation and metric names, each against its registry."""
        resolve_loss(self.loss)  # UnknownNameError listing presets and components
        from ..augment import BASE_AUGMENTS

        if not isinstance(self.base_augment, str) or self.base_augment.strip().lower() not in BASE_AUGMENTS:
            raise ConfigError(f"base_augment must be one of {', '.join(BASE_AUGMENTS)} (--base-augment), got "
                              f"{self.base_augment!r}; in the API a callable base goes to Distiller(base_augment=...).")
        if self.searches:
            from ..augment import parse_search_name, search_policy

            if self.data_free:
                raise ConfigError(f"--augment {self.augment} searches with real training images; a data-free run has "
                                  "none. Give one policy (e.g. the combined name `daqakd search` prints, "
                                  "search:<space>:<s1>-<s2>-...) or --augment auto (ranked on generated images).")
            search_policy(f"search:{parse_search_name(self.augment)[0]}:0")  # an unknown space, listing the spaces
            if self.search_top_k > self.search_n:
                raise ConfigError(f"search_top_k ({self.search_top_k}, --search-top-k) cannot exceed search_n "
                                  f"({self.search_n}, --search-n).")
        elif self.augment != "auto":
            from ..augment import resolve_augmentation

            resolve_augmentation(self.augment)  # UnknownNameError listing registered augmentations
        if self.augment == "auto" or self.searches:
            from ..plugins import get_metrics

            metrics = get_metrics()
            if metrics and self.metric not in metrics:
                raise UnknownNameError("metric", self.metric, list(metrics))

    @property
    def searches(self) -> bool:
        """``augment`` names a search space (``search:<space>``): the run searches it before training."""
        from ..augment import SEARCH_PREFIX, parse_search_name

        return (isinstance(self.augment, str) and self.augment.strip().lower().startswith(SEARCH_PREFIX)
                and parse_search_name(self.augment)[1] is None)

    def quant_config(self) -> QuantConfig:
        """The student's quantization config (bits, per-channel scales, calibration, backend options)."""
        n, _ = self.calibration_size()
        return QuantConfig(weight_bits=self.bits, act_bits=self.weight_act_bits, per_channel=self.per_channel,
                           calib_batches=self.calib_batches or max(1, math.ceil(n / self.batch_size)),
                           options=dict(self.backend_options), layer_bits=self.layer_bits,
                           first_last=self.first_last_bits)

    def calibration_size(self) -> tuple[int, str]:
        """How many real training images calibrate the student, and which option said so."""
        if self.calib_batches is not None:
            return self.calib_batches * self.batch_size, (f"--calib-batches {self.calib_batches} × --batch-size "
                                                          f"{self.batch_size}")
        if self.calib_images is not None:
            return self.calib_images, f"--calib-images {self.calib_images}"
        return DEFAULT_CALIB_IMAGES, f"default (--calib-images {DEFAULT_CALIB_IMAGES})"

    @property
    def weight_act_bits(self) -> int:
        return self.bits if self.act_bits is None else self.act_bits

    @property
    def out_dir(self) -> Path:
        return Path(self.out if self.out is not None else self.resume)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> DistillConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k, v in LEGACY_DEFAULTS.items():
            kw.setdefault(k, v)
        kw.update(overrides)
        return cls(**kw)
