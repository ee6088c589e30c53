"""docs/results.md's "user's own torchvision model" section (issue 29's acceptance trial) against its data:
the generated block between the ``user-model-trial`` markers is exactly the table
benchmarks/user_model_trial.py computes from the committed docs/evidence/user-model-trial/results.jsonl.
The trial itself is not run here (it takes most of an hour on one core)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
DATA = ROOT / "docs" / "evidence" / "user-model-trial" / "results.jsonl"
SCRIPT = ROOT / "benchmarks" / "user_model_trial.py"


def _module():
    spec = importlib.util.spec_from_file_location("user_model_trial", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def _block() -> str:
    m = re.search(r"<!-- user-model-trial:begin[^>]*-->\n(.*?)<!-- user-model-trial:end -->", DOC.read_text(), re.S)
    assert m, "docs/results.md lost its user-model-trial markers"
    return m.group(1)


def test_the_generated_block_is_what_the_committed_rows_give() -> None:
    assert _block() == _module().table(_rows()), (
        "regenerate the block: python benchmarks/user_model_trial.py --write-doc")


def test_the_rows_are_the_trial_the_section_describes() -> None:
    rows = _rows()
    teacher = [r for r in rows if r["kind"] == "teacher"]
    assert len(teacher) == 1 and teacher[0]["arch"] == "torchvision:shufflenet_v2_x0_5" and teacher[0]["small_input"]
    runs = [r for r in rows if r["kind"] == "run"]
    assert runs, "no finished run committed"
    for r in runs:
        assert r["backend"] in ("brevitas", "nncf", "pytorch-quantization", "modelopt") and r["bits"] in ("W8A8", "W4A4")
        cmd = r["command"].split()
        assert cmd[:3] == ["-m", "daqakd_plugins", "distill"]
        for flag, value in (("--backend", r["backend"]), ("--train-per-class", "100"), ("--epochs", "2"),
                            ("--data", "/work/data"), ("--bits", r["bits"][1]), ("--act-bits", r["bits"][3])):
            assert cmd[cmd.index(flag) + 1] == value, (flag, r["command"])
        # a student that exists reloads to a recorded accuracy, compared with the report's
        if r.get("reported_accuracy") is not None and r.get("reloaded_accuracy") is not None:
            assert r["reload_matches"] == (abs(r["reported_accuracy"] - r["reloaded_accuracy"]) < 1e-9)
