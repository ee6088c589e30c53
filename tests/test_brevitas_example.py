"""examples/brevitas_qat.py: a plain Brevitas QAT loop that gains DA-QAKD with three marked lines.
Runs the example as shipped (DA-QAKD) and with the marked lines deleted (plain QAT), on digits."""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

import pytest
from _example_lines import marked, replaced, upstream

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "brevitas_qat.py"


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


@pytest.mark.slow
def test_example_runs_with_da_qakd_and_as_plain_brevitas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    acc = _run(EXAMPLE, ["--epochs", "1", "--float-epochs", "2", "--bits", "2", "--act-bits", "4"], monkeypatch)
    assert acc > 0.5  # W2A4 after one DA-QAKD epoch; chance is 0.1
    plain = tmp_path / "brevitas_qat_plain.py"
    plain.write_text(upstream(EXAMPLE.read_text()))
    acc_plain = _run(plain, ["--epochs", "1", "--float-epochs", "2", "--bits", "4", "--act-bits", "4"], monkeypatch)
    assert acc_plain > 0.5
