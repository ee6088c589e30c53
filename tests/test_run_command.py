"""`daqakd run` — the README's main job — end to end on digits, and resuming it."""

from __future__ import annotations

import json

import pytest

from daqakd_plugins.cli import main


@pytest.mark.slow
def test_main_job_ranks_distills_exports_and_resumes(tmp_path, capsys):
    out = tmp_path / "main"
    assert main(["run", "--out", str(out), "--epochs", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    acc = report["accuracy"]
    assert acc["teacher_fp"] >= 0.95
    assert report["num_quantizers"] > 0 and report["bits"] == 4
    ranked = [e["name"] for e in report["ranking"]]
    assert len(ranked) >= 16 and report["augmentation"] == ranked[0]  # the ranking's pick is what trained
    formats = {e["format"]: e for e in report["export"]["student"]}
    assert {"onnx-qcdq", "qonnx"} <= set(formats)
    for e in formats.values():
        assert abs(e["accuracy"] - acc["student_after"]) <= 0.005
    assert (out / "report.md").read_text().startswith("# daqakd distill")
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    # the same command again resumes from the checkpoint instead of starting over (an interrupted run
    # resumes the same way; tests/test_resume.py kills one with SIGKILL)
    assert main(["run", "--out", str(out), "--epochs", "1"]) == 0
    assert "resuming" in capsys.readouterr().out
    again = json.loads((out / "report.json").read_text())
    assert again["resumed_from_epoch"] == 1 and again["history"] == report["history"]
    assert again["accuracy"]["student_after"] == acc["student_after"]
    # changing a setting that shapes training is refused with the way out, not silently mixed
    assert main(["run", "--out", str(out), "--epochs", "2"]) == 2
    assert "cannot resume" in capsys.readouterr().err
