"""The Model Optimizer adapter on the real backend (digits): PTQ accuracy, the quantizers it lists, the
options, the exports (what onnxruntime and TensorRT get), calibration and the errors. The contract
checks shared with every adapter are in tests/test_conformance_modelopt.py."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from daqakd_plugins import backends
from daqakd_plugins.config import QuantConfig
from daqakd_plugins.errors import BackendError, ConfigError, DataError, ExportError

pytest.importorskip("modelopt.torch.quantization")


def _q(teacher, digits, w, a, **options):
    return backends.quantize(copy.deepcopy(teacher), "modelopt", QuantConfig(weight_bits=w, act_bits=a, options=options),
                             example_input=digits.train_x[:8], calib_data=digits.train_x[:512]).eval()


@pytest.fixture(scope="module")
def students(digits, digits_teacher):
    teacher, _ = digits_teacher
    return {(8, 8): _q(teacher, digits, 8, 8), (4, 4): _q(teacher, digits, 4, 4)}


def _logits(model, x):
    with torch.no_grad():
        return model(x).numpy()


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples whose logits agree to 1e-3 (a float sum in another order can land on the other
    side of a rounding boundary: then one quantization step differs, rarely)."""
    return float((np.abs(a - b).max(axis=1) < 1e-3).mean())


def test_registered_and_implemented() -> None:
    from daqakd_modelopt import ModeloptOptions

    from daqakd_plugins.plugins import get_backend

    info = get_backend("modelopt")
    assert info.implemented and info.options_type is ModeloptOptions
    assert (info.weight_bits, info.act_bits) == ((4, 8), (4, 8)) and info.export_formats == ("onnx-qdq", "onnx-trt")


def test_ptq_accuracy_and_the_listed_quantizers(students, digits, digits_teacher) -> None:
    from daqakd_plugins.train import evaluate

    fp = evaluate(digits_teacher[0], digits.test_x, digits.test_y)
    for (w, a), s in students.items():
        acc = evaluate(s, digits.test_x, digits.test_y)
        assert acc >= fp - (0.01 if w == 8 else 0.08), (w, acc, fp)
        qs = backends.describe_quantizers(s)
        # the 3 convs and the linear: a weight and an input quantizer each, plus the pooling's input;
        # modelopt also inserts disabled output / BatchNorm quantizers, which quantize nothing
        assert sorted(q.name for q in qs if q.role == "weight") == [
            "fc.weight_quantizer", "layers.0.conv1.weight_quantizer", "layers.0.conv2.weight_quantizer",
            "stem.0.weight_quantizer"]
        assert len([q for q in qs if q.role == "activation"]) == 5
        # the first and last layers' weights and inputs at 8 bits (the default convention), the rest at W/A
        edge = {"stem.0", "fc"}
        assert {q.layer: q.bits for q in qs if q.role == "weight"} == {n: 8 if n in edge else w for n in (
            "stem.0", "layers.0.conv1", "layers.0.conv2", "fc")}
        assert {q.layer: q.bits for q in qs if q.role == "activation"} == {n: 8 if n in edge else a for n in (
            "stem.0", "layers.0.conv1", "layers.0.conv2", "pool", "fc")}
        assert sum(1 for m in s.modules() if type(m).__name__ == "TensorQuantizer") == 20


def test_modelopt_presets_are_copied_not_mutated(students) -> None:
    import modelopt.torch.quantization as mtq

    bits = {e["cfg"]["num_bits"] for e in mtq.INT8_DEFAULT_CFG["quant_cfg"] if isinstance(e.get("cfg"), dict)}
    assert bits == {8}  # the W4A4 student above was quantized from a copy


def test_options(digits, digits_teacher) -> None:
    teacher = digits_teacher[0]
    s = _q(teacher, digits, 8, 8, float_layers=["fc"])
    names = [q.name for q in backends.describe_quantizers(s)]
    assert names and not any(n.startswith("fc.") for n in names)
    with pytest.raises(ConfigError, match=r"unknown modelopt option\(s\) \['bits'\]; known: algorithm, float_layers, format"):
        _q(teacher, digits, 8, 8, bits=4)
    with pytest.raises(ConfigError, match=r"options\['format'\] must be one of 'int', 'fp8', 'nvfp4'"):
        _q(teacher, digits, 8, 8, format="int4")
    with pytest.raises(ConfigError, match=r"options\['algorithm'\] must be one of 'max', 'mse'"):
        _q(teacher, digits, 8, 8, algorithm="entropy")
    with pytest.raises(ConfigError, match=r"'fp8' is Model Optimizer's FP8 E4M3 format, 8 bits wide; got W4A4"):
        _q(teacher, digits, 4, 4, format="fp8")
    with pytest.raises(ConfigError, match=r"NVFP4 fake quantization runs only on CUDA .* this model is on CPU"):
        _q(teacher, digits, 4, 4, format="nvfp4")


def test_mse_calibration_is_better_at_4_bits_and_recalibrates(students, digits, digits_teacher) -> None:
    from daqakd_plugins.train import evaluate

    s = _q(digits_teacher[0], digits, 4, 4, algorithm="mse")
    acc = evaluate(s, digits.test_x, digits.test_y)
    # what MSE calibration is for: outputs closer to the teacher's (logit MSE 0.34 vs 0.44-0.46 on one or two
    # threads). Top-1 on 450 digits ties on one thread (98.44 % both; 98.89 vs 98.00 on two), so it only may
    # not be worse: a strict top-1 comparison passed or failed with the thread count the teacher trained on
    zt = _logits(digits_teacher[0], digits.test_x)
    err_mse = float(((_logits(s, digits.test_x) - zt) ** 2).mean())
    err_max = float(((_logits(students[(4, 4)], digits.test_x) - zt) ** 2).mean())
    assert err_mse < 0.9 * err_max
    assert acc >= evaluate(students[(4, 4)], digits.test_x, digits.test_y)
    o1 = _logits(s, digits.test_x)
    backends.calibrate(s, "modelopt", digits.train_x[:512] * 3)  # mse again (read from the modelopt state)
    backends.calibrate(s, "modelopt", digits.train_x[:512])
    assert np.array_equal(o1, _logits(s.eval(), digits.test_x))


def test_w8a8_exports(students, digits) -> None:
    import onnx

    from daqakd_plugins.onnx_qdq import u8s8_hazards
    from daqakd_plugins.runtime import export_fp_onnx

    s = students[(8, 8)]
    ref = _logits(s, digits.test_x)
    with tempfile.TemporaryDirectory() as tmp:
        files = {e.format: e for e in backends.export(s, "modelopt", example_input=digits.test_x[:1], out_dir=tmp)}
        assert list(files) == ["onnx-qdq", "onnx-trt"]
        fp_path, _ = export_fp_onnx(s, digits.test_x[:1], Path(tmp) / "fp.onnx")
        # onnxruntime file: the same logits, weights stored as integers, exact on CPUs without VNNI
        qdq = files["onnx-qdq"]
        assert _agree(qdq.predict(digits.test_x.numpy()), ref) >= 0.95
        m = onnx.load(str(qdq.path))
        assert u8s8_hazards(m) == []
        assert not [t.name for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4]
        assert qdq.size_bytes < 0.5 * fp_path.stat().st_size
        # TensorRT file: modelopt's own export, signed int8 Q/DQ with zero point 0 (what TensorRT accepts)
        trt = files["onnx-trt"]
        m = onnx.load(str(trt.path))
        qnodes = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert len(qnodes) == 2 * 9
        consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in m.graph.node if n.op_type == "Constant"}
        zps = [consts[n.input[2]] for n in qnodes]
        assert all(z.dtype == np.int8 and not z.any() for z in zps)
        assert _agree(trt.predict(digits.test_x.numpy()), ref) >= 0.95


def test_w4a4_export_matches_torch_and_has_no_tensorrt_form(students, digits) -> None:
    """At ties (a digits pixel of 0.5 is 3.5 levels at 4 bits) ONNX's QuantizeLinear, which divides by
    its scale, rounds otherwise than modelopt, which multiplies: the export multiplies like modelopt."""
    s = students[(4, 4)]
    ref = _logits(s, digits.test_x)
    with tempfile.TemporaryDirectory() as tmp:
        files = backends.export(s, "modelopt", example_input=digits.test_x[:1], out_dir=tmp)
        assert [e.format for e in files] == ["onnx-qdq"]
        assert _agree(files[0].predict(digits.test_x.numpy()), ref) >= 0.95
        with pytest.raises(ExportError, match=r"onnx-trt is written for INT8 students only.*activations in INT8, FP8 and FP4 only"):
            backends.export(s, "modelopt", example_input=digits.test_x[:1], out_dir=tmp, formats=("onnx-trt",))
        with pytest.raises(ExportError, match=r"export as onnx-qdq, onnx-trt, not 'qonnx'"):
            backends.export(s, "modelopt", example_input=digits.test_x[:1], out_dir=tmp, formats=("qonnx",))


def test_fp8_student_trains_and_exports_for_onnxruntime(digits, digits_teacher) -> None:
    from daqakd_plugins.runtime import accuracy_of
    from daqakd_plugins.train import evaluate

    s = _q(digits_teacher[0], digits, 8, 8, format="fp8")
    qs = backends.describe_quantizers(s)
    assert len(qs) == 9 and {q.bits for q in qs} == {8}  # E4M3: 4 + 3 + sign
    ref = evaluate(s, digits.test_x, digits.test_y)
    assert ref >= evaluate(digits_teacher[0], digits.test_x, digits.test_y) - 0.01
    with tempfile.TemporaryDirectory() as tmp:
        (e,) = backends.export(s, "modelopt", example_input=digits.test_x[:1], out_dir=tmp)
        assert e.format == "onnx-qdq" and "float8e4m3fn" in e.notes
        assert accuracy_of(e.predict, digits.test_x, digits.test_y) == ref
        with pytest.raises(ExportError, match="this one is FP8"):
            backends.export(s, "modelopt", example_input=digits.test_x[:1], out_dir=tmp, formats=("onnx-trt",))


def test_errors(students, digits, digits_teacher) -> None:
    teacher = digits_teacher[0]
    with pytest.raises(DataError, match="calibration data yielded no batches"):
        backends.calibrate(copy.deepcopy(students[(8, 8)]), "modelopt", [], num_batches=2)
    with pytest.raises(DataError, match=r"image batches \[B, C, H, W\]"):
        backends.calibrate(copy.deepcopy(students[(8, 8)]), "modelopt", [torch.zeros(3, 8)], num_batches=2)
    with pytest.raises(BackendError, match="no enabled Model Optimizer quantizers to calibrate"):
        backends.calibrate(copy.deepcopy(teacher), "modelopt", digits.train_x[:64])
    with pytest.raises(BackendError, match="already contains Model Optimizer quantizers"):
        backends.quantize(students[(8, 8)], "modelopt", QuantConfig(weight_bits=8, act_bits=8),
                          example_input=digits.train_x[:8])
    with pytest.raises(BackendError, match=r"could not quantize SmallResNet .*example_input has shape \(2, 3, 8, 8\)"):
        backends.quantize(copy.deepcopy(teacher), "modelopt", QuantConfig(weight_bits=8, act_bits=8),
                          example_input=torch.zeros(2, 3, 8, 8))
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(ExportError, match="no enabled Model Optimizer quantizers"):
        backends.export(copy.deepcopy(teacher), "modelopt", example_input=digits.test_x[:1], out_dir=tmp)


def test_the_core_does_not_import_modelopt() -> None:
    import subprocess
    import sys

    code = ("import sys, torch\nfrom daqakd_plugins import backends\nfrom daqakd_plugins.plugins import get_backend\n"
            "get_backend('modelopt')\nbackends.describe_quantizers(torch.nn.Linear(2, 2))\n"
            "import daqakd_modelopt\nprint('MODELOPT', 'modelopt' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MODELOPT False" in r.stdout
