"""ONNX export of Model Optimizer students: one file for onnxruntime, one for TensorRT.

``onnx-qdq`` (``student.qdq.onnx``, run by onnxruntime) — every width the adapter trains:
    each enabled ``TensorQuantizer`` is written as standard ONNX ``QuantizeLinear → [Clip] →
    DequantizeLinear`` with the quantizer's own scale (amax / max level) and range: INT8 as int8,
    INT4–INT7 as int8 with a ``Clip`` to the narrower range (ONNX ≤ opset 20 has no 4-bit activation
    type onnxruntime fuses), FP8 as ``float8e4m3fn`` (opset 19). Weights are stored as integers (the
    quantized values, folded from the float weights exactly as ONNX ``QuantizeLinear`` defines them),
    so the file is about a quarter of the float one (the kit's :func:`daqakd_plugins.kit.fold_weight_quantizers`,
    which the pytorch-quantization adapter shares). Then :func:`daqakd_plugins.kit.prepare_for_onnxruntime`
    re-encodes what onnxruntime would compute wrongly on x86 CPUs without VNNI (U8U8 weights) or could not
    fuse (signed sub-8-bit activations): both exact.

``onnx-trt`` (``student.trt.onnx``) — INT8 students only:
    Model Optimizer's own export (``torch.onnx.export`` of the quantized model; modelopt's symbolic
    functions write signed int8 Q/DQ with zero point 0 and float weights behind Q/DQ), unchanged: the
    explicit-quantization graph TensorRT builds INT8 engines from. TensorRT is not run here (no GPU);
    ``predict`` runs the file in onnxruntime with Q/DQ fusion off (``session.disable_quant_qdq=1``), i.e.
    the Q/DQ arithmetic exactly as written, with no integer kernels (so no CPU-dependent saturation),
    which checks what the file computes. 4-bit students have no TensorRT form: TensorRT quantizes activations in INT8, FP8
    and FP4 only and supports INT4 as weight-only quantization (TensorRT's "Working with Quantized
    Types"; Model Optimizer's INT4 presets are weight-only too, e.g. INT4_AWQ), and modelopt's exporter
    writes a 4-bit quantizer as the weight-only, TensorRT-only ``trt::DequantizeLinear`` that
    onnxruntime cannot load.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daqakd_plugins.kit import (
    ExportedModel,
    ExportError,
    ort_predict,
    preparation_notes,
    prepare_for_onnxruntime,
    write_exact_qdq,
)

from .common import FORMATS, describe, is_quantizer, quiet

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from daqakd_plugins.kit import ExportRequest

FORMAT_ALIASES = {"onnx-qdq": "onnx-qdq", "qdq": "onnx-qdq", "onnx": "onnx-qdq", "onnxruntime": "onnx-qdq",
                  "onnx-trt": "onnx-trt", "trt": "onnx-trt", "tensorrt": "onnx-trt"}
OPSET_INT = 17
OPSET_FP8 = 19  # float8 QuantizeLinear/DequantizeLinear
_E4M3_MAX = 448.0
_EPS = 1.0 / (1 << 24)  # modelopt: an amax at or below this quantizes everything to 0


@dataclass(frozen=True)
class _Spec:
    """One enabled quantizer as ONNX sees it: ``q = clip(round(x · mult))``, ``y = q · scale``.

    ``mult`` is modelopt's own ``max_level / amax`` (in amax's shape, broadcasting like the input), so
    the integers equal those modelopt trains with: ONNX's QuantizeLinear *divides* by its scale, and
    ``x / fl(amax / 7)`` is not ``x · fl(7 / amax)`` at ties (a digits pixel of 0.5 with amax 1 is 3.5
    levels at 4 bits: modelopt rounds it to 4, ``0.5 / 0.14285715`` to 3 — 0.7 pp of test accuracy at
    W4A4). ``scale`` is 1-D along ``axis`` for per-channel quantizers."""

    kind: str  # "int" or "fp8"
    mult: Any  # torch.Tensor
    scale: Any  # torch.Tensor
    axis: int | None
    qmin: int
    qmax: int


def _spec(name: str, q: Any) -> _Spec:
    import torch

    for attr, what in (("pre_quant_scale", "a pre-quantization scale (SmoothQuant/AWQ)"),
                       ("block_sizes", "block quantization"), ("bias", "a quantization bias")):
        if getattr(q, attr, None) is not None:
            raise ExportError(f"quantizer {name} uses {what}, which this adapter does not export to ONNX.")
    if getattr(q, "rotate_is_enabled", False):
        raise ExportError(f"quantizer {name} uses a rotation, which this adapter does not export to ONNX.")
    if not hasattr(q, "_amax"):
        raise ExportError(
            f"quantizer {name} was never calibrated (it has no amax), so its range is not fixed; calibrate the "
            "student first: daqakd_plugins.backends.calibrate(student, 'modelopt', images)."
        )
    amax = q._amax.detach().float().cpu()
    nb = q.num_bits
    if isinstance(nb, (tuple, list)):
        if tuple(nb) != (4, 3):
            raise ExportError(f"quantizer {name} has the float format E{nb[0]}M{nb[1]}; only FP8 E4M3 exports here.")
        if amax.numel() != 1:
            raise ExportError(f"quantizer {name}: FP8 exports per tensor only (its amax has {amax.numel()} values).")
        amax = amax.reshape(()).clamp_min(_EPS)
        return _Spec("fp8", torch.tensor(_E4M3_MAX) / amax, amax / _E4M3_MAX, None, 0, 0)
    bits = int(nb)
    unsigned = bool(q.unsigned)
    maxbound = torch.tensor(2.0 ** (bits - 1 + int(unsigned)) - 1.0)
    minbound = 0 if unsigned else int(-maxbound) if q.narrow_range else int(-maxbound) - 1
    zero = amax <= _EPS  # modelopt: quantize to 0, dequantize with scale 1
    mult = torch.where(zero, torch.zeros_like(amax), maxbound / amax)
    scale = torch.where(zero, torch.ones_like(amax), amax / maxbound)
    axis = None
    if amax.numel() > 1:
        dims = [i for i, s in enumerate(amax.shape) if s > 1]
        if len(dims) != 1:
            raise ExportError(f"quantizer {name} has a {tuple(amax.shape)} amax; ONNX quantizes along one axis only.")
        axis = dims[0]
        scale = scale.reshape(-1)
    else:
        mult, scale = mult.reshape(()), scale.reshape(())
    return _Spec("int", mult, scale, axis, minbound, int(maxbound))


def _student_kind(model: nn.Module) -> tuple[str, set[int]]:
    """("int", bit widths) or ("fp8", {8}) over the enabled quantizers."""
    kinds: set[str] = set()
    bits: set[int] = set()
    for mod in model.modules():
        m: Any = mod  # a modelopt TensorQuantizer: attributes mypy cannot see through nn.Module
        if is_quantizer(m) and m.is_enabled:
            nb = m.num_bits
            if isinstance(nb, (tuple, list)):
                kinds.add("nvfp4" if tuple(nb) == (2, 1) else "fp8")
                bits.add(int(sum(nb)) + 1)
            else:
                kinds.add("int")
                bits.add(int(nb))
    if len(kinds) > 1:
        raise ExportError(f"the student mixes quantization formats {sorted(kinds)}; export one format per model.")
    return (kinds.pop() if kinds else "int"), bits


def _low_layers(model: nn.Module) -> list[str]:
    """The modules holding integer quantizers below 8 bits (what keeps a bit-planned student from TensorRT)."""
    out = set()
    for name, mod in model.named_modules():
        m: Any = mod
        if is_quantizer(m) and m.is_enabled and not isinstance(m.num_bits, (tuple, list)) and int(m.num_bits) < 8:
            out.add(name.rsplit(".", 1)[0])
    return sorted(out)


def _formats(requested: tuple[str, ...] | None, kind: str, bits: set[int], low: Sequence[str] = ()) -> tuple[str, ...]:
    trt_ok = kind == "int" and bits == {8}
    if not requested:
        return FORMATS if trt_ok else ("onnx-qdq",)
    out: list[str] = []
    for f in requested:
        key = FORMAT_ALIASES.get(str(f).lower())
        if key is None:
            raise ExportError(
                f"Model Optimizer students export as {', '.join(FORMATS)}, not {f!r} (onnx-qdq runs in onnxruntime, "
                "onnx-trt is Model Optimizer's own Q/DQ export for TensorRT)."
            )
        if key == "onnx-trt" and not trt_ok:
            what = "FP8" if kind == "fp8" else f"{sorted(bits)}-bit integer" + (
                f" (below 8 bits in {', '.join(low[:6])}{', ...' if len(low) > 6 else ''})" if low else "")
            raise ExportError(
                f"onnx-trt is written for INT8 students only; this one is {what}. TensorRT quantizes activations in "
                "INT8, FP8 and FP4 only (INT4 is weight-only there, like Model Optimizer's INT4 presets), and Model "
                "Optimizer writes FP8 as TensorRT custom ops that nothing here can run or check. Export "
                "formats=('onnx-qdq',) for onnxruntime."
            )
        if key not in out:
            out.append(key)
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# onnx-qdq: standard Q/DQ through our own symbolic
# --------------------------------------------------------------------------------------------------
def _qdq_function() -> Any:
    import torch
    from torch.onnx import symbolic_helper

    class QDQ(torch.autograd.Function):
        """ONNX ``Mul(mult) → QuantizeLinear(scale 1) → [Clip] → DequantizeLinear(scale)``: modelopt's
        integers and dequantized values; its forward computes the same in torch."""

        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, mult: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int,  # noqa: ARG004
                    axis: int, fp8: bool) -> torch.Tensor:
            s = scale
            if axis >= 0 and s.dim() == 1:
                shape = [1] * x.dim()
                shape[axis] = -1
                s = s.reshape(shape)
            if fp8:
                return (x * mult).clamp(-_E4M3_MAX, _E4M3_MAX).to(torch.float8_e4m3fn).to(x.dtype) * s
            return torch.clamp(torch.round(x * mult), qmin, qmax) * s

        @staticmethod
        @symbolic_helper.parse_args("v", "t", "t", "i", "i", "i", "b")
        def symbolic(g: Any, x: Any, mult: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int, axis: int,
                     fp8: bool) -> Any:
            return write_exact_qdq(g, x, g.op("Constant", value_t=mult.float()), g.op("Constant", value_t=scale.float()),
                                   qmin=qmin, qmax=qmax, axis=axis if scale.dim() == 1 else -1,
                                   channels=int(scale.numel()), fp8=fp8)

    return QDQ


def _qdq_module(spec: _Spec, fn: Any) -> nn.Module:
    from torch import nn

    class ExportQDQ(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.spec = spec

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.spec
            return fn.apply(x, s.mult.to(x.device), s.scale.to(x.device), s.qmin, s.qmax,
                            -1 if s.axis is None else s.axis, s.kind == "fp8")

    return ExportQDQ()


def _export_qdq(model: nn.Module, x: torch.Tensor, out_dir: Path, kind: str, bits: set[int]) -> ExportedModel:
    import torch

    fn = _qdq_function()
    m = copy.deepcopy(model).cpu().eval()
    for name, q in [(n, mod) for n, mod in m.named_modules() if is_quantizer(mod)]:
        if not q.is_enabled:
            continue
        parent, _, leaf = name.rpartition(".")
        (m.get_submodule(parent) if parent else m).register_module(leaf, _qdq_module(_spec(name, q), fn))
    path = out_dir / "student.qdq.onnx"
    with torch.no_grad():
        torch.onnx.export(m, (x,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=OPSET_FP8 if kind == "fp8" else OPSET_INT, dynamo=False)
    prep = prepare_for_onnxruntime(path, fold_weights=True)
    notes = "standard QuantizeLinear/DequantizeLinear" + (
        " (float8e4m3fn, opset 19)" if kind == "fp8" else "; sub-8-bit ranges as int8 with Clip" if bits != {8} else
        " (int8)") + preparation_notes(prep, weights_as="float8" if kind == "fp8" else "integers")
    notes += ("; exact in any onnxruntime session (no U8S8 pattern); run here with session.disable_quant_qdq=1 "
              "(same results, ~5x faster for Model Optimizer's Q/DQ placement)")
    return ExportedModel(format="onnx-qdq", path=path, runtime="onnxruntime", predict=_ort_predict(path), notes=notes,
                         u8s8_guard=True)


# --------------------------------------------------------------------------------------------------
# onnx-trt: Model Optimizer's own export
# --------------------------------------------------------------------------------------------------
def _export_trt(model: nn.Module, x: torch.Tensor, out_dir: Path) -> ExportedModel:
    import torch

    m = copy.deepcopy(model).cpu().eval()
    path = out_dir / "student.trt.onnx"
    with torch.no_grad():
        torch.onnx.export(m, (x,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET_INT,
                          dynamo=False)
    return ExportedModel(
        format="onnx-trt", path=path, runtime="onnxruntime-unfused", predict=_ort_predict(path), u8s8_guard=False,
        notes=("Model Optimizer's own Q/DQ export for TensorRT (signed int8, zero point 0, float weights behind "
               "Q/DQ, BatchNorm unfolded: TensorRT folds and fuses at build time; trtexec --onnx=FILE builds the "
               "engine); run here in onnxruntime with session.disable_quant_qdq=1 (the Q/DQ arithmetic as "
               "written, no integer kernels: exact on every CPU); in a default onnxruntime session use onnx-qdq"),
    )


def _ort_predict(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """An onnxruntime session with Q/DQ fusion off (``session.disable_quant_qdq=1``): onnxruntime then
    folds the weights' DequantizeLinear into float initializers and runs its prepacked float kernels on
    the quantized values — ONNX's own Q/DQ semantics, exact on every CPU. Why: Model Optimizer quantizes
    layer *inputs* (TensorRT style), which leaves onnxruntime no ``DQ → Conv → Q`` group to fuse into
    integer kernels (0 of 4 on digits), and a default session then runs every Conv on a runtime weight
    input, unprepacked: 7.5× the float model's time per batch, against 1.3–1.4× with fusion off."""
    return ort_predict(path, fuse_qdq=False)


def _student_of(model: nn.Module) -> nn.Module:
    """A ``mtd.convert`` KD wrapper exports its student (``mtd.export`` on a copy); anything else as is."""
    if type(model).__name__.startswith("Distill") and hasattr(model, "teacher_model"):
        import modelopt.torch.distill as mtd

        return mtd.export(copy.deepcopy(model))  # type: ignore[no-any-return]
    return model


def export(request: ExportRequest) -> list[ExportedModel]:
    import torch

    with quiet():
        import modelopt.torch.quantization  # noqa: F401 - import once, quietly

        model = _student_of(request.model)
        if not describe(model):
            raise ExportError(
                f"{type(model).__name__} has no enabled Model Optimizer quantizers, so there is nothing to export as "
                "Q/DQ ONNX. Quantize it first: daqakd_plugins.backends.quantize(model, 'modelopt', QuantConfig(...), "
                "example_input=x), or export the float model with torch.onnx.export."
            )
        kind, bits = _student_kind(model)
        if kind == "nvfp4":
            raise ExportError(
                "NVFP4 students export only to TensorRT's custom NVFP4 ops (Model Optimizer's TRT exporter, on a "
                "CUDA machine); onnxruntime has no FP4 kernels, so this adapter writes no NVFP4 ONNX."
            )
        fmts = _formats(request.formats, kind, bits, _low_layers(model))
        x = request.example_input[:1].detach().cpu().float()
        out_dir = Path(request.out_dir)
        out: list[ExportedModel] = []
        for fmt in fmts:
            try:
                out.append(_export_qdq(model, x, out_dir, kind, bits) if fmt == "onnx-qdq" else _export_trt(model, x, out_dir))
            except ExportError:
                raise
            except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
                raise ExportError(
                    f"could not export {type(model).__name__} to {fmt} with torch {torch.__version__.split('+')[0]}: "
                    f"{type(exc).__name__}: {exc}. The model must be exportable by torch.onnx.export(dynamo=False) "
                    "(no data-dependent control flow); quantizers must be calibrated."
                ) from exc
    return out
