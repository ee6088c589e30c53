"""examples/plain_loop.py runs, and it is a plain QAT loop plus exactly three marked lines."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plain_loop.py"
MARK = re.compile(r"#\s*\[DA-QAKD (\d)/3\]")


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(name, None)
    return mod


def _plain_source() -> str:
    """The example with the KD lines removed and the original CE line restored."""
    out = []
    for line in EXAMPLE.read_text().splitlines():
        if MARK.search(line):
            continue
        out.append(re.sub(r"^(\s*)# (loss = F\.cross_entropy\(student\(x\), y\))", r"\1\2", line))
    return "\n".join(out) + "\n"


def test_the_kd_change_is_three_marked_lines():
    src = EXAMPLE.read_text()
    marked = [m.group(1) for m in map(MARK.search, src.splitlines()) if m]
    assert marked == ["1", "2", "3"]
    plain = _plain_source()
    assert "Distiller" not in plain.split('"""', 2)[2] and "kd." not in plain
    assert "loss = F.cross_entropy(student(x), y)" in plain


def test_example_runs_with_kd_and_as_plain_qat(fresh_plugins, tmp_path, capsys):
    res = _load(EXAMPLE, "plain_loop_example").main(["--epochs", "3"])
    assert res["teacher"] > 0.95
    assert res["student"] > 0.3, res  # 3 epochs of a W2A4 student on digits; chance is 0.1
    assert "student W2A4" in capsys.readouterr().out
    plain = tmp_path / "plain_loop_without_kd.py"
    plain.write_text(_plain_source())
    plain_mod = _load(plain, "plain_loop_without_kd")
    assert not hasattr(plain_mod, "Distiller")  # the KD import went with the marked lines
    res_plain = plain_mod.main(["--epochs", "1"])
    # plain QAT trains on its own: one epoch of CE takes the W2A4 student from chance (0.1) to ~0.4
    assert res_plain["student"] > 0.3, res_plain
    # and it is the same loop as the KD version with the CE-only recipe ("--loss ce"): measured equal;
    # the tolerance (4 of 450 test images) leaves room only for float-rounding differences in the CE term
    res_ce = _load(EXAMPLE, "plain_loop_example_ce").main(["--epochs", "1", "--loss", "ce"])
    assert res_plain["student"] == pytest.approx(res_ce["student"], abs=0.01), (res_plain, res_ce)
