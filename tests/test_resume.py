"""--resume refuses other settings and unreadable checkpoints. The SIGKILL-then-resume equality (real
`daqakd distill` subprocesses, a random augmentation, bitwise) is a check of the conformance kit,
daqakd_plugins.testing.check_resume, run on every backend by tests/test_conformance.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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
