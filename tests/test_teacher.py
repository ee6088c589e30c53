"""The default teacher: accuracy on digits, safe save/load, the `daqakd teacher` command."""

from __future__ import annotations

import torch

from daqakd_plugins.cli import main
from daqakd_plugins.errors import CheckpointError
from daqakd_plugins.models import load_model, save_model
from daqakd_plugins.train import evaluate


def test_default_teacher_reaches_95_percent(digits, digits_teacher):
    model, meta = digits_teacher
    acc = evaluate(model, digits.test_x, digits.test_y)
    assert acc >= 0.95, acc
    assert meta["test_accuracy"] == acc
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"Conv2d", "BatchNorm2d", "ReLU", "AdaptiveAvgPool2d", "Linear"} <= kinds


def test_save_and_load_with_weights_only(tmp_path, digits, digits_teacher):
    model, meta = digits_teacher
    path = save_model(tmp_path / "t.pt", model, meta["arch"], {"test_accuracy": meta["test_accuracy"]})
    raw = torch.load(path, weights_only=True)  # nothing but tensors and plain containers inside
    assert set(raw) == {"arch", "state_dict", "meta"}
    loaded, lmeta = load_model(path)
    assert evaluate(loaded, digits.test_x, digits.test_y) == meta["test_accuracy"]
    assert lmeta["arch"] == meta["arch"]


def test_load_errors_say_what_to_do(tmp_path):
    import pytest

    with pytest.raises(CheckpointError, match="daqakd teacher --out"):
        load_model(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")  # a plain state_dict, no architecture
    with pytest.raises(CheckpointError, match=r"plain state_dict with no architecture: pass --arch NAME --num-classes N"):
        load_model(tmp_path / "other.pt")
    torch.save({"epoch": 3, "note": "x"}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="neither a state_dict nor a daqakd model file"):
        load_model(tmp_path / "odd.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_model(tmp_path / "junk.pt")


def test_teacher_command_trains_then_reuses(tmp_path, capsys):
    out = tmp_path / "teacher.pt"
    assert main(["teacher", "--data", "digits", "--out", str(out), "--epochs", "3"]) == 0
    assert out.exists() and '"test_accuracy"' in capsys.readouterr().out
    assert main(["teacher", "--data", "digits", "--out", str(out)]) == 0
    assert "exists" in capsys.readouterr().out


def test_cli_turns_user_errors_into_messages(tmp_path, capsys):
    rc = main(["teacher", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "t.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and "Traceback" not in err


def test_teacher_logs_a_line_per_epoch_when_not_on_a_terminal(tmp_path) -> None:
    """Under a log or CI (stderr not a terminal) tqdm draws nothing; the teacher says each epoch instead."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    r = subprocess.run([sys.executable, "-m", "daqakd_plugins", "teacher", "--data", "digits", "--epochs", "2",
                        "--out", str(tmp_path / "t.pt"), "--workers", "0"],
                       capture_output=True, text=True, env=env, timeout=600, check=True)
    assert "teacher epoch 1/2: loss" in r.stderr and "teacher epoch 2/2: loss" in r.stderr
