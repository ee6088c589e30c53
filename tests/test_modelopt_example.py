"""examples/modelopt_qat.py: Model Optimizer's cnn_qat flow (quantize with a calibration loop -> fine-tune
-> mto.save / mto.restore) that gains DA-QAKD with three marked lines. Runs the example as shipped
(DA-QAKD) and with the marked lines deleted (plain Model Optimizer QAT), on digits."""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

import pytest
from _example_lines import marked, replaced, upstream

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "modelopt_qat.py"

pytest.importorskip("modelopt.torch.quantization")


def _run(path: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> float:
    import torch

    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: one thread is several times faster under load
    try:
        ns = runpy.run_path(str(path), run_name="example")  # not "__main__": call main() ourselves
        return float(ns["main"](argv))
    finally:
        torch.set_num_threads(n)


def test_example_adds_at_most_three_lines_to_the_cnn_qat_flow() -> None:
    src = EXAMPLE.read_text()
    lines = marked(src)
    assert 1 <= len(lines) <= 3, lines
    assert any("Distiller(" in ln and "rank_augmentations(" in ln and ".best" in ln for ln in lines)
    assert any("kd.loss(" in ln for ln in lines)
    assert len(replaced(src)) == 2  # the upstream forward and criterion
    plain = upstream(src)
    names = {n.id for n in ast.walk(ast.parse(plain)) if isinstance(n, ast.Name)}
    assert not names & {"kd", "Distiller", "rank_augmentations", "teacher"}  # nothing of daqakd's KD is left
    calls = {n.func.attr for n in ast.walk(ast.parse(plain)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert {"quantize", "save", "restore"} <= calls  # the recipe's mtq.quantize -> train -> mto.save / mto.restore


@pytest.mark.slow
def test_example_runs_with_da_qakd_and_as_plain_modelopt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common = ["--epochs", "1", "--float-epochs", "3"]
    acc = _run(EXAMPLE, [*common, "--bits", "4", "--output-dir", str(tmp_path / "da")], monkeypatch)
    assert acc > 0.8  # W4A4 after one DA-QAKD epoch; chance is 0.1
    assert (tmp_path / "da" / "modelopt_qat.pth").exists()  # mto.save wrote it, mto.restore read it back
    plain = tmp_path / "modelopt_qat_plain.py"
    plain.write_text(upstream(EXAMPLE.read_text()))
    acc_plain = _run(plain, [*common, "--bits", "8", "--output-dir", str(tmp_path / "plain")], monkeypatch)
    assert acc_plain > 0.9
