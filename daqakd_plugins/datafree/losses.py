"""The generator's objective (METRIC.md section 4): adversarial divergence, BatchNorm-statistics matching
and class balance.

The generator minimises ``-adv_weight * KL(p_T || p_S) + bn_weight * L_BN + balance_weight * (-H(p̄_T))``:
it seeks samples where the quantized student still disagrees with the teacher, while staying on the
teacher's data manifold (every BN layer sees the statistics it saw in training) and covering every class
(the batch-mean teacher prediction ``p̄_T`` has high entropy).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError

__all__ = ["BNStatsLoss", "bn_stats_distance", "kl_teacher_student", "class_balance_loss", "GeneratorTerms"]


def bn_stats_distance(mean: torch.Tensor, var: torch.Tensor, running_mean: torch.Tensor,
                      running_var: torch.Tensor) -> torch.Tensor:
    """``||mean - running_mean||_2 + ||var - running_var||_2`` for one BN layer (DeepInversion's form)."""
    return torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)


class BNStatsLoss:
    """Forward pre-hooks on every BatchNorm layer of ``model`` recording how far each layer's input batch
    statistics are from the layer's running statistics; :attr:`loss` is the sum over layers.

    The variance is the unbiased one, because that is what BatchNorm accumulates into ``running_var``:
    a batch whose statistics *are* the running statistics then scores exactly zero. Use as a context
    manager (or call :meth:`remove`): the hooks only record while :attr:`active` is true, so the
    teacher's other forwards (the student step, evaluation) cost nothing.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not self.layers:
            raise ModelError(
                "the teacher has no BatchNorm layers, so the BN-statistics term has nothing to match; pass "
                "--generator-option bn_weight=0 (the generator then relies on the adversarial and class-balance "
                "terms only) or a teacher with BatchNorm."
            )
        for name, m in self.layers:
            if m.running_mean is None or m.running_var is None:
                raise ModelError(f"BatchNorm layer {name!r} keeps no running statistics (track_running_stats=False); "
                                 "pass --generator-option bn_weight=0.")
        self.active = False
        self._terms: list[torch.Tensor] = []
        self._handles = [m.register_forward_pre_hook(self._hook) for _, m in self.layers]

    def _hook(self, m: nn.Module, inputs: tuple[Any, ...]) -> None:
        if not self.active:
            return
        x = inputs[0]
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=True)
        self._terms.append(bn_stats_distance(mean, var, m.running_mean, m.running_var))  # type: ignore[arg-type]

    def __enter__(self) -> BNStatsLoss:
        self._terms = []
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False

    @property
    def loss(self) -> torch.Tensor:
        """The sum over BN layers of the last recorded forward (0 if nothing was recorded)."""
        if not self._terms:
            return torch.zeros(())
        return torch.stack(self._terms).sum()

    def clear(self) -> None:
        """Forget the recorded terms (they hold the forward's autograd graph)."""
        self._terms = []

    @property
    def per_layer(self) -> list[float]:
        return [float(t.detach()) for t in self._terms]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def kl_teacher_student(z_t: torch.Tensor, z_s: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(z_t) || softmax(z_s))`` at temperature 1, averaged over the batch."""
    return F.kl_div(F.log_softmax(z_s, 1), F.log_softmax(z_t, 1), reduction="batchmean", log_target=True)


def class_balance_loss(z_t: torch.Tensor) -> torch.Tensor:
    """``-H(mean_batch softmax(z_t))``: lowest when the batch covers every class equally (``-log C``)."""
    p_bar = F.softmax(z_t, 1).mean(0)
    return (p_bar * torch.log(p_bar.clamp_min(1e-12))).sum()


class GeneratorTerms(dict[str, torch.Tensor]):
    """The weighted terms of one generator step (``adv``, ``bn``, ``balance``) and their ``total``."""


def generator_loss(z_t: torch.Tensor, z_s: torch.Tensor | None, bn_loss: torch.Tensor, *, adv_weight: float,
                   bn_weight: float, balance_weight: float) -> GeneratorTerms:
    """The loss the generator *minimises*: ``-adv·KL(p_T‖p_S) + bn·L_BN + balance·(-H(p̄_T))``.
    ``z_s=None`` (the warm-up) leaves the adversarial term out."""
    terms = GeneratorTerms()
    if z_s is not None and adv_weight:
        terms["adv"] = -adv_weight * kl_teacher_student(z_t, z_s)
    if bn_weight:
        terms["bn"] = bn_weight * bn_loss.to(z_t.device)
    if balance_weight:
        terms["balance"] = balance_weight * class_balance_loss(z_t)
    terms["total"] = torch.stack(list(terms.values())).sum() if terms else z_t.sum() * 0.0
    return terms
