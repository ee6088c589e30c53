"""daqakd plugin: nncf (OpenVINO NNCF 3.x post-training quantization + QAT).

The backend is imported lazily, inside the hooks that need it, never at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daqakd_plugins import kit
from daqakd_plugins.kit import BackendInfo, QuantizerInfo, hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

NAME = "nncf"


@hookimpl
def daqakd_register_backends(register: Callable[[BackendInfo], None]) -> None:
    register(
        BackendInfo(
            name=NAME,
            module="nncf",
            distribution="nncf",
            install='pip install "daqakd[nncf]"',
            weight_bits=(4, 8),
            act_bits=(4, 8),
            export_formats=("openvino", "onnx-qdq"),
            description="OpenVINO NNCF 3.x post-training quantization + QAT",
            implemented=False,
        )
    )


@hookimpl
def daqakd_describe_quantizers(model: nn.Module) -> list[QuantizerInfo] | None:
    return kit.describe_modules_from(model, "nncf.torch", "Quantize")
