"""examples/tensorrt_qat.py: NVIDIA's pytorch-quantization QAT recipe (calibrate -> fine-tune -> Q/DQ
ONNX for TensorRT) that gains DA-QAKD with three marked lines. Runs the example as shipped (DA-QAKD)
and with the marked lines deleted (NVIDIA's recipe), on digits, and checks the TensorRT file."""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from _example_lines import marked, replaced, upstream

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tensorrt_qat.py"


def _run(path: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> float:
    import torch

    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine
    try:
        ns = runpy.run_path(str(path), run_name="example")  # not "__main__": call main() ourselves
        return float(ns["main"](argv))
    finally:
        torch.set_num_threads(n)


def _onnx_accuracy(path: Path) -> float:
    import onnx
    import onnxruntime as ort

    from daqakd_plugins.data import load_digits

    m = onnx.load(str(path))
    assert m.opset_import[0].version == 13
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.disable_quant_qdq", "1")  # ONNX reference semantics, any CPU
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    d = load_digits()
    logits = sess.run(None, {"input": d.test_x.numpy()})[0]
    return float(np.mean(logits.argmax(1) == d.test_y.numpy()))


def test_example_adds_at_most_three_lines() -> None:
    src = EXAMPLE.read_text()
    lines = marked(src)
    assert 1 <= len(lines) <= 3, lines
    assert any("Distiller(" in ln and "rank_augmentations(" in ln and ".best" in ln for ln in lines)
    assert any("kd.loss(" in ln for ln in lines)
    assert len(replaced(src)) == 2  # the upstream forward and criterion
    plain = upstream(src)
    names = {n.id for n in ast.walk(ast.parse(plain)) if isinstance(n, ast.Name)}
    assert not names & {"kd", "Distiller", "rank_augmentations"}  # nothing of daqakd's KD is left
    for step in ("quant_modules.initialize()", "quant_modules.deactivate()", "collect_stats(", "compute_amax(",
                 "use_fb_fake_quant = True", "opset_version=13"):
        assert step in plain, step  # NVIDIA's recipe is intact


@pytest.mark.slow
def test_example_runs_with_da_qakd_and_as_nvidias_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    conv = torch.nn.Conv2d
    onnx_kd = tmp_path / "kd.onnx"
    acc = _run(EXAMPLE, ["--epochs", "1", "--float-epochs", "3", "--onnx", str(onnx_kd)], monkeypatch)
    assert acc > 0.9  # INT8 after one DA-QAKD epoch; chance is 0.1
    assert abs(_onnx_accuracy(onnx_kd) - acc) <= 0.005
    assert torch.nn.Conv2d is conv  # the example's initialize() did not leak

    plain = tmp_path / "tensorrt_qat_plain.py"
    plain.write_text(upstream(EXAMPLE.read_text()))
    onnx_plain = tmp_path / "plain.onnx"
    acc_plain = _run(plain, ["--epochs", "1", "--float-epochs", "3", "--onnx", str(onnx_plain)], monkeypatch)
    assert acc_plain > 0.9
    assert abs(_onnx_accuracy(onnx_plain) - acc_plain) <= 0.005
    assert torch.nn.Conv2d is conv
