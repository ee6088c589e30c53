"""The built-in generators, registered through ``daqakd_register_generators`` like any third-party one.

``dcgan``: the GDFQ/DCGAN-style generator used by data-free quantization work (Xu et al. 2020): a linear
layer maps ``z`` to a ``width*2 x H/4 x W/4`` map, two nearest-neighbour upsamplings with conv-BN-LeakyReLU,
a conv to the image channels and a sigmoid, so samples are images in ``[0, 1]`` like the real data.
Sizes that 4 does not divide are reached by a final bilinear resize.

``bnbank``: no network: a bank of ``bank_size`` images optimised pixel by pixel (ZeroQ, Cai et al. 2020;
DeepInversion, Yin et al. 2020; IntraQ's class-conditional term), each assigned a class in turn. Its step
matches the teacher's BatchNorm statistics (the loop's ``bn_weight`` term), pulls each image towards its
class (``ce_weight`` · the teacher's cross-entropy) and keeps it smooth (``tv_weight`` · total variation).
By default it is produced once, during the warm-up (``warmup_steps`` 500 at ``g_lr`` 0.05), and then frozen
(``g_steps`` 0); ``g_steps`` ≥ 1 keeps refreshing the drawn images with the adversarial (hard-sample) term.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..hookspecs import hookimpl
from .contracts import GeneratorRequest, ImageGenerator

__all__ = ["DCGANGenerator", "ImageBank"]


class DCGANGenerator(nn.Module):
    """``z [B, latent_dim]`` → images ``[B, C, H, W]`` in ``[0, 1]`` (see the module docstring)."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape = (int(c), int(h), int(w))
        self.h0, self.w0 = max(1, math.ceil(h / 4)), max(1, math.ceil(w / 4))
        ch = 2 * width
        self.fc = nn.Linear(latent_dim, ch * self.h0 * self.w0)
        self.body = nn.Sequential(
            nn.BatchNorm2d(ch),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(ch, ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ch),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(ch, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, c, 3, 1, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], -1, self.h0, self.w0)
        x = self.body(x)
        _, h, w = self.image_shape
        if x.shape[-2:] != (h, w):
            x = nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


def _build_dcgan(req: GeneratorRequest) -> nn.Module:
    return DCGANGenerator(req.latent_dim, req.image_shape, width=int(req.params.get("width", 64)))


class ImageBank(nn.Module):
    """``bank_size`` images as free parameters (pixels through a sigmoid, so always in ``[0, 1]``), image ``i``
    assigned class ``i mod num_classes`` so every class has its share. ``forward(z)`` returns the images that
    ``z`` draws: ``z[:, 0]``, a standard normal, through its CDF to an index, uniform over the bank and the
    same for the same ``z`` (seeded runs and resume draw the same images)."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, bank_size: int = 512,
                 ce_weight: float = 1.0, tv_weight: float = 1.0) -> None:
        super().__init__()
        # mid-grey noise from the global RNG, which the run seeded: another --seed starts another bank
        self.pixels = nn.Parameter(torch.randn(bank_size, *image_shape) * 0.5)
        self.register_buffer("labels", torch.arange(bank_size) % num_classes)
        self.ce_weight, self.tv_weight = float(ce_weight), float(tv_weight)
        self._drawn: torch.Tensor | None = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = self.pixels.shape[0]
        idx = (torch.special.ndtr(z[:, 0].float()) * n).long().clamp_(0, n - 1).to(self.pixels.device)
        self._drawn = idx
        return torch.sigmoid(self.pixels[idx])

    def prior_loss(self, images: torch.Tensor, teacher_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """The class term (the teacher's cross-entropy to each drawn image's class) and the image prior (mean
        squared difference of neighbouring pixels), weighted; for the images of the last ``forward``."""
        assert self._drawn is not None, "prior_loss follows a forward"
        out: dict[str, torch.Tensor] = {}
        if self.ce_weight:
            labels = self.labels[self._drawn].to(teacher_logits.device)  # type: ignore[index]
            out["class_ce"] = self.ce_weight * nn.functional.cross_entropy(teacher_logits, labels)
        if self.tv_weight:
            tv = (images[..., 1:, :] - images[..., :-1, :]).pow(2).mean() + (images[..., 1:] - images[..., :-1]).pow(2).mean()
            out["tv"] = self.tv_weight * tv
        return out


def _build_bank(req: GeneratorRequest) -> nn.Module:
    p = req.params
    return ImageBank(req.image_shape, req.num_classes, bank_size=int(p.get("bank_size", 512)),
                     ce_weight=float(p.get("ce_weight", 1.0)), tv_weight=float(p.get("tv_weight", 1.0)))


@hookimpl
def daqakd_register_generators(register: Callable[[ImageGenerator], None]) -> None:
    register(ImageGenerator(name="dcgan", build=_build_dcgan,
                            description="GDFQ/DCGAN-style: linear -> 2x (upsample, conv-BN-LeakyReLU) -> conv -> "
                                        "sigmoid; option width (default 64)"))
    register(ImageGenerator(name="bnbank", build=_build_bank, defaults={"g_lr": 0.05, "warmup_steps": 500, "g_steps": 0},
                            description="ZeroQ/DeepInversion-style: a bank of bank_size images optimised directly "
                                        "(BN statistics + ce_weight * class CE + tv_weight * total variation), "
                                        "produced once in the warm-up (g_steps 0) or refreshed (g_steps >= 1)"))
