"""Model Optimizer's own knowledge distillation, configured from a daqakd loss preset.

Model Optimizer is the one backend with a KD API of its own (``modelopt.torch.distill``): the student
is wrapped by ``mtd.convert(student, mode=[("kd_loss", config)])``, one forward of the wrapper runs the
frozen teacher and the student on the same input, and ``model.compute_kd_loss(student_loss=...)``
returns the balanced loss. daqakd does not add a second KD engine there; it hands over the *recipe*::

    from daqakd_modelopt.kd import kd_loss_config, one_view
    import modelopt.torch.distill as mtd

    model = mtd.convert(student, mode=[("kd_loss", kd_loss_config(teacher, "paper"))])
    for x, y in loader:
        x, t = one_view(best, x, y, num_classes=10)          # the ranked augmentation, one view for both
        out = model(x)                                       # teacher and student see the same x
        loss = model.compute_kd_loss(student_loss=F.cross_entropy(out, t))

which gives, batch for batch, the same loss as ``Distiller(teacher, student, loss="paper",
augment=best).loss(x, y)`` (tests/test_modelopt_kd.py). Two details make it so:

* the criterion is ``mtd.LogitsDistillationLoss(temperature=τ, reduction="batchmean")``: Model
  Optimizer's default ``reduction="mean"`` averages the KL over batch *and classes*, i.e. Hinton's
  term divided by the number of classes (10× smaller on digits);
* the balancer is :class:`PresetLossBalancer`, absolute weights (``1·CE + 2·KD`` for ``paper``):
  ``mtd.StaticLossBalancer(kd_loss_weight=w)`` computes ``w·KD + (1 − w)·CE`` with ``w ≤ 1``, which is
  the paper's loss divided by 3 at ``w = 2/3`` (the same direction, a third of the step size).

Only recipes of ``ce`` and ``kd`` terms translate (``paper``, ``sqakd``, or lists of those terms):
modelopt's ``kd_loss`` mode compares the student's and the teacher's outputs of one forward on one input,
so two-view, hard-label, multi-teacher and learned-projection terms stay with daqakd's
:class:`~daqakd_plugins.distill.Distiller`.

This module imports Model Optimizer; ``import daqakd_modelopt`` does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import modelopt.torch.distill as mtd
import torch
from modelopt.torch.distill.loss_balancers import STUDENT_LOSS_KEY, DistillationLossBalancer

from daqakd_plugins.kit import ConfigError, DataError

if TYPE_CHECKING:
    from torch import nn

    from daqakd_plugins.kit import Augmentation, LossPreset, LossTerm

__all__ = ["kd_loss_config", "PresetLossBalancer", "one_view", "TRANSLATABLE"]

#: daqakd loss components that have a Model Optimizer equivalent here
TRANSLATABLE = ("ce", "kd")


class PresetLossBalancer(DistillationLossBalancer):
    """``student_weight · student_loss + Σ_i kd_weights[i] · kd_loss_i``: a daqakd preset's absolute term
    weights (modelopt's ``StaticLossBalancer`` only mixes ``w·KD + (1 − w)·CE`` with ``w ≤ 1``)."""

    def __init__(self, kd_weights: Sequence[float], student_weight: float = 0.0) -> None:
        super().__init__()
        ws = [float(w) for w in kd_weights]
        if not ws or not all(math.isfinite(w) for w in [*ws, float(student_weight)]):
            raise ConfigError(f"PresetLossBalancer needs finite weights, got kd {list(kd_weights)!r}, student {student_weight!r}")
        self.kd_weights = ws
        self.student_weight = float(student_weight)

    def forward(self, loss: dict[str, torch.Tensor]) -> torch.Tensor:
        kd = dict(loss)
        student = kd.pop(STUDENT_LOSS_KEY, None)
        if len(kd) != len(self.kd_weights):
            raise ConfigError(f"{len(kd)} KD losses for {len(self.kd_weights)} weights ({list(kd)}).")
        if student is None and self.student_weight != 0.0:
            raise ConfigError(
                f"this recipe weights the student's own loss by {self.student_weight:g}: call "
                "model.compute_kd_loss(student_loss=F.cross_entropy(out, targets))."
            )
        total: torch.Tensor | None = None
        for w, v in zip(self.kd_weights, kd.values()):
            total = w * v if total is None else total + w * v
        assert total is not None
        if student is not None:
            if self._student_loss_reduction_fn is not None:
                student = self._student_loss_reduction_fn(student)
            total = total + self.student_weight * student
        return total

    def extra_repr(self) -> str:
        return f"kd_weights={self.kd_weights}, student_weight={self.student_weight:g}"


def _terms(loss: str | LossPreset | LossTerm | Sequence[LossTerm]) -> tuple[LossTerm, ...]:
    from daqakd_plugins.kit import resolve_loss

    return resolve_loss(loss)


def kd_loss_config(
    teacher: nn.Module,
    loss: str | LossPreset | LossTerm | Sequence[LossTerm] = "paper",
) -> dict[str, Any]:
    """The ``config`` of ``mtd.convert(student, mode=[("kd_loss", config)])`` for a daqakd recipe.

    :param teacher: the frozen float model (Model Optimizer sets ``requires_grad=False`` and runs it in
        eval mode under ``no_grad``).
    :param loss: a daqakd preset (``"paper"`` = 1·CE + 2·τ²·KL at τ = 4, ``"sqakd"`` = τ²·KL) or terms of
        the ``ce`` and ``kd`` components.
    :return: ``{"teacher_model", "criterion", "loss_balancer"}``: ``LogitsDistillationLoss(τ,
        reduction="batchmean")`` and a :class:`PresetLossBalancer` with the recipe's weights. Pass the CE
        as ``compute_kd_loss(student_loss=...)`` when the recipe has one.
    """
    terms = _terms(loss)
    other = [t.component for t in terms if t.component not in TRANSLATABLE]
    if other:
        raise ConfigError(
            f"loss {loss!r} has term(s) {other} with no Model Optimizer equivalent: its kd_loss mode compares the "
            "student's and the teacher's outputs of one forward on one input. Recipes of 'ce' and 'kd' terms "
            "translate ('paper', 'sqakd'); for this one use daqakd's Distiller(teacher, student, loss=...) in the "
            "same loop (it trains the same modelopt student)."
        )
    kd_terms = [t for t in terms if t.component == "kd"]
    if not kd_terms:
        raise ConfigError(
            f"loss {loss!r} has no 'kd' term, so there is nothing for mtd.convert to distill; train the student "
            "with its own loss (plain QAT), or pick 'paper' / 'sqakd'."
        )
    if len(kd_terms) > 1:
        raise ConfigError(f"loss {loss!r} has {len(kd_terms)} 'kd' terms; give Model Optimizer one (one output pair).")
    kd = kd_terms[0]
    tau = kd.params.get("tau", 4.0)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ConfigError(f"the KD temperature tau must be a positive number (the paper uses 4), got {tau!r}")
    ce_weight = sum(float(t.weight) for t in terms if t.component == "ce")
    return {
        "teacher_model": teacher,
        "criterion": mtd.LogitsDistillationLoss(temperature=float(tau), reduction="batchmean"),
        "loss_balancer": PresetLossBalancer([float(kd.weight)], student_weight=ce_weight),
    }


def one_view(
    augment: str | Augmentation | None, images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented batch both models see, and its label distributions ``[B, C]``.

    ``augment``: a registered name (e.g. ``rank_augmentations(...).best``), an :class:`Augmentation`, or
    ``None`` for the clean batch. Label-mixing candidates (CutMix, MixUp) return soft targets; pass them
    to ``F.cross_entropy(out, targets)`` as the student loss. Randomness comes from torch's global RNG,
    as in the Distiller, so the same seed gives the Distiller's view.
    """
    from daqakd_plugins.kit import one_hot

    if labels.dim() == 2:
        targets = labels.to(torch.float32)
    elif labels.dim() == 1:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise DataError(
                f"one_view needs num_classes (an integer ≥ 2) to turn class indices into distributions, got "
                f"{num_classes!r}; e.g. one_view(aug, x, y, num_classes=10)."
            )
        targets = one_hot(labels, num_classes)
    else:
        raise DataError(f"labels must be [batch] class indices or [batch, classes] distributions, got {tuple(labels.shape)}")
    if augment is None:
        return images, targets
    from daqakd_plugins.kit import resolve_augmentation

    aug = resolve_augmentation(augment)
    with torch.no_grad():
        return aug(images, targets)
