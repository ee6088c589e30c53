"""The wrapper that lets NNCF quantize a top-level ``nn.Sequential`` (imported only inside hooks: it
needs torch).

Why: ``nncf.quantize`` adds its ``HookStorage`` as a child module of the model it wraps, and
``nn.Sequential.forward`` calls every child in turn, the storage included, which has no ``forward``
("Module [HookStorage] is missing the required "forward" function"). Inside this wrapper the
Sequential is an ordinary child and the storage sits next to it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["SequentialWrapper", "WRAPPED_PREFIX"]

#: the Sequential's attribute name inside the wrapper: module paths gain this prefix
WRAPPED_PREFIX = "model"


class SequentialWrapper(nn.Module):
    """Runs ``model`` (an ``nn.Sequential``) as its only child."""

    def __init__(self, model: nn.Sequential) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Any) -> Any:
        return self.model(x)
