"""NNCF 2.x's knowledge distillation, as daqakd loss terms, for users migrating to NNCF 3.

NNCF ≤ 2.x had a ``{"algorithm": "knowledge_distillation", "type": "softmax" | "mse"}`` config entry
(deprecated in 2.19, removed in 3.0). Its loss, added by ``compression_ctrl.loss()`` to the task loss
the user computed (loss = task + KD), was, with ``scale`` and ``temperature`` both 1 by default:

* ``softmax``: ``scale · T² · C · mean_{b,c}(−softmax(z_T/T) · log_softmax(z_S/T))``, i.e. the batch mean
  of the soft-target cross-entropy (the KL divergence plus the teacher's entropy, a constant: same
  gradients as KL);
* ``mse``: ``scale · mean((z_T − z_S)²)`` over the logits.

The presets ``nncf2_kd_softmax`` and ``nncf2_kd_mse`` are 1·CE + that term, T = 1: what a
``knowledge_distillation`` config gave. One difference: NNCF 2.x ran the teacher in train mode
(BatchNorm on batch statistics); the Distiller runs it in eval mode under inference_mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daqakd_plugins.kit import ConfigError, ModelError

if TYPE_CHECKING:
    import torch

    from daqakd_plugins.kit import LossContext

__all__ = ["nncf2_softmax", "nncf2_mse"]


def _teacher(ctx: LossContext, name: str) -> torch.Tensor:
    if ctx.teacher_logits is None:
        raise ModelError(f"loss term {name!r} (NNCF 2.x knowledge distillation) needs a teacher; use a Distiller "
                         "with the float model as teacher.")
    return ctx.teacher_logits


def _positive(v: object, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ConfigError(f"{what} must be a positive number (NNCF 2.x's default is 1), got {v!r}")
    return float(v)


def nncf2_softmax(ctx: LossContext, temperature: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    """NNCF 2.x ``knowledge_distillation`` with ``type: softmax``: soft-target cross-entropy, T² · C · mean."""
    import torch.nn.functional as F  # noqa: N812

    t = _positive(temperature, "nncf2_softmax temperature")
    s = _positive(scale, "nncf2_softmax scale")
    z_s = ctx.student_logits
    z_t = _teacher(ctx, "nncf2_softmax").to(z_s.dtype)
    prod = F.log_softmax(z_s / t, dim=1) * F.softmax(z_t / t, dim=1)
    return s * -prod.mean() * (z_s.shape[1] * t * t)


def nncf2_mse(ctx: LossContext, scale: float = 1.0) -> torch.Tensor:
    """NNCF 2.x ``knowledge_distillation`` with ``type: mse``: mean squared error between the logits."""
    import torch.nn.functional as F  # noqa: N812

    s = _positive(scale, "nncf2_mse scale")
    z_s = ctx.student_logits
    return s * F.mse_loss(z_s, _teacher(ctx, "nncf2_mse").to(z_s.dtype))
