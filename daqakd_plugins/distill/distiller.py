"""The drop-in KD object for a user's own QAT loop.

No quantization backend except ModelOpt has a loss hook (BACKENDS.md), so daqakd brings the KD loss
to the user's loop instead of patching each toolkit's trainer::

    kd = Distiller(teacher, student, loss="paper", augment="trivialaugmentwide")
    opt = torch.optim.Adam([*student.parameters(), *kd.parameters()])
    for x, y in loader:                     # the user's loop, unchanged
        loss = kd.loss(x, y)                # augment -> frozen teacher + student -> loss hook chain
        opt.zero_grad(); loss.backward(); opt.step()

One obvious path per batch: augmentation → teacher (frozen, ``torch.inference_mode``) and student →
``daqakd_compute_loss`` hook chain (so third-party ``wrapper=True`` plugins stack) → a scalar.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from torch import nn
from torch.utils.data import Dataset

from ..checks import check_batch
from ..contracts import Augmentation, LossComponent, LossContext, LossPreset, LossResult, LossTerm
from ..errors import ConfigError, ModelError, NonFiniteError, PluginError, UnknownNameError
from ..models import as_tensor
from ..projections import make_projection, projection_key
from ..streams import Normalizer, seeded

if TYPE_CHECKING:
    from ..streams import TrainLoader

__all__ = ["Distiller", "DistillLoader", "resolve_loss", "check_cli_loss", "NoQuantizersWarning", "TeacherFrozenWarning",
           "as_tensor"]

LossSpec = str | LossPreset | LossTerm | Sequence[LossTerm]
AugmentSpec = str | Augmentation | Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None


class NoQuantizersWarning(UserWarning):
    """The student has no fake-quantizers: training it is plain KD, not QAT."""


class TeacherFrozenWarning(UserWarning):
    """The teacher's parameters required grad; the Distiller froze them."""


def _registered_losses() -> tuple[dict[str, LossComponent], dict[str, LossPreset]]:
    from ..plugins import get_loss_components, get_loss_presets

    return get_loss_components(), get_loss_presets()


def resolve_loss(spec: LossSpec) -> tuple[LossTerm, ...]:
    """A loss spec as terms: a preset or component name, ``"a+b"`` (e.g. ``"paper+feature"``: the
    terms of each part, weight 1 for a bare component), a :class:`LossPreset`, a :class:`LossTerm` or
    a sequence of them. Unknown names raise :class:`UnknownNameError` listing the registered ones."""
    comps, presets = _registered_losses()
    if isinstance(spec, LossPreset):
        terms: tuple[LossTerm, ...] = tuple(spec.terms)
    elif isinstance(spec, LossTerm):
        terms = (spec,)
    elif isinstance(spec, str):
        out: list[LossTerm] = []
        parts = [p.strip() for p in spec.split("+")]
        for part in parts:
            if not part:
                continue  # an unknown name elsewhere is the clearer message; an empty part is refused below
            if part in presets:
                out.extend(presets[part].terms)
            elif part in comps:
                out.append(LossTerm(component=part))
            else:
                raise UnknownNameError(
                    "loss", part, sorted(set(presets) | set(comps)),
                    "Presets and components can be combined with '+', e.g. 'paper+feature'; register new "
                    "ones with the daqakd_register_losses hook.",
                )
        if "" in parts:
            raise ConfigError(
                f"loss {spec!r} has an empty part; join names with a single '+' between them, e.g. 'paper' or "
                "'paper+feature' (known: " + ", ".join(sorted(set(presets) | set(comps))) + ")."
            )
        terms = tuple(out)
    elif isinstance(spec, Sequence) and all(isinstance(t, LossTerm) for t in spec):
        terms = tuple(t for t in spec if isinstance(t, LossTerm))
    else:
        raise ConfigError(
            f"loss must be a preset/component name, a LossPreset, or a list of LossTerm; got {type(spec).__name__}"
        )
    if not terms:
        raise ConfigError("the loss has no terms; pass loss='paper' (1*CE + 2*KD) or a list of LossTerm")
    seen: set[str] = set()
    for t in terms:
        comp = comps.get(t.component)
        if comp is None:
            raise UnknownNameError("loss component", t.component, list(comps))
        if t.key in seen:
            raise ConfigError(
                f"two loss terms are both keyed {t.key!r}; give one a label=, e.g. LossTerm(component="
                f"{t.component!r}, label='{t.component}_2')"
            )
        seen.add(t.key)
        if not (isinstance(t.weight, (int, float)) and math.isfinite(t.weight)):
            raise ConfigError(f"loss term {t.key!r} has weight {t.weight!r}; use a finite number")
        _check_params(comp, t)
    return terms


def _check_params(comp: LossComponent, term: LossTerm) -> None:
    try:
        sig = inspect.signature(comp.fn)
    except (TypeError, ValueError):  # builtins / C functions: cannot check, the step will tell
        return
    params = list(sig.parameters.values())[1:]  # first is ctx
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    allowed = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    bad = sorted(set(term.params) - allowed)
    if bad:
        raise ConfigError(
            f"loss term {term.key!r} got unknown parameter(s) {bad}; component {comp.name!r} accepts "
            f"{sorted(allowed) or 'no parameters'}."
        )


def _pieces(aug: Augmentation) -> list[Augmentation]:
    """A candidate and, for a composed one, every piece in it."""
    return [aug, *(q for p in aug.parts for q in _pieces(p))]


def _resolve_augment(spec: AugmentSpec) -> Augmentation | None:
    if spec is None:
        return None
    from ..augment import resolve_augmentation

    aug = resolve_augmentation(spec)
    return None if aug.name == "none" and aug.family == "none" else aug


def _freeze(model: nn.Module, what: str) -> None:
    req = [n for n, p in model.named_parameters() if p.requires_grad]
    if req:
        warnings.warn(
            f"the {what}'s parameters required grad ({len(req)} tensors, e.g. {req[0]!r}); daqakd froze them "
            "(requires_grad=False) so the teacher never trains. Freeze it yourself to silence this.",
            TeacherFrozenWarning,
            stacklevel=3,
        )
        for p in model.parameters():
            p.requires_grad_(False)
    model.eval()


def _feature_pairs(features: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    if features is None:
        return {}
    if isinstance(features, str):
        return {features: features}
    if isinstance(features, Mapping):
        return {str(k): str(v) for k, v in features.items()}
    return {str(k): str(k) for k in features}


def _find_module(model: nn.Module, name: str, what: str) -> nn.Module:
    mods = dict(model.named_modules())
    if name not in mods:
        avail = [n for n in mods if n][:12]
        raise ModelError(
            f"the {what} has no layer named {name!r}; some of its layers: {', '.join(avail)}. "
            "Use the names from model.named_modules()."
        )
    return mods[name]


class Distiller:
    """Knowledge distillation from a frozen teacher into a (quantized) student, one batch at a time.

    :param teacher: full-precision model; frozen here (``eval``, ``requires_grad=False``, forward under
        ``torch.inference_mode``). A teacher that requires grad is frozen with a warning.
    :param student: the model being trained (any backend's QAT model, or a float model: then a loud
        :class:`NoQuantizersWarning` says this is plain KD, not QAT).
    :param loss: preset or component name(s) (``"paper"``, ``"sqakd"``, ``"ce"``, ``"mixed"``,
        ``"dual_view"``, ``"paper+feature"``), a :class:`LossPreset`, or a list of :class:`LossTerm`.
    :param augment: augmentation applied to every training batch (a registered name, an
        :class:`Augmentation` or a callable ``fn(images, targets)``); ``None``/``"none"``: no DA. Teacher
        and student see the *same* augmented batch unless the recipe has a two-view term.
    :param num_classes: output width; inferred from the teacher when ``None``.
    :param features: named layers for feature/relation terms: ``{"student.layer": "teacher.layer"}``
        or a list of names present in both.
    :param teachers: extra frozen teachers for ``multi_teacher``.
    :param device: where batches (and the teachers and projections) go; default: the student's device.
    :param base_augment: a base transform run before ``augment`` on every batch, as a training recipe's
        crop and flip (``"crop-flip"``, ``"rrc-flip"``, ``"auto"``: chosen by the first batch's image size, or
        your own callable). Default ``None``: your loader's own transform is the base (most loops already
        crop and flip there); ``augment="none"`` then means the base alone.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        *,
        loss: LossSpec = "paper",
        augment: AugmentSpec = None,
        num_classes: int | None = None,
        features: Mapping[str, str] | Sequence[str] | None = None,
        teachers: Sequence[nn.Module] | None = None,
        device: str | torch.device | None = None,
        normalize: Normalizer | tuple[Sequence[float], Sequence[float]] | None = None,
        base_augment: AugmentSpec = None,
    ) -> None:
        if not isinstance(teacher, nn.Module) or not isinstance(student, nn.Module):
            raise ModelError(
                f"Distiller(teacher, student) needs two torch.nn.Module objects, got {type(teacher).__name__} "
                f"and {type(student).__name__}"
            )
        if teacher is student:
            raise ModelError("the teacher and the student are the same object; quantize a copy of the teacher")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2):
            raise ConfigError(f"num_classes must be an integer ≥ 2 (or None to infer it), got {num_classes!r}")
        self.teacher = teacher
        self.student = student
        self.teachers: tuple[nn.Module, ...] = tuple(teachers or ())
        for m in self.teachers:
            if m is student:
                raise ModelError("the student is also listed in teachers=[...]")
        self.terms = resolve_loss(loss)
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "name", "custom")
        comps, _ = _registered_losses()
        self._components = {t.component: comps[t.component] for t in self.terms}
        self.needs_teacher = any(self._components[t.component].needs_teacher for t in self.terms if t.weight != 0)
        self.two_views = any(self._components[t.component].two_views for t in self.terms)
        plural = sorted({t.component for t in self.terms if self._components[t.component].needs_teachers})
        if plural and not self.teachers:
            warnings.warn(f"loss term {', '.join(repr(c) for c in plural)} with a single teacher is plain KD; pass "
                          "teachers=[...]", stacklevel=2)
        self.augment = _resolve_augment(augment)
        self._base_pending: AugmentSpec = None
        if isinstance(base_augment, str) and base_augment.strip().lower() == "auto":
            self._base_pending = base_augment  # chosen by the first batch's image size
        elif base_augment is not None:
            self._with_base(base_augment, None)
        self.normalize = normalize if isinstance(normalize, Normalizer) else Normalizer(*(normalize or (None, None)))
        self._loader: DistillLoader | None = None  # set by loader(): the worker stages run there
        self._device_seed: int | None = None
        self._range_checks = 0  # the first batches' value range is checked once a torchvision candidate runs
        self.num_classes = num_classes
        if device is None:
            p = next(student.parameters(), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        _freeze(teacher, "teacher")
        for m in self.teachers:
            _freeze(m, "extra teacher")
        teacher.to(self.device)
        for m in self.teachers:
            m.to(self.device)
        student.to(self.device)
        self._check_quantizers()

        self.feature_pairs = _feature_pairs(features)
        self._s_feats: dict[str, torch.Tensor] = {}
        self._t_feats: dict[str, torch.Tensor] = {}
        self._capture = False
        self._handles: list[Any] = []
        for s_name, t_name in self.feature_pairs.items():
            self._handles.append(_find_module(student, s_name, "student").register_forward_hook(self._hook(self._s_feats, s_name)))
            self._handles.append(_find_module(teacher, t_name, "teacher").register_forward_hook(self._hook(self._t_feats, t_name)))
        if self.feature_pairs and not any(c.may_read_features() for c in self._components.values()):
            warnings.warn("features=... was given but no loss term uses them; add 'feature' to the loss", stacklevel=2)
        self.projections = nn.ModuleDict()
        self._prepared = not self.feature_pairs
        self._params_handed_out = False
        self.step = 0
        self._last: dict[str, torch.Tensor] = {}
        self._width_checked = False

    # ------------------------------------------------------------------------------------------
    def _check_quantizers(self) -> None:
        from ..backends import count_quantizers

        self.num_quantizers = count_quantizers(self.student)
        if self.num_quantizers == 0:
            warnings.warn(
                "the student has no fake-quantizers (no backend's quantizer modules were found): "
                "this is plain KD, not QAT. Build the student with daqakd_plugins.backends.quantize(model, "
                "backend, QuantConfig(...)) or your toolkit's quantized layers.",
                NoQuantizersWarning,
                stacklevel=3,
            )

    def _hook(self, store: dict[str, torch.Tensor], name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if self._capture:
                store[name] = as_tensor(out)

        return hook

    def remove_hooks(self) -> None:
        """Detach the feature hooks from the models (call when the Distiller is no longer used)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # ------------------------------------------------------------------------------------------
    def parameters(self) -> Iterator[nn.Parameter]:
        """Extra learnable parameters (the 1×1 hint projections) to add to the optimizer.

        With ``features=`` whose shapes differ, the projections are built from one batch: call
        :meth:`prepare` first (the ``loss`` of the first batch does it too, but then the optimizer
        would not know them).
        """
        if not self._prepared:
            raise ConfigError(
                "the feature projections' shapes are not known yet; call kd.prepare(x) with one batch "
                "before building the optimizer with kd.parameters()."
            )
        self._params_handed_out = True
        return self.projections.parameters()

    @torch.no_grad()
    def prepare(self, x: torch.Tensor) -> Distiller:
        """Run one probe batch through both models (eval mode, no grad) to build the projections
        that feature terms need. Models' modes are restored afterwards."""
        if self._prepared:
            return self
        x = x.to(self.device)
        was = self.student.training
        self.student.eval()
        self._capture = True
        try:
            with torch.inference_mode():
                self.teacher(x[:2])
            self.student(x[:2])
        finally:
            self._capture = False
            self.student.train(was)
        for s_name, t_name in self.feature_pairs.items():
            if s_name not in self._s_feats or t_name not in self._t_feats:
                raise ModelError(f"layer {s_name!r} (student) or {t_name!r} (teacher) did not run in forward()")
            fs, ft = self._s_feats[s_name], self._t_feats[t_name].clone()
            proj = make_projection(fs, ft)
            if proj is not None:
                self.projections[projection_key(s_name, t_name)] = proj.to(self.device)
        self._s_feats.clear()
        self._t_feats.clear()
        self._prepared = True
        return self

    def _with_base(self, spec: AugmentSpec, image_shape: Sequence[int] | None) -> None:
        from ..augment import resolve_augmentation, resolve_base, with_base

        base = resolve_base(spec, image_shape)  # type: ignore[arg-type]
        self._base_pending = None
        if base is not None:
            self.augment = with_base(base, self.augment or resolve_augmentation("none"))

    def loader(self, dataset: Dataset[Any], *, batch_size: int = 64, workers: int | None = None, seed: int = 0,
               shuffle: bool = True, drop_last: bool = False, shard: bool | None = None) -> DistillLoader:
        """A DataLoader for ``dataset`` (``(image, label)`` items) that runs this Distiller's augmentation
        where a data pipeline runs it: per-image pieces in ``workers`` processes, CutMix/MixUp in the
        collate function; :meth:`loss` then adds only the device pieces (kornia, callables), seeded per
        batch. It yields ``(images, labels)``: class indices ``[B]``, or label distributions ``[B, C]`` when
        the labels are soft (after CutMix/MixUp in the loader, or soft labels in the dataset)::

            loader = kd.loader(train_set, batch_size=64, workers=4, seed=0)
            for epoch in range(epochs):
                loader.set_epoch(epoch)            # the order and every draw depend on (seed, epoch)
                for x, y in loader:
                    loss = kd.loss(x, y)

        The batches and augmented images do not depend on ``workers``. Once a Distiller has made a loader,
        :meth:`loss` leaves the worker pieces to it (do not also feed it batches from another loader). A
        two-view loss (``dual_view``) needs two independent draws per sample, so with it the loader yields
        clean batches and :meth:`loss` augments in the step, as without a loader.

        Under torchrun (a ``torch.distributed`` process group) each rank reads its share of every epoch,
        as with ``DistributedSampler`` (``shard=None``: when a group is active; ``batch_size`` is per rank)."""
        from .. import distributed
        from ..streams import TrainLoader, resolve_workers

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"kd.loader(batch_size=...) must be an integer ≥ 1, got {batch_size!r}")
        d = distributed.current()
        sharded = d.active if shard is None else (shard and d.active)

        if self.num_classes is None or self._base_pending is not None:  # both need the first image
            first = dataset[0]
            image = torch.as_tensor(first[0] if isinstance(first, (tuple, list)) else first)
            if self.num_classes is None:  # the teacher's output width on it
                with torch.inference_mode():
                    x0 = self.normalize(image[None].float().to(self.device))
                    self.num_classes = int(as_tensor(self.teacher(x0)).shape[-1])
            if self._base_pending is not None:
                self._with_base(self._base_pending, tuple(image.shape))
        aug = None if (self.two_views and self.needs_teacher) else self.augment
        inner = TrainLoader(dataset, aug, num_classes=self.num_classes, batch_size=batch_size, seed=seed,
                            workers=resolve_workers(workers), drop_last=drop_last, shuffle=shuffle,
                            pin_memory=self.device.type == "cuda", rank=d.rank if sharded else 0,
                            world_size=d.world_size if sharded else 1)
        self._loader = DistillLoader(self, inner)
        return self._loader

    def state_dict(self) -> dict[str, Any]:
        """The Distiller's own learned state (projections) and step counter, for checkpoints."""
        return {"projections": self.projections.state_dict(), "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("projections") and not self._prepared:
            raise ConfigError("call kd.prepare(x) before kd.load_state_dict(...) so the projections exist")
        self.projections.load_state_dict(state.get("projections", {}))
        self.step = int(state.get("step", 0))

    @property
    def last_terms(self) -> dict[str, float]:
        """The weighted terms of the last :meth:`loss` call (and their ``total``), as floats."""
        return {k: float(v) for k, v in self._last.items()}

    # ------------------------------------------------------------------------------------------
    def _infer_classes(self, x: torch.Tensor, y: torch.Tensor) -> int:
        if y.dim() == 2:
            return int(y.shape[1])
        with torch.inference_mode():
            return int(as_tensor(self.teacher(x[:1])).shape[1])

    def _targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from ..data import one_hot

        if self.num_classes is None:
            self.num_classes = self._infer_classes(x, y)
        if y.dim() == 2:
            if y.shape[1] != self.num_classes:
                raise ModelError(f"targets have {y.shape[1]} columns but the model predicts {self.num_classes} classes")
            return y.to(torch.float32)
        if y.dim() != 1:
            raise ModelError(f"labels must be [batch] class indices or [batch, classes] distributions, got {tuple(y.shape)}")
        return one_hot(y, self.num_classes)

    def _check_widths(self, z_s: torch.Tensor, z_t: torch.Tensor | None) -> None:
        if z_s.dim() != 2:
            raise ModelError(f"the student returned shape {tuple(z_s.shape)}; it must return logits [batch, classes]")
        if z_t is not None and z_t.shape[1] != z_s.shape[1]:
            raise ModelError(
                f"the teacher outputs {z_t.shape[1]} classes but the student outputs {z_s.shape[1]}; give the "
                "student a classifier with the teacher's output width (e.g. quantize a copy of the teacher)."
            )
        if self.num_classes is not None and z_s.shape[1] != self.num_classes:
            raise ModelError(
                f"the student outputs {z_s.shape[1]} classes but num_classes={self.num_classes}; fix the "
                "student's classifier or num_classes."
            )
        self._width_checked = True

    def _teacher_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if self.teacher.training:
            self.teacher.eval()  # a user's model.train() on everything must not touch the teacher's BN
        with torch.inference_mode():
            z = as_tensor(self.teacher(x))
            extra = tuple(as_tensor(m(x)) for m in self.teachers)
        # Inference tensors cannot be saved for backward; a clone outside inference mode is a normal
        # tensor that still carries no gradient history.
        return z.clone(), tuple(e.clone() for e in extra)

    #: batches whose value range :meth:`loss` checks (a normalised dataset is normalised from its first batch)
    RANGE_CHECK_BATCHES = 4

    def _check_range(self, x: torch.Tensor, aug: Augmentation | None) -> None:
        """Warn once when images that look normalised (well outside ``[0, 1]``) meet a torchvision candidate:
        its colour and intensity ops assume ``[0, 1]`` and clip or saturate anything else, silently."""
        if self._range_checks >= self.RANGE_CHECK_BATCHES or aug is None or not x.is_floating_point():
            return
        tv = [a.name for a in _pieces(aug) if a.family == "torchvision"]
        if not tv:
            return
        self._range_checks += 1
        lo, hi = float(x.min()), float(x.max())
        if lo < -0.5 or hi > 1.5:
            self._range_checks = self.RANGE_CHECK_BATCHES  # once
            warnings.warn(
                f"kd.loss got images with values in [{lo:.2f}, {hi:.2f}], which look normalised, while the "
                f"augmentation {aug.name!r} uses torchvision ({', '.join(tv)}), whose ops expect images in [0, 1] "
                "and clip or saturate anything else. Take Normalize out of the dataset's transform and pass it "
                "to the Distiller instead: Distiller(..., normalize=(mean, std)) normalises after augmenting.",
                stacklevel=4,
            )

    def _views(self, x: torch.Tensor, y: torch.Tensor, augment: AugmentSpec | str, seed: int | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The student's and the teacher's views of the checked batch (augmented, normalised, on the device),
        the targets after augmentation and the hard labels when augmentation left them as they were."""
        if self._base_pending is not None:
            self._with_base(self._base_pending, tuple(x.shape[1:]))
        if isinstance(augment, str) and augment == "default":
            if self._loader is not None and self._loader.worker_stages:
                aug = self._loader.device_piece  # the loader ran the per-image and batch pieces
            else:
                aug = self.augment
        else:
            aug = _resolve_augment(augment)
        if seed is None and self._device_seed is not None:
            seed, self._device_seed = self._device_seed, None
        x, y = check_batch(x, y, where="Distiller.loss")
        self._check_range(x, self.augment if isinstance(augment, str) and augment == "default" else aug)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if not self._prepared:
            self.prepare(x)
            if len(self.projections) and not self._params_handed_out:
                warnings.warn(
                    "feature projections were created at the first kd.loss() call; add kd.parameters() to "
                    "the optimizer (call kd.prepare(x) before building it) or they will not learn.",
                    stacklevel=3,  # the caller of kd.loss
                )
        try:
            t = self._targets(x, y)
        except RuntimeError as exc:
            self._raise_input_mismatch(exc, x)
        with torch.no_grad(), (seeded(seed, self.device) if seed is not None else nullcontext()):
            if aug is None:
                xs, ts = x, t
            else:
                xs, ts = aug(x, t)
            if self.two_views and self.needs_teacher:
                xt, _ = (x, t) if aug is None else aug(x, t)  # an independent draw for the teacher
            else:
                xt = xs
            if self.normalize:  # after augmenting, which works on [0, 1] images
                xs_n = self.normalize(xs)
                xt = xs_n if xt is xs else self.normalize(xt)
                xs = xs_n
        labels = y if (ts is t and y.dim() == 1) else None
        return xs, xt, ts, labels

    def _forward(self, xs: torch.Tensor, xt: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Teacher (when a term needs it) and student forwards, with the feature maps the hooks captured."""
        self._capture = bool(self.feature_pairs)
        try:
            z_t: torch.Tensor | None = None
            extra: tuple[torch.Tensor, ...] = ()
            if self.needs_teacher:
                z_t, extra = self._teacher_forward(xt)
                t_feats = {k: v.clone() for k, v in self._t_feats.items()}
            else:
                t_feats = {}
            z_s = as_tensor(self.student(xs))
            s_feats = dict(self._s_feats)
        except RuntimeError as exc:
            self._raise_input_mismatch(exc, xs)
        finally:
            self._capture = False
            self._s_feats.clear()
            self._t_feats.clear()
        return z_s, z_t, extra, s_feats, t_feats

    def loss(self, x: torch.Tensor, y: torch.Tensor, *, augment: AugmentSpec | str = "default",
             seed: int | None = None) -> torch.Tensor:
        """The training loss of one batch (a scalar with grad for the student).

        ``x``: images ``[B, C, H, W]`` in ``[0, 1]`` (normalised here, after augmentation, when the
        Distiller has ``normalize``); ``y``: class indices ``[B]`` or label distributions ``[B, C]``.
        ``augment``: override the Distiller's augmentation for this call (``None`` = none). ``seed``: draw
        this batch's augmentation from a torch RNG seeded with it (the global RNG is left untouched);
        batches from :meth:`loader` carry their own seed.
        Raises :class:`NonFiniteError` naming the step and the term when the loss is NaN/inf.
        """
        xs, xt, ts, labels = self._views(x, y, augment, seed)
        z_s, z_t, extra, s_feats, t_feats = self._forward(xs, xt)
        if not self._width_checked:
            self._check_widths(z_s, z_t)

        ctx = LossContext(
            student_logits=z_s,
            teacher_logits=z_t,
            targets=ts,
            labels=labels,
            inputs=xs,
            teacher_inputs=xt if self.needs_teacher else None,
            student=self.student,
            teacher=self.teacher,
            step=self.step,
            terms=self.terms,
            student_features=s_feats,
            teacher_features=t_feats,
            extra_teacher_logits=extra,
            feature_pairs=self.feature_pairs,
            projections=self.projections,
            components=self._components,
        )
        from ..plugins import get_plugin_manager

        result = get_plugin_manager().hook.daqakd_compute_loss(ctx=ctx)
        if not isinstance(result, LossResult):
            raise PluginError(
                f"daqakd_compute_loss returned {type(result).__name__}; a wrapper must return the LossResult it "
                "received from `yield` (or a new LossResult)."
            )
        total = result.total
        self._last = {k: v.detach() for k, v in result.terms.items()}
        self._last["total"] = total.detach()
        if not bool(torch.isfinite(total.detach()).all()):
            self._raise_non_finite(result, z_s, z_t)
        if total.dim() != 0:
            raise PluginError(f"the loss has shape {tuple(total.shape)}; every term must be a scalar")
        self.step += 1
        return total

    def _raise_input_mismatch(self, exc: RuntimeError, x: torch.Tensor) -> NoReturn:
        """A forward pass failed. On the first step that is (nearly always) images the models were not
        built for: say so with the shapes; after a step has run, it is something else: re-raise."""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        placement = self._placement_problem(x)
        if placement:
            raise ModelError(f"Distiller.loss: {placement} ({first}).") from exc
        if self._width_checked or not any(w in first for w in ("shape", "size", "channels", "mat1", "dimension")):
            raise exc  # not an input-shape problem of the first batch: a real error, with its traceback
        raise ModelError(
            f"Distiller.loss: the models cannot run on images of shape {tuple(x.shape)} ({first}); pass images "
            "shaped like the teacher's training data (same channels and a size its layers accept)."
        ) from exc

    def _placement_problem(self, x: torch.Tensor) -> str:
        """Why a forward pass that just failed could not run, if it is where the models are or their float
        type: a model moved to another device after the Distiller was made, or one in float64/float16
        while the images are float32 (what daqakd's data and loaders give). Empty if neither."""
        for who, m in (("student", self.student), ("teacher", self.teacher)):
            for t in (*m.parameters(), *m.buffers()):
                if t.device != x.device:
                    return (f"the {who}'s weights are on {t.device} but the images are on {x.device} (the "
                            f"Distiller's device, {self.device}): the Distiller moves the models to its device when "
                            f"it is made, and a model moved afterwards no longer matches. Move it back with "
                            f"{who}.to({str(self.device)!r}), or make the Distiller with device= where the models live")
            for t in m.parameters():
                if t.is_floating_point() and t.dtype != x.dtype:
                    return (f"the {who}'s weights are {t.dtype} but the images are {x.dtype}: daqakd's data and "
                            f"loaders give float32 images in [0, 1] and the backends quantize float32 models; convert "
                            f"it with {who}.float() (or pass images of its dtype)")
        return ""

    def _raise_non_finite(self, result: LossResult, z_s: torch.Tensor, z_t: torch.Tensor | None) -> None:
        bad = [k for k, v in result.terms.items() if not bool(torch.isfinite(v.detach()).all())]
        where = []
        if not bool(torch.isfinite(z_s.detach()).all()):
            where.append("the student's logits are already non-finite (diverged weights)")
        if z_t is not None and not bool(torch.isfinite(z_t).all()):
            where.append("the teacher's logits are non-finite (check the teacher and the input scaling)")
        vals = ", ".join(f"{k}={float(result.terms[k].detach())}" for k in bad)
        raise NonFiniteError(
            f"non-finite loss at step {self.step}: term(s) {vals or 'total'}"
            + (f"; {'; '.join(where)}" if where else "")
            + ". Lower the learning rate, check the inputs for NaN, or drop that term."
        )

    def __repr__(self) -> str:
        terms = " + ".join(f"{t.weight:g}*{t.key}" for t in self.terms)
        aug = self.augment.name if self.augment else "none"
        return f"Distiller(loss={terms}, augment={aug}, quantizers={self.num_quantizers}, device={self.device})"


class DistillLoader:
    """What :meth:`Distiller.loader` returns: iterates ``(images, targets)`` after the worker stages and
    hands each batch's device-stage seed to the Distiller's next :meth:`~Distiller.loss` call."""

    def __init__(self, kd: Distiller, inner: TrainLoader) -> None:
        self.kd, self.inner = kd, inner
        self.device_piece = inner.device_piece
        self.worker_stages = not (kd.two_views and kd.needs_teacher)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order and draws the next pass uses (call it before every epoch)."""
        self.inner.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.inner.epoch

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in self.inner:
            self.kd._device_seed = self.inner.device_seed(b.number)
            # class indices while the labels are one-hot (the loss terms' hard-label path, as a plain loader
            # gives them); label distributions once a mixer (or the dataset) made them soft
            hard = bool((b.targets.amax(1) == 1.0).all())
            yield b.images, (b.targets.argmax(1) if hard else b.targets)


def check_cli_loss(loss: str, *, flag: str = "--loss") -> None:
    """A loss whose terms need named feature layers cannot run from the command line, which has no
    way to name them: refuse before any work instead of failing at the first training step."""
    comps, _ = _registered_losses()
    needs = sorted({t.component for t in resolve_loss(loss) if comps[t.component].reads_features(t.params)})
    if needs:
        raise ConfigError(
            f"{flag} {loss!r} includes {', '.join(needs)}, which needs named feature layers; the command line "
            "cannot name them. Drop it (e.g. --loss paper) or use the Python API: Distiller(teacher, student, "
            "loss=..., features={'student.layer': 'teacher.layer'})."
        )
