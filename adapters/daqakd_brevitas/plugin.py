"""daqakd plugin: brevitas (AMD/Xilinx Brevitas low-bit QAT for FPGA (FINN) flows).

What it does (see docs/backends/brevitas.md):

* ``daqakd_quantize`` turns a float model into a Brevitas student with *graph mode*
  (``preprocess_for_quantize`` → ``brevitas.graph.quantize.quantize``) using copies of Brevitas'
  layer maps in which the bit widths are set, per-channel weight scales by default. A model the user
  already built from ``brevitas.nn`` layers is taken as it is (deep-copied). The float model is never
  modified: graph mode merges BatchNorm into the convolutions *in place*, so it always works on a copy.
* ``daqakd_calibrate`` sets activation ranges under ``brevitas.graph.calibrate.calibration_mode``.
* ``daqakd_export`` writes QCDQ ONNX (run with onnxruntime) and QONNX (what FINN consumes; run with
  ``qonnx``'s ``execute_onnx`` after ``cleanup_model``).

Brevitas is imported lazily, inside the hooks that need it, never at import time: ``import
daqakd_plugins`` and ``daqakd plugins`` must stay fast and work without it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
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
    QuantizerInfo,
    hookimpl,
    preparation_notes,
    prepare_for_onnxruntime,
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

NAME = "brevitas"
BITS = (1, 8)  # weights: 1 bit is binary (sign·scale), exported as QONNX BipolarQuant
ACT_BITS = (2, 8)  # a 1-bit activation exports as BipolarQuant ({-1, +1}), not the {0, 1} of a 1-bit ReLU
FORMATS = ("onnx-qcdq", "qonnx")
FORMAT_ALIASES = {"qcdq": "onnx-qcdq", "onnx": "onnx-qcdq", "onnx-qcdq": "onnx-qcdq", "qonnx": "qonnx", "finn": "qonnx"}

BITS_NOTE = ("Brevitas exports integer QCDQ/QONNX of at most 8 bits; a 1-bit activation would export as "
             "QONNX BipolarQuant ({-1, +1}), which is not what a 1-bit ReLU computes ({0, 1}), so only "
             "weights can be 1-bit (binary).")


@dataclass(frozen=True, kw_only=True)
class BrevitasOptions:
    """``QuantConfig.options`` for Brevitas (documented in docs/backends/brevitas.md).

    ``float_layers``: layer class names, module paths or function names to leave in float;
    ``input_bits`` / ``output_bits``: the quantizers graph mode puts on the network input (images are
    8-bit data) and on the logits (KD needs their resolution; FINN needs integers), 2..8;
    ``merge_bn``: fold BatchNorm into the preceding conv/linear before quantizing (FINN style);
    ``reduce_range``: train 8-bit weights in the 7-bit range ±63, so the QCDQ export runs onnxruntime's
    fast U8S8 kernels and is still exact on CPUs without VNNI (otherwise daqakd stores those weights as
    uint8 at export: exact everywhere, slower on VNNI CPUs). Measured trade-off in the docs;
    ``bias_quant``: quantize biases to Int32 (FINN style). Off, biases stay float: Brevitas' QCDQ exporter
    refuses ("QuantTensor not valid") a bias its Int32 grid cannot hold exactly, which happened for
    EfficientNet-B0 and MobileNetV3 (see docs/models.md).
    """

    float_layers: tuple[str, ...] = ()
    input_bits: int = 8
    output_bits: int = 8
    merge_bn: bool = True
    reduce_range: bool = False
    bias_quant: bool = True

    def __post_init__(self) -> None:
        fl = self.float_layers
        if isinstance(fl, str):
            fl = (fl,)
        if not isinstance(fl, Iterable) or not all(isinstance(v, str) and v for v in fl):
            raise ConfigError(
                f"options['float_layers'] must be a list of layer class names, module paths or function names "
                f"(e.g. ['GELU'] or ['blocks.0.act']), got {self.float_layers!r}."
            )
        object.__setattr__(self, "float_layers", tuple(fl))
        for name in ("input_bits", "output_bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= BITS[1]:
                raise ConfigError(f"options['{name}'] must be an integer from 2 to {BITS[1]}, got {v!r}.")
        for name in ("merge_bn", "reduce_range", "bias_quant"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"options['{name}'] must be True or False, got {getattr(self, name)!r}.")

log = logging.getLogger("daqakd.brevitas")


class _DropCpuCudaHomeNotice(logging.Filter):
    """``import brevitas`` imports torch.utils.cpp_extension, which logs "No CUDA runtime is found" on
    every CPU-only machine. The core imports brevitas to check availability (outside our hooks), so
    the filter is installed when this plugin loads; it drops only that one line, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No CUDA runtime is found" not in record.getMessage()


logging.getLogger("torch.utils.cpp_extension").addFilter(_DropCpuCudaHomeNotice())
# Brevitas warns at import that an optional CUDA kernel package is missing; irrelevant to users here.
warnings.filterwarnings("ignore", message=".*fast_hadamard_transform package not found.*")


# --------------------------------------------------------------------------------------------------
# registration and counting (must not import brevitas)
# --------------------------------------------------------------------------------------------------
@hookimpl
def daqakd_register_backends(register: Callable[[BackendInfo], None]) -> None:
    register(
        BackendInfo(
            name=NAME,
            module="brevitas",
            default_priority=100,  # the default backend: exports for onnxruntime on every CPU, any bits 2..8
            distribution="brevitas",
            install='pip install "daqakd[brevitas]"',
            weight_bits=BITS,
            act_bits=ACT_BITS,
            bits_note=BITS_NOTE,
            export_formats=FORMATS,
            options_type=BrevitasOptions,
            description="AMD/Xilinx Brevitas low-bit QAT for FPGA (FINN) flows",
            implemented=True,
            # per-layer weight widths 2..8 (1 bit is a different quantizer: uniform only); activations are
            # quantized where they are produced (QuantReLU, QuantIdentity), not per weight layer
            bit_plans=True,
            layer_weight_bits=tuple(range(2, BITS[1] + 1)),
            layer_act_bits=False,
        )
    )


@hookimpl
def daqakd_describe_quantizers(model: nn.Module) -> list[QuantizerInfo] | None:
    """Enabled weight and activation quantizers (bias quantizers and the disabled ``input_quant`` /
    ``output_quant`` proxies every Brevitas layer carries are not listed). The input and logit
    quantizers graph mode adds have roles ``input`` / ``output``."""
    if not kit.backend_imported("brevitas"):  # never imported (or blocked): not ours to describe
        return None
    return _describe(model)


def _describe(model: nn.Module) -> list[QuantizerInfo]:
    with _quiet():
        from brevitas.proxy.parameter_quant import WeightQuantProxyFromInjectorBase
        from brevitas.proxy.runtime_quant import ActQuantProxyFromInjectorBase
    mods = dict(model.named_modules())
    out: list[QuantizerInfo] = []
    for name, mod in mods.items():
        m: Any = mod
        if not isinstance(m, (WeightQuantProxyFromInjectorBase, ActQuantProxyFromInjectorBase)):
            continue
        if not bool(getattr(m, "is_quant_enabled", False)):
            continue
        if isinstance(m, WeightQuantProxyFromInjectorBase):
            role = "weight"
        else:
            parent = mods.get(name.rsplit(".", 1)[0]) if "." in name else None
            role = getattr(parent, "_daqakd_role", "activation")
        bits = 0
        with contextlib.suppress(Exception):
            bits = int(m.bit_width())
        layer = name.rsplit(".", 1)[0] if role == "weight" and "." in name else ""
        out.append(QuantizerInfo(name=name, role=role, bits=bits, layer=layer))
    return out


@hookimpl
def daqakd_unwrap_output(output: Any) -> torch.Tensor | None:
    """A Brevitas ``QuantTensor`` (what a hand-built model with ``return_quant_tensor=True`` returns)
    as its dequantized value."""
    if not kit.backend_imported("brevitas"):
        return None
    from brevitas.quant_tensor import QuantTensor

    return output.value if isinstance(output, QuantTensor) else None


# --------------------------------------------------------------------------------------------------
# noise control
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Brevitas' import and tracing noise for the duration of an adapter call only:
    "fast_hadamard_transform package not found", torch.fx / torch.onnx Future- and
    DeprecationWarnings, and torch's "No CUDA runtime is found" log line from cpp_extension."""
    cpp_log = logging.getLogger("torch.utils.cpp_extension")
    old = cpp_log.level
    cpp_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fast_hadamard_transform.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*(TracerWarning|Converting a tensor to a Python).*")
            warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
            warnings.filterwarnings("ignore", module=r"torch\.fx.*")
            yield
    finally:
        cpp_log.setLevel(old)


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
def _is_brevitas_model(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("brevitas.") for m in model.modules())


# --------------------------------------------------------------------------------------------------
# graph-mode quantization
# --------------------------------------------------------------------------------------------------
def _weight_quant(bits: int, per_channel: bool) -> Any:
    """The weight quantizer for ``bits``: Brevitas' Int8 float-scaled quantizers with the bit width
    overridden (narrow range, so 2 bits = {-1, 0, 1}·scale), and for 1 bit a binary quantizer
    (sign·scale) whose scale is the mean |w| per channel — a 1-bit narrow-range integer would be all
    zeros."""
    from brevitas.core.function_wrapper import TensorClamp
    from brevitas.inject.enum import ScalingImplType, ScalingPerOutputType, StatsOp
    from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat
    from brevitas.quant.binary import SignedBinaryWeightPerTensorConst

    if bits == 1:
        return SignedBinaryWeightPerTensorConst.let(
            tensor_clamp_impl=TensorClamp,
            scaling_impl_type=ScalingImplType.STATS,
            scaling_stats_op=StatsOp.AVE,
            scaling_per_output_type=ScalingPerOutputType.CHANNEL if per_channel else ScalingPerOutputType.TENSOR,
        )
    return Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat


def _layer_maps(cfg: QuantConfig, opts: BrevitasOptions) -> dict[str, Any]:
    """Copies of Brevitas' default graph-mode maps with our bit widths (the module-level maps are
    shared by every caller in the process, so they are never mutated)."""
    import brevitas.nn as qnn
    from brevitas.graph import quantize as gq
    from brevitas.quant import Int8ActPerTensorFloatMinMaxInit
    from torch import nn

    wq = _weight_quant(cfg.weight_bits, cfg.per_channel)
    compute: dict[type, Any] = {}
    for layer, spec in gq.COMPUTE_LAYER_MAP.items():
        if layer in _WEIGHT_LAYERS() and spec is not None:
            cls, kw = spec
            compute[layer] = (cls, {**kw, "weight_quant": wq, "weight_bit_width": _stored_weight_bits(cfg, opts)})
            if not opts.bias_quant:
                compute[layer][1]["bias_quant"] = None
        else:  # AvgPool (left alone by Brevitas) and RNN/LSTM/MHA (not bit-configurable here)
            compute[layer] = None
    acts: dict[type, Any] = {}
    for layer, (cls, kw) in gq.QUANT_ACT_MAP.items():
        acts[layer] = (cls, {**kw, "bit_width": cfg.act_bits})
    acts[nn.Tanh] = (qnn.QuantTanh, {"act_quant": Int8ActPerTensorFloatMinMaxInit, "min_val": -1.0,
                                     "max_val": 1.0, "bit_width": cfg.act_bits, "return_quant_tensor": True})
    ident = {sign: (cls, {**kw, "bit_width": cfg.act_bits}) for sign, (cls, kw) in gq.QUANT_IDENTITY_MAP.items()}
    return {"compute_layer_map": compute, "quant_act_map": acts, "quant_identity_map": ident}


def _stored_weight_bits(cfg: QuantConfig, opts: BrevitasOptions) -> int:
    """8-bit weights kept to the 7-bit range ±63 with ``reduce_range`` (onnxruntime's remedy for its
    U8S8 saturation, see docs/backends/brevitas.md); the requested width otherwise."""
    return 7 if opts.reduce_range and cfg.weight_bits == 8 else cfg.weight_bits


def _WEIGHT_LAYERS() -> tuple[type, ...]:  # noqa: N802 - a constant that needs torch imported
    from torch import nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def _passthrough_layers() -> tuple[type, ...]:
    """Float modules that are fine in a Brevitas graph: they only move, pick, pool or scale values
    (BatchNorm left after merging is absorbed by FINN's streamlining), so they need no quantizer."""
    from torch import nn

    return (
        nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
        nn.AlphaDropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
        nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
        nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Upsample,
        nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad1d,
        nn.ConstantPad2d, nn.ConstantPad3d, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
        nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    )


_FLOAT_METHODS = {"sigmoid", "tanh", "softmax", "log_softmax", "exp", "log", "sqrt", "rsqrt", "pow",
                  "relu", "gelu", "silu", "clamp", "div", "norm"}


def _float_functions() -> dict[Any, str]:
    """Functional calls that compute a non-linearity or a normalisation in float inside the graph."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    fns = [F.gelu, F.silu, F.elu, F.selu, F.celu, F.mish, F.hardswish, F.hardsigmoid, F.softplus,
           F.softsign, F.tanhshrink, F.logsigmoid, F.softmax, F.log_softmax, F.layer_norm, F.group_norm,
           F.instance_norm, F.local_response_norm, F.normalize, F.sigmoid, F.tanh, F.glu,
           torch.sigmoid, torch.tanh, torch.softmax, torch.exp, torch.log, torch.sqrt, torch.rsqrt,
           torch.pow, torch.div, torch.true_divide, torch.erf, torch.layer_norm, torch.group_norm]
    return {f: f"{getattr(f, '__module__', None) or 'torch'}.{getattr(f, '__name__', str(f))}" for f in fns}


def _unsupported(graph: torch.fx.GraphModule, float_layers: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(type name, where)`` for every graph node computing something Brevitas graph mode cannot
    quantize here and that the user did not list in ``options['float_layers']``."""
    maps_ok = _WEIGHT_LAYERS()
    from brevitas.graph import quantize as gq
    from torch import nn

    act_ok = (*gq.QUANT_ACT_MAP.keys(), nn.Tanh)
    passthrough = _passthrough_layers()
    allowed = set(float_layers)
    fns = _float_functions()
    out: list[tuple[str, str]] = []
    mods = dict(graph.named_modules())
    for node in graph.graph.nodes:
        if node.op == "call_module":
            m = mods.get(str(node.target))
            if m is None or _is_brevitas_model(m):
                continue
            if type(m) in maps_ok or type(m) in act_ok or type(m) in passthrough:
                continue
            tname = type(m).__name__
            if tname in allowed or str(node.target) in allowed or type(m).__qualname__ in allowed:
                continue
            out.append((tname, str(node.target)))
        elif node.op == "call_function" and node.target in fns:
            full = fns[node.target]
            short = full.rsplit(".", 1)[-1]
            if short in allowed or full in allowed or node.name in allowed:
                continue
            out.append((full, f"node {node.name}"))
        elif node.op == "call_method" and str(node.target) in _FLOAT_METHODS:
            if str(node.target) in allowed or node.name in allowed:
                continue
            out.append((f"Tensor.{node.target}", f"node {node.name}"))
    return out


def _raise_unsupported(found: list[tuple[str, str]]) -> None:
    by_type: dict[str, list[str]] = {}
    for t, where in found:
        by_type.setdefault(t, []).append(where)
    listing = "; ".join(f"{t} (at {', '.join(w[:4])}{', ...' if len(w) > 4 else ''})" for t, w in by_type.items())
    names = sorted({t.rsplit(".", 1)[-1] for t in by_type})
    raise BackendError(
        f"Brevitas graph mode has no quantized equivalent here for: {listing}. Quantized are "
        "Conv1d/2d/3d, ConvTranspose1d/2d/3d and Linear (weights) and ReLU, ReLU6, Hardtanh, Sigmoid, "
        "Tanh (activations). Either replace these layers with supported ones, or leave them in float with "
        f"QuantConfig(options={{'float_layers': {names!r}}}) (module paths work too); their outputs are then "
        "re-quantized at the next quantized layer. A float layer also stays float in the exported "
        "ONNX, which FINN cannot map to hardware."
    )


def _replace_io_quant(q: torch.fx.GraphModule, opts: BrevitasOptions) -> None:
    """Give the network input and the logits their own bit widths (default 8). Graph mode puts an
    ``act_bits`` quantizer on both; at 2–4 bits that throws away input resolution and makes the
    logits too coarse for a temperature-scaled KD loss."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8ActPerTensorFloat

    mods = dict(q.named_modules(remove_duplicate=False))

    def owned_once(target: str) -> bool:
        mod = mods.get(target)
        return mod is not None and sum(1 for m in mods.values() if m is mod) == 1

    for node in q.graph.nodes:
        if node.op == "placeholder":
            for user in node.users:
                tgt = str(user.target)
                if user.op == "call_module" and isinstance(mods.get(tgt), qnn.QuantIdentity) and owned_once(tgt):
                    new = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=opts.input_bits,
                                            return_quant_tensor=True)
                    # a backend-internal marker on a module this adapter creates here, read only by its
                    # daqakd_describe_quantizers (a fact about the module, not state handed between hooks)
                    new._daqakd_role = "input"
                    q.set_submodule(tgt, new)
        elif node.op == "output":
            src = node.args[0]
            tgt = str(getattr(src, "target", ""))
            if getattr(src, "op", "") == "call_module" and isinstance(mods.get(tgt), qnn.QuantIdentity) and owned_once(tgt):
                new = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=opts.output_bits,
                                        return_quant_tensor=False)
                new._daqakd_role = "output"
                q.set_submodule(tgt, new)


def _graph_quantize(model: nn.Module, cfg: QuantConfig, opts: BrevitasOptions) -> nn.Module:
    from brevitas.graph.quantize import preprocess_for_quantize, quantize

    fp = copy.deepcopy(model)  # graph mode merges BN into conv weights in place
    try:
        g = preprocess_for_quantize(fp, merge_bn=opts.merge_bn)
    except Exception as exc:  # noqa: BLE001 - fx tracing errors come in many types
        raise BackendError(
            f"Brevitas graph mode could not trace {type(model).__name__} with torch.fx "
            f"({type(exc).__name__}: {exc}). Make forward() traceable (no Python control flow on tensor "
            "values, no data-dependent shapes), or build the student yourself from brevitas.nn layers "
            "(QuantConv2d, QuantReLU, ...): daqakd accepts such a model as it is."
        ) from exc
    bad = _unsupported(g, opts.float_layers)
    if bad:
        _raise_unsupported(bad)
    q = quantize(g, **_layer_maps(cfg, opts))
    _replace_io_quant(q, opts)
    q.recompile()
    for p in q.parameters():  # the copy inherits a frozen teacher's requires_grad=False
        p.requires_grad_(True)
    return q


def _model_weight_bits(model: nn.Module, *, acts: bool = False) -> set[int]:
    """Bit widths of the enabled weight quantizers (and activation quantizers with ``acts``)."""
    from brevitas.proxy.parameter_quant import WeightQuantProxyFromInjectorBase
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjectorBase

    kinds: tuple[type, ...] = (WeightQuantProxyFromInjectorBase, ActQuantProxyFromInjectorBase) if acts else (
        WeightQuantProxyFromInjectorBase,)
    bits: set[int] = set()
    for m in model.modules():
        proxy: Any = m  # brevitas proxies: attributes mypy cannot see through nn.Module
        if isinstance(m, kinds) and proxy.is_quant_enabled:
            with contextlib.suppress(Exception):
                bits.add(int(proxy.bit_width()))
    return bits


@hookimpl
def daqakd_quantize(request: QuantizeRequest) -> nn.Module | None:
    return _quantize(request.model, request.config, request.options or BrevitasOptions(),
                     request.example_input, request.calib_data, request.layer_bits)


def _quant_tensor_chunk(self: Any, chunks: int, dim: int = 0) -> tuple[Any, ...]:
    """``Tensor.chunk`` for Brevitas' ``IntQuantTensor``: the value split along ``dim``, scale and zero
    point split too where they vary along it (per-channel), bit width and signedness kept. Brevitas lacks
    the method, so ShuffleNet's channel split (``x.chunk(2, dim=1)``) failed on a quantized activation."""
    values = self.value.chunk(chunks, dim)

    def split(t: Any) -> list[Any]:
        if getattr(t, "dim", None) is None or t.dim() == 0 or t.dim() != self.value.dim() or t.shape[dim] == 1:
            return [t] * len(values)
        return list(t.chunk(chunks, dim))

    scales, zps = split(self.scale), split(self.zero_point)
    return tuple(type(self)(v, s, z, self.bit_width, self.signed, self.training)
                 for v, s, z in zip(values, scales, zps))


def _complete_quant_tensor() -> None:
    """Add the tensor methods Brevitas' QuantTensor lacks and users' models call (only missing ones:
    nothing Brevitas defines is replaced)."""
    from brevitas.quant_tensor import IntQuantTensor

    if not hasattr(IntQuantTensor, "chunk"):
        IntQuantTensor.chunk = _quant_tensor_chunk


def _apply_plan(student: nn.Module, plan: Mapping[str, Mapping[str, int]], cfg: QuantConfig,
                opts: BrevitasOptions) -> None:
    """Re-inject the weight quantizer of every planned layer whose width differs from the uniform one (the
    graph-mode maps are per layer type, so a plan is applied after them)."""
    for path, bits in kit.plan_differences(plan, cfg, "weight").items():
        try:
            layer: Any = student.get_submodule(path)
        except AttributeError:
            raise BackendError(f"the bit plan names {path!r}, which the Brevitas student does not have (graph mode "
                               "renamed or fused it); plan it by the name the float model gives it.") from None
        proxy = getattr(layer, "weight_quant", None)
        if proxy is None:
            raise BackendError(f"Brevitas put no weight quantizer on {path!r}; a plan there is not possible.")
        stored = 7 if opts.reduce_range and bits == 8 else bits
        if cfg.weight_bits == 1:  # the binary quantizer has no bit width to change: this layer gets the integer one
            proxy.quant_injector = _weight_quant(bits, cfg.per_channel).let(proxy_module=proxy, bit_width=stored)
            proxy.update_tracked_modules()
        else:
            proxy.quant_injector = proxy.quant_injector.let(bit_width=stored)
        proxy.init_tensor_quant()


def _quantize(model: nn.Module, cfg: QuantConfig, opts: BrevitasOptions, x: torch.Tensor,
              calib_data: Any, plan: Mapping[str, Mapping[str, int]] | None = None) -> nn.Module:
    import torch

    _complete_quant_tensor()

    with _quiet():
        import brevitas.nn  # noqa: F401 - import once, quietly

        if _is_brevitas_model(model):
            student = copy.deepcopy(model)
            have = _model_weight_bits(student)
            if have and have != {cfg.weight_bits}:
                warnings.warn(
                    f"{type(model).__name__} is already a Brevitas model with {sorted(have)}-bit weights; "
                    f"it is used as it is, so QuantConfig(weight_bits={cfg.weight_bits}) does not change it.",
                    stacklevel=3,
                )
        else:
            student = _graph_quantize(model, cfg, opts)
            _apply_plan(student, plan or {}, cfg, opts)
        student.train(model.training)
        try:
            was = student.training
            student.eval()
            with torch.no_grad():
                student(x[:2].to(kit.device_of(student)))
            student.train(was)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, AttributeError) and "QuantTensor" in str(exc):
                raise BackendError(
                    f"the Brevitas student's forward calls a tensor method Brevitas' QuantTensor does not have "
                    f"({exc}). Leave the layer that produces its input in float (options float_layers=...), or "
                    "rewrite that call with a supported operation (slicing, view, reshape, transpose, flatten, cat)."
                ) from exc
            raise BackendError(
                f"the Brevitas student fails on example_input of shape {tuple(x.shape)}: "
                f"{type(exc).__name__}: {exc}. Check that the float model accepts this batch; if it does, the "
                "quantized graph does not (see docs/models.md for the architectures that work)."
            ) from exc
        if calib_data is not None:
            _calibrate(student, calib_data, cfg.calib_batches)
    return student


# --------------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------------
def _reset_runtime_stats(model: nn.Module) -> None:
    """Make already-initialised activation scales collectable again, so calibrating twice (e.g. on the
    ranked augmentation's data after a first calibration) re-estimates instead of crashing or
    multiplying the old scale by the new statistics."""
    import torch

    for mod in model.modules():
        m: Any = mod  # brevitas stats-scaling modules; attributes mypy cannot see through nn.Module
        if hasattr(m, "counter") and hasattr(m, "collect_stats_steps") and isinstance(getattr(m, "value", None), torch.nn.Parameter):
            if m.counter == 0:
                continue
            fill = 1.0 if hasattr(m, "init_scale") else 0.0  # scaling multiplies, zero point adds
            with torch.no_grad():
                m.value.fill_(fill)
                if isinstance(getattr(m, "buffer", None), torch.Tensor):
                    m.buffer.fill_(fill)
            m.counter = 0


def _observer_flags(model: nn.Module) -> dict[nn.Module, bool]:
    """Every quantizer core's ``observer_only`` flag, once per object (shared ones included)."""
    return {m: bool(m.observer_only) for m in model.modules() if hasattr(m, "observer_only")}


def _calibrate(model: nn.Module, data: Any, num_batches: int) -> nn.Module:
    """Collect activation statistics under Brevitas' ``calibration_mode``, then put every quantizer's
    ``observer_only`` flag back as it was.

    Why the last step: ``calibration_mode`` switches each activation quantizer to observer-only (collect
    statistics, pass the float input through) and on exit restores the flag it recorded per proxy. A
    quantizer core shared by several proxies (graph mode gives all inputs of a ``torch.cat`` one
    ``tensor_quant``, e.g. both branches of every ShuffleNet block) is visited once per proxy, so the second
    visit records the already-switched ``True`` and the exit leaves it observer-only: that activation stays
    float in training, evaluation and export while a restored student (fresh quantizers) quantizes it.
    ``observer_only`` is a plain attribute, not in ``state_dict``, so nothing else would carry it
    (Brevitas 0.13.4; 16 of ShuffleNet-V2's 131 quantizers)."""
    import torch
    from brevitas.graph.calibrate import calibration_mode

    dev = kit.device_of(model)
    was = model.training
    model.eval()  # BatchNorm of hand-built models keeps its running statistics
    _reset_runtime_stats(model)
    observers = _observer_flags(model)
    seen = 0
    try:
        with torch.no_grad(), calibration_mode(model):
            for xb in kit.image_batches(data, num_batches):
                model(xb.to(dev))
                seen += 1
    finally:
        for m, flag in observers.items():
            core: Any = m  # brevitas quantizer cores: an attribute mypy cannot see through nn.Module
            core.observer_only = flag
        model.train(was)
    if seen == 0:
        raise DataError("calibration data yielded no batches; pass at least one [B, C, H, W] image batch.")
    return model


@hookimpl
def daqakd_calibrate(request: CalibrateRequest) -> nn.Module | None:
    with _quiet():
        return _calibrate(request.model, request.data, request.num_batches)


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def _formats(requested: tuple[str, ...] | None) -> tuple[str, ...]:
    if not requested:
        return FORMATS
    out = []
    for f in requested:
        key = FORMAT_ALIASES.get(str(f).lower())
        if key is None:
            raise ExportError(
                f"Brevitas cannot export format {f!r}; supported: {', '.join(FORMATS)} "
                "(onnx-qcdq runs in onnxruntime, qonnx is what FINN consumes)."
            )
        if key not in out:
            out.append(key)
    return tuple(out)


def _qonnx_predict(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """qonnx executes the graph node by node with a fixed batch size; keep one copy per batch size."""
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    by_batch: dict[int, Any] = {}

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = int(x.shape[0])
        if n not in by_batch:
            with _quiet():
                by_batch[n] = cleanup_model(ModelWrapper(str(path)), override_inpsize=n)
        mw = by_batch[n]
        iname, oname = mw.graph.input[0].name, mw.graph.output[0].name
        with _quiet():
            return np.asarray(execute_onnx(mw, {iname: x})[oname])

    return predict


def _export_one(fmt: str, model: nn.Module, x: torch.Tensor, out_dir: Path) -> ExportedModel:
    from brevitas.export import export_onnx_qcdq, export_qonnx

    kw: dict[str, Any] = {
        "input_names": ["input"],
        "output_names": ["logits"],
        "dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}},
        "dynamo": False,  # torch >= 2.9 defaults to the dynamo exporter, which Brevitas' managers do not use here
    }
    if fmt == "onnx-qcdq":
        path = out_dir / "student.qcdq.onnx"
        export_onnx_qcdq(model, args=x, export_path=str(path), opset_version=13, **kw)
        # exact re-encodings: sub-8-bit activations onnxruntime can fuse, and no U8S8 pattern that
        # saturates on CPUs without VNNI (see daqakd_plugins.onnx_qdq)
        prep = prepare_for_onnxruntime(path)
        notes = "QuantizeLinear/Clip/DequantizeLinear; sub-8-bit ranges are 8-bit types with Clip" + preparation_notes(prep)
        return ExportedModel(format=fmt, path=path, runtime="onnxruntime", predict=kit.ort_predict(path), notes=notes,
                             u8s8_guard=True)
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    raw = out_dir / "student.qonnx.raw.onnx"
    path = out_dir / "student.qonnx.onnx"
    export_qonnx(model, args=x, export_path=str(raw), **kw)
    # qonnx's cleanup (and its node-by-node execution for the accuracy check) is the slow part: say so
    print("daqakd[brevitas]: QONNX export: running qonnx's cleanup_model on the graph (for FINN), then checking "
          "the file's accuracy in qonnx, node by node; this can take minutes on graphs with channel shuffles or "
          "splits (ShuffleNet). To skip QONNX: --export-formats onnx-qcdq (API: export_formats=('onnx-qcdq',)).",
          file=sys.stderr, flush=True)
    cleaned = cleanup_model(ModelWrapper(str(raw)), override_inpsize=1)  # FINN's starting point: batch 1
    cleaned.save(str(path))
    raw.unlink(missing_ok=True)
    return ExportedModel(format=fmt, path=path, runtime="qonnx", predict=_qonnx_predict(path), u8s8_guard=False,
                         notes="QONNX Quant/BipolarQuant ops after qonnx cleanup_model (batch 1, for FINN)")


def _float_unholdable_biases(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Turn off bias quantization (``bias_quant=False`` for those layers) in ``model``, an export copy,
    where Brevitas' Int32 bias quantizer cannot hold the bias: its scale (input scale x weight scale) is
    so small that bias/scale is no exact integer in float32, and the exporter then refuses the whole
    model ("QuantTensor not valid"; e.g. MobileNetV2's depthwise convolutions). Those biases are written
    in float, a difference far below one activation step; the export's accuracy vs torch is measured as
    for every export. Returns the layers' names (said as a warning and in the export's notes)."""
    import torch
    from brevitas.quant_tensor import QuantTensor

    bad: list[str] = []
    handles = []
    proxies: dict[str, Any] = {}
    for name, m in model.named_modules():
        proxy = getattr(m, "bias_quant", None)
        if proxy is None or not getattr(proxy, "is_quant_enabled", False) or not hasattr(proxy, "register_forward_hook"):
            continue

        def check(_mod: Any, _inp: Any, out: Any, name: str = name) -> None:
            if isinstance(out, QuantTensor) and not out.is_valid:
                bad.append(name)

        handles.append(proxy.register_forward_hook(check))
        proxies[name] = proxy
    if not handles:
        return []
    try:
        with torch.no_grad():
            model(x)
    except Exception:  # noqa: BLE001 - a model that cannot run here: the exporter below says what fails
        return []
    finally:
        for h in handles:
            h.remove()
    for name in bad:
        proxies[name].disable_quant = True
    if bad:
        log.warning("exporting %d layer(s) with float biases (as with options bias_quant=False): Brevitas' Int32 bias "
                    "quantizer cannot hold their biases exactly (bias/scale is no exact integer in float32, which its "
                    "exporter refuses as 'QuantTensor not valid'): %s. Quantize with options bias_quant=False to train "
                    "that way too.", len(bad), ", ".join(bad[:8]) + (" ..." if len(bad) > 8 else ""))
    return bad


@hookimpl
def daqakd_export(request: ExportRequest) -> list[ExportedModel] | None:
    fmts = _formats(request.formats)
    import torch

    with _quiet():
        import brevitas  # noqa: F401

        if not _is_brevitas_model(request.model) or not _describe(request.model):
            raise ExportError(
                f"{type(request.model).__name__} has no enabled Brevitas quantizers, so there is nothing to "
                "export as QCDQ/QONNX. Quantize it first: daqakd_plugins.backends.quantize(model, 'brevitas', "
                "QuantConfig(...), example_input=x), or export the float model with torch.onnx.export."
            )
        if 1 in _model_weight_bits(request.model, acts=True) and "onnx-qcdq" in fmts:
            if request.formats:
                raise ExportError(
                    "this student has 1-bit (binary) quantizers, which Brevitas cannot write "
                    "as QCDQ ONNX (its QCDQ exporter asserts 'Binary quant not supported'). Export "
                    "formats=('qonnx',) (what FINN consumes; runs in qonnx), or use weight_bits and act_bits "
                    "≥ 2 for onnxruntime."
                )
            fmts = tuple(f for f in fmts if f != "onnx-qcdq")
            log.warning("1-bit quantizers: exporting QONNX only; Brevitas' QCDQ exporter has no 1-bit form.")
        model = copy.deepcopy(request.model).eval()
        x = request.example_input[:1].to(kit.device_of(model))
        float_bias = _float_unholdable_biases(model, x)
        out: list[ExportedModel] = []
        for fmt in fmts:
            try:
                e = _export_one(fmt, model, x, Path(request.out_dir))
                if float_bias:
                    e.notes += f"; float biases in {len(float_bias)} layer(s) Int32 could not hold: {', '.join(float_bias[:4])}"
                out.append(e)
            except ExportError:
                raise
            except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
                hint = (
                    "What exports on torch " + torch.__version__.split("+")[0] + " with Brevitas: students from "
                    "daqakd's graph mode and hand-built brevitas.nn models made of QuantConv/QuantLinear, "
                    "QuantReLU/QuantIdentity, residual adds, pooling and flatten, at 2–8 bits (1-bit "
                    "quantizers: QONNX only). Layers left in float via options['float_layers'] must be "
                    "ONNX-exportable themselves."
                )
                if "QuantTensor not valid" in str(exc):
                    hint += (" 'QuantTensor not valid' here means a bias that Brevitas' Int32 bias quantizer cannot "
                             "hold exactly: quantize with options bias_quant=False (biases stay float).")
                if "outputs" in str(exc) and "Graph" in str(exc):
                    hint += (" This error ('Graph' object has no attribute 'outputs') is the torch-2.13 "
                             "TorchScript-exporter failure on fx GraphModules; upgrade torch to ≥ 2.14.")
                raise ExportError(
                    f"Brevitas could not export {type(request.model).__name__} to {fmt}: "
                    f"{type(exc).__name__}: {exc}. {hint}"
                ) from exc
    return out


# --------------------------------------------------------------------------------------------------
# save / restore
# --------------------------------------------------------------------------------------------------
@hookimpl
def daqakd_save_student(request: SaveRequest) -> dict[str, Any] | None:
    """The state dict, and the paths of quantizers in observer-only mode (they pass floats through; the
    flag is an attribute, not state, so without this a restored student would quantize there)."""
    observers = sorted(n for n, m in request.model.named_modules(remove_duplicate=False)
                       if getattr(m, "observer_only", False))
    return {"state_dict": request.model.state_dict(), "observer_only": observers}


@hookimpl
def daqakd_restore_student(request: RestoreRequest) -> nn.Module | None:
    """Quantize the fresh FP model the same way (no calibration: the scales are in the state), then load
    the saved state keeping shared quantizers shared, and set the saved observer-only flags again."""
    student = _quantize(request.model, request.config, request.options or BrevitasOptions(),
                        request.example_input, None, request.layer_bits)
    with _quiet():
        load_state_keep_aliases(student, request.payload["state_dict"])
    for name in request.payload.get("observer_only", ()):
        mod: Any = student.get_submodule(name)
        mod.observer_only = True
    return student


def load_state_keep_aliases(model: nn.Module, state: Any) -> None:
    """``model.load_state_dict(state)`` that keeps shared submodules shared.

    Why: a submodule registered under two names (Brevitas graph mode gives both inputs of a residual
    add one activation quantizer, so their scales stay equal) must stay one object. Brevitas re-creates
    each quantizer proxy's ``tensor_quant`` while loading (``REINIT_ON_STATE_DICT_LOAD``), which splits
    the shared quantizer into two copies that then drift apart in training ("Scaling factors are
    different" at the add). Re-linking every alias group after the load restores the original graph;
    both copies were loaded from equal values, so which one is kept does not matter.
    """
    groups: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        groups.setdefault(id(mod), []).append(name)
    model.load_state_dict(state)
    for names in sorted((g for g in groups.values() if len(g) > 1), key=lambda g: min(n.count(".") for n in g)):
        names = sorted(names, key=lambda n: (n.count("."), n))
        keep = model.get_submodule(names[0])
        for other in names[1:]:
            if model.get_submodule(other) is not keep:
                model.set_submodule(other, keep)
