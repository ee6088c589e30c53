"""examples/nncf_qat.py: NNCF's own QAT recipe (quantize → the user's loop → get_config save → OpenVINO
export) that gains DA-QAKD with three marked lines. Runs the example as shipped (DA-QAKD) and with the
marked lines deleted (NNCF's plain QAT), on digits, with real NNCF and OpenVINO."""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

import pytest
from _example_lines import marked, replaced, upstream

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nncf_qat.py"


def _plain_source() -> str:
    return upstream(EXAMPLE.read_text())


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


def test_example_adds_at_most_three_lines_to_nncfs_recipe() -> None:
    src = EXAMPLE.read_text()
    lines = marked(src)
    assert 1 <= len(lines) <= 3, lines
    assert any("Distiller(" in ln and "rank_augmentations(" in ln and ".best" in ln for ln in lines)
    assert any("kd.loss(" in ln for ln in lines)
    assert len(replaced(src)) == 2  # the upstream forward and criterion
    plain = _plain_source()
    names = {n.id for n in ast.walk(ast.parse(plain)) if isinstance(n, ast.Name)}
    assert not names & {"kd", "Distiller", "rank_augmentations"}  # nothing of daqakd's KD is left
    # NNCF's recipe, step by step, is all there without the marked lines
    for step in ("nncf.quantize(", "nncf.Dataset(", "nncf.torch.get_config(", "nncf.torch.load_from_config(",
                 "ov.convert_model(", "ov.save_model(", "compress_to_fp16=False", "optimizer.step()"):
        assert step in plain, step


@pytest.mark.slow
def test_example_runs_with_da_qakd_and_as_plain_nncf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--epochs", "1", "--float-epochs", "3", "--lr", "1e-3"]
    acc = _run(EXAMPLE, [*args, "--out", str(tmp_path / "daqakd")], monkeypatch)
    assert acc > 0.9  # the OpenVINO IR after one DA-QAKD epoch; chance is 0.1
    assert (tmp_path / "daqakd" / "digits_int8.xml").exists() and (tmp_path / "daqakd" / "checkpoint.pth").exists()
    plain = tmp_path / "nncf_qat_plain.py"
    plain.write_text(_plain_source())
    acc_plain = _run(plain, [*args, "--out", str(tmp_path / "plain")], monkeypatch)
    assert acc_plain > 0.9
