"""Exported accuracy, file size and latency of a quantized student next to its float teacher.

:func:`export_and_measure` exports the student through the backend's export hook (every format it
writes, each with its own runtime) and the FP teacher to plain ONNX run in onnxruntime, then measures
each artefact on the same test data. Latency is measured *interleaved*: every repeat times one batch
on every model in turn (rotating the order), so background load on a shared machine hits all models
alike and the ratios stay meaningful even when absolute milliseconds drift. Nothing here asserts a
speed; callers print ratios.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import progress
from .errors import DataError, ExportError

__all__ = ["export_and_measure", "export_fp_onnx", "accuracy_of", "interleaved_latency", "ort_integer_kernels",
           "ort_predict"]

Predict = Callable[[np.ndarray], np.ndarray]


def export_fp_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path) -> tuple[Path, Predict]:
    """Export a float model to ONNX (TorchScript exporter, dynamic batch) and return the file and an
    onnxruntime ``predict``. Single-threaded session, like the backends' own ORT sessions, so the
    latency comparison is like for like."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).cpu().eval()
    x = example_input[:1].detach().cpu().float()
    try:
        with torch.no_grad():
            torch.onnx.export(
                m, (x,), str(path), input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13, dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
        raise ExportError(
            f"the float model {type(model).__name__} could not be exported to ONNX for the side-by-side "
            f"comparison ({type(exc).__name__}: {exc}); it must be traceable by torch.onnx.export(dynamo=False)."
        ) from exc
    return path, ort_predict(path)


def ort_predict(path: str | Path, *, fuse_qdq: bool = True) -> Predict:
    """``predict(float32 NCHW array) -> logits`` for an ONNX file in a single-threaded onnxruntime CPU
    session (the same settings for every model daqakd compares, so latencies are like for like).
    ``fuse_qdq=False`` sets ``session.disable_quant_qdq``: onnxruntime then runs Q/DQ as ONNX's float
    reference semantics instead of fusing them into integer kernels (for files it cannot fuse anyway)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # exporters that keep initializers as inputs make onnxruntime warn per tensor
    if not fuse_qdq:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name

    def predict(a: np.ndarray) -> np.ndarray:
        return np.asarray(sess.run(None, {iname: np.ascontiguousarray(a, dtype=np.float32)})[0])

    return predict


_COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_INTEGER_OPS = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat",
                "DynamicQuantizeMatMul", "QLinearConvTranspose"}


def ort_integer_kernels(path: str | Path) -> dict[str, int]:
    """How many of the model's Conv/Gemm/MatMul onnxruntime runs as integer kernels once it has
    optimised the graph (default session options), e.g. ``{"compute_ops": 4, "integer": 4}``. A Q/DQ
    model whose layers stay in float pays for quantize/dequantize and gains nothing: this is what
    explains a quantized export that runs slower than the float model."""
    import tempfile

    import onnx
    import onnxruntime as ort

    total = sum(1 for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in _COMPUTE_OPS)
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        integer = sum(1 for n in onnx.load(so.optimized_model_filepath).graph.node if n.op_type in _INTEGER_OPS)
    return {"compute_ops": total, "integer": integer}


def accuracy_of(predict: Predict, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> float:
    """Top-1 accuracy of an exported model's ``predict`` on ``(x, y)``, batch by batch."""
    xs = x.detach().cpu().float().numpy()
    ys = y.detach().cpu().numpy()
    hits = 0
    for i in range(0, len(xs), batch_size):
        logits = predict(xs[i : i + batch_size])
        hits += int((np.asarray(logits).argmax(1) == ys[i : i + batch_size]).sum())
    return hits / max(1, len(ys))


def interleaved_latency(
    predicts: dict[str, Predict], batch: np.ndarray, *, repeats: int = 15, budget_s: float = 20.0
) -> dict[str, dict[str, float]]:
    """Median (and min / max) milliseconds per batch for each ``predict``, timed round-robin.

    One warm-up call each (sessions allocate, qonnx builds its per-batch-size graph), then ``repeats``
    rounds; each round times every model once, starting from a different one each round. Stops early
    (after at least 3 rounds) when ``budget_s`` is spent, so a slow reference executor (qonnx runs node
    by node in Python) cannot stall a run.
    """
    names = list(predicts)
    for n in names:
        predicts[n](batch)
    times: dict[str, list[float]] = {n: [] for n in names}
    t_start = time.perf_counter()
    for r in range(max(1, repeats)):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            predicts[n](batch)
            times[n].append((time.perf_counter() - t0) * 1e3)
        if r >= 2 and time.perf_counter() - t_start > budget_s:
            break
    return {
        n: {"median": statistics.median(v), "min": min(v), "max": max(v), "repeats": len(v)} for n, v in times.items()
    }


def _torch_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Exact hits / n (a float32 mean would differ from the exported runtimes' count by ~1e-8)."""
    from .train import evaluate

    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    return evaluate(model, x, y, batch_size=max(batch_size, 256), device=dev)


def _check_test_data(test_x: torch.Tensor, test_y: torch.Tensor, batch_size: int) -> None:
    if len(test_x) == 0 or len(test_x) != len(test_y):
        raise DataError(f"test data must be non-empty with one label per image, got {len(test_x)} images and {len(test_y)} labels")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")


def _measure_files(exported: list[Any], test_x: torch.Tensor, test_y: torch.Tensor, batch_size: int,
                   student_torch: float) -> tuple[list[dict[str, Any]], dict[str, Predict]]:
    """Each exported file's accuracy in its own runtime (a file its runtime cannot run gets an ``error``,
    the others are still measured) and, for U8S8-guarded files, how many layers run as integer kernels."""
    entries: list[dict[str, Any]] = []
    predicts: dict[str, Predict] = {}
    for e in exported:
        entry: dict[str, Any] = {"format": e.format, "runtime": e.runtime, "path": str(e.path),
                                 "size_bytes": e.size_bytes, "notes": e.notes}
        progress.doing(f"measuring the exported {e.format} file in {e.runtime} on {len(test_x)} test images")
        try:
            acc = accuracy_of(e.predict, test_x, test_y, batch_size)
        except Exception as exc:  # noqa: BLE001 - report a runtime failure without losing the other formats
            entry["error"] = f"{e.runtime} could not run {e.path.name}: {type(exc).__name__}: {exc}"
            entries.append(entry)
            continue
        entry.update(accuracy=acc, accuracy_abs_diff=abs(acc - student_torch))
        if e.u8s8_guard:
            entry["ort_integer_kernels"] = ort_integer_kernels(e.path)
        entries.append(entry)
        predicts[f"student:{e.format}"] = e.predict
    return entries, predicts


def export_and_measure(
    student: nn.Module,
    teacher: nn.Module,
    backend: str,
    example_input: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    out_dir: str | Path,
    batch_size: int = 64,
    *,
    repeats: int = 15,
    formats: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Export ``student`` with ``backend`` and ``teacher`` to float ONNX; measure both side by side.

    Returns a JSON-ready dict::

        {"backend", "batch_size", "student_torch_accuracy", "teacher_torch_accuracy",
         "student": [{"format", "runtime", "path", "size_bytes", "accuracy", "accuracy_abs_diff",
                      "latency_ms_per_batch", "latency", "size_ratio_vs_fp", "latency_ratio_vs_fp", "notes",
                      "ort_integer_kernels" (onnxruntime files: Conv/Gemm/MatMul run as integer kernels)}],
         "teacher": {"format": "onnx-fp32", "runtime": "onnxruntime", "path", "size_bytes", "accuracy",
                     "latency_ms_per_batch", "latency"},
         "max_accuracy_abs_diff", "latency_method"}

    ``accuracy_abs_diff`` is |exported − torch| top-1 accuracy of the student on ``(test_x, test_y)``
    (a fraction; ×100 for percentage points). ``latency_ms_per_batch`` is the median over interleaved
    repeats of one ``batch_size`` batch (see :func:`interleaved_latency`).
    """
    from . import backends

    _check_test_data(test_x, test_y, batch_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    n = len(test_x)
    progress.doing(f"measuring the student and the teacher in torch on {n} test images")
    student_torch = _torch_accuracy(student, test_x, test_y, batch_size)
    teacher_torch = _torch_accuracy(teacher, test_x, test_y, batch_size)
    progress.doing(f"exporting the student with {backend}" + (f" ({', '.join(formats)})" if formats else ""))
    exported = backends.export(student, backend, example_input=example_input, out_dir=out, formats=formats)
    progress.doing("exporting the FP teacher to ONNX")
    fp_path, fp_predict = export_fp_onnx(teacher, example_input, out / "teacher.fp32.onnx")
    entries, predicts = _measure_files(exported, test_x, test_y, batch_size, student_torch)
    progress.doing(f"measuring the teacher's ONNX file in onnxruntime on {n} test images")
    teacher_acc = accuracy_of(fp_predict, test_x, test_y, batch_size)
    predicts["teacher"] = fp_predict

    xs = test_x[:batch_size].detach().cpu().float().numpy()
    if len(xs) < batch_size:  # small test sets: repeat rows so every model sees a full batch
        xs = np.resize(xs, (batch_size, *xs.shape[1:])).astype(np.float32)
    progress.doing(f"timing {len(predicts)} files' latency, interleaved ({repeats} rounds at most)")
    lat = interleaved_latency(predicts, xs, repeats=repeats)

    teacher_size = fp_path.stat().st_size
    for entry in entries:
        key = f"student:{entry['format']}"
        if key in lat:
            entry["latency_ms_per_batch"] = lat[key]["median"]
            entry["latency"] = lat[key]
            entry["latency_ratio_vs_fp"] = lat[key]["median"] / lat["teacher"]["median"]
        entry["size_ratio_vs_fp"] = entry["size_bytes"] / teacher_size
    diffs = [e["accuracy_abs_diff"] for e in entries if "accuracy_abs_diff" in e]
    return {
        "backend": backend,
        "batch_size": batch_size,
        "student_torch_accuracy": student_torch,
        "teacher_torch_accuracy": teacher_torch,
        "student": entries,
        "teacher": {
            "format": "onnx-fp32", "runtime": "onnxruntime", "path": str(fp_path), "size_bytes": teacher_size,
            "accuracy": teacher_acc, "latency_ms_per_batch": lat["teacher"]["median"], "latency": lat["teacher"],
        },
        "max_accuracy_abs_diff": max(diffs) if diffs else None,
        "latency_method": (
            f"median ms per batch of {batch_size} over interleaved round-robin repeats (rotating order), "
            "single-threaded sessions, after one warm-up call each"
        ),
    }
