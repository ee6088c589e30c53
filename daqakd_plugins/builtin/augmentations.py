"""Built-in candidate augmentations, registered through the same hook as third-party candidates.

* The paper's 16 torchvision v2 candidates: ``none``, ``augmix``, ``autoaugment-{cifar10,imagenet,svhn}``,
  ``randomerasing``, ``randaugment``, ``trivialaugmentwide``, each also with ``+cutmix`` (torchvision's
  batch ``CutMix``, alpha 1, applied after the per-sample policy, labels become soft).
* ``mixup`` (torchvision ``MixUp``, alpha 1).
* A kornia set (``kornia-*``): whole-batch modules that draw random parameters per sample and run on the
  batch's device (the teacher's), so they add almost nothing to a GPU ranking.

Transforms are built on first use, so registering (``daqakd plugins``) never imports kornia.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch

from ..augment import MIX_DESCRIPTIONS, compose, mix_augmentation, per_sample
from ..contracts import Augmentation, ImageFn
from ..errors import DataError
from ..hookspecs import hookimpl

__all__ = ["NONE", "builtin_candidates", "mix_augmentation"]


def _identity(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, t


NONE = Augmentation(name="none", fn=_identity, description="no augmentation (the baseline)", family="none")

# Policies whose operation list contains torchvision's "Color" (saturation) op: on 1-channel images that
# op is the identity (torchvision matches PIL), so the policy is slightly milder there.
_COLOR_POLICIES = {"augmix", "autoaugment-cifar10", "autoaugment-imagenet", "autoaugment-svhn", "randaugment",
                   "trivialaugmentwide"}


def _check_channels(name: str, c: int) -> None:
    if c not in (1, 3):
        raise DataError(
            f"candidate {name!r} uses torchvision colour operations, which accept 1- or 3-channel images only; "
            f"these images have {c} channels. Rank the kornia-* candidates or a callable instead, or convert "
            "the images to 1 or 3 channels."
        )


class _LazyTorchvision:
    """A torchvision v2 per-sample policy, built on first call (so plugin loading stays cheap)."""

    def __init__(self, name: str, factory: Callable[[], Any]) -> None:
        self.name = name
        self.factory = factory
        self._aug: Augmentation | None = None
        self.__name__ = f"tv_{name}"

    def _built(self) -> Augmentation:
        if self._aug is None:
            self._aug = per_sample(self.factory(), self.name)
        return self._aug

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_channels(self.name, images.shape[1])
        return self._built().fn(images, targets)

    def sample(self, image: torch.Tensor) -> torch.Tensor:
        """One image ``[C, H, W]``: what a DataLoader worker runs (the same transform, drawn per image)."""
        _check_channels(self.name, image.shape[0])
        return cast(ImageFn, self._built().sample_fn)(image)  # per_sample always sets sample_fn

    def notes(self, image_shape: tuple[int, ...]) -> list[str]:
        if image_shape and image_shape[0] == 1 and self.name in _COLOR_POLICIES:
            return ["on 1-channel images torchvision's Color (saturation) op is the identity (as in PIL)"]
        return []


def _tv(name: str, factory: Callable[[], Any], description: str) -> Augmentation:
    fn = _LazyTorchvision(name, factory)
    return Augmentation(name=name, fn=fn, description=description, family="torchvision", notes=fn.notes,
                        stage="sample", sample_fn=fn.sample)


def _v2() -> Any:
    from torchvision.transforms import v2

    return v2


def _autoaugment(policy: str) -> Callable[[], Any]:
    def make() -> Any:
        v2 = _v2()
        return v2.AutoAugment(getattr(v2.AutoAugmentPolicy, policy))

    return make


# ---------------------------------------------------------------------------------------------------
# kornia: whole-batch modules with per-sample random parameters, on the batch's device
# ---------------------------------------------------------------------------------------------------
class _LazyKornia:
    """Builds the kornia module for the batch's (C, H, W) on first use and caches it per shape."""

    def __init__(self, name: str, build: Callable[[Any, int, int, int], Any], note: Callable[[int], str] | None = None,
                 clamp: bool = True) -> None:
        self.name = name
        self.build = build
        self.note = note
        self.clamp = clamp
        self._mods: dict[tuple[int, int, int], Any] = {}
        self.__name__ = f"kornia_{name}"

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, h, w = (int(s) for s in images.shape[1:])
        mod = self._mods.get((c, h, w))
        if mod is None:
            import kornia.augmentation as K

            mod = self._mods[(c, h, w)] = self.build(K, c, h, w)
        out = mod(images)
        if self.clamp:
            out = out.clamp(0.0, 1.0)
        return out.to(images.dtype), targets

    def notes(self, image_shape: tuple[int, ...]) -> list[str]:
        if self.note is None or not image_shape:
            return []
        msg = self.note(int(image_shape[0]))
        return [msg] if msg else []


def _flip_crop(K: Any, c: int, h: int, w: int) -> Any:
    return K.AugmentationSequential(K.RandomHorizontalFlip(p=0.5),
                                    K.RandomCrop((h, w), padding=max(1, h // 8), p=1.0))


def _crop(K: Any, c: int, h: int, w: int) -> Any:
    return K.RandomCrop((h, w), padding=max(1, h // 8), p=1.0)


def _affine(K: Any, c: int, h: int, w: int) -> Any:
    return K.RandomAffine(degrees=15.0, translate=(0.1, 0.1), scale=(0.9, 1.1), p=1.0)


def _perspective(K: Any, c: int, h: int, w: int) -> Any:
    return K.RandomPerspective(distortion_scale=0.3, p=0.5)


def _color(K: Any, c: int, h: int, w: int) -> Any:
    if c == 3:
        return K.ColorJiggle(0.4, 0.4, 0.4, 0.1, p=0.8)
    return K.ColorJiggle(0.4, 0.4, 0.0, 0.0, p=0.8)  # saturation/hue need RGB


def _color_note(c: int) -> str:
    return "" if c == 3 else f"{c}-channel images get brightness and contrast only (saturation and hue need RGB)"


def _erasing(K: Any, c: int, h: int, w: int) -> Any:
    return K.RandomErasing(p=0.5)


def _blur_noise(K: Any, c: int, h: int, w: int) -> Any:
    return K.AugmentationSequential(K.RandomGaussianBlur((3, 3), (0.1, 1.0), p=0.5),
                                    K.RandomGaussianNoise(mean=0.0, std=0.05, p=0.5))


def _elastic(K: Any, c: int, h: int, w: int) -> Any:
    return K.RandomElasticTransform(p=0.5)


_KORNIA: tuple[tuple[str, Callable[[Any, int, int, int], Any], str, Callable[[int], str] | None], ...] = (
    ("kornia-flip-crop", _flip_crop, "horizontal flip (p 0.5) + random crop with H/8 zero padding", None),
    ("kornia-crop", _crop, "random crop with H/8 zero padding (no flip)", None),
    ("kornia-affine", _affine, "random affine: ±15°, ±10 % translation, scale 0.9-1.1", None),
    ("kornia-perspective", _perspective, "random perspective, distortion 0.3 (p 0.5)", None),
    ("kornia-color", _color, "colour jitter: brightness/contrast/saturation 0.4, hue 0.1 (p 0.8)", _color_note),
    ("kornia-erasing", _erasing, "random erasing (p 0.5)", None),
    ("kornia-blur-noise", _blur_noise, "Gaussian blur (p 0.5) + Gaussian noise σ 0.05 (p 0.5), clamped to [0, 1]", None),
    ("kornia-elastic", _elastic, "elastic deformation (p 0.5)", None),
)


def builtin_candidates() -> list[Augmentation]:
    """Every built-in candidate, in a stable order."""
    v = _v2
    bases = [
        NONE,
        _tv("augmix", lambda: v().AugMix(), "torchvision v2 AugMix (severity 3, width 3, all ops)"),
        _tv("autoaugment-cifar10", _autoaugment("CIFAR10"), "torchvision v2 AutoAugment, CIFAR10 policy"),
        _tv("autoaugment-imagenet", _autoaugment("IMAGENET"), "torchvision v2 AutoAugment, IMAGENET policy"),
        _tv("autoaugment-svhn", _autoaugment("SVHN"), "torchvision v2 AutoAugment, SVHN policy"),
        _tv("randomerasing", lambda: v().RandomErasing(),
            "torchvision v2 RandomErasing (p 0.5, on tensors so it really acts)"),
        _tv("randaugment", lambda: v().RandAugment(), "torchvision v2 RandAugment (2 ops, magnitude 9)"),
        _tv("trivialaugmentwide", lambda: v().TrivialAugmentWide(), "torchvision v2 TrivialAugmentWide"),
    ]
    cutmix = mix_augmentation("cutmix")
    out = list(bases)
    for b in bases:
        out.append(compose(f"{b.name}+cutmix", [b, cutmix], family="torchvision",
                           description=f"{b.name}, then {MIX_DESCRIPTIONS['cutmix']}"))
    out.append(mix_augmentation("mixup"))
    for name, build, desc, note in _KORNIA:
        fn = _LazyKornia(name, build, note)
        out.append(Augmentation(name=name, fn=fn, description=f"kornia {desc}", family="kornia", notes=fn.notes))
    return out


@hookimpl
def daqakd_register_augmentations(register: Callable[[Augmentation], None]) -> None:
    for aug in builtin_candidates():
        register(aug)
