"""Turning names, torchvision transforms and plain callables into batch :class:`Augmentation` objects.

Ranking (and later distillation) apply a candidate to a *batch* ``(images [B,C,H,W] float in [0,1],
targets [B,K] label distributions)``. Most published policies (torchvision v2 AutoAugment, RandAugment,
AugMix, ...) are written for one image at a time and draw their random operation once per call, so
calling them on a batch would give every image the *same* operation. :func:`per_sample` loops over the
batch so each image gets its own draw, which is what a data loader with per-item transforms does and
what the paper ranked.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, cast

import torch

from .contracts import Augmentation, ImageFn
from .errors import ConfigError, DataError, PluginError, UnknownNameError

__all__ = [
    "per_sample",
    "split_stages",
    "batch_transform",
    "compose",
    "resolve_augmentation",
    "resolve_candidates",
    "candidate_groups",
    "candidate_notes",
    "mix_augmentation",
    "PAPER_CANDIDATES",
    "MIX_SUFFIXES",
    "MIX_DESCRIPTIONS",
    "BASE_AUGMENTS",
    "resolve_base",
    "with_base",
    "SEARCH_PREFIX",
    "parse_search_name",
    "search_policy",
]

#: The 16 torchvision v2 candidates the paper ranked (each policy with and without CutMix).
PAPER_BASES: tuple[str, ...] = (
    "none",
    "augmix",
    "autoaugment-cifar10",
    "autoaugment-imagenet",
    "autoaugment-svhn",
    "randomerasing",
    "randaugment",
    "trivialaugmentwide",
)
PAPER_CANDIDATES: tuple[str, ...] = PAPER_BASES + tuple(f"{b}+cutmix" for b in PAPER_BASES)

#: Batch-level label-mixing steps that may be appended to any candidate name with ``+``.
MIX_SUFFIXES: tuple[str, ...] = ("cutmix", "mixup")
MIX_DESCRIPTIONS: dict[str, str] = {
    "cutmix": "torchvision v2 CutMix (alpha 1): paste a box from the neighbouring image, mix labels by area",
    "mixup": "torchvision v2 MixUp (alpha 1): blend with the neighbouring image, mix labels alike",
}


#: The base transforms every candidate (and ``none``) is composed after (``--base-augment``).
BASE_AUGMENTS: dict[str, str] = {
    "auto": "crop-flip for images of 16-64 pixels, rrc-flip above, none below (e.g. 8x8 digits)",
    "crop-flip": "random crop with zero padding of 1/8 of the size (4 px at 32x32) + horizontal flip: the CIFAR recipe "
                 "of the paper's reference code, whose 'none' is exactly this",
    "rrc-flip": "random-resized crop (scale 0.08-1, back to the image size) + horizontal flip: the ImageNet recipe",
    "none": "no base transform: 'none' is the identity (daqakd before base transforms; right where your own "
            "Dataset transform already crops and flips)",
}


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)


def per_sample(
    transform: Callable[[torch.Tensor], torch.Tensor],
    name: str,
    *,
    description: str = "",
    uint8: bool = False,
    family: str = "torchvision",
    single_thread: bool = True,
) -> Augmentation:
    """Wrap a one-image transform (e.g. a torchvision v2 transform) as a batch candidate.

    Each image of the batch is transformed by its own call, so random parameters are drawn per sample
    from torch's global RNG (which the ranking seeds). Images are float ``[0, 1]``; torchvision v2
    policies accept float tensors directly (checked for every built-in policy). Pass ``uint8=True`` for
    a transform that only works on ``uint8`` images: the batch is converted to ``uint8`` (rounding to
    1/255) and back to the input dtype afterwards. Targets pass through unchanged.

    ``single_thread`` runs the loop with one intra-op thread: one small image gains nothing from
    parallel kernels, and on a busy machine OpenMP's thread hand-off made torchvision's per-image ops
    (e.g. AutoAugment's Sharpness) up to 100× slower in our measurements.
    """
    if not callable(transform):
        raise ConfigError(f"per_sample({name!r}) needs a callable transform, got {type(transform).__name__}")

    def fn(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _to_uint8(images) if uint8 else images
        threads = torch.get_num_threads()
        if single_thread and threads > 1 and x.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            outs = [transform(x[i]) for i in range(x.shape[0])]
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        if not outs:
            return images, targets
        try:
            out = torch.stack([torch.as_tensor(o) for o in outs])
        except RuntimeError as exc:
            shapes = sorted({tuple(o.shape) for o in outs})[:3]
            raise DataError(
                f"augmentation {name!r} returned images of different shapes {shapes} for inputs of shape "
                f"{tuple(x.shape[1:])}; a candidate must keep the image size (add a Resize/CenterCrop back "
                "to the input size inside the transform)."
            ) from exc
        if uint8:
            out = out.to(images.dtype).div_(255.0)
        return out, targets

    fn.__name__ = f"per_sample_{name}"
    return Augmentation(name=name, fn=fn, description=description, family=family, stage="sample",
                        sample_fn=_OneImage(transform, name, uint8))


class _OneImage:
    """``per_sample``'s transform on one image ``[C, H, W]`` float in ``[0, 1]`` (what a DataLoader worker
    runs): uint8 round trip when asked, the image size kept."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], name: str, uint8: bool) -> None:
        self.transform, self.name, self.uint8 = transform, name, uint8

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = _to_uint8(image) if self.uint8 else image
        out = torch.as_tensor(self.transform(x))
        if out.shape != x.shape:
            raise DataError(
                f"augmentation {self.name!r} returned an image of shape {tuple(out.shape)} for one of shape "
                f"{tuple(x.shape)}; a candidate must keep the image size (add a Resize/CenterCrop back to the "
                "input size inside the transform)."
            )
        return out.to(image.dtype).div_(255.0) if self.uint8 else out


def batch_transform(
    transform: Callable[[torch.Tensor], torch.Tensor],
    name: str,
    *,
    description: str = "",
    family: str = "kornia",
    clamp: bool = True,
) -> Augmentation:
    """Wrap a transform that already draws per-sample random parameters on a whole batch (kornia
    augmentation modules do) and runs on the batch's device. ``clamp`` keeps outputs in ``[0, 1]``."""

    def fn(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = transform(images)
        if clamp:
            out = out.clamp(0.0, 1.0)
        return out.to(images.dtype), targets

    fn.__name__ = f"batch_{name}"
    return Augmentation(name=name, fn=fn, description=description, family=family)


def compose(name: str, parts: Sequence[Augmentation], *, description: str = "", family: str | None = None) -> Augmentation:
    """Apply ``parts`` in order (e.g. a per-sample policy, then batch CutMix)."""
    parts = tuple(parts)
    if not parts:
        raise ConfigError(f"compose({name!r}) needs at least one augmentation")

    def fn(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for p in parts:
            images, targets = p(images, targets)
        return images, targets

    fn.__name__ = f"compose_{name.replace('+', '_')}"
    fam = family or next((p.family for p in parts if p.family != "none"), parts[0].family)
    flat = tuple(q for p in parts for q in (p.parts or (p,)))
    return Augmentation(
        name=name,
        fn=fn,
        description=description or " then ".join(p.name for p in parts),
        family=fam,
        mixes_labels=any(p.mixes_labels for p in parts),
        notes=lambda shape: [n for p in parts for n in candidate_notes(p, shape)],
        parts=flat,
    )


def split_stages(aug: Augmentation | None) -> tuple[tuple[Augmentation, ...], tuple[Augmentation, ...], Augmentation | None]:
    """Where each piece of ``aug`` runs in a data pipeline: ``(sample, batch, device)``.

    The leading per-image pieces (``stage="sample"``) run in the DataLoader's workers, the batch pieces
    that follow them (``stage="batch"``: CutMix, MixUp) in its collate function, and everything from the
    first other piece on (kornia, user callables, and any piece after them, to keep the order) on the
    batch where the models run. ``none`` pieces are dropped. The order of the pieces is never changed."""
    if aug is None:
        return (), (), None
    pieces = [p for p in (aug.parts or (aug,)) if p.family != "none"]
    i = 0
    while i < len(pieces) and pieces[i].stage == "sample":
        i += 1
    j = i
    while j < len(pieces) and pieces[j].stage == "batch":
        j += 1
    rest = pieces[j:]
    device: Augmentation | None
    if not rest:
        device = None
    elif len(rest) == 1:
        device = rest[0]
    else:
        device = compose("+".join(p.name for p in rest), rest)
    return tuple(pieces[:i]), tuple(pieces[i:j]), device


def candidate_notes(aug: Augmentation, image_shape: tuple[int, ...]) -> list[str]:
    """What a candidate cannot fully do on images of ``image_shape`` = (C, H, W), e.g. a colour op that
    is the identity on 1-channel images: its :attr:`Augmentation.notes` (none when it has no ``notes``).
    The ranking copies the notes into the report."""
    return list(aug.notes(tuple(image_shape))) if aug.notes is not None else []


class _BatchMix:
    """torchvision's batch CutMix/MixUp (alpha 1) on label distributions; pairs each image with its
    neighbour in the batch (the ranking shuffles samples first, as a loader would). torchvision is
    imported on first use."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._t: Any = None
        self.__name__ = kind

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._t is None:
            from torchvision.transforms import v2

            self._t = v2.CutMix(alpha=1.0) if self.kind == "cutmix" else v2.MixUp(alpha=1.0)
        if images.shape[0] < 2:
            return images, targets  # nothing to mix with
        x, t = self._t(images, targets.float())
        return x, t.to(targets.dtype)


def mix_augmentation(kind: str) -> Augmentation:
    """The batch-mixing step ``cutmix`` or ``mixup`` on its own (what ``<name>+cutmix`` appends)."""
    if kind not in MIX_DESCRIPTIONS:
        raise ConfigError(f"unknown batch mix {kind!r}; use one of {list(MIX_DESCRIPTIONS)}")
    return Augmentation(name=kind, fn=_BatchMix(kind), description=MIX_DESCRIPTIONS[kind], family="torchvision",
                        mixes_labels=True, stage="batch")


def candidate_groups() -> dict[str, tuple[str, ...]]:
    """Names that expand to several candidates on the command line and in ``candidates=``:
    ``paper`` (the paper's 16 torchvision candidates), ``kornia`` (every ``kornia-*`` candidate),
    ``torchvision`` and ``all`` (every registered candidate)."""
    from .plugins import get_augmentations

    regs = get_augmentations()
    return {
        "paper": PAPER_CANDIDATES,
        "kornia": tuple(n for n in regs if regs[n].family == "kornia"),
        "torchvision": tuple(n for n in regs if regs[n].family == "torchvision"),
        "all": tuple(regs),
    }


def resolve_augmentation(spec: str | Augmentation | Callable[..., Any]) -> Augmentation:
    """A registered name, an :class:`Augmentation`, an image-only callable ``fn(images) -> images`` (e.g. a
    torchvision v2 transform instance or ``lambda x: x.flip(-1)``; one call per batch, targets unchanged)
    or a callable ``fn(images, targets) -> (images, targets)`` as an :class:`Augmentation`. Which of the
    two a callable is comes from its signature (:meth:`Augmentation.takes_targets`); one that cannot be
    told apart raises :class:`~daqakd_plugins.errors.DataError`.

    A name ``A+B`` that is not registered itself is composed from registered parts or the batch mixes
    ``cutmix``/``mixup`` (e.g. ``kornia-affine+cutmix``). Unknown names raise
    :class:`~daqakd_plugins.errors.UnknownNameError` listing the registered ones.
    """
    from .plugins import get_augmentations

    if isinstance(spec, Augmentation):
        return spec
    if isinstance(spec, str):
        regs = get_augmentations()
        name = spec.strip()
        if name in regs:
            return regs[name]
        low = name.lower()
        if low in regs:
            return regs[low]
        if low.startswith(SEARCH_PREFIX) and "+" not in low:
            return search_policy(low)
        if "+" in low:
            parts = [p.strip() for p in low.split("+")]
            resolved: list[Augmentation] = []
            for p in parts:
                if p in regs:
                    resolved.append(regs[p])
                elif p in MIX_SUFFIXES:
                    resolved.append(mix_augmentation(p))
                elif p.startswith(SEARCH_PREFIX):
                    resolved.append(search_policy(p))
                else:
                    resolved = []
                    break
            if resolved:
                return compose(low, resolved)
        raise UnknownNameError(
            "augmentation", name, list(regs),
            "Append +cutmix or +mixup to any of them, pass a group (paper, kornia, torchvision, all), a searched "
            "policy search:<space>:<seed> (daqakd search), a callable fn(images) -> images or "
            "fn(images, targets) -> (images, targets), or register one with the daqakd_register_augmentations hook.",
        )
    if callable(spec):
        return _from_callable(spec)
    raise ConfigError(
        f"cannot use {type(spec).__name__} as an augmentation; pass a registered name, an Augmentation, "
        "an image-only callable fn(images) -> images or a callable fn(images, targets) -> (images, targets)."
    )


#: names of policies drawn from a search space: ``search:<space>:<seed>`` or ``search:<space>:<s1>-<s2>-...``
SEARCH_PREFIX = "search:"


def parse_search_name(name: str) -> tuple[str, tuple[int, ...] | None]:
    """``"search:taw2:83"`` → ``("taw2", (83,))``; ``"search:taw2:83-12-7"`` → ``("taw2", (83, 12, 7))`` (a
    random choice among the three, per image); ``"search:taw2"`` → ``("taw2", None)`` (the space itself, which
    ``--augment`` searches). Anything else raises :class:`ConfigError` naming the form."""
    low = name.strip().lower()
    form = ("a searched policy is named search:<space>:<seed> (e.g. search:taw2:83), a combination of several "
            "search:<space>:<seed>-<seed>-... (e.g. search:taw2:83-12-7), and a space to search search:<space>")
    if not low.startswith(SEARCH_PREFIX):
        raise ConfigError(f"{name!r} is not a search name; {form}.")
    rest = low[len(SEARCH_PREFIX):].split(":")
    if len(rest) == 1 and rest[0]:
        return rest[0], None
    if len(rest) != 2 or not rest[0] or not rest[1]:
        raise ConfigError(f"cannot read {name!r}; {form}.")
    try:
        seeds = tuple(int(v) for v in rest[1].split("-"))
    except ValueError:
        raise ConfigError(f"cannot read the seeds of {name!r}: {rest[1]!r}; {form}.") from None
    if any(v < 0 for v in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"the seeds of {name!r} must be distinct integers ≥ 0; {form}.")
    return rest[0], seeds


def _space(name: str) -> Any:
    from .plugins import get_search_spaces

    spaces = get_search_spaces()
    if name not in spaces:
        raise UnknownNameError("search space", name, list(spaces),
                               "Register one with the daqakd_register_search_spaces hook.")
    return spaces[name]


def search_policy(name: str) -> Augmentation:
    """The policy a name ``search:<space>:<seed>`` (or a ``-``-joined list of seeds: a random choice among them,
    per image) stands for, re-created from the name alone: the space's ``policy(seed)``, renamed."""
    space_name, seeds = parse_search_name(name)
    if seeds is None:
        raise ConfigError(
            f"{name!r} names a search space, not a policy: run `daqakd search --space {space_name}` (or give "
            f"--augment {name} to distill/run, which searches first), or name one policy, e.g. "
            f"search:{space_name}:0.")
    space = _space(space_name)
    canonical = f"{SEARCH_PREFIX}{space_name}:{'-'.join(str(v) for v in seeds)}"
    policies = [space.policy(v) for v in seeds]
    for v, p in zip(seeds, policies):
        if not isinstance(p, Augmentation):
            raise PluginError(f"search space {space_name!r} returned {type(p).__name__} for seed {v}; "
                              "SearchSpace.policy(seed) must return an Augmentation.")
    if len(policies) == 1:
        return replace(policies[0], name=canonical)
    desc = "one of, per image: " + " | ".join(f"[{p.description or p.name}]" for p in policies)
    if all(p.stage == "sample" and p.sample_fn is not None for p in policies):
        choice = _SampleChoice(tuple(cast(ImageFn, p.sample_fn) for p in policies))
        aug = per_sample(choice, canonical, description=desc, family="search")
    else:
        aug = Augmentation(name=canonical, fn=_BatchChoice(tuple(policies)), description=desc, family="search")
    return replace(aug, notes=lambda shape: list(dict.fromkeys(n for p in policies for n in candidate_notes(p, shape))))


class _SampleChoice:
    """One of several per-image transforms, chosen uniformly per image from torch's global RNG (as
    ``v2.RandomChoice``); picklable for the loader's workers."""

    def __init__(self, fns: tuple[ImageFn, ...]) -> None:
        self.fns = fns

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.fns[int(torch.randint(len(self.fns), ()))](image)


class _BatchChoice:
    """One of several batch augmentations per image: each image's choice drawn from torch's global RNG, each
    policy run on the images that chose it."""

    def __init__(self, policies: tuple[Augmentation, ...]) -> None:
        self.policies = policies

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(len(self.policies), (images.shape[0],), device=images.device)
        x, t = images.clone(), targets.clone()
        for j, p in enumerate(self.policies):
            sel = pick == j
            if bool(sel.any()):
                x[sel], t[sel] = p(images[sel], targets[sel])
        return x, t


def _from_callable(fn: Callable[..., Any]) -> Augmentation:
    """A user callable as a candidate, classified by its signature alone (:meth:`Augmentation.takes_targets`):
    one required positional parameter → image-only ``fn(images)`` (targets pass through unchanged), two →
    ``fn(images, targets) -> (images, targets)``. It is never called to find out."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    takes_targets = Augmentation.takes_targets(fn)
    if takes_targets is None:
        try:
            sig = str(inspect.signature(fn.forward if isinstance(fn, torch.nn.Module) else fn))
        except (TypeError, ValueError):
            sig = "(signature unavailable)"
        raise DataError(
            f"cannot tell how to call augmentation {name!r} {sig}: daqakd calls a candidate as fn(images) -> images "
            "when it has exactly one required positional parameter (targets pass through unchanged), or as "
            "fn(images, targets) -> (images, targets) when it has exactly two. Wrap it, e.g. "
            "lambda images: f(images) or lambda images, targets: f(images, targets), or pass "
            "Augmentation(name=..., fn=f, image_only=True or False)."
        )
    if takes_targets:
        return Augmentation(name=name, fn=fn, description=f"user callable {name}", family="user", image_only=False)
    return Augmentation(name=name, fn=fn, description=f"user callable {name} (image-only; targets unchanged)",
                        family="user", image_only=True)


def resolve_candidates(candidates: str | Augmentation | Callable[..., Any] | Iterable[Any] | None) -> list[Augmentation]:
    """Expand ``None`` (the paper's 16), group names and comma-separated strings into distinct
    candidates, in the given order. Duplicate names are an error (their scores would be ambiguous)."""
    if candidates is None:
        items: list[Any] = list(PAPER_CANDIDATES)
    elif isinstance(candidates, str):
        items = [c for c in (s.strip() for s in candidates.split(",")) if c]
    elif isinstance(candidates, Augmentation) or callable(candidates):
        items = [candidates]
    else:
        items = list(candidates)
    groups: dict[str, tuple[str, ...]] | None = None
    out: list[tuple[Augmentation, bool]] = []  # (candidate, came from a name)
    for it in items:
        if isinstance(it, str) and it.strip().lower() in ("paper", "kornia", "torchvision", "all"):
            from .plugins import get_augmentations

            if it.strip().lower() not in get_augmentations():
                groups = groups or candidate_groups()
                out.extend((resolve_augmentation(n), True) for n in groups[it.strip().lower()])
                continue
        out.append((resolve_augmentation(it), isinstance(it, str)))
    if not out:
        raise ConfigError("no candidates to rank; pass names such as 'none,randaugment' or leave candidates=None")
    first: dict[str, tuple[Augmentation, bool]] = {}
    uniq: list[Augmentation] = []
    for aug, named in out:
        prev = first.get(aug.name)
        if prev is None:
            first[aug.name] = (aug, named)
            uniq.append(aug)
        elif not (prev[0] is aug or (prev[1] and named)):
            raise ConfigError(
                f"two different candidates are both named {aug.name!r}; give each callable a distinct "
                "__name__ or wrap it in Augmentation(name=...)."
            )
    return uniq


def _auto_base(image_shape: Sequence[int]) -> str:
    side = min(int(image_shape[-1]), int(image_shape[-2]))
    return "none" if side < 16 else "crop-flip" if side <= 64 else "rrc-flip"


class _BaseTransform:
    """A base transform on one image ``[C, H, W]`` whose sizes come from the image itself, so one object
    serves every image size: ``crop-flip`` pads by 1/8 of the smaller side (4 px at 32x32, zeros, as the
    paper's reference code) and crops back; ``rrc-flip`` is torchvision's random-resized crop back to the
    image's size. Both then flip horizontally with probability 1/2."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._crops: dict[tuple[int, int], Any] = {}  # one torchvision crop per image size, made once

    def _crop(self, h: int, w: int) -> Any:
        crop = self._crops.get((h, w))
        if crop is None:
            from torchvision.transforms import v2

            crop = self._crops[(h, w)] = (v2.RandomCrop((h, w), padding=max(1, min(h, w) // 8))
                                          if self.kind == "crop-flip" else v2.RandomResizedCrop((h, w), antialias=True))
        return crop

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        out = self._crop(int(image.shape[-2]), int(image.shape[-1]))(image)
        return out.flip(-1) if bool(torch.rand(()) < 0.5) else out


def resolve_base(spec: str | Augmentation | Callable[..., Any] | None,
                 image_shape: Sequence[int] | None = None) -> Augmentation | None:
    """The base transform: a name of :data:`BASE_AUGMENTS` (``auto`` chooses by ``image_shape``, ``(C, H, W)``),
    ``None``/``"none"`` for no base, or the user's own augmentation or callable (:func:`resolve_augmentation`).
    The built-ins are per-image (they run in the loader's workers) and fit any image size."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return resolve_augmentation(spec)
    name = spec.strip().lower()
    if name not in BASE_AUGMENTS:
        raise ConfigError(f"unknown base augmentation {spec!r}; use one of {', '.join(BASE_AUGMENTS)} "
                          "(--base-augment), or pass your own callable in the API.")
    if name == "auto":
        if image_shape is None:
            raise ConfigError("base augmentation 'auto' chooses by image size; pass the image shape, or name the "
                              "base ('crop-flip', 'rrc-flip', 'none').")
        name = _auto_base(image_shape)
    if name == "none":
        return None
    return per_sample(_BaseTransform(name), name, description=BASE_AUGMENTS[name], family="base")


def with_base(base: Augmentation | None, candidate: Augmentation) -> Augmentation:
    """``candidate`` run after ``base`` (the candidate keeps its name; its description says
    ``base ∘ candidate``). No base: the candidate itself."""
    if base is None:
        return candidate
    parts = [base] if candidate.family == "none" else [base, candidate]
    return compose(candidate.name, parts, description=f"{base.name} ∘ {candidate.name}",
                   family=candidate.family if candidate.family != "none" else "base")
