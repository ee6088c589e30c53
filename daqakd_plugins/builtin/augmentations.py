"""Built-in candidate augmentations, registered through the same hook as third-party candidates."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..contracts import Augmentation
from ..hookspecs import hookimpl


def _identity(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, t


NONE = Augmentation(name="none", fn=_identity, description="no augmentation (the baseline)", family="none")


@hookimpl
def daqakd_register_augmentations(register: Callable[[Augmentation], None]) -> None:
    register(NONE)
