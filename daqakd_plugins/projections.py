"""Learned projections from a student feature to a teacher feature's shape (FitNets' regressors).

The :class:`~daqakd_plugins.distill.Distiller` owns them (it builds them from a probe batch in
``prepare`` and hands their parameters to the optimizer through ``parameters()``) and passes its store
to loss terms as ``LossContext.projections``, keyed by :func:`projection_key`. Feature loss terms, the
built-in ``feature`` or a plugin's, look a projection up there, or build one with
:func:`make_projection` when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModelError

__all__ = ["Projection", "make_projection", "projection_key"]


class Projection(nn.Module):
    """Learned map from a student feature to the teacher feature's shape.

    4-D features: 1×1 convolution on channels, then adaptive average pooling when the spatial size
    differs; 2-D features: a linear layer.
    """

    def __init__(self, s_shape: Sequence[int], t_shape: Sequence[int]) -> None:
        super().__init__()
        self.t_spatial = tuple(t_shape[2:])
        self.proj: nn.Module
        if len(s_shape) == 4:
            self.proj = nn.Conv2d(int(s_shape[1]), int(t_shape[1]), kernel_size=1, bias=False)
        else:
            self.proj = nn.Linear(int(s_shape[1]), int(t_shape[1]), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        if y.dim() == 4 and tuple(y.shape[2:]) != self.t_spatial:
            y = F.adaptive_avg_pool2d(y, (self.t_spatial[0], self.t_spatial[1]))
        return y


def projection_key(student_layer: str, teacher_layer: str) -> str:
    """A ModuleDict-safe key for the projection of one (student, teacher) layer pair."""
    return f"{student_layer}__to__{teacher_layer}".replace(".", "_")


def make_projection(s_feat: torch.Tensor, t_feat: torch.Tensor) -> nn.Module | None:
    """The projection a feature pair needs, or ``None`` when the shapes already match."""
    if s_feat.shape[1:] == t_feat.shape[1:]:
        return None
    if s_feat.dim() != t_feat.dim() or s_feat.dim() not in (2, 4):
        raise ModelError(
            f"cannot match a student feature of shape {tuple(s_feat.shape)} to a teacher feature of shape "
            f"{tuple(t_feat.shape)}; pick layers whose outputs are both [B, C, H, W] or both [B, D]."
        )
    if s_feat.dim() == 4 and any(s < t for s, t in zip(s_feat.shape[2:], t_feat.shape[2:])):
        raise ModelError(
            f"the student feature {tuple(s_feat.shape)} is spatially smaller than the teacher's "
            f"{tuple(t_feat.shape)}; pick an earlier student layer or a later teacher layer."
        )
    return Projection(tuple(s_feat.shape), tuple(t_feat.shape)).to(s_feat.device, s_feat.dtype)
