"""export_and_measure: a real Brevitas student and the FP teacher, exported and measured side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from daqakd_plugins import backends
from daqakd_plugins.config import QuantConfig
from daqakd_plugins.errors import DataError
from daqakd_plugins.runtime import accuracy_of, export_and_measure, interleaved_latency


@pytest.fixture(scope="module")
def student(digits_teacher, digits):
    teacher, _ = digits_teacher
    return backends.quantize(teacher, "brevitas", QuantConfig(weight_bits=4, act_bits=4),
                             example_input=digits.train_x[:4], calib_data=digits.train_x[:512]).eval()


def test_export_and_measure_reports_both_side_by_side(student, digits_teacher, digits, tmp_path: Path) -> None:
    teacher, meta = digits_teacher
    r = export_and_measure(student, teacher, "brevitas", digits.train_x[:1], digits.test_x, digits.test_y,
                           tmp_path / "export", repeats=3)
    json.dumps(r)  # JSON-ready for report.json
    assert [e["format"] for e in r["student"]] == ["onnx-qcdq", "qonnx"]
    assert [e["runtime"] for e in r["student"]] == ["onnxruntime", "qonnx"]
    with torch.no_grad():
        torch_acc = (student(digits.test_x).argmax(1) == digits.test_y).double().mean().item()
    assert r["student_torch_accuracy"] == pytest.approx(torch_acc, abs=1e-12)
    for e in r["student"]:
        assert Path(e["path"]).exists() and e["size_bytes"] == Path(e["path"]).stat().st_size > 0
        assert e["accuracy_abs_diff"] == pytest.approx(abs(e["accuracy"] - r["student_torch_accuracy"]))
        assert e["accuracy_abs_diff"] <= 0.005
        assert e["latency_ms_per_batch"] > 0 and e["latency"]["repeats"] == 3
        assert e["latency_ratio_vs_fp"] == pytest.approx(e["latency_ms_per_batch"] / r["teacher"]["latency_ms_per_batch"])
        assert e["size_ratio_vs_fp"] == pytest.approx(e["size_bytes"] / r["teacher"]["size_bytes"])
    t = r["teacher"]
    assert (t["format"], t["runtime"]) == ("onnx-fp32", "onnxruntime")
    assert t["accuracy"] == pytest.approx(meta["test_accuracy"], abs=1e-6)  # FP ONNX equals torch
    assert r["teacher_torch_accuracy"] == pytest.approx(meta["test_accuracy"], abs=1e-6)
    assert r["max_accuracy_abs_diff"] == max(e["accuracy_abs_diff"] for e in r["student"])
    # onnxruntime runs every Conv/Gemm of the W4A4 QCDQ file as an integer kernel (before the
    # sub-8-bit activations were stored as fusable uint8, 2 of 4 stayed in float: 3.3x slower)
    assert r["student"][0]["ort_integer_kernels"] == {"compute_ops": 4, "integer": 4}
    assert "ort_integer_kernels" not in r["student"][1]  # qonnx is not onnxruntime's
    # QCDQ stores weights as int8: smaller than the float32 teacher file
    assert r["student"][0]["size_bytes"] < t["size_bytes"]


def test_small_test_set_and_one_format(student, digits_teacher, digits, tmp_path: Path) -> None:
    teacher, _ = digits_teacher
    r = export_and_measure(student, teacher, "brevitas", digits.train_x[:1], digits.test_x[:10], digits.test_y[:10],
                           tmp_path, batch_size=32, repeats=2, formats=("onnx-qcdq",))
    assert [e["format"] for e in r["student"]] == ["onnx-qcdq"]
    assert r["batch_size"] == 32 and r["student"][0]["latency"]["repeats"] == 2


def test_bad_inputs(student, digits_teacher, digits, tmp_path: Path) -> None:
    teacher, _ = digits_teacher
    with pytest.raises(DataError, match="non-empty"):
        export_and_measure(student, teacher, "brevitas", digits.train_x[:1], digits.test_x[:0], digits.test_y[:0], tmp_path)
    with pytest.raises(DataError, match="batch_size"):
        export_and_measure(student, teacher, "brevitas", digits.train_x[:1], digits.test_x, digits.test_y, tmp_path,
                           batch_size=0)


def test_interleaved_latency_rotates_and_counts() -> None:
    calls: list[str] = []

    def make(name: str):
        def predict(a: np.ndarray) -> np.ndarray:
            calls.append(name)
            return a

        return predict

    lat = interleaved_latency({"a": make("a"), "b": make("b"), "c": make("c")}, np.zeros((2, 1)), repeats=3)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]  # warm-up, then rotated rounds
    assert all(v["repeats"] == 3 and v["min"] <= v["median"] <= v["max"] for v in lat.values())


def test_accuracy_of_counts_exactly() -> None:
    x = torch.zeros(5, 1, 2, 2)
    y = torch.tensor([0, 1, 1, 1, 0])
    assert accuracy_of(lambda a: np.tile([[0.0, 1.0]], (len(a), 1)), x, y, batch_size=2) == 3 / 5
