"""The NNCF, pytorch-quantization and ModelOpt adapters describe their backend's quantizers (used for
the "plain KD, not QAT" warning and the conformance kit's bit check), counted on models each real
backend quantized here with its own API."""

from __future__ import annotations

import copy

import pytest
import torch

from daqakd_plugins.backends import count_quantizers
from daqakd_plugins.models import SmallResNet


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallResNet(1, 10, 8, 1).eval()  # 3 convs (stem, block x2), 1 linear, no projection shortcut


def test_modelopt_quantizers_are_counted():
    import modelopt.torch.quantization as mtq

    x = torch.rand(8, 1, 8, 8)
    q = mtq.quantize(copy.deepcopy(_model()), mtq.INT8_DEFAULT_CFG, lambda m: m(x))
    # only the enabled ones: modelopt also inserts disabled output and BatchNorm quantizers
    expected = sum(1 for m in q.modules() if type(m).__name__ == "TensorQuantizer" and m.is_enabled)
    assert 0 < expected < sum(1 for m in q.modules() if type(m).__name__ == "TensorQuantizer")
    assert count_quantizers(q) == expected


def test_pytorch_quantization_quantizers_are_counted():
    from pytorch_quantization import quant_modules

    quant_modules.initialize()
    try:
        q = _model()
    finally:
        quant_modules.deactivate()  # it patches torch.nn globally until deactivated
    # input + weight quantizer per conv (3) and linear (1), and one for the adaptive pool
    assert count_quantizers(q) == 3 * 2 + 2 + 1
    assert type(torch.nn.Conv2d(1, 1, 1)).__module__.startswith("torch.")  # the global patch is undone


@pytest.mark.slow
def test_nncf_quantizers_are_counted():
    import nncf

    x = torch.rand(8, 1, 8, 8)
    q = nncf.quantize(copy.deepcopy(_model()), nncf.Dataset([x], lambda b: b), subset_size=1)
    expected = sum(1 for m in q.modules() if type(m).__name__.endswith("Quantizer"))
    assert expected > 0 and count_quantizers(q) == expected
    assert count_quantizers(_model()) == 0
