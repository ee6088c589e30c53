"""Built-in augmentation policy search spaces, registered through the same hook as third-party spaces.

``taw2`` / ``taw3``: 2 or 3 operations drawn from TrivialAugment-Wide's 14 (identity, shear x/y, translate
x/y, rotate, brightness, colour, contrast, sharpness, posterize, solarize, autocontrast, equalize), each with
a magnitude cap drawn from 7 buckets; per image, each operation applies with a magnitude drawn uniformly
below its cap (and a random sign where the operation has one). This is the space the paper's reference code
sketches (Jakur/SQAKD ``CIFAR/augment_search.py``: 2 TrivialAugment-style operations, a random magnitude cap
of 1-6 of 7 buckets); the operations here are written on torchvision's public v2 functional API.

Policy ``seed`` is drawn with NumPy's PCG64 seeded by ``seed`` alone, so ``search:taw2:83`` is the same
policy in every process and every version of this module that keeps :data:`OPS` and the draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from ..augment import per_sample
from ..contracts import Augmentation, SearchSpace
from ..hookspecs import hookimpl

__all__ = ["OPS", "BUCKETS", "draw_ops", "taw_policy"]

#: magnitude buckets per operation (the reference code's 7)
BUCKETS = 7


def _lin(hi: float) -> list[float]:
    return [hi * i / (BUCKETS - 1) for i in range(BUCKETS)]


#: TrivialAugment-Wide's operations (alphabetical, the draw's order): name -> (magnitudes per bucket, signed).
#: Translations are fractions of the image's side (TrivialAugment-Wide's 32 px at 32x32); solarize thresholds
#: are fractions of the maximum (1.0 leaves the image unchanged); posterize keeps 8 down to 2 bits.
OPS: dict[str, tuple[list[float], bool]] = {
    "AutoContrast": ([0.0], False),
    "Brightness": (_lin(0.99), True),
    "Color": (_lin(0.99), True),
    "Contrast": (_lin(0.99), True),
    "Equalize": ([0.0], False),
    "Identity": ([0.0], False),
    "Posterize": ([float(8 - round(i / ((BUCKETS - 1) / 6))) for i in range(BUCKETS)], False),
    "Rotate": (_lin(135.0), True),
    "Sharpness": (_lin(0.99), True),
    "ShearX": (_lin(0.99), True),
    "ShearY": (_lin(0.99), True),
    "Solarize": ([1.0 - i / (BUCKETS - 1) for i in range(BUCKETS)], False),
    "TranslateX": (_lin(1.0), True),
    "TranslateY": (_lin(1.0), True),
}
_NAMES = tuple(OPS)


def _apply(img: torch.Tensor, op: str, m: float) -> torch.Tensor:
    """One operation with magnitude ``m`` on a uint8 image ``[C, H, W]`` (torchvision v2 functional)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    near = InterpolationMode.NEAREST
    h, w = int(img.shape[-2]), int(img.shape[-1])
    if op in ("ShearX", "ShearY"):
        deg = math.degrees(math.atan(m))
        shear = [deg, 0.0] if op == "ShearX" else [0.0, deg]
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=near, center=[0, 0])
    if op in ("TranslateX", "TranslateY"):
        shift = [int(m * w), 0] if op == "TranslateX" else [0, int(m * h)]
        return F.affine(img, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=near)
    if op == "Rotate":
        return F.rotate(img, m, interpolation=near)
    if op == "Brightness":
        return F.adjust_brightness(img, 1.0 + m)
    if op == "Color":
        return F.adjust_saturation(img, 1.0 + m)  # the identity on 1-channel images (as PIL)
    if op == "Contrast":
        return F.adjust_contrast(img, 1.0 + m)
    if op == "Sharpness":
        return F.adjust_sharpness(img, 1.0 + m)
    if op == "Posterize":
        return F.posterize(img, int(m))
    if op == "Solarize":
        return F.solarize(img, threshold=m * 255.0)
    if op == "AutoContrast":
        return F.autocontrast(img)
    if op == "Equalize":
        return F.equalize(img)
    return img  # Identity


class _OpChain:
    """Operations ``(name, cap)`` in order on one uint8 image: each draws a bucket below its cap (and a sign)
    from torch's global RNG, which the ranking and the loaders seed per sample. Picklable (loader workers)."""

    def __init__(self, ops: tuple[tuple[str, int], ...]) -> None:
        self.ops = ops

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for op, cap in self.ops:
            mags, signed = OPS[op]
            m = mags[int(torch.randint(min(cap, len(mags)), ()))]
            if signed and bool(torch.randint(2, ())):
                m = -m
            img = _apply(img, op, m)
        return img


def draw_ops(seed: int, k: int) -> tuple[tuple[str, int], ...]:
    """Policy ``seed``'s ``k`` operations and their magnitude caps (1-6 of 7 buckets), from PCG64(seed)."""
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"a policy seed is an integer ≥ 0, got {seed!r}")
    gen = np.random.Generator(np.random.PCG64(seed))
    out = []
    for _ in range(k):
        op = _NAMES[int(gen.integers(0, len(_NAMES)))]
        cap = int(gen.integers(1, BUCKETS))
        out.append((op, cap))
    return tuple(out)


def _describe(ops: tuple[tuple[str, int], ...]) -> str:
    parts = []
    for op, cap in ops:
        mags, signed = OPS[op]
        if len(mags) == 1:
            parts.append(op)
            continue
        if cap == 1:
            parts.append(f"{op} (cap 0: no change)")
            continue
        top = mags[min(cap, len(mags)) - 1]
        unit = "°" if op == "Rotate" else ""
        if op == "Posterize":
            parts.append(f"Posterize ≥ {int(top)} bits")
        elif op == "Solarize":
            parts.append(f"Solarize threshold ≥ {top:.2f}")
        else:
            parts.append(f"{op} {'±' if signed else ''}≤ {top:.3g}{unit}")
    return " → ".join(parts)


def _channel_notes(ops: tuple[tuple[str, int], ...]) -> Callable[[tuple[int, ...]], list[str]]:
    def notes(shape: tuple[int, ...]) -> list[str]:
        if shape and shape[0] == 1 and any(op == "Color" for op, _ in ops):
            return ["on 1-channel images the Color (saturation) operation is the identity (as in PIL)"]
        return []

    return notes


def taw_policy(k: int) -> Callable[[int], Augmentation]:
    """The ``taw<k>`` space's ``policy(seed)``."""

    def policy(seed: int) -> Augmentation:
        ops = draw_ops(seed, k)
        aug = per_sample(_OpChain(ops), f"taw{k}-{seed}", description=_describe(ops), uint8=True, family="search")
        return replace(aug, notes=_channel_notes(ops))

    return policy


def _space(k: int) -> SearchSpace:
    size = (len(_NAMES) * (BUCKETS - 1)) ** k
    return SearchSpace(
        name=f"taw{k}", policy=taw_policy(k), size=size,
        description=f"{k} TrivialAugment-Wide operations in a row (14 operations), each with a magnitude cap of "
                    f"1-6 of {BUCKETS} buckets ({size:,} policies); per image a magnitude below the cap and a sign",
    )


@hookimpl
def daqakd_register_search_spaces(register: Callable[[SearchSpace], None]) -> None:
    register(_space(2))
    register(_space(3))
