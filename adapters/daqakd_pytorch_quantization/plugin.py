"""daqakd plugin: pytorch_quantization (NVIDIA pytorch-quantization 2.1 for TensorRT).

The backend is imported lazily, inside the hooks that need it, never at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daqakd_plugins import kit
from daqakd_plugins.kit import BackendInfo, QuantizerInfo, hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

NAME = "pytorch-quantization"


@hookimpl
def daqakd_register_backends(register: Callable[[BackendInfo], None]) -> None:
    register(
        BackendInfo(
            name=NAME,
            module="pytorch_quantization",
            distribution="pytorch-quantization",
            install='pip install "daqakd[pytorch-quantization]"',
            weight_bits=(4, 8),
            act_bits=(4, 8),
            export_formats=("onnx-qdq",),
            description="NVIDIA pytorch-quantization 2.1 for TensorRT",
            implemented=False,
        )
    )


@hookimpl
def daqakd_describe_quantizers(model: nn.Module) -> list[QuantizerInfo] | None:
    return kit.describe_modules_from(model, "pytorch_quantization.nn", "TensorQuantizer")
