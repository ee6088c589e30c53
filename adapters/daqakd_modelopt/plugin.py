"""daqakd plugin: modelopt (NVIDIA Model Optimizer, the successor of pytorch-quantization).

What it does (see docs/backends/tensorrt.md, "Model Optimizer"):

* ``daqakd_quantize`` runs Model Optimizer's own PTQ entry point, ``mtq.quantize(model, cfg,
  forward_loop)``, on a deep copy of the float model (``mtq.quantize`` converts in place) with a *copy*
  of ``mtq.INT8_DEFAULT_CFG`` whose ``num_bits`` are the requested widths (the list-style
  ``quant_cfg`` of modelopt ≥ 0.2x), per-channel weights by default, the ``max`` calibrator, the
  forward loop fed from the calibration data. ``options["format"]`` picks ``mtq.FP8_DEFAULT_CFG``
  (E4M3, CPU fake-quant works) or ``mtq.NVFP4_DEFAULT_CFG`` (CUDA only in modelopt: refused on CPU).
* ``daqakd_calibrate`` re-estimates every range with ``mtq.calibrate`` after resetting the
  calibrators (modelopt's max calibrator otherwise keeps the maximum over every call).
* ``daqakd_save_student`` / ``daqakd_restore_student`` are ``mto.save`` / ``mto.restore``: the payload
  is exactly the dict ``mto.save`` writes (modelopt state + state dict), which loads with
  ``weights_only=True``.
* ``daqakd_export`` writes ``onnx-qdq`` (onnxruntime; every width) and, for INT8 students,
  ``onnx-trt`` (Model Optimizer's own ONNX export, what TensorRT consumes); see
  :mod:`daqakd_modelopt.export`.

KD with modelopt's own ``mtd.convert(..., mode=[("kd_loss", ...)])`` from a daqakd loss preset lives
in :mod:`daqakd_modelopt.kd`.

Model Optimizer is imported lazily, inside the hooks that need it, never at import time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daqakd_plugins import kit
from daqakd_plugins.kit import (
    BackendError,
    BackendInfo,
    ConfigError,
    DataError,
    ExportedModel,
    QuantizerInfo,
    hookimpl,
)

from .common import FORMATS, describe, is_quantizer, quiet

if TYPE_CHECKING:
    from collections.abc import Callable

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

NAME = "modelopt"
BITS = (4, 8)
FORMAT_NAMES = ("int", "fp8", "nvfp4")
ALGORITHMS = ("max", "mse")

BITS_NOTE = (
    "Model Optimizer's integer presets for TensorRT are INT8 and INT4; daqakd trains 4- to 8-bit integer "
    "fake quantization (FP8 and NVFP4 through options['format']). Below 4 bits Model Optimizer has no "
    "preset and no NVIDIA runtime consumes the result."
)


@dataclass(frozen=True, kw_only=True)
class ModeloptOptions:
    """``QuantConfig.options`` for Model Optimizer (documented in docs/backends/tensorrt.md).

    ``format``: ``"int"`` (integer fake quantization at the requested widths, from
    ``mtq.INT8_DEFAULT_CFG``), ``"fp8"`` (``mtq.FP8_DEFAULT_CFG``, E4M3 per tensor; weight_bits =
    act_bits = 8) or ``"nvfp4"`` (``mtq.NVFP4_DEFAULT_CFG``; 4/4 bits; CUDA only);
    ``algorithm``: the calibration algorithm ``mtq.calibrate`` runs, ``"max"`` (modelopt's default)
    or ``"mse"`` (amax searched to minimise the quantization error);
    ``float_layers``: module paths (``"fc"``, ``"layers.0.conv1"``) or modelopt quantizer-name
    patterns (``"*fc*"``) whose quantizers stay disabled, as modelopt's own configs do for ``lm_head``.
    """

    format: str = "int"
    algorithm: str = "max"
    float_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.format not in FORMAT_NAMES:
            raise ConfigError(
                f"options['format'] must be one of {', '.join(repr(f) for f in FORMAT_NAMES)} (integer, FP8 E4M3, "
                f"NVFP4), got {self.format!r}."
            )
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"options['algorithm'] must be one of {', '.join(repr(a) for a in ALGORITHMS)} (the mtq.calibrate "
                f"algorithms verified on CNNs here), got {self.algorithm!r}."
            )
        fl = self.float_layers
        if isinstance(fl, str):
            fl = (fl,)
        if not isinstance(fl, Iterable) or not all(isinstance(v, str) and v for v in fl):
            raise ConfigError(
                "options['float_layers'] must be a list of module paths or quantizer-name patterns (e.g. ['fc'] "
                f"or ['*downsample*']), got {self.float_layers!r}."
            )
        object.__setattr__(self, "float_layers", tuple(fl))


log = logging.getLogger("daqakd.modelopt")


# --------------------------------------------------------------------------------------------------
# registration and counting (must not import modelopt)
# --------------------------------------------------------------------------------------------------
@hookimpl
def daqakd_register_backends(register: Callable[[BackendInfo], None]) -> None:
    register(
        BackendInfo(
            name=NAME,
            module="modelopt",
            distribution="nvidia-modelopt",
            install='pip install "daqakd[modelopt]"',
            weight_bits=BITS,
            act_bits=BITS,
            bits_note=BITS_NOTE,
            export_formats=FORMATS,
            options_type=ModeloptOptions,
            description="NVIDIA Model Optimizer (successor of pytorch-quantization), the TensorRT QAT path",
            implemented=True,
            bit_plans=True,  # a quant_cfg entry per planned layer's weight_quantizer / input_quantizer
            layer_act_bits=True,
        )
    )


@hookimpl
def daqakd_describe_quantizers(model: nn.Module) -> list[QuantizerInfo] | None:
    """The *enabled* ``TensorQuantizer`` modules (modelopt also inserts disabled output quantizers
    and quantizers on BatchNorm, which quantize nothing): ``*weight_quantizer`` → weight, input and
    output quantizers → activation, with their ``num_bits`` (FP formats: exponent + mantissa + sign)."""
    if not kit.backend_imported("modelopt"):
        return None
    return describe(model)


# --------------------------------------------------------------------------------------------------
# noise control
# --------------------------------------------------------------------------------------------------
class _DropCpuCudaHomeNotice(logging.Filter):
    """``import modelopt`` imports torch.utils.cpp_extension, which logs "No CUDA runtime is found" on
    every CPU-only machine; the core imports modelopt to check availability (outside our hooks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No CUDA runtime is found" not in record.getMessage()


logging.getLogger("torch.utils.cpp_extension").addFilter(_DropCpuCudaHomeNotice())


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------
def quant_cfg(cfg: QuantConfig, opts: ModeloptOptions, plan: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
    """The ``mtq.quantize`` config for ``cfg``: a deep copy of modelopt's preset (its module-level
    dicts are shared by every caller in the process, so they are never mutated) with our bit widths,
    weight axis and calibration algorithm, a disabling entry per ``float_layers`` item, and an entry per
    layer of the bit ``plan`` whose widths differ from the uniform ones (after the wildcards: the last
    matching entry wins)."""
    import modelopt.torch.quantization as mtq

    preset = {"int": "INT8_DEFAULT_CFG", "fp8": "FP8_DEFAULT_CFG", "nvfp4": "NVFP4_DEFAULT_CFG"}[opts.format]
    out = copy.deepcopy(getattr(mtq, preset))
    out["algorithm"] = opts.algorithm
    entries = out["quant_cfg"]

    def set_bits(entry_cfg: dict[str, Any], name: str) -> None:
        if opts.format != "int":
            return  # FP8 / NVFP4: the preset's own number formats
        if name.endswith("weight_quantizer"):
            entry_cfg["num_bits"] = cfg.weight_bits
            entry_cfg["axis"] = 0 if cfg.per_channel else None
        elif name.endswith("input_quantizer"):
            entry_cfg["num_bits"] = cfg.act_bits

    layer = _plan_entries(cfg, opts, plan or {})
    if isinstance(entries, dict):  # the dict-style quant_cfg of older modelopt releases
        for name, entry_cfg in entries.items():
            if isinstance(entry_cfg, dict) and "num_bits" in entry_cfg:
                set_bits(entry_cfg, name)
        entries.update(layer)
        for pattern in opts.float_layers:
            entries[_pattern(pattern)] = {"enable": False}
    else:
        for entry in entries:
            if isinstance(entry.get("cfg"), dict) and "num_bits" in entry["cfg"]:
                set_bits(entry["cfg"], str(entry.get("quantizer_name", "")))
        entries.extend({"quantizer_name": k, "cfg": v} for k, v in layer.items())
        for pattern in opts.float_layers:
            entries.append({"quantizer_name": _pattern(pattern), "enable": False})
    return out


def _plan_entries(cfg: QuantConfig, opts: ModeloptOptions, plan: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """``{quantizer name: cfg}`` for the planned layers whose widths differ (integer format only)."""
    w, a = kit.plan_differences(plan, cfg, "weight"), kit.plan_differences(plan, cfg, "act")
    if (w or a) and opts.format != "int":
        raise ConfigError(f"a bit plan sets per-layer integer widths, but options['format']={opts.format!r} has one "
                          f"width; use format='int', or drop --layer-bits / pass first_last=None (--first-last-bits 0).")
    out: dict[str, Any] = {f"{n}.weight_quantizer": {"num_bits": b, "axis": 0 if cfg.per_channel else None}
                           for n, b in w.items()}
    out.update({f"{n}.input_quantizer": {"num_bits": b, "axis": None} for n, b in a.items()})
    return out


def _pattern(layer: str) -> str:
    """A module path names every quantizer of that module; a pattern with ``*`` is taken as it is."""
    return layer if "*" in layer or "?" in layer else f"{layer}.*"


def _check_format(cfg: QuantConfig, opts: ModeloptOptions, device: torch.device) -> None:
    if opts.format == "fp8" and (cfg.weight_bits, cfg.act_bits) != (8, 8):
        raise ConfigError(
            f"options['format']='fp8' is Model Optimizer's FP8 E4M3 format, 8 bits wide; got W{cfg.weight_bits}"
            f"A{cfg.act_bits}. Pass weight_bits=8, act_bits=8 (CLI: --bits 8), or format='int' for integer "
            "quantization at other widths."
        )
    if opts.format == "nvfp4":
        if (cfg.weight_bits, cfg.act_bits) != (4, 4):
            raise ConfigError(
                f"options['format']='nvfp4' is 4-bit (E2M1 values, FP8 block scales); got W{cfg.weight_bits}"
                f"A{cfg.act_bits}. Pass weight_bits=4, act_bits=4 (CLI: --bits 4)."
            )
        if device.type != "cuda":
            raise ConfigError(
                "NVFP4 fake quantization runs only on CUDA in Model Optimizer (its dynamic block quantizer "
                "asserts 'amax must be a CUDA tensor'), and this model is on "
                f"{device.type.upper()}. On CPU use options['format']='int' with weight_bits=4 (INT4) or "
                "format='fp8' with 8 bits; for NVFP4 move the model to a CUDA device (an NVIDIA Blackwell GPU "
                "runs it natively in TensorRT)."
            )


# --------------------------------------------------------------------------------------------------
# quantize / calibrate
# --------------------------------------------------------------------------------------------------
def _forward_loop(data: Any, num_batches: int, device: torch.device) -> tuple[Callable[[nn.Module], None], list[int]]:
    """modelopt's ``forward_loop(model)`` over the first ``num_batches`` image batches of ``data``;
    the list it returns counts the batches seen."""
    import torch

    seen = [0]

    def loop(model: nn.Module) -> None:
        with torch.no_grad():
            for xb in kit.image_batches(data, num_batches):
                model(xb.to(device))
                seen[0] += 1

    return loop, seen


def _reset_calibrators(model: nn.Module) -> None:
    """Forget what earlier calibrations collected: modelopt's max calibrator keeps the running
    maximum over every forward it saw, so a second ``mtq.calibrate`` on other data would keep the
    larger ranges of the first (measured: calibrating on x, then 3x, then x again did not give the
    first outputs back). ``mse`` calibration leaves an MSE calibrator on each weight quantizer that only
    works after a max pass seeded it; it is swapped back to the max calibrator ``mtq.quantize`` made."""
    from modelopt.torch.quantization.calib import MaxCalibrator

    for m in model.modules():
        cal = getattr(m, "_calibrator", None) if is_quantizer(m) else None
        if cal is None:
            continue
        if not isinstance(cal, MaxCalibrator):
            m._calibrator = MaxCalibrator(num_bits=m._num_bits, axis=m._axis, unsigned=m._unsigned)
        else:
            cal.reset()


@hookimpl
def daqakd_quantize(request: QuantizeRequest) -> nn.Module | None:
    return _quantize(request.model, request.config, request.options or ModeloptOptions(), request.example_input,
                     request.calib_data, request.layer_bits)


def _quantize(model: nn.Module, cfg: QuantConfig, opts: ModeloptOptions, x: torch.Tensor, calib_data: Any,
              plan: Mapping[str, Mapping[str, int]] | None = None) -> nn.Module:
    device = kit.device_of(model)
    _check_format(cfg, opts, device)
    if describe(model):
        raise BackendError(
            f"{type(model).__name__} already contains Model Optimizer quantizers; mtq.quantize would quantize it a "
            "second time. Pass the float model (daqakd quantizes a copy), or restore a saved student with "
            "daqakd_plugins.distill.load_student / mto.restore."
        )
    with quiet():
        import modelopt.torch.quantization as mtq

        student = copy.deepcopy(model)  # mtq.quantize converts the model in place
        was = model.training
        # Without calibration data the ranges come from example_input, so the student is usable at once
        # (an uncalibrated modelopt quantizer computes its range from every batch, and cannot be exported);
        # daqakd_calibrate re-estimates them on real data.
        data = calib_data if calib_data is not None else x
        loop, seen = _forward_loop(data, cfg.calib_batches, device)
        try:
            student = mtq.quantize(student, quant_cfg(cfg, opts, plan), loop)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - modelopt and the model's forward fail in many ways
            raise BackendError(
                f"Model Optimizer could not quantize {type(model).__name__} ({type(exc).__name__}: {exc}). The "
                f"float model must run on the calibration batches (example_input has shape {tuple(x.shape)}); "
                "mtq.quantize replaces nn.Conv*/nn.Linear/pooling layers with quantized ones."
            ) from exc
        if seen[0] == 0:
            raise DataError("calibration data yielded no batches; pass at least one [B, C, H, W] image batch.")
    student.train(was)
    for p in student.parameters():  # the copy inherits a frozen teacher's requires_grad=False
        if p.is_floating_point():
            p.requires_grad_(True)
    if not describe(student):
        warnings.warn(
            f"Model Optimizer inserted no enabled quantizer into {type(model).__name__}: it quantizes nn.Conv*, "
            "nn.Linear and pooling layers, and options['float_layers'] may have disabled them all.",
            stacklevel=3,
        )
    return student


def _calibrate(model: nn.Module, data: Any, num_batches: int, algorithm: str) -> nn.Module:
    with quiet():
        import modelopt.torch.quantization as mtq

        if not describe(model):
            raise BackendError(
                f"{type(model).__name__} has no enabled Model Optimizer quantizers to calibrate; quantize it first "
                "with daqakd_plugins.backends.quantize(model, 'modelopt', QuantConfig(...), example_input=x)."
            )
        was = model.training
        _reset_calibrators(model)
        loop, seen = _forward_loop(data, num_batches, kit.device_of(model))
        try:
            mtq.calibrate(model, algorithm, loop)  # eval mode inside (BatchNorm keeps its statistics)
        finally:
            model.train(was)
        if seen[0] == 0:
            raise DataError("calibration data yielded no batches; pass at least one [B, C, H, W] image batch.")
    return model


def _algorithm_of(model: nn.Module) -> str:
    """The calibration algorithm the student was quantized with, read from its modelopt state (for a
    ``CalibrateRequest`` without options)."""
    with contextlib.suppress(Exception):
        import modelopt.torch.opt as mto

        for mode, cfg in reversed(mto.modelopt_state(model)["modelopt_state_dict"]):
            if mode in ALGORITHMS:
                return str(mode)
            method = (cfg.get("config") or {}).get("method") if isinstance(cfg, dict) else None
            if method in ALGORITHMS:
                return str(method)
    return "max"


@hookimpl
def daqakd_calibrate(request: CalibrateRequest) -> nn.Module | None:
    opts = request.options  # the student's options; without them, what its modelopt state says
    algorithm = opts.algorithm if isinstance(opts, ModeloptOptions) else _algorithm_of(request.model)
    return _calibrate(request.model, request.data, request.num_batches, algorithm)


# --------------------------------------------------------------------------------------------------
# save / restore: mto.save / mto.restore
# --------------------------------------------------------------------------------------------------
@hookimpl
def daqakd_save_student(request: SaveRequest) -> dict[str, Any] | None:
    """What ``mto.save(model, f)`` writes (``{"modelopt_state", "model_state_dict"}``), read back with
    ``weights_only=True`` so the core can store it in student files and checkpoints. A KD wrapper
    from ``mtd.convert`` is not part of it: Model Optimizer does not save the ``kd_loss`` mode and hides
    the teacher's state, so what is saved is the quantized student alone."""
    import torch

    with quiet():
        import modelopt.torch.opt as mto

        buf = io.BytesIO()
        mto.save(request.model, buf)
        buf.seek(0)
        try:
            payload = torch.load(buf, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise BackendError(
                f"the Model Optimizer state of this student does not load with weights_only=True ({exc}); "
                "save it with mto.save(model, path) yourself."
            ) from exc
    return dict(payload)


@hookimpl
def daqakd_restore_student(request: RestoreRequest) -> nn.Module | None:
    """``mto.restore(fresh_fp_model, saved)``: modelopt replays the saved modes (quantize, calibrate)
    on the fresh model, then loads the weights and ranges. The result is the plain quantized student;
    a KD wrapper is never rebuilt (convert again with :func:`daqakd_modelopt.kd.kd_loss_config`)."""
    import torch

    payload = request.payload
    if "modelopt_state" not in payload or "model_state_dict" not in payload:
        raise BackendError(
            "this saved modelopt student has no 'modelopt_state'/'model_state_dict' (it was not written by "
            f"mto.save; keys: {sorted(payload)}); save and restore with the same adapter version."
        )
    if describe(request.model):
        raise BackendError("restore needs a fresh float model; this one already contains Model Optimizer quantizers.")
    with quiet():
        import modelopt.torch.opt as mto

        buf = io.BytesIO()
        torch.save({"modelopt_state": payload["modelopt_state"], "model_state_dict": payload["model_state_dict"]}, buf)
        buf.seek(0)
        model = copy.deepcopy(request.model)
        try:
            student = mto.restore(model, buf)
        except Exception as exc:  # noqa: BLE001
            raise BackendError(
                f"mto.restore could not rebuild the student on {type(request.model).__name__} "
                f"({type(exc).__name__}: {exc}); pass a float model of the architecture the student was made from."
            ) from exc
    student.to(kit.device_of(request.model))
    for p in student.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    return student


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
@hookimpl
def daqakd_export(request: ExportRequest) -> list[ExportedModel] | None:
    from .export import export

    return export(request)
