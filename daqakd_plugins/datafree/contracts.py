"""The contract of a generator plugin: what ``daqakd_register_generators`` registers.

A generator turns latent codes into image batches for data-free distillation (METRIC.md section 4):
``build(GeneratorRequest) -> nn.Module`` whose ``forward(z [B, latent_dim])`` returns images
``float [B, C, H, W]`` in ``[0, 1]``, the range the teacher's data has. Kept apart from the run code so
the plugin manager can import it without torch-heavy modules or an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["GeneratorRequest", "ImageGenerator"]


@dataclass(frozen=True, kw_only=True)
class GeneratorRequest:
    """What a generator is built for: the latent size, the data's image shape ``(C, H, W)`` and class
    count, and the plugin's own parameters (``--generator-option`` keys the core does not know are refused,
    so these are the documented ``width`` and friends, passed through unchanged)."""

    latent_dim: int
    image_shape: tuple[int, int, int]
    num_classes: int
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ImageGenerator:
    """A generator architecture selectable with ``--generator-option name=NAME``.

    ``build(request)`` returns a fresh, randomly initialised ``nn.Module`` mapping ``z [B, latent_dim]`` to
    images ``[B, *request.image_shape]`` in ``[0, 1]``; the core checks the shape and range on one batch
    before training and names the generator when they are wrong.

    ``defaults``: the generator options (``--generator-option`` keys) this generator starts from where the
    user set none, e.g. a bank of images optimised pixel by pixel wants a far larger ``g_lr`` than a network.
    The module may define ``prior_loss(images, teacher_logits) -> dict[str, Tensor]``: weighted terms the
    generator's step adds to its loss (on the images in ``[0, 1]``, before normalisation), reported by name."""

    name: str
    build: Callable[[GeneratorRequest], nn.Module]
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
