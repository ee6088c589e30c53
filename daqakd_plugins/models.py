"""The default teacher architecture: a small residual CNN (conv-BN-ReLU blocks, residual add,
pooling, linear) that every backend can quantize, and helpers to save and load it safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checks import safe_load_reason
from .errors import CheckpointError, DataError, ModelError, NonFiniteError

__all__ = ["SmallResNet", "CifarResNet", "VGG8", "check_model_fits_data", "arch_spec", "build_model", "save_model", "load_model", "as_tensor"]


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


class CifarResNet(nn.Module):
    """The CIFAR ResNets of He et al. (2016, §4.2) that the paper's students use: a 3×3 stem with 16
    channels, three stages of ``n`` basic blocks (16, 32, 64 channels; stride 2 at the start of the
    second and third), global average pooling and a linear classifier — ``depth = 6n + 2`` (20, 32,
    56, ...). Projection shortcuts (1×1 conv + BN, He et al.'s option B) where the shape changes:
    every quantization backend handles them, which option A's zero-padding is not for all of them.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ModelError(f"a CIFAR ResNet has depth 6n+2 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages = []
        c = width
        for i in range(3):
            cout = width * (2**i)
            blocks = [_Block(c, cout, 1 if i == 0 else 2)] + [_Block(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c = cout
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


class VGG8(nn.Module):
    """The ``vgg8`` of the CRD/SQAKD CIFAR code: five conv3×3-BN-ReLU stages (64, 128, 256, 512, 512
    channels) with 2×2 max-pooling after the first four, global average pooling and a linear classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, cout in enumerate((64, 128, 256, 512, 512)):
            layers += [nn.Conv2d(c, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            if i < 4:
                layers.append(nn.MaxPool2d(2))
            c = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


def arch_spec(name: str, *, num_classes: int, in_channels: int = 3, **options: Any) -> dict[str, Any]:
    """An architecture spec: what is stored next to the weights so the model can be rebuilt
    (``{"name": "torchvision:resnet18", "num_classes": 10, "in_channels": 3, "small_input": True}``)."""
    if not isinstance(name, str) or not name:
        raise ModelError(f"an architecture name is a non-empty string (e.g. 'torchvision:resnet18'), got {name!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"num_classes must be an integer ≥ 2 (--num-classes), got {num_classes!r}")
    return {"name": name, "num_classes": num_classes, "in_channels": in_channels, **options}


def _resolve(name: str, *, allow_factory: bool = True, where: str = "") -> Any:
    """The builder for ``name``: a registered architecture, a registered family (``prefix:``), or a
    user factory by import path (``package.module:factory``). ``allow_factory=False`` (a name read from
    a file the user did not vouch for) refuses the import path *before* importing anything: importing a
    module and calling a function a file names is running code from that file."""
    import importlib

    from .plugins import get_architectures

    archs = get_architectures()
    if name in archs:
        return archs[name]
    if ":" in name:
        prefix = name.split(":", 1)[0] + ":"
        if prefix in archs:
            return archs[prefix]
        mod_name, _, attr = name.partition(":")
        if not allow_factory:
            raise ModelError(
                f"{where or 'the file'} names the architecture {name!r}, which is no registered architecture but an "
                f"import path: rebuilding it would import {mod_name!r} and call {attr!r}, i.e. run code the file "
                f"chose. From a file daqakd rebuilds only registered architectures ({', '.join(sorted(archs))}). "
                f"If this is your own factory and you trust the file, name it yourself: --arch {name} (Python: "
                "load_model(path, arch=arch_spec(NAME, num_classes=N)) or load_model(path, trust_factory=True); "
                "load_student(path, trust_factory=True))."
            )
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as exc:
            raise ModelError(
                f"architecture {name!r}: no registered family {prefix!r} and module {mod_name!r} does not import "
                f"({exc}). Known: {', '.join(sorted(archs))} — or name your own factory as package.module:function "
                "(importable from here, e.g. via PYTHONPATH)."
            ) from exc
        factory = getattr(mod, attr, None)
        if not callable(factory):
            raise ModelError(f"architecture {name!r}: {mod_name} has no callable {attr!r}.")
        return factory
    raise ModelError(
        f"unknown architecture {name!r}; known: {', '.join(sorted(archs))} (families take a model name after "
        "the colon, e.g. torchvision:resnet18), or your own factory as package.module:function."
    )


def build_model(arch: dict[str, Any], *, trust_factory: bool = True, where: str = "") -> nn.Module:
    """Build the float model an architecture spec describes (``{"name": ..., **options}``).

    ``trust_factory``: whether a ``package.module:factory`` name may be imported and called. True for a
    spec the caller wrote; the loaders pass False for a spec read from a file (``where`` names it), so
    that only registered architectures are rebuilt from files."""
    from .contracts import Architecture

    spec = dict(arch)
    name = spec.get("name")
    if not isinstance(name, str):
        raise ModelError(f"architecture spec {arch!r} has no 'name'; pass e.g. --arch torchvision:resnet18")
    builder = _resolve(name, allow_factory=trust_factory, where=where)
    if isinstance(builder, Architecture):
        if builder.requires:
            import importlib

            try:
                importlib.import_module(builder.requires)
            except ImportError as exc:
                raise ModelError(f"architecture {name!r} needs the package {builder.requires!r} ({exc}); install it "
                                 f"with: {builder.install or 'pip install ' + builder.requires}") from exc
        model = builder.build(spec)
    else:  # a user factory: called with the spec's options as keyword arguments
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        try:
            model = builder(**kwargs)
        except TypeError as exc:
            raise ModelError(f"factory {name!r} does not accept {sorted(kwargs)} ({exc}); it is called as "
                             "factory(num_classes=..., in_channels=..., **options).") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"architecture {name!r} built a {type(model).__name__}, not a torch.nn.Module")
    return model


_TWO_WAYS = (
    "Save it in one of two ways daqakd can load without running pickled code: "
    "(1) torch.save(model.state_dict(), PATH) and pass --arch NAME --num-classes N (e.g. --arch "
    "torchvision:resnet18), or (2) daqakd_plugins.models.save_model(PATH, model, arch_spec(NAME, num_classes=N))."
)


def _state_of(ck: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """``(state_dict, arch or None, meta)`` from a daqakd model file or a plain state_dict."""
    if isinstance(ck, dict) and "state_dict" in ck and "arch" in ck:
        return ck["state_dict"], dict(ck["arch"]), dict(ck.get("meta", {}))
    if isinstance(ck, dict) and ck and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ck.items()):
        return ck, None, {}
    if isinstance(ck, dict) and isinstance(ck.get("state_dict"), dict):  # e.g. {"state_dict": ..., "epoch": ...}
        return ck["state_dict"], None, {}
    raise CheckpointError(f"{path} holds neither a state_dict nor a daqakd model file. {_TWO_WAYS}")


def save_model(path: str | Path, model: nn.Module, arch: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """Save a state_dict with its architecture record (loadable with ``weights_only=True``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"arch": dict(arch), "state_dict": model.state_dict(), "meta": dict(meta or {})}, tmp)
    tmp.replace(path)  # never leave a half-written file behind
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu", *,
               arch: dict[str, Any] | None = None, trust_factory: bool | str = False) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model: a daqakd model file (:func:`save_model`) or a plain ``state_dict`` with ``arch``
    (an :func:`arch_spec`), always with ``weights_only=True``. Returns ``(model, meta)``; ``meta["arch"]``
    is the spec, so the model can be rebuilt later (student files carry it).

    A file's own architecture record is rebuilt only if it names a registered architecture: a
    ``package.module:factory`` record would import and call code the file chose, so it needs the caller's
    word: ``arch`` naming the same factory (the user's ``--arch``), ``trust_factory=True``, or
    ``trust_factory="package.module:factory"`` (that factory only)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist; train one with `daqakd teacher --out {path}`.")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass the model file (e.g. {path / 'teacher.pt'}).")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        reason = safe_load_reason(exc)
        if "global" in reason.lower():  # a pickled nn.Module or another Python object
            raise CheckpointError(f"{path} holds a pickled Python object ({reason}), which daqakd does not "
                                  f"unpickle (that would run code from the file). {_TWO_WAYS}") from exc
        raise CheckpointError(
            f"cannot load {path} safely (weights_only=True: {reason}). daqakd loads state_dicts, plain or "
            "written by daqakd_plugins.models.save_model."
        ) from exc
    state, file_arch, meta = _state_of(ck, path)
    spec = file_arch or arch
    if spec is None:
        raise CheckpointError(f"{path} is a plain state_dict with no architecture: pass --arch NAME --num-classes N "
                              f"(Python: load_model(path, arch=arch_spec(NAME, num_classes=N))). {_TWO_WAYS}")
    if file_arch is not None and arch is not None and file_arch.get("name") != arch.get("name"):
        raise ModelError(f"{path} was saved as {file_arch.get('name')!r} but --arch says {arch.get('name')!r}; drop "
                         "--arch (the file names its architecture) or pass the right file.")
    for t in state.values():
        if isinstance(t, torch.Tensor) and torch.is_floating_point(t) and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(
                f"{path} holds NaN/inf weights (a diverged training); retrain it, e.g. `daqakd teacher --out {path} "
                "--force` with a lower --lr."
            )
    trusted = (trust_factory is True or (isinstance(trust_factory, str) and trust_factory == spec.get("name"))
               or (arch is not None and arch.get("name") == spec.get("name")))
    model = build_model(spec, trust_factory=trusted, where=str(path))
    problems = _load_strict(model, state)
    if problems:
        raise ModelError(
            f"the weights in {path} do not fit {spec.get('name')!r} with num_classes={spec.get('num_classes')}: "
            f"{problems}. Check --arch, --num-classes and --small-input against how the model was built."
        )
    model.eval()
    meta = dict(meta)
    meta["arch"] = spec
    return model, meta


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Load ``state`` into ``model`` if every key and shape fits; otherwise say what does not (and load nothing)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        parts = [f"{what} {v[:3]}{' ...' if len(v) > 3 else ''}" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("other shapes", shape)) if v]
        return "; ".join(parts)
    model.load_state_dict(state)
    return ""


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


def check_model_fits_data(model: nn.Module, image_shape: tuple[int, int, int], num_classes: int, *,
                          what: str = "the teacher", fix: str = "") -> None:
    """Before any work: ``model`` takes the data's images (its first convolution's input channels, then
    one forward pass of a blank image) and predicts the data's ``num_classes`` classes. Otherwise a
    :class:`DataError` says which, instead of a convolution's channel error or cross-entropy's "0D or 1D
    target tensor expected" in the first step. ``fix``: what to do about it, for the caller's command."""
    c = int(image_shape[0])
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    fix = f" {fix}" if fix else ""
    if conv is not None and conv.in_channels != c:
        have = {1: "1-channel (grayscale)", 3: "3-channel (RGB)"}.get(c, f"{c}-channel")
        raise DataError(f"{what} takes {conv.in_channels}-channel images but the data's images are {have}; use a "
                        f"model made for this data (e.g. trained on it with `daqakd teacher`).{fix}")
    p = next(iter(model.parameters()), None)
    x = torch.zeros(1, *image_shape, device=p.device if p is not None else "cpu",
                    dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = as_tensor(model(x))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{what} cannot run on the data's images of shape {tuple(image_shape)} ({first}); use a "
                        f"model made for images of this shape.{fix}") from exc
    finally:
        model.train(was)
    if out.dim() != 2 or out.shape[1] != num_classes:
        got = f"{out.shape[1]} classes" if out.dim() == 2 else f"outputs of shape {tuple(out.shape)}"
        raise DataError(f"{what} predicts {got} but the data has {num_classes} classes; its classifier must have one "
                        f"output per class.{fix}")
