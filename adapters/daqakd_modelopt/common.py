"""What the Model Optimizer adapter's hooks (plugin.py) and its export (export.py) share: the export
formats, the quantizer test and description, and the notice filter. Importing it does not import modelopt."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from daqakd_plugins.kit import QuantizerInfo

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FORMATS", "is_quantizer", "describe", "quiet"]

FORMATS = ("onnx-qdq", "onnx-trt")


def is_quantizer(m: Any) -> bool:
    cls = type(m)
    return cls.__module__.startswith("modelopt.torch.quantization") and cls.__name__ == "TensorQuantizer"


def describe(model: nn.Module) -> list[QuantizerInfo]:
    out: list[QuantizerInfo] = []
    for name, m in model.named_modules():
        if not is_quantizer(m) or not bool(getattr(m, "is_enabled", False)):
            continue
        leaf = name.rsplit(".", 1)[-1]
        role = "weight" if "weight" in leaf else "activation" if ("input" in leaf or "output" in leaf) else "other"
        out.append(QuantizerInfo(name=name, role=role, bits=_bits(getattr(m, "num_bits", 0)),
                                 layer=name.rsplit(".", 1)[0] if role != "other" and "." in name else ""))
    return out


def _bits(v: Any) -> int:
    if isinstance(v, (tuple, list)):  # FP formats: (exponent, mantissa) bits, plus the sign
        return int(sum(v)) + 1
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Model Optimizer for the duration of an adapter call only: its ``print`` lines
    ("Inserted 20 quantizers", "Restored ...") and tqdm bars ("MSE weight calibration") on stdout /
    stderr, the "transformers not found" and torch.jit.script
    deprecation warnings of its import, and torch.onnx's TorchScript-exporter warnings."""
    cpp_log = logging.getLogger("torch.utils.cpp_extension")
    old = cpp_log.level
    cpp_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*(transformers|Hugginface|TracerWarning|Converting a tensor).*")
            warnings.filterwarnings("ignore", module=r"modelopt.*")
            warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
            yield
    finally:
        cpp_log.setLevel(old)
