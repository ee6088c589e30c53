"""Built-in architectures: daqakd's ``small_resnet``, the paper's CIFAR models (``cifar_resnet20``,
``cifar_resnet32``, ``cifar_resnet56``, ``vgg8``), every torchvision classification model
(``torchvision:<name>``) and timm models (``timm:<name>``, when timm is installed). Registered through
the same hook a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..contracts import Architecture
from ..errors import ModelError
from ..hookspecs import hookimpl
from ..models import VGG8, CifarResNet, SmallResNet


def _small_resnet(spec: Mapping[str, Any]) -> nn.Module:
    kw = {k: v for k, v in spec.items() if k in ("in_channels", "num_classes", "width", "stages")}
    return SmallResNet(**kw)


def _cifar_resnet(depth: int) -> Callable[[Mapping[str, Any]], nn.Module]:
    def build(spec: Mapping[str, Any]) -> nn.Module:
        kw = {k: v for k, v in spec.items() if k in ("in_channels", "num_classes", "width")}
        return CifarResNet(depth, **kw)

    return build


def _vgg8(spec: Mapping[str, Any]) -> nn.Module:
    return VGG8(**{k: v for k, v in spec.items() if k in ("in_channels", "num_classes")})


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _adapt_stem(model: nn.Module, name: str, in_channels: int, small_input: bool) -> nn.Module:
    """Give the first convolution ``in_channels`` inputs and, with ``small_input``, a stem for small
    images (CIFAR-style: ResNets get a 3x3 stride-1 conv and no max-pool, other families a stride-1
    first conv), so 32x32 or 8x8 images are not reduced to 1x1 before the first block."""
    found = _first_conv(model)
    if found is None:
        if in_channels != 3 or small_input:
            raise ModelError(f"torchvision:{name} has no Conv2d to adapt for in_channels={in_channels} / small_input")
        return model
    path, conv = found
    resnet_like = hasattr(model, "conv1") and hasattr(model, "maxpool") and path == "conv1"
    if in_channels == conv.in_channels and not small_input:
        return model
    if small_input and resnet_like:
        new = nn.Conv2d(in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
        model.maxpool = nn.Identity()  # type: ignore[assignment]
    else:
        stride = (1, 1) if small_input else conv.stride
        new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
                        conv.groups if conv.groups == 1 else in_channels, conv.bias is not None)
    model.set_submodule(path, new)
    return model


def _torchvision(spec: Mapping[str, Any]) -> nn.Module:
    import torchvision

    name = str(spec["name"]).split(":", 1)[1]
    known = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in known:
        close = [k for k in known if name.split("_")[0] in k][:8]
        raise ModelError(
            f"torchvision has no classification model {name!r}"
            + (f"; did you mean one of {close}?" if close else f"; e.g. {known[:8]} (torchvision.models.list_models()).")
        )
    kw = {k: v for k, v in spec.items() if k not in ("name", "in_channels", "small_input")}
    if name in ("googlenet", "inception_v3"):
        kw.setdefault("aux_logits", False)  # plain logits, as daqakd needs
        kw.setdefault("init_weights", True)
    try:
        model = torchvision.models.get_model(name, weights=None, **kw)
    except TypeError as exc:
        raise ModelError(f"torchvision:{name} does not take {sorted(kw)} ({exc}).") from exc
    return _adapt_stem(model, name, int(spec.get("in_channels", 3)), bool(spec.get("small_input", False)))


def _timm(spec: Mapping[str, Any]) -> nn.Module:
    import timm

    name = str(spec["name"]).split(":", 1)[1]
    kw = {k: v for k, v in spec.items() if k not in ("name", "in_channels", "small_input")}
    try:
        return timm.create_model(name, pretrained=False, in_chans=int(spec.get("in_channels", 3)), **kw)
    except RuntimeError as exc:  # timm's "Unknown model"
        raise ModelError(f"timm:{name}: {exc} (timm.list_models() lists them).") from exc


@hookimpl
def daqakd_register_architectures(register: Callable[[Architecture], None]) -> None:
    register(Architecture(name="small_resnet", build=_small_resnet,
                          description="daqakd's small residual CNN (the default teacher; seconds on digits)"))
    for depth in (20, 32, 56):
        register(Architecture(name=f"cifar_resnet{depth}", build=_cifar_resnet(depth),
                              description=f"the paper's CIFAR ResNet-{depth} (3 stages of {(depth - 2) // 6} basic "
                                          "blocks, 16/32/64 channels; 32x32 inputs)"))
    register(Architecture(name="vgg8", build=_vgg8,
                          description="the paper's CIFAR VGG-8 (5 conv-BN-ReLU stages, 64-512 channels)"))
    register(Architecture(name="torchvision:", build=_torchvision,
                          description="any torchvision classification model, e.g. torchvision:resnet18; options "
                                      "num_classes, in_channels, small_input (CIFAR-style stem)"))
    register(Architecture(name="timm:", build=_timm, requires="timm", install='pip install "daqakd[timm]"',
                          description="any timm model, e.g. timm:resnet18 (optional: needs timm)"))
