"""Everything an adapter author needs, in one import.

An adapter (a backend plugin) should need nothing deeper than this module::

    from daqakd_plugins import kit

    @kit.hookimpl
    def daqakd_register_backends(register):
        register(kit.BackendInfo(name="mybackend", module="mybackend", ...))

It re-exports the hook marker, the request/response contracts, the error classes, the configuration
class and the helpers adapters share (counting quantizers, turning calibration data into image
batches, making ONNX files right for onnxruntime). docs/adapters.md walks through an adapter in the
order a newcomer needs it, and :mod:`daqakd_plugins.testing` is the conformance kit that proves one.
Importing this module imports no backend.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .bitplan import format_plan, plan_differences
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
    LossTerm,
    QuantizeRequest,
    QuantizerInfo,
    RestoreRequest,
    SaveRequest,
)
from .errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    DaqakdError,
    DataError,
    ExportError,
    ModelError,
)
from .hookspecs import hookimpl
from .onnx_qdq import (
    QdqGraph,
    drop_dead_nodes,
    fold_weight_quantizers,
    preparation_notes,
    prepare_for_onnxruntime,
    u8s8_hazards,
    write_exact_qdq,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn

__all__ = [
    "hookimpl",
    "BackendInfo", "QuantizerInfo", "QuantizeRequest", "CalibrateRequest", "ExportRequest", "SaveRequest",
    "RestoreRequest", "ExportedModel", "QuantConfig",
    "Augmentation", "LossComponent", "LossContext", "LossPreset", "LossTerm",
    "DaqakdError", "ConfigError", "DataError", "ModelError", "BackendError", "BackendUnavailableError",
    "ExportError",
    "prepare_for_onnxruntime", "preparation_notes", "fold_weight_quantizers", "write_exact_qdq", "QdqGraph",
    "u8s8_hazards", "drop_dead_nodes",
    "ort_predict", "image_batches", "describe_modules_from", "device_of",
    "backend_imported", "resolve_loss", "resolve_augmentation", "one_hot", "plan_differences", "format_plan",
]


def ort_predict(path: str | Path, *, fuse_qdq: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """An onnxruntime ``predict`` for an exported file, with the session settings daqakd compares every
    model under (:func:`daqakd_plugins.runtime.ort_predict`; imported on use, so loading an adapter stays
    light)."""
    from .runtime import ort_predict as _ort_predict

    return _ort_predict(path, fuse_qdq=fuse_qdq)


def resolve_loss(loss: Any) -> tuple[LossTerm, ...]:
    """A loss spec (preset or component name, ``"a+b"``, a :class:`LossPreset` or terms) as its weighted
    terms, as the Distiller reads it (:func:`daqakd_plugins.distill.resolve_loss`; imported on use)."""
    from .distill import resolve_loss as _resolve_loss

    return _resolve_loss(loss)


def resolve_augmentation(spec: Any) -> Augmentation:
    """A registered augmentation name (or an :class:`Augmentation` / callable) as the Augmentation the
    Distiller would apply (:func:`daqakd_plugins.augment.resolve_augmentation`; imported on use)."""
    from .augment import resolve_augmentation as _resolve

    return _resolve(spec)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices ``[B]`` as label distributions ``[B, C]`` (``[B, C]`` passes), with the range error
    the core gives (:func:`daqakd_plugins.data.one_hot`; imported on use)."""
    from .data import one_hot as _one_hot

    return _one_hot(labels, num_classes)


def backend_imported(module: str) -> bool:
    """Whether ``module`` is already imported (and not blocked): describe/unwrap hooks answer only
    then, so that asking never imports a backend."""
    return sys.modules.get(module.split(".")[0]) is not None


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    import torch

    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def image_batches(data: Any, limit: int, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Up to ``limit`` image batches ``[B, C, H, W]`` from a tensor, a DataLoader or any iterable of
    tensors / ``(images, labels)`` pairs: what calibration hooks receive, in one shape."""
    import torch

    if limit < 1:
        raise ConfigError(f"num_batches must be ≥ 1 for calibration, got {limit}")
    if isinstance(data, torch.Tensor):
        if data.dim() == 3:
            data = data.unsqueeze(0)
        if data.dim() != 4:
            raise DataError(f"calibration images must be [N, C, H, W], got shape {tuple(data.shape)}")
        for i, s in enumerate(range(0, len(data), batch_size)):
            if i >= limit:
                return
            yield data[s : s + batch_size]
        return
    n = 0
    for item in data:
        if n >= limit:
            return
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = "" if not isinstance(x, torch.Tensor) else " of shape " + str(tuple(x.shape))
            raise DataError(
                "calibration data must yield image batches [B, C, H, W] (or (images, labels) pairs); got "
                f"{type(x).__name__}{shape}."
            )
        n += 1
        yield x


def _role(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1].lower()
    if "weight" in leaf:
        return "weight"
    if any(k in leaf for k in ("input", "output", "act")):
        return "activation"
    return "other"


def _bits(m: Any) -> int:
    v = getattr(m, "num_bits", None)
    if isinstance(v, (tuple, list)):  # FP formats: (exponent, mantissa) bits
        return int(sum(v)) + 1
    try:
        return int(v) if v is not None else 0
    except (TypeError, ValueError):
        return 0


def describe_modules_from(model: nn.Module, module_prefix: str, name_contains: str = "Quant") -> list[QuantizerInfo] | None:
    """Quantizers of a backend that inserts them as modules: every submodule whose class is defined
    under ``module_prefix`` and whose class name contains ``name_contains``, with its ``num_bits`` and
    a role guessed from its attribute name (``*weight*`` → weight; ``*input*/*output*/*act*`` →
    activation). ``None`` when that backend was never imported, so asking never imports it."""
    if not backend_imported(module_prefix):
        return None
    out = []
    for name, m in model.named_modules():
        cls = type(m)
        if cls.__module__.startswith(module_prefix) and name_contains in cls.__name__:
            role = _role(name)
            out.append(QuantizerInfo(name=name, role=role, bits=_bits(m),
                                     layer=name.rsplit(".", 1)[0] if role == "weight" and "." in name else ""))
    return out
