"""Issue 28's trial, end to end through the CLI, on Brevitas (where it found the bug): `daqakd distill` of a
ShuffleNet-V2 teacher on an ImageFolder with TrivialAugmentWide in one DataLoader worker, interrupted with Ctrl-C after
its first checkpoint and continued with `--resume DIR`, ends with the student of the uninterrupted run
(bitwise on CPU: every tensor, every logit, every epoch's loss and accuracy).

What it caught: Brevitas' calibration left the activation quantizers ShuffleNet's concatenations share
observer-only (float), a flag `state_dict` does not carry, so the resumed student quantized what the
uninterrupted one did not (see adapters/daqakd_brevitas/plugin.py, `_calibrate`). Tiny data and three
epochs keep each backend to three short CLI runs. At lr 1e-3 this test passed with the Brevitas fix
reverted (the tiny run saturated, so both students agreed by accident); at lr 1e-4 it fails there on the
epoch-2 loss (1.4588 uninterrupted vs 1.4140 resumed, epoch 1 equal), as issue 28 reported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3

#: (backend, weight/activation bits): the trial's Brevitas W4, where it found the bug. The other backends ran
#: it too (pytorch-quantization W4, NNCF W8, Model Optimizer W8: all bitwise equal) and dropped out to keep the
#: suite short: the conformance kit's check_resume (a real CLI run killed and resumed) and check_resume_steps
#: (ShuffleNet-V2, TrivialAugmentWide in one worker, CutMix, restored in a fresh process) cover them.
TRIALS = [("brevitas", 4)]


@pytest.fixture(scope="module")
def trial_inputs(tmp_path_factory) -> tuple[Path, Path]:
    from daqakd_plugins.models import save_model
    from daqakd_plugins.testing import _tv_arch, make_image_folder, torchvision_float_model

    root = tmp_path_factory.mktemp("trial")
    data = make_image_folder(root / "data")
    name = "shufflenet_v2_x0_5"
    teacher = save_model(root / "teacher.pt", torchvision_float_model(name), _tv_arch(name), {})
    return data, teacher


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONHASHSEED": "0"}


def _cmd(backend: str, bits: int, data: Path, teacher: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "daqakd_plugins", "distill", "--backend", backend, "--bits", str(bits),
            "--data", str(data), "--teacher", str(teacher), "--epochs", str(EPOCHS), "--augment",
            "trivialaugmentwide", "--seed", "0", "--workers", "1", "--batch-size", "8", "--lr", "1e-4", "--no-export",
            "--out", str(out)]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three CLI runs; on two shared cores the suite default (900 s) was too little
@pytest.mark.parametrize(("backend", "bits"), TRIALS, ids=[f"{b}-W{w}" for b, w in TRIALS])
def test_interrupted_and_resumed_trial_equals_the_uninterrupted_run(backend, bits, trial_inputs, tmp_path) -> None:
    from daqakd_plugins.distill import load_student
    from daqakd_plugins.testing import _outputs, _tv_images

    data, teacher = trial_inputs
    full, cut = tmp_path / "full", tmp_path / "cut"
    r = subprocess.run(_cmd(backend, bits, data, teacher, full), env=_env(), capture_output=True, text=True,
                       timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]

    # Ctrl-C after the first checkpoint, as the user did (a shell starts background jobs with SIGINT ignored:
    # restore the default disposition so Python installs its KeyboardInterrupt handler).
    proc = subprocess.Popen(_cmd(backend, bits, data, teacher, cut), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ck = cut / "checkpoint.pt"
    deadline = time.monotonic() + 900
    while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, f"the run was not interrupted mid-training (rc {proc.returncode}): {err[-2000:]}"
    assert f"--resume {cut}" in err
    stopped = int(torch.load(ck, map_location="cpu", weights_only=True)["epoch"])
    assert 1 <= stopped < EPOCHS

    r2 = subprocess.run([sys.executable, "-m", "daqakd_plugins", "distill", "--resume", str(cut)], env=_env(),
                        capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r2.returncode == 0, r2.stderr[-3000:]

    ra = json.loads((full / "report.json").read_text())
    rb = json.loads((cut / "report.json").read_text())
    assert rb["resumed_from_epoch"] == stopped and ra["resumed_from_epoch"] is None
    assert rb["export"] == {"skipped": "--no-export"} and rb["pipeline"]["workers"] == 1
    assert [(h["loss"], h["test_accuracy"]) for h in rb["history"]] == \
        [(h["loss"], h["test_accuracy"]) for h in ra["history"]], (ra["history"], rb["history"])
    assert ra["accuracy"] == rb["accuracy"]
    a, _ = load_student(full)
    b, _ = load_student(cut)
    sa, sb = a.state_dict(), b.state_dict()
    diff = [k for k, v in sa.items() if isinstance(v, torch.Tensor) and not torch.equal(v, sb[k])]
    assert not diff, f"{backend}: the resumed student's state differs from the uninterrupted one's in {diff[:5]}"
    x = _tv_images(16)
    assert torch.equal(_outputs(a, x), _outputs(b, x))
