"""daqakd plugin: pytorch-quantization (NVIDIA pytorch-quantization 2.1, the TensorRT QAT toolkit).

What it does (see docs/backends/tensorrt.md, section "pytorch-quantization"):

* ``daqakd_quantize`` builds the student the way NVIDIA's recipe does: inside
  ``quant_modules.initialize()`` … ``deactivate()`` (:func:`quant_window`, which never leaks the global
  monkeypatch, also when construction raises), with ``QuantDescriptor``\\ s for the requested bits
  (per-channel weights, ``axis=(0,)``). A float model's ``torch.nn`` layers are re-created through the
  patched names and take the float weights; a model the user already built inside the window is taken
  as it is (deep copy). Pools stay float unless asked (``float_module_list``).
* ``daqakd_calibrate`` is NVIDIA's ``collect_stats`` + ``compute_amax`` (max, or histogram with
  percentile / mse / entropy), re-estimated from scratch on every call; ``mse`` runs on CPU too.
* ``daqakd_export`` writes the Q/DQ ONNX file NVIDIA's recipe writes for TensorRT
  (``TensorQuantizer.use_fb_fake_quant``, opset 13) and an onnxruntime file made from it (weights
  stored as integers, re-encoded where onnxruntime's U8S8 kernels would saturate on CPUs without VNNI).
* save / restore go through ``state_dict`` with the ``_amax`` buffers registered first (the package's
  own loader creates a missing one with ``.cuda()``, which fails on a CPU-only host).
* the ``layerwise_mse`` loss preset: NVIDIA's own QAT distillation (yolo_deepstream ``yolov7_qat``),
  label-free MSE between the student's and the float teacher's layer outputs.

pytorch_quantization is imported lazily, inside the hooks, never at import time: ``import
daqakd_plugins`` and ``daqakd plugins`` must stay fast and work without it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import types
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daqakd_plugins import kit
from daqakd_plugins.kit import (
    BackendError,
    BackendInfo,
    ConfigError,
    DataError,
    ExportedModel,
    ExportError,
    ModelError,
    QuantizerInfo,
    hookimpl,
    ort_predict,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import torch
    from torch import nn

    from daqakd_plugins.kit import (
        CalibrateRequest,
        ExportRequest,
        QuantConfig,
        QuantizeRequest,
        RestoreRequest,
        SaveRequest,
    )

NAME = "pytorch-quantization"
MODULE = "pytorch_quantization"
BITS = (2, 8)
BITS_NOTE = (
    "pytorch-quantization's TensorQuantizer uses the signed grid -2^(b-1) .. 2^(b-1)-1 with scale "
    "amax / (2^(b-1)-1): at 1 bit that divisor is 0 and every value quantizes to 0, so at least 2 bits; "
    "its exports are 8-bit ONNX Q/DQ (TensorRT's INT8), so at most 8."
)
FMT_ORT = "onnx-qdq"
FMT_TRT = "onnx-qdq-tensorrt"
FORMATS = (FMT_ORT, FMT_TRT)
FORMAT_ALIASES = {"onnx-qdq": FMT_ORT, "onnx": FMT_ORT, "qdq": FMT_ORT, "onnxruntime": FMT_ORT,
                  "onnx-qdq-tensorrt": FMT_TRT, "tensorrt": FMT_TRT, "trt": FMT_TRT}
CALIBRATORS = ("max", "percentile", "mse", "entropy")
#: every torch.nn layer quant_modules.initialize() replaces (its _DEFAULT_QUANT_MAP), by name
QUANT_MAP_NAMES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                   "Linear", "LSTM", "LSTMCell", "AvgPool1d", "AvgPool2d", "AvgPool3d",
                   "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d")
POOLS = ("AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d")
_RECURRENT = ("LSTM", "LSTMCell")

BUILD_HINT = (
    "Build the model between pytorch_quantization.quant_modules.initialize() and deactivate() (or inside "
    "daqakd_pytorch_quantization.quant_window(config)), so that its torch.nn.Conv*/Linear layers are created "
    "as QuantConv*/QuantLinear, or pass the float model to daqakd_plugins.backends.quantize(model, "
    "'pytorch-quantization', QuantConfig(...), example_input=x), which re-creates them for you."
)

log = logging.getLogger("daqakd.pytorch_quantization")


class _DropLearnedClipNotice(logging.Filter):
    """With ``learn_amax`` pytorch-quantization's ClipFunction logs "Learning clip min/max is experimental,
    use at your own risk :)." from its *backward*, i.e. inside the training loop where no adapter call can
    silence it, and absl adds "WARNING: Logging before flag parsing goes to stderr." on the first line. The
    filter is installed on the absl logger when this plugin loads; it drops only that one notice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Learning clip min/max is experimental" not in record.getMessage()


logging.getLogger("absl").addFilter(_DropLearnedClipNotice())


@dataclass(frozen=True, kw_only=True)
class PytorchQuantizationOptions:
    """``QuantConfig.options`` for pytorch-quantization (documented in docs/backends/tensorrt.md).

    ``calibrator``: how activation ranges (amax) are set from calibration data: ``"max"``
    (``QuantDescriptor(calib_method="max")``) or a histogram (``calib_method="histogram"``) reduced with
    ``compute_amax(method="percentile" | "mse" | "entropy")``; weights always use per-channel max, as in
    NVIDIA's recipe. ``percentile``: for ``"percentile"`` (NVIDIA's tutorial: 99.99).
    ``learn_amax``: activation ranges become trainable (``QuantDescriptor(learn_amax=True)``,
    initialised from calibration; per-tensor only, so weights keep their calibrated per-channel amax).
    ``float_module_list``: ``torch.nn`` layer names ``quant_modules.initialize`` must leave in float
    (default: the average pools; ``()`` quantizes them too). ``num_bins``: histogram bins.
    """

    calibrator: str = "percentile"
    percentile: float = 99.99
    learn_amax: bool = False
    float_module_list: tuple[str, ...] = POOLS
    num_bins: int = 2048

    def __post_init__(self) -> None:
        if self.calibrator not in CALIBRATORS:
            raise ConfigError(
                f"options['calibrator'] must be one of {', '.join(CALIBRATORS)} (max: QuantDescriptor("
                f"calib_method='max'); the others: calib_method='histogram' + compute_amax(method=...)), got "
                f"{self.calibrator!r}."
            )
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100 or not math.isfinite(p):
            raise ConfigError(f"options['percentile'] must be a number in (0, 100], e.g. 99.99; got {p!r}.")
        object.__setattr__(self, "percentile", float(p))
        if not isinstance(self.learn_amax, bool):
            raise ConfigError(f"options['learn_amax'] must be True or False, got {self.learn_amax!r}.")
        fl = self.float_module_list
        if isinstance(fl, str):
            fl = (fl,)
        if not isinstance(fl, Iterable) or not all(isinstance(v, str) for v in fl):
            raise ConfigError(
                f"options['float_module_list'] must be a list of torch.nn layer names, e.g. ['AdaptiveAvgPool2d'], "
                f"got {self.float_module_list!r}."
            )
        fl = tuple(fl)
        unknown = sorted(set(fl) - set(QUANT_MAP_NAMES))
        if unknown:
            raise ConfigError(
                f"options['float_module_list'] names {unknown}, which quant_modules.initialize() does not replace "
                f"anyway; it replaces: {', '.join(QUANT_MAP_NAMES)}."
            )
        object.__setattr__(self, "float_module_list", fl)
        nb = self.num_bins
        if isinstance(nb, bool) or not isinstance(nb, int) or nb < 256:
            raise ConfigError(f"options['num_bins'] must be an integer ≥ 256 (histogram bins), got {nb!r}.")


# --------------------------------------------------------------------------------------------------
# registration and description (must not import pytorch_quantization)
# --------------------------------------------------------------------------------------------------
@hookimpl
def daqakd_register_backends(register: Callable[[BackendInfo], None]) -> None:
    register(
        BackendInfo(
            name=NAME,
            module=MODULE,
            distribution="pytorch-quantization",
            install='pip install "daqakd[pytorch-quantization]"',
            weight_bits=BITS,
            act_bits=BITS,
            bits_note=BITS_NOTE,
            export_formats=FORMATS,
            options_type=PytorchQuantizationOptions,
            description="NVIDIA pytorch-quantization 2.1 (TensorRT QAT: Q/DQ ONNX for TensorRT and onnxruntime)",
            implemented=True,
            bit_plans=True,  # each Quant* layer has its own weight and input quantizer
            layer_act_bits=True,
        )
    )


@hookimpl
def daqakd_describe_quantizers(model: nn.Module) -> list[QuantizerInfo] | None:
    """Every enabled ``TensorQuantizer``: ``*_weight_quantizer*`` → weight, ``*_input_quantizer*`` →
    activation (NVIDIA places quantizers on the inputs of the layers it replaces)."""
    if not kit.backend_imported(MODULE):
        return None
    return [QuantizerInfo(name=n, role=_role(n), bits=int(q.num_bits), layer=n.rsplit(".", 1)[0] if "." in n else "")
            for n, q in _quantizers(model)]


def _role(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if "weight" in leaf:
        return "weight"
    if "input" in leaf:
        return "activation"
    return "other"


def _quantizers(model: nn.Module, *, enabled_only: bool = True) -> list[tuple[str, Any]]:
    """``(name, TensorQuantizer)`` of ``model`` (only when pytorch_quantization is imported)."""
    if not kit.backend_imported(MODULE):
        return []
    from pytorch_quantization.nn import TensorQuantizer

    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, TensorQuantizer) and not (enabled_only and getattr(m, "_disabled", False))]


# --------------------------------------------------------------------------------------------------
# loss preset: NVIDIA's QAT self-distillation
# --------------------------------------------------------------------------------------------------
@hookimpl
def daqakd_register_losses(register: Callable[[Any], None]) -> None:
    from daqakd_plugins.kit import LossPreset, LossTerm

    register(LossPreset(
        name="layerwise_mse",
        terms=(LossTerm(component="feature", weight=1.0),),
        description="NVIDIA's QAT self-distillation (yolo_deepstream yolov7_qat): label-free MSE between the "
                    "student's and the FP teacher's outputs of the layers in Distiller(features=...); "
                    "daqakd_pytorch_quantization.supervision_layers(model) picks them as yolov7_qat does",
    ))


def supervision_layers(model: nn.Module) -> list[str]:
    """The layers NVIDIA's ``yolov7_qat`` supervises during QAT fine-tuning: every top-level block of the
    network except the last (there: every ``model.model[i]`` but the Detect head; here: every top-level
    child but the classifier). Pass them to ``Distiller(teacher, student, loss="layerwise_mse",
    features=supervision_layers(student))``."""
    names = [n for n, _ in model.named_children()]
    if len(names) < 2:
        raise ModelError(
            f"{type(model).__name__} has {len(names)} top-level layer(s); layer-wise supervision needs at least two "
            "(pass the layer names yourself: Distiller(..., features=['block1', 'block2']))."
        )
    return names[:-1]


# --------------------------------------------------------------------------------------------------
# noise control
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pytorch-quantization for the duration of an adapter call only: its absl log lines (one
    or two per quantizer per calibration, "Use Pytorch's native experimental fake quantization", "Overwriting
    amax" on load), torch.jit's deprecation warning at import and the ONNX exporter's TracerWarnings."""
    absl_logging: Any = None
    old = None
    try:
        from absl import logging as absl_logging

        old = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with pytorch-quantization; without it there is nothing to silence
        absl_logging = None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*(TracerWarning|Converting a tensor to a Python).*")
            warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
            warnings.filterwarnings("ignore", module=r"torch\.jit.*")
            warnings.filterwarnings("ignore", module=r"pytorch_quantization.*")
            with contextlib.suppress(Exception):
                from torch.jit import TracerWarning

                warnings.filterwarnings("ignore", category=TracerWarning)
            yield
    finally:
        if absl_logging is not None and old is not None:
            absl_logging.set_verbosity(old)


def _import() -> Any:
    with _quiet():
        import pytorch_quantization.nn as quant_nn  # noqa: F401 - import once, quietly
        from pytorch_quantization import quant_modules

    return quant_modules


# --------------------------------------------------------------------------------------------------
# descriptors and the initialize() ... deactivate() window
# --------------------------------------------------------------------------------------------------
def _descriptors(cfg: QuantConfig, opts: PytorchQuantizationOptions) -> tuple[Any, Any]:
    """(input, weight) QuantDescriptors: activations per tensor with the chosen calibrator (or a learned
    range), weights per output channel (``axis=(0,)``) with max calibration, as in NVIDIA's recipe."""
    from pytorch_quantization.tensor_quant import QuantDescriptor

    calib_method = "max" if opts.calibrator == "max" else "histogram"
    if opts.learn_amax:
        inp = QuantDescriptor(num_bits=cfg.act_bits, calib_method=calib_method, learn_amax=True)
    else:
        inp = QuantDescriptor(num_bits=cfg.act_bits, calib_method=calib_method)
    wgt = QuantDescriptor(num_bits=cfg.weight_bits, axis=(0,) if cfg.per_channel else None, calib_method="max")
    return inp, wgt


@contextlib.contextmanager
def quant_window(config: QuantConfig | None = None, options: PytorchQuantizationOptions | dict[str, Any] | None = None,
                 ) -> Iterator[None]:
    """NVIDIA's ``quant_modules.initialize()`` … ``deactivate()`` as a context manager that cannot leak.

    Inside, ``torch.nn.Conv2d`` & co. *are* ``QuantConv2d`` & co. with descriptors for ``config``'s bits
    (weights per channel unless ``per_channel=False``) and ``options``' calibrator; the layers in
    ``options.float_module_list`` (default: the average pools) stay float. On leaving — also when the
    body raises — every patched ``torch.nn`` name and every quantized class's default descriptors are
    exactly what they were before. A fresh replacement helper is used each time: the package's global
    one accumulates its map across calls, so after one ``initialize()`` that quantized pools every
    later ``initialize(float_module_list=[...pools])`` would quantize them too.

        with quant_window(QuantConfig(weight_bits=8, act_bits=8)):
            model = MyNet()          # QuantConv2d / QuantLinear
        model.load_state_dict(float_state, strict=False)
    """
    from daqakd_plugins.kit import QuantConfig as _QC

    cfg = config if config is not None else _QC(weight_bits=8, act_bits=8)
    opts = options if isinstance(options, PytorchQuantizationOptions) else PytorchQuantizationOptions(**(options or {}))
    quant_modules = _import()
    with _quiet():
        inp, wgt = _descriptors(cfg, opts)
    saved_names = {(e.orig_mod, e.mod_name): getattr(e.orig_mod, e.mod_name) for e in quant_modules._DEFAULT_QUANT_MAP}
    classes = {e.replace_mod for e in quant_modules._DEFAULT_QUANT_MAP}
    saved_defaults = {c: {k: c.__dict__[k] for k in ("default_quant_desc_input", "default_quant_desc_weight")
                          if k in c.__dict__} for c in classes}
    helper = quant_modules.QuantModuleReplacementHelper()
    try:
        for c in classes:
            c.default_quant_desc_input = inp
            if hasattr(c, "default_quant_desc_weight"):
                c.default_quant_desc_weight = wgt
        helper.prepare_state(float_module_list=list(opts.float_module_list))
        helper.apply_quant_modules()
        yield
    finally:
        for (mod, name), orig in saved_names.items():
            setattr(mod, name, orig)
        for c, attrs in saved_defaults.items():
            for k in ("default_quant_desc_input", "default_quant_desc_weight"):
                if k in attrs:
                    setattr(c, k, attrs[k])
                elif k in c.__dict__:
                    delattr(c, k)


def _ctor_kwargs(m: nn.Module, name: str) -> dict[str, Any]:
    """The constructor arguments that re-create ``m`` (a plain ``torch.nn`` layer) under the patch."""
    mm: Any = m
    if name.startswith("ConvTranspose"):
        return dict(in_channels=mm.in_channels, out_channels=mm.out_channels, kernel_size=mm.kernel_size,
                    stride=mm.stride, padding=mm.padding, output_padding=mm.output_padding, groups=mm.groups,
                    bias=mm.bias is not None, dilation=mm.dilation, padding_mode=mm.padding_mode)
    if name.startswith("Conv"):
        return dict(in_channels=mm.in_channels, out_channels=mm.out_channels, kernel_size=mm.kernel_size,
                    stride=mm.stride, padding=mm.padding, dilation=mm.dilation, groups=mm.groups,
                    bias=mm.bias is not None, padding_mode=mm.padding_mode)
    if name == "Linear":
        return dict(in_features=mm.in_features, out_features=mm.out_features, bias=mm.bias is not None)
    if name.startswith("AdaptiveAvgPool"):
        return dict(output_size=mm.output_size)
    if name == "AvgPool1d":
        return dict(kernel_size=mm.kernel_size, stride=mm.stride, padding=mm.padding, ceil_mode=mm.ceil_mode,
                    count_include_pad=mm.count_include_pad)
    if name.startswith("AvgPool"):
        return dict(kernel_size=mm.kernel_size, stride=mm.stride, padding=mm.padding, ceil_mode=mm.ceil_mode,
                    count_include_pad=mm.count_include_pad, divisor_override=mm.divisor_override)
    raise BackendError(f"no constructor recipe for torch.nn.{name}")  # not reached: callers filter


def _swap_layers(model: nn.Module, cfg: QuantConfig, opts: PytorchQuantizationOptions) -> nn.Module:
    """A copy of ``model`` whose ``torch.nn`` layers are re-created inside :func:`quant_window` (so they
    come out as NVIDIA's quantized classes with the window's descriptors) and take the float weights."""
    from torch import nn as tnn

    student = copy.deepcopy(model)
    originals = {getattr(tnn, n): n for n in QUANT_MAP_NAMES}  # exact classes, read outside the window
    todo = [(name, m, originals[type(m)]) for name, m in student.named_modules()
            if name and type(m) in originals and originals[type(m)] not in opts.float_module_list]
    recurrent = sorted({f"{n} ({cls})" for n, _, cls in todo if cls in _RECURRENT})
    if recurrent:
        raise BackendError(
            f"{type(model).__name__} has recurrent layers {recurrent}; daqakd re-creates only Conv*/ConvTranspose*/"
            "Linear/(Adaptive)AvgPool layers. Leave them in float with QuantConfig(options={'float_module_list': "
            "['LSTM', 'LSTMCell', 'AvgPool2d', 'AdaptiveAvgPool2d']}), or build the model yourself inside "
            "quant_window() (pytorch-quantization's QuantLSTM) and pass that model."
        )
    if not todo:
        kinds = ", ".join(n for n in QUANT_MAP_NAMES if n not in opts.float_module_list)
        raise BackendError(
            f"no quantizers found: {type(model).__name__} has no torch.nn layer that pytorch-quantization replaces "
            f"({kinds}; subclasses of them and functional calls such as F.conv2d are not replaced). "
            f"{BUILD_HINT}"
        )
    new_by_id: dict[int, nn.Module] = {}
    with quant_window(cfg, opts):
        for _, m, cls in todo:
            if id(m) in new_by_id:
                continue
            new = getattr(tnn, cls)(**_ctor_kwargs(m, cls))  # the patched name: a Quant* layer
            missing, unexpected = new.load_state_dict(m.state_dict(), strict=False)
            if unexpected or any("quantizer" not in k for k in missing):
                raise BackendError(f"could not carry the weights of {cls} into {type(new).__name__}: "
                                   f"missing {missing}, unexpected {unexpected}")
            p = next(iter(m.parameters()), None)
            if p is not None:
                new.to(device=p.device, dtype=p.dtype)
            new.train(m.training)
            new_by_id[id(m)] = new
    for name, m, _ in todo:
        student.set_submodule(name, new_by_id[id(m)])
    for p in student.parameters():  # a copy of a frozen teacher would not train
        p.requires_grad_(True)
    return student


# --------------------------------------------------------------------------------------------------
# quantize
# --------------------------------------------------------------------------------------------------
@hookimpl
def daqakd_quantize(request: QuantizeRequest) -> nn.Module | None:
    return _quantize(request.model, request.config, request.options or PytorchQuantizationOptions(),
                     request.example_input, request.calib_data, request.layer_bits)


def _apply_plan(student: nn.Module, plan: Mapping[str, Mapping[str, int]], cfg: QuantConfig) -> None:
    """Set the widths of the planned layers whose bits differ from the uniform ones on their own weight and
    input quantizers (before calibration: an MSE range depends on the width)."""
    for role, attr in (("weight", "_weight_quantizer"), ("act", "_input_quantizer")):
        for path, bits in kit.plan_differences(plan, cfg, role).items():
            try:
                q: Any = getattr(student.get_submodule(path), attr)
            except AttributeError:
                raise BackendError(f"the bit plan names {path!r}, but the student has no {attr} there (is it in "
                                   "float_module_list / float_layers?); drop it from --layer-bits.") from None
            q.num_bits = bits
            cal = getattr(q, "_calibrator", None)
            if cal is not None and hasattr(cal, "_num_bits"):
                cal._num_bits = bits


def _quantize(model: nn.Module, cfg: QuantConfig, opts: PytorchQuantizationOptions, x: torch.Tensor,
              calib_data: Any, plan: Mapping[str, Mapping[str, int]] | None = None) -> nn.Module:
    import torch

    _import()
    with _quiet():
        if _quantizers(model):
            student = copy.deepcopy(model)  # built inside the window by the user: taken as it is
            have = {int(q.num_bits) for n, q in _quantizers(student) if _role(n) == "weight"}
            if have and have != {cfg.weight_bits}:
                warnings.warn(
                    f"{type(model).__name__} already has pytorch-quantization quantizers with {sorted(have)}-bit "
                    f"weights; it is used as it is, so QuantConfig(weight_bits={cfg.weight_bits}) does not change it.",
                    stacklevel=3,
                )
            for p in student.parameters():
                p.requires_grad_(True)
        else:
            student = _swap_layers(model, cfg, opts)
            _apply_plan(student, plan or {}, cfg)
        student.train(model.training)
        was = student.training
        try:
            student.eval()
            with torch.no_grad():
                student(x[:2].to(kit.device_of(student)))
        except Exception as exc:  # noqa: BLE001
            raise BackendError(
                f"the pytorch-quantization student fails on example_input of shape {tuple(x.shape)}: "
                f"{type(exc).__name__}: {exc}. Pass an example batch the float model accepts."
            ) from exc
        finally:
            student.train(was)
        if calib_data is not None:
            _calibrate(student, calib_data, cfg.calib_batches, opts)
    return student


# --------------------------------------------------------------------------------------------------
# calibration: NVIDIA's collect_stats + compute_amax, re-estimated on every call
# --------------------------------------------------------------------------------------------------
def _no_quantizers(model: nn.Module, what: str) -> ModelError:
    return ModelError(
        f"no quantizers found in {type(model).__name__}: it has no pytorch-quantization TensorQuantizer, so there "
        f"is nothing to {what}. This happens when the model was built outside the initialize() ... deactivate() "
        f"window. {BUILD_HINT}"
    )


def _mse_amax(hist: np.ndarray, edges: np.ndarray, num_bits: int, unsigned: bool, stride: int = 1,
              start_bin: int = 128) -> torch.Tensor:
    """pytorch_quantization.calib.histogram._compute_amax_mse without its ``.cuda()`` calls (the same
    search: the bin centre whose fake-quantized histogram has the least squared error)."""
    import numpy as np
    import torch
    from pytorch_quantization.tensor_quant import fake_tensor_quant

    counts = torch.from_numpy(np.asarray(hist)).float()
    e = torch.from_numpy(np.asarray(edges)).float()
    centers = (e[1:] + e[:-1]) / 2
    best, arg = math.inf, None
    for i in range(start_bin, len(centers), stride):
        q = fake_tensor_quant(centers, centers[i], num_bits, unsigned)
        mse = float(((q - centers) ** 2 * counts).mean())
        if mse < best:
            best, arg = mse, i
    if arg is None:  # fewer bins than start_bin: the largest value
        return centers[-1].clone()
    return centers[arg].clone()


def _compute_amax(name: str, q: Any, opts: PytorchQuantizationOptions) -> torch.Tensor:
    from pytorch_quantization import calib

    c = q._calibrator
    if isinstance(c, calib.MaxCalibrator):
        amax = c.compute_amax()
    else:
        method = opts.calibrator if opts.calibrator != "max" else "percentile"
        if c._calib_hist is None:
            amax = None
        elif method == "mse":
            hist = c._calib_hist.int().cpu().numpy() if hasattr(c._calib_hist, "cpu") else c._calib_hist
            edges = c._calib_bin_edges.cpu().numpy() if hasattr(c._calib_bin_edges, "cpu") else c._calib_bin_edges
            amax = _mse_amax(hist, edges, q.num_bits, q.unsigned)
        elif method == "percentile":
            amax = c.compute_amax("percentile", percentile=opts.percentile)
        else:
            amax = c.compute_amax(method)
    if amax is None:
        raise DataError(
            f"quantizer {name!r} saw no data during calibration (its layer did not run in forward()); "
            "calibrate with batches that run every quantized layer, or disable that quantizer."
        )
    return amax.detach()


def _set_amax(q: Any, amax: torch.Tensor, device: torch.device) -> None:
    amax = amax.to(device)
    if "_amax" in q._buffers and q._amax.shape == amax.shape:
        q._amax.data.copy_(amax)
    else:
        q.register_buffer("_amax", amax.clone())


def _calibrate(model: nn.Module, data: Any, num_batches: int, opts: PytorchQuantizationOptions) -> nn.Module:
    import torch

    qs = _quantizers(model)
    if not qs:
        raise _no_quantizers(model, "calibrate")
    dev = kit.device_of(model)
    was = model.training
    model.eval()  # BatchNorm keeps its running statistics
    state = []
    for _, q in qs:
        if q._calibrator is None:
            raise ModelError(f"a TensorQuantizer of {type(model).__name__} has no calibrator; give its QuantDescriptor "
                             "calib_method='max' or 'histogram'.")
        q._calibrator.reset()  # re-estimate: NVIDIA's calibrators accumulate across collect calls
        if hasattr(q._calibrator, "_num_bins"):
            q._calibrator._num_bins = opts.num_bins  # reset() keeps a bin count grown by the last data
        state.append(q._if_clip)
        q.disable_quant()
        q.enable_calib()
        q._if_clip = False  # a learned-range clip (initialised at ±1) would distort what later layers see
    seen = 0
    try:
        with torch.no_grad():
            for xb in kit.image_batches(data, num_batches):
                model(xb.to(dev))
                seen += 1
    finally:
        for (_, q), if_clip in zip(qs, state):
            q.disable_calib()
            q.enable_quant()
            q._if_clip = if_clip
        model.train(was)
    if seen == 0:
        raise DataError("calibration data yielded no batches; pass at least one [B, C, H, W] image batch.")
    for name, q in qs:
        _set_amax(q, _compute_amax(name, q, opts), dev)
        q._calibrator.reset()  # free the histograms
        if q._learn_amax:
            q.init_learn_amax()
    return model


@hookimpl
def daqakd_calibrate(request: CalibrateRequest) -> nn.Module | None:
    opts = request.options or PytorchQuantizationOptions()  # the options the student was quantized with
    _import()
    with _quiet():
        return _calibrate(request.model, request.data, request.num_batches, opts)


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def _formats(requested: tuple[str, ...] | None, min_bits: int, low: Sequence[str] = ()) -> tuple[str, ...]:
    if not requested:
        if min_bits < 8:
            log.info("sub-8-bit student: writing %s only (TensorRT has no INT%d activations)", FMT_ORT, min_bits)
            return (FMT_ORT,)
        return FORMATS
    out: list[str] = []
    for f in requested:
        key = FORMAT_ALIASES.get(str(f).lower())
        if key is None:
            raise ExportError(
                f"pytorch-quantization cannot export format {f!r}; supported: {FMT_ORT} (onnxruntime: integer "
                f"weights, exact on every x86 CPU) and {FMT_TRT} (NVIDIA's Q/DQ file for TensorRT, 8-bit only)."
            )
        if key not in out:
            out.append(key)
    if FMT_TRT in out and min_bits < 8:
        raise ExportError(
            f"cannot write {FMT_TRT} for a student with {min_bits}-bit quantizers"
            f"{' (in ' + ', '.join(low[:6]) + (', ...' if len(low) > 6 else '') + ')' if low else ''}: TensorRT runs INT8 Q/DQ only (its INT4 is "
            "weight-only and block-quantized for GEMMs; there are no INT4 activations), and ONNX opset 13, "
            "NVIDIA's export, has no type below 8 bits, so no TensorRT engine could execute this file as "
            f"trained. Quantize with weight_bits=8 and act_bits=8 (--bits 8) for TensorRT, or export "
            f"formats=('{FMT_ORT}',) (sub-8-bit ranges as int8 QuantizeLinear -> Clip -> DequantizeLinear, run by "
            "onnxruntime)."
        )
    return tuple(out)


def _qcdq_function() -> Any:
    """``fake_quantize_per_{tensor,channel}_affine`` whose ONNX form is QuantizeLinear → Clip →
    DequantizeLinear (int8 storage, the sub-8-bit range kept by the Clip): torch's own opset-13
    symbolic refuses ranges other than int8/uint8/(0, 127)."""
    import torch

    class QCDQ(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, axis: int, channels: int, qmin: int,
                    qmax: int) -> torch.Tensor:
            if axis < 0:
                return torch.fake_quantize_per_tensor_affine(x, float(scale), 0, qmin, qmax)
            zp = torch.zeros(channels, dtype=torch.int32, device=x.device)
            return torch.fake_quantize_per_channel_affine(x, scale, zp, axis, qmin, qmax)

        @staticmethod
        def symbolic(g: Any, x: Any, scale: Any, axis: int, channels: int, qmin: int, qmax: int) -> Any:
            kw = {} if axis < 0 else {"axis_i": axis}
            zp = torch.zeros((), dtype=torch.int8) if axis < 0 else torch.zeros(channels, dtype=torch.int8)
            zpv = g.op("Constant", value_t=zp)
            q = g.op("QuantizeLinear", x, scale, zpv, **kw)
            lo = g.op("Constant", value_t=torch.tensor(qmin, dtype=torch.int8))
            hi = g.op("Constant", value_t=torch.tensor(qmax, dtype=torch.int8))
            c = g.op("Clip", q, lo, hi)
            return g.op("DequantizeLinear", c, scale, zpv, **kw)

    return QCDQ


def _sub8_fake_quant(fn: Any) -> Callable[..., Any]:
    """A replacement for ``TensorQuantizer._fb_fake_quant`` (bound per instance, on the export copy only)
    that computes exactly what NVIDIA's method computes and exports sub-8-bit ranges as Q → Clip → DQ."""

    def fb_fake_quant(self: Any, inputs: Any, amax: Any) -> Any:
        bound = (1 << (self._num_bits - 1 + int(self._unsigned))) - 1
        lo = 0 if self._unsigned else -bound - 1
        if amax.numel() == 1:
            return fn.apply(inputs, (amax.detach().reshape(()) / bound).float().data, -1, 1, lo, bound)
        a = amax.detach().squeeze()
        if a.dim() != 1:
            raise TypeError("Pytorch's native quantization doesn't support multiple axes")
        axis = list(amax.shape).index(a.shape[0])
        return fn.apply(inputs, (a / bound).float().data, axis, int(a.shape[0]), lo, bound)  # .data: a constant, as NVIDIA's

    return fb_fake_quant


def _exact_function() -> Any:
    """Fake quantization as pytorch-quantization trains it, ``clamp(round(x · bound/amax)) / (bound/amax)``,
    whose ONNX form is ``Mul(bound/amax) → QuantizeLinear(scale 1) → [Clip] → DequantizeLinear(amax/bound)``.

    Why not NVIDIA's ``QuantizeLinear(x, amax/bound)``: ONNX *divides* by the scale, pytorch-quantization
    *multiplies* by its inverse, and at ties the two round differently. Digits pixels are multiples of
    1/16; with amax 1 (max calibration) the pixel 0.5 is exactly 3.5 levels at 4 bits: torch rounds it to
    4, ``0.5 / fl(1/7)`` gives 3 — measured: 83 % of the W4A4 test images had logits off by more than 1e-3
    (up to 1.8). With the multiplication in the graph the file computes what the student computes."""
    import torch

    class QMul(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, mul: torch.Tensor, dq: torch.Tensor, axis: int, qmin: int,
                    qmax: int) -> torch.Tensor:
            return torch.clamp(torch.round(x * mul), qmin, qmax) / mul

        @staticmethod
        def symbolic(g: Any, x: Any, mul: Any, dq: Any, axis: int, qmin: int, qmax: int) -> Any:
            channels = int(dq.type().sizes()[0]) if axis >= 0 and dq.type().sizes() else 1
            return kit.write_exact_qdq(g, x, mul, dq, qmin=qmin, qmax=qmax, axis=axis, channels=channels)

    return QMul


def _exact_fake_quant(fn: Any) -> Callable[..., Any]:
    """A replacement for ``TensorQuantizer._fb_fake_quant`` on the export copy: the training arithmetic
    (narrow range and unsigned honoured) in the :func:`_exact_function` form."""

    def fb_fake_quant(self: Any, inputs: Any, amax: Any) -> Any:
        import torch

        bound = float((1 << (self._num_bits - 1 + int(self._unsigned))) - 1)
        qmin = 0 if self._unsigned else (-int(bound) if self._narrow_range else -int(bound) - 1)
        a = amax.detach().float()
        mul = (torch.tensor(bound, dtype=torch.float32) / a).data  # exactly the scale torch trains with
        if a.numel() == 1:
            return fn.apply(inputs, mul.reshape(()), (a.reshape(()) / bound).data, -1, qmin, int(bound))
        flat = a.squeeze()
        if flat.dim() != 1:
            raise TypeError("per-channel amax must vary along one axis")
        axis = list(a.shape).index(flat.shape[0])
        return fn.apply(inputs, mul, (flat / bound).data, axis, qmin, int(bound))

    return fb_fake_quant


def _torch_export(model: nn.Module, x: torch.Tensor, path: Path, *, exact: bool = False) -> None:
    """``TensorQuantizer.use_fb_fake_quant = True`` (a class attribute, restored after) and
    ``torch.onnx.export(opset_version=13)`` with the TorchScript exporter. ``exact=False``: NVIDIA's
    export (sub-8-bit quantizers of the export copy emit Q → Clip → DQ, which opset 13 needs);
    ``exact=True``: every quantizer in the :func:`_exact_function` form (the onnxruntime file)."""
    import torch
    from pytorch_quantization.nn import TensorQuantizer

    fn = None
    for _, q in _quantizers(model):
        if "_amax" in q._buffers:
            q._amax.data.clamp_(min=2.0 ** -24)  # an all-zero channel: scale 0 would divide by zero in ONNX
        if exact:
            fn = fn or _exact_function()
            q._fb_fake_quant = types.MethodType(_exact_fake_quant(fn), q)
        elif q.num_bits < 8:
            fn = fn or _qcdq_function()
            q._fb_fake_quant = types.MethodType(_sub8_fake_quant(fn), q)
    old = TensorQuantizer.use_fb_fake_quant
    TensorQuantizer.use_fb_fake_quant = True
    try:
        with torch.no_grad():
            torch.onnx.export(model, (x,), str(path), opset_version=13, dynamo=False, do_constant_folding=True,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    finally:
        TensorQuantizer.use_fb_fake_quant = old


def _ort_session(path: Path, *, fuse_qdq: bool) -> Callable[[np.ndarray], np.ndarray]:
    # No Q/DQ fusion: onnxruntime folds the weights' DequantizeLinear into float initializers and runs
    # its prepacked float kernels on quantized values (ONNX's reference semantics, exact on every CPU).
    # Why: NVIDIA's placement (quantizers on layer inputs only, BatchNorm unfused) leaves onnxruntime
    # no DQ -> Conv -> Q group to fuse into integer kernels, and a default session then runs every
    # Conv with a runtime weight input, unprepacked: 2.7-3.3 ms against 0.88 ms per batch of 64 for the FP
    # model (digits students, one process); with fusion off 1.04-1.09 ms.
    return ort_predict(path, fuse_qdq=fuse_qdq)


def _export(request: ExportRequest) -> list[ExportedModel]:
    model: nn.Module = request.model
    qs = _quantizers(model)
    if not qs:
        raise ExportError(str(_no_quantizers(model, "export as Q/DQ ONNX")) + " (A float model exports with "
                          "torch.onnx.export.)")
    dynamic = [n for n, q in qs if "_amax" not in q._buffers and not q._learn_amax]
    if dynamic:
        raise ExportError(
            f"{len(dynamic)} quantizer(s) have no calibrated range (amax), e.g. {dynamic[:3]}: the export would freeze "
            "the ranges of the example input into the file. Calibrate first: daqakd_plugins.backends.calibrate("
            "student, 'pytorch-quantization', images) (or quantize(..., calib_data=images))."
        )
    min_bits = min(int(q.num_bits) for _, q in qs)
    low = sorted({n.rsplit(".", 1)[0] for n, q in qs if int(q.num_bits) < 8})  # the layers a bit plan left below 8
    fmts = _formats(request.formats, min_bits, low)
    out_dir = Path(request.out_dir)
    x = request.example_input[:1].detach().cpu().float()
    out: list[ExportedModel] = []
    for fmt in fmts:
        m = copy.deepcopy(model).cpu().eval()  # the export patches its quantizers: never the student's
        if fmt == FMT_TRT:
            path = out_dir / "student.tensorrt.onnx"
            _export_or_explain(model, m, x, path, exact=False)
            out.append(ExportedModel(
                format=FMT_TRT, path=path, runtime="onnxruntime-unfused", predict=_ort_session(path, fuse_qdq=False),
                u8s8_guard=False,
                notes="NVIDIA's export for TensorRT (use_fb_fake_quant, opset 13): int8 Q/DQ with zero point 0, "
                      "float weights behind QuantizeLinear; trtexec --onnx=FILE --int8 builds the engine. Run here "
                      "in onnxruntime with session.disable_quant_qdq=1, where it is exact on every CPU; in a default "
                      "onnxruntime session its U8S8 pattern can saturate on CPUs without VNNI (use onnx-qdq there)."))
            continue
        path = out_dir / "student.qdq.onnx"
        _export_or_explain(model, m, x, path, exact=True)
        # weights quantized ahead of time into stored integers (the constant Mul -> QuantizeLinear [-> Clip]
        # chains folded, as onnxruntime computes them), then the exact onnxruntime re-encodings
        prep = kit.prepare_for_onnxruntime(path, fold_weights=True)
        notes = "Mul(bound/amax) -> QuantizeLinear -> DequantizeLinear (opset 13, the student's own rounding)"
        if min_bits < 8:
            notes += "; sub-8-bit ranges as int8 with a Clip"
        notes += kit.preparation_notes(prep)
        notes += ("; exact in any onnxruntime session (no U8S8 pattern); run here with session.disable_quant_qdq=1 "
                  "(same outputs as a default session, several times faster for this Q/DQ placement)")
        out.append(ExportedModel(format=FMT_ORT, path=path, runtime="onnxruntime",
                                 predict=_ort_session(path, fuse_qdq=False), notes=notes, u8s8_guard=True))
    return out


def _export_or_explain(model: nn.Module, copy_: nn.Module, x: torch.Tensor, path: Path, *, exact: bool) -> None:
    try:
        _torch_export(copy_, x, path, exact=exact)
    except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
        raise ExportError(
            f"torch.onnx.export could not export {type(model).__name__} with pytorch-quantization's Q/DQ "
            f"({type(exc).__name__}: {exc}). What exports: models of QuantConv*/QuantLinear/pools and ops "
            "the TorchScript exporter knows, traced with dynamo=False, in float32 (not AMP)."
        ) from exc


@hookimpl
def daqakd_export(request: ExportRequest) -> list[ExportedModel] | None:
    _import()
    with _quiet():
        return _export(request)


# --------------------------------------------------------------------------------------------------
# save / restore
# --------------------------------------------------------------------------------------------------
@hookimpl
def daqakd_save_student(request: SaveRequest) -> dict[str, Any] | None:
    return {"state_dict": request.model.state_dict()}


def register_amax_buffers(model: nn.Module, state: Any) -> int:
    """Give every TensorQuantizer of ``model`` that lacks an ``_amax`` buffer the one ``state`` holds
    for it (same shape, on the quantizer's device), so that ``load_state_dict`` fills it in place.

    Why: ``TensorQuantizer._load_from_state_dict`` creates a missing ``_amax`` with ``.cuda()``, so
    loading a calibrated checkpoint into a freshly built (uncalibrated) student fails on a host without
    CUDA ("Found no NVIDIA driver"). Returns how many buffers were registered."""
    import torch

    n = 0
    dev = kit.device_of(model)
    for name, q in _quantizers(model, enabled_only=False):
        key = f"{name}._amax" if name else "_amax"
        if key in state and "_amax" not in q._buffers:
            q.register_buffer("_amax", torch.empty_like(state[key], device=dev))
            n += 1
    return n


@hookimpl
def daqakd_restore_student(request: RestoreRequest) -> nn.Module | None:
    """Quantize the fresh FP model the same way (no calibration: the ranges are in the state), register
    the ``_amax`` buffers (CPU-safe), then load the saved state."""
    student = _quantize(request.model, request.config, request.options or PytorchQuantizationOptions(),
                        request.example_input, None, request.layer_bits)
    state = request.payload["state_dict"]
    with _quiet():
        register_amax_buffers(student, state)
        student.load_state_dict(state)
    return student
