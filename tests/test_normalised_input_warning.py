"""kd.loss warns once when images look normalised (values well outside [0, 1]) while a torchvision
candidate runs: its ops expect [0, 1] and clip or saturate the rest silently (issue 29)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from daqakd_plugins.distill import Distiller, NoQuantizersWarning, TeacherFrozenWarning
from daqakd_plugins.models import SmallResNet


def _kd(augment: str) -> Distiller:
    torch.manual_seed(0)
    teacher = SmallResNet(in_channels=3, num_classes=10, width=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TeacherFrozenWarning)
        warnings.simplefilter("ignore", NoQuantizersWarning)
        warnings.simplefilter("ignore", UserWarning)
        return Distiller(teacher, copy.deepcopy(teacher), loss="paper", augment=augment, num_classes=10)


def _normalised(n: int = 8) -> torch.Tensor:
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (torch.rand(n, 3, 16, 16) - mean) / std  # what transforms.Normalize makes of [0, 1] images: about -2..2.6


def _loss_warnings(kd: Distiller, x: torch.Tensor, calls: int = 3) -> list[str]:
    y = torch.arange(len(x)) % 10
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(calls):
            kd.loss(x, y, seed=0)
    return [str(m.message) for m in w if "look normalised" in str(m.message)]


def test_normalised_images_with_a_torchvision_candidate_warn_once_naming_the_fix() -> None:
    (msg,) = _loss_warnings(_kd("randaugment"), _normalised())  # three calls, one warning
    assert "'randaugment' uses torchvision" in msg and "expect images in [0, 1]" in msg
    assert "Distiller(..., normalize=(mean, std))" in msg


@pytest.mark.parametrize("augment, images", [("randaugment", "unit"), ("kornia-affine", "normalised"),
                                             ("none", "normalised")])
def test_no_warning_for_unit_images_or_without_torchvision(augment: str, images: str) -> None:
    x = torch.rand(8, 3, 16, 16) if images == "unit" else _normalised()
    assert _loss_warnings(_kd(augment), x) == []
