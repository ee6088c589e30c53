"""daqakd adapter for NVIDIA pytorch-quantization (TensorRT QAT). Registered through the `daqakd` entry
point (see pyproject.toml); importing this package does not import pytorch_quantization."""

from .plugin import PytorchQuantizationOptions, quant_window, register_amax_buffers, supervision_layers

__all__ = ["PytorchQuantizationOptions", "quant_window", "register_amax_buffers", "supervision_layers"]
