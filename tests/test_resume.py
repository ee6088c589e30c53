"""A real SIGKILL mid-training, then --resume: the final weights equal an uninterrupted run's, bitwise.

Both runs are real `daqakd distill` subprocesses with the real Brevitas backend and a random
augmentation (so a resume that failed to restore RNG states or the loader order would diverge).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

EPOCHS = 4


@pytest.fixture(scope="module")
def teacher_file(digits_teacher, tmp_path_factory) -> Path:
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    return save_model(tmp_path_factory.mktemp("teacher") / "teacher.pt", model, meta["arch"], meta)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONHASHSEED="0")
    return env


def _cmd(out: Path, teacher: Path) -> list[str]:
    return [
        sys.executable, "-m", "daqakd_plugins", "distill", "--backend", "brevitas", "--bits", "2", "--act-bits", "4",
        "--data", "digits", "--teacher", str(teacher), "--epochs", str(EPOCHS), "--augment", "trivialaugmentwide",
        "--train-per-class", "30", "--batch-size", "16", "--lr", "2e-3", "--seed", "3", "--no-export", "--out", str(out),
    ]


def _student(path: Path) -> dict[str, torch.Tensor]:
    ck = torch.load(path / "student.pt", map_location="cpu", weights_only=True)
    return ck["state_dict"]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run_bitwise(tmp_path, teacher_file):
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = subprocess.run(_cmd(full, teacher_file), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    proc = subprocess.Popen(_cmd(killed, teacher_file), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ck = killed / "checkpoint.pt"
    deadline = time.monotonic() + 600
    while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # the first epoch's checkpoint is on disk: kill during epoch 2
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-training (rc {proc.returncode}): {err[-2000:]!r}"
    assert not (killed / "report.json").exists() and not (killed / "student.pt").exists()
    saved = torch.load(ck, map_location="cpu", weights_only=True)  # the atomic write left a readable file
    assert 1 <= saved["epoch"] < EPOCHS

    r2 = subprocess.run(
        [sys.executable, "-m", "daqakd_plugins", "distill", "--resume", str(killed), "--no-export"],
        env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert r2.returncode == 0, r2.stderr[-3000:]

    a, b = _student(full), _student(killed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ from the uninterrupted run in {different[:5]}"

    import json

    ra = json.loads((full / "report.json").read_text())
    rb = json.loads((killed / "report.json").read_text())
    assert rb["resumed_from_epoch"] == saved["epoch"] and ra["resumed_from_epoch"] is None
    assert [h["test_accuracy"] for h in ra["history"]] == [h["test_accuracy"] for h in rb["history"]]
    assert ra["accuracy"] == rb["accuracy"]
    assert rb["augmentation"] == "trivialaugmentwide"


def test_resume_with_other_settings_is_refused(tmp_path, teacher_file):
    from daqakd_plugins.distill import DistillConfig, run_distill
    from daqakd_plugins.errors import CheckpointError

    base = dict(backend="brevitas", bits=2, act_bits=4, data="digits", teacher=str(teacher_file), epochs=1,
                augment="none", train_per_class=10, batch_size=32, export=False, progress=False, out=str(tmp_path))
    run_distill(DistillConfig(**base))
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0.001 vs now 0.01"):
        run_distill(DistillConfig(**{**base, "lr": 1e-2}, resume=str(tmp_path)))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run_distill(DistillConfig(**base, resume=str(tmp_path / "nowhere")))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        run_distill(DistillConfig(**base, resume=str(tmp_path / "junk")))
