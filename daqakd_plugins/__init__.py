"""daqakd: data-augmented quantization-aware knowledge distillation for existing QAT toolkits.

Importing this package is cheap: it imports neither torch-heavy backends (nncf, brevitas,
pytorch_quantization, modelopt) nor plugins. Public names are resolved lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# public name -> module that defines it. Even ``hookimpl`` (pluggy) is lazy: ``daqakd`` imports this
# package first, and a Ctrl-C while it imports must land in the CLI's handler (exit 130, no traceback).
_LAZY: dict[str, str] = {
    "hookimpl": "hookspecs",
    # plugin machinery
    "load_plugins": "plugins",
    "register_plugin": "plugins",
    "get_plugin_manager": "plugins",
    "get_augmentations": "plugins",
    "get_metrics": "plugins",
    "get_loss_components": "plugins",
    "get_loss_presets": "plugins",
    "get_backends": "plugins",
    # contracts
    "Augmentation": "contracts",
    "Metric": "contracts",
    "MetricBatch": "contracts",
    "MetricResult": "contracts",
    "LossComponent": "contracts",
    "LossTerm": "contracts",
    "LossPreset": "contracts",
    "LossContext": "contracts",
    "LossResult": "contracts",
    "BackendInfo": "contracts",
    "QuantizeRequest": "contracts",
    "CalibrateRequest": "contracts",
    "ExportRequest": "contracts",
    "ExportedModel": "contracts",
    "QuantConfig": "config",
    # data and models
    "DataBundle": "data",
    "load_data": "data",
    "load_digits": "data",
    "load_image_folder": "data",
    "SmallResNet": "models",
    "save_model": "models",
    "load_model": "models",
    "train_teacher": "train",
    "evaluate": "train",
    # ranking (daqakd_plugins/ranking) and distillation (daqakd_plugins/distill)
    "rank_augmentations": "ranking",
    "Ranking": "ranking",
    "Distiller": "distill",
    "DistillConfig": "distill",
    "run_distill": "distill",
    # backends
    "quantize": "backends",
    "calibrate": "backends",
    "export": "backends",
    "count_quantizers": "backends",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'daqakd_plugins' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs
    from .backends import calibrate, count_quantizers, export, quantize
    from .config import QuantConfig
    from .contracts import (
        Augmentation,
        BackendInfo,
        CalibrateRequest,
        ExportedModel,
        ExportRequest,
        LossComponent,
        LossContext,
        LossPreset,
        LossResult,
        LossTerm,
        Metric,
        MetricBatch,
        MetricResult,
        QuantizeRequest,
    )
    from .data import DataBundle, load_data, load_digits, load_image_folder
    from .distill import DistillConfig, Distiller, run_distill
    from .hookspecs import hookimpl
    from .models import SmallResNet, load_model, save_model
    from .plugins import (
        get_augmentations,
        get_backends,
        get_loss_components,
        get_loss_presets,
        get_metrics,
        get_plugin_manager,
        load_plugins,
        register_plugin,
    )
    from .ranking import Ranking, rank_augmentations
    from .train import evaluate, train_teacher
