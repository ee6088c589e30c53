"""The paper's CIFAR architectures: built-in, the right shape, and listed by ``daqakd plugins``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from daqakd_plugins.errors import ModelError
from daqakd_plugins.models import CifarResNet, arch_spec, build_model


@pytest.mark.parametrize(("depth", "blocks"), [(20, 3), (32, 5), (56, 9)])
def test_cifar_resnets_have_three_stages_of_n_basic_blocks(depth: int, blocks: int) -> None:
    m = build_model(arch_spec(f"cifar_resnet{depth}", num_classes=10, in_channels=3))
    assert isinstance(m, CifarResNet)
    assert [len(stage) for stage in m.layers] == [blocks] * 3
    convs3 = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)]
    assert len(convs3) == depth - 1  # the stem + two per block; the head is the last of the depth layers
    assert [c.out_channels for c in (m.layers[0][0].conv1, m.layers[1][0].conv1, m.layers[2][0].conv1)] == [16, 32, 64]
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_resnet20_size_and_vgg8() -> None:
    r20 = build_model(arch_spec("cifar_resnet20", num_classes=10, in_channels=3))
    n = sum(p.numel() for p in r20.parameters())
    assert 0.26e6 < n < 0.28e6, n  # He et al.: 0.27M
    vgg = build_model(arch_spec("vgg8", num_classes=100, in_channels=3))
    assert vgg(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    assert sum(isinstance(c, nn.Conv2d) for c in vgg.modules()) == 5


def test_bad_depth_is_refused() -> None:
    with pytest.raises(ModelError, match="6n\\+2"):
        CifarResNet(depth=21)


def test_plugins_lists_the_paper_architectures(capsys: pytest.CaptureFixture[str]) -> None:
    from daqakd_plugins.plugins import get_architectures

    archs = get_architectures()
    for name in ("cifar_resnet20", "cifar_resnet32", "cifar_resnet56", "vgg8"):
        assert name in archs and archs[name].description
