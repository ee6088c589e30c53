"""The built-in generator, registered through ``daqakd_register_generators`` like any third-party one.

``dcgan``: the GDFQ/DCGAN-style generator used by data-free quantization work (Xu et al. 2020): a linear
layer maps ``z`` to a ``width*2 x H/4 x W/4`` map, two nearest-neighbour upsamplings with conv-BN-LeakyReLU,
a conv to the image channels and a sigmoid, so samples are images in ``[0, 1]`` like the real data.
Sizes that 4 does not divide are reached by a final bilinear resize.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..hookspecs import hookimpl
from .contracts import GeneratorRequest, ImageGenerator

__all__ = ["DCGANGenerator"]


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


@hookimpl
def daqakd_register_generators(register: Callable[[ImageGenerator], None]) -> None:
    register(ImageGenerator(name="dcgan", build=_build_dcgan,
                            description="GDFQ/DCGAN-style: linear -> 2x (upsample, conv-BN-LeakyReLU) -> conv -> "
                                        "sigmoid; option width (default 64)"))
