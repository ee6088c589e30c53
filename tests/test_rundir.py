"""Run-directory rules (daqakd_plugins/run/rundir.py) and the versioned checkpoint: one process at a time
writes a run directory (the lock), a killed run's stale lock is taken over, and a checkpoint of another
version is refused naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from daqakd_plugins.run.rundir import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(300)
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "adapters"), os.environ.get("PYTHONPATH", "")])}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory, digits_teacher) -> Path:
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    return save_model(tmp_path_factory.mktemp("teacher") / "teacher.pt", model, meta["arch"], meta)


def _args(teacher: Path, out: Path) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--backend", "brevitas", "--bits", "4", "--epochs", "1",
            "--augment", "none", "--train-per-class", "10", "--batch-size", "32", "--workers", "0", "--no-export",
            "--calib-batches", "1", "--out", str(out)]


def test_a_live_run_holds_its_directory_and_a_stale_lock_is_taken_over(teacher_file: Path, tmp_path: Path) -> None:
    from daqakd_plugins.cli import main
    from daqakd_plugins.distill import DistillConfig, run_distill
    from daqakd_plugins.errors import RunDirError

    out = tmp_path / "run"
    assert main(_args(teacher_file, out)) == 0  # a finished run with its checkpoint
    assert not (out / ".daqakd-run.lock").exists(), "a finished run releases its lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        cfg = DistillConfig(backend="brevitas", bits=4, data="digits", teacher=str(teacher_file), epochs=1,
                            out=str(out), fresh=True, progress=False, export=False)
        with pytest.raises(RunDirError, match=rf"is in use: another daqakd run \(process {holder.pid} "):
            run_distill(cfg)
        assert (out / "report.json").exists(), "--fresh deleted the files of a run that is still going"
        with pytest.raises(RunDirError, match=rf"cannot resume .*: its run is still going \(process {holder.pid} "):
            run_distill(DistillConfig.from_dict(cfg.to_dict(), fresh=False, resume=str(out)))
        # the CLI says the same, as an error line and a non-zero exit
        assert main(["distill", "--resume", str(out)]) != 0
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed (as a SIGKILLed run would be): its lock is stale, a resume takes it over
    assert (out / ".daqakd-run.lock").exists()
    assert main(["distill", "--resume", str(out)]) == 0
    assert not (out / ".daqakd-run.lock").exists()


@pytest.mark.slow
def test_two_distill_processes_with_one_out_do_not_both_succeed(teacher_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "daqakd_plugins", *_args(teacher_file, out)]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    err = next(e for rc, e in results if rc != 0)
    assert "is in use: another daqakd run" in err or "already holds a daqakd run" in err, err[-2000:]
    assert json.loads((out / "report.json").read_text())["history"]


def test_checkpoint_versions(tmp_path: Path) -> None:
    from daqakd_plugins.errors import CheckpointError
    from daqakd_plugins.run.checkpoint import VERSION, Checkpoint, load

    ck = Checkpoint(epoch=2, mode="data-free", config={"seed": 1}, student={"w": torch.ones(2)}, distiller={},
                    optimizer={}, scheduler={}, rng={}, augmentation="none", ranking=None, history=[{"epoch": 1}],
                    teacher_path="t.pt", student_before=0.5, seconds=1.0, source={"generator": {"w": torch.zeros(1)}})
    raw = ck.to_dict()
    assert raw["format"].endswith(f"/{VERSION}") and raw["epoch"] == 2 and "generator" in raw
    torch.save(raw, tmp_path / "checkpoint.pt")
    back = load(tmp_path)
    assert back.mode == "data-free" and back.history == [{"epoch": 1}] and back.version == VERSION
    assert torch.equal(back.source["generator"]["w"], torch.zeros(1))
    # version 1 (before the run engine): a data-free one is told by its "kind"; it loads
    v1 = {**raw, "format": "daqakd-distill-checkpoint/1", "kind": "daqakd-datafree/1"}
    v1.pop("mode")
    old = Checkpoint.from_dict(v1)
    assert old.version == 1 and old.mode == "data-free" and set(old.source) == {"generator"}
    # a version this daqakd does not know is refused, naming it
    with pytest.raises(CheckpointError, match=r"format 'daqakd-run-checkpoint/9'.*reads versions 1"):
        Checkpoint.from_dict({**raw, "format": "daqakd-run-checkpoint/9"})
    with pytest.raises(CheckpointError, match="source's state uses the engine's checkpoint keys"):
        Checkpoint(**{**ck.__dict__, "source": {"epoch": 3}}).to_dict()


def test_resume_compares_the_calibration_sample_not_how_it_was_asked_for() -> None:
    """A run from before --calib-images (calib_batches 8 at batch size 64) resumes under the default 512
    images (`daqakd run` resumes with its own defaults); another sample is refused, naming both."""
    import pytest

    from daqakd_plugins.distill.config import TRAJECTORY
    from daqakd_plugins.errors import CheckpointError
    from daqakd_plugins.run.rundir import check_resume

    base = {**dict.fromkeys(TRAJECTORY), "batch_size": 64}
    old = {**base, "calib_batches": 8}
    check_resume(dict(base), old)
    check_resume({**base, "calib_images": 512}, old)
    with pytest.raises(CheckpointError, match=r"calibration: checkpoint 512 training images vs now 100 training images"):
        check_resume({**base, "calib_images": 100}, old)
    with pytest.raises(CheckpointError, match=r"calibration: checkpoint 256 training images vs now 512"):
        check_resume(dict(base), {**base, "calib_batches": 4})


def test_how_auto_ranks_counts_only_for_a_run_that_ranked() -> None:
    """The default metric changed (cmi -> teacher-ce): a fixed-augment run from before resumes; a run that
    chose its augmentation with cmi is refused under another metric, naming both."""
    import pytest

    from daqakd_plugins.distill.config import TRAJECTORY
    from daqakd_plugins.errors import CheckpointError
    from daqakd_plugins.run.rundir import check_resume

    base = {**dict.fromkeys(TRAJECTORY), "batch_size": 64, "calib_images": 512}
    fixed = {**base, "augment": "randaugment"}
    check_resume({**fixed, "metric": "teacher-ce"}, {**fixed, "metric": "cmi"})
    check_resume({**fixed, "candidates": "paper"}, {**fixed, "candidates": None})
    auto = {**base, "augment": "auto"}
    with pytest.raises(CheckpointError, match=r"metric: checkpoint 'cmi' vs now 'teacher-ce'"):
        check_resume({**auto, "metric": "teacher-ce"}, {**auto, "metric": "cmi"})
    with pytest.raises(CheckpointError, match=r"augment: checkpoint 'auto' vs now 'randaugment'"):
        check_resume({**fixed, "metric": "teacher-ce"}, {**auto, "metric": "cmi"})
