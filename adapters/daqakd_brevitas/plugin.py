"""daqakd plugin: brevitas (AMD/Xilinx Brevitas low-bit QAT for FPGA (FINN) flows).

The backend is imported lazily, inside the hooks that need it, never at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daqakd_plugins import hookimpl
from daqakd_plugins.contracts import BackendInfo

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

NAME = "brevitas"


@hookimpl
def daqakd_register_backends(register: Callable[[BackendInfo], None]) -> None:
    register(
        BackendInfo(
            name=NAME,
            module="brevitas",
            distribution="brevitas",
            install='pip install "daqakd[brevitas]"',
            weight_bits=(1, 8),
            act_bits=(1, 8),
            export_formats=("onnx-qcdq", "qonnx"),
            description="AMD/Xilinx Brevitas low-bit QAT for FPGA (FINN) flows",
            implemented=False,
        )
    )


@hookimpl
def daqakd_count_quantizers(model: nn.Module) -> int | None:
    from daqakd_plugins.backends import count_modules_from

    return count_modules_from(model, "brevitas.proxy", "Proxy")
