"""daqakd adapter for NVIDIA Model Optimizer (``nvidia-modelopt``), registered through the ``daqakd``
entry point (see pyproject.toml); docs/backends/tensorrt.md.

``ModeloptOptions`` is the backend's options dataclass; :mod:`daqakd_modelopt.kd` builds Model
Optimizer's own ``mtd.convert(..., mode=[("kd_loss", ...)])`` configuration from a daqakd loss preset.
Importing this package does not import Model Optimizer (``daqakd_modelopt.kd`` does, when used).
"""

from __future__ import annotations

from typing import Any

from .plugin import ModeloptOptions

__all__ = ["ModeloptOptions", "kd_loss_config", "PresetLossBalancer", "one_view"]


def __getattr__(name: str) -> Any:
    if name in ("kd_loss_config", "PresetLossBalancer", "one_view"):
        from . import kd

        return getattr(kd, name)
    raise AttributeError(f"module 'daqakd_modelopt' has no attribute {name!r}")
