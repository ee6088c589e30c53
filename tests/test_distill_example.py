"""examples/plain_loop.py runs, and it is a plain QAT loop plus exactly three marked lines."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

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
    res_plain = _load(plain, "plain_loop_without_kd").main(["--epochs", "1"])
    assert 0.0 <= res_plain["student"] <= 1.0
