"""The default teacher architecture: a small residual CNN (conv-BN-ReLU blocks, residual add,
pooling, linear) that every backend can quantize, and helpers to save and load it safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checks import safe_load_reason
from .errors import CheckpointError, ModelError, NonFiniteError

__all__ = ["SmallResNet", "build_model", "save_model", "load_model", "as_tensor", "ARCHS"]


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem conv-BN-ReLU, then one residual block per stage (width doubling, stride 2 after the
    first), global average pooling and a linear classifier.

    ``stages=1, width=32`` trains on 8×8 digits in seconds; ``stages=3, width=16`` is a ResNet-8 for
    32×32 images.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, stages: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks = []
        c = width
        for i in range(stages):
            cout = width * (2**i)
            blocks.append(_Block(c, cout, 1 if i == 0 else 2))
            c = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


ARCHS: dict[str, type[nn.Module]] = {"small_resnet": SmallResNet}


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Build a model from an architecture record ``{"name": ..., **kwargs}``."""
    arch = dict(arch)
    name = arch.pop("name", None)
    if name not in ARCHS:
        raise CheckpointError(f"unknown architecture {name!r} in checkpoint; known: {', '.join(ARCHS)}")
    return ARCHS[name](**arch)


def save_model(path: str | Path, model: nn.Module, arch: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """Save a state_dict with its architecture record (loadable with ``weights_only=True``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"arch": dict(arch), "state_dict": model.state_dict(), "meta": dict(meta or {})}, tmp)
    tmp.replace(path)  # never leave a half-written file behind
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a model saved by :func:`save_model` (``weights_only=True``). Returns ``(model, meta)``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist; train one with `daqakd teacher --out {path}`.")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"cannot load {path} safely (weights_only=True: {safe_load_reason(exc)}). daqakd loads only "
            "state_dict checkpoints written by daqakd_plugins.models.save_model."
        ) from exc
    if not isinstance(ck, dict) or "state_dict" not in ck or "arch" not in ck:
        raise CheckpointError(
            f"{path} is not a daqakd model file (needs keys 'arch' and 'state_dict'); save it with "
            "daqakd_plugins.models.save_model(path, model, arch)."
        )
    model = build_model(ck["arch"])
    for t in ck["state_dict"].values():
        if isinstance(t, torch.Tensor) and torch.is_floating_point(t) and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(
                f"{path} holds NaN/inf weights (a diverged training); retrain it, e.g. `daqakd teacher --out {path} "
                "--force` with a lower --lr."
            )
    model.load_state_dict(ck["state_dict"])
    model.eval()
    meta = dict(ck.get("meta", {}))
    meta["arch"] = ck["arch"]
    return model, meta


def as_tensor(out: Any) -> torch.Tensor:
    """Model outputs as a plain tensor: a tensor as it is; anything else first through the adapters'
    ``daqakd_unwrap_output`` hook (e.g. Brevitas' ``QuantTensor``), then HF-style objects
    (``.logits``) and tuples (first element)."""
    if isinstance(out, torch.Tensor):
        return out
    from .backends import unwrap_output

    v = unwrap_output(out)
    if v is not None:
        return v
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelError(
        f"the model returned {type(out).__name__}; daqakd needs logits as a tensor [batch, classes] "
        "(or an object with .logits, a tuple whose first item is the logits, or an output type an installed "
        "adapter unwraps)."
    )
