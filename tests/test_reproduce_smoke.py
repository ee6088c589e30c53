"""The evidence experiment end to end on digits (tiny): resumable JSONL, then `daqakd report`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_reproduce_figure1_smoke_resumes_and_reports(tmp_path):
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reproduce_figure1.py"), "--smoke", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["kind"] for r in rows]
    assert kinds.count("teacher") == 1 and kinds.count("ranking") == 3 * 2 and kinds.count("student") == 3 * 2
    assert {r["candidate"] for r in rows if r["kind"] == "student"} == {"none", "autoaugment-cifar10", "none+cutmix"}
    # drop the last student and truncate the file mid-line, as a kill would: the re-run redoes only that one
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    again = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    assert again.stdout.count(" acc ") == 1
    from daqakd_plugins.evidence import read_results

    rows2 = read_results(out)  # the partial line stays in the file (never rewritten) and is skipped
    assert len(rows2) == len(rows) and {r["key"] for r in rows2} == {r["key"] for r in rows}
    rep = subprocess.run([sys.executable, "-m", "daqakd_plugins", "report", str(out), "--bootstrap", "50"],
                         check=True, capture_output=True, text=True)
    assert "Spearman" in rep.stdout
    assert (tmp_path / "figure1.png").stat().st_size > 10_000
