"""torchrun / DDP (issue 15): two CPU processes (gloo) launched with torchrun, as users launch them.

Ranking: each rank scores its share of the batches, the float64 statistics are all-reduced, and the
result equals the one-process ranking. Distillation: a DDP student on two ranks writes one report and
checkpoint, which one process resumes. A failing rank ends the whole run with its message, quickly."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each test starts two torch processes


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun(*args: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "daqakd_plugins", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daqakd_plugins", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300)


def _torchrun_keeping_epoch_1(args: list[str], out: Path, cwd: Path) -> tuple[str, Path]:
    """Run ``args`` on two ranks; keep a copy of the checkpoint rank 0 wrote after epoch 1 (it is replaced
    after epoch 2). Returns the run's stdout and the copy's path."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "daqakd_plugins", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ck, first = out / "checkpoint.pt", cwd / "epoch1.pt"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        if ck.exists():
            shutil.copy(ck, first)
        time.sleep(0.005)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout, first


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory, digits_teacher) -> Path:
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_model(path, model, meta["arch"], meta)
    return path


def test_ranking_under_torchrun_equals_one_process(teacher_file: Path, tmp_path: Path, digits, digits_teacher) -> None:
    from daqakd_plugins.ranking import rank_augmentations

    cands = "none,augmix,randaugment+cutmix,kornia-affine"
    r = _torchrun("rank", "--teacher", str(teacher_file), "--candidates", cands, "--repeats", "2", "--per-class", "40",
                  "--batch-size", "64", "--workers", "0", "--json", str(tmp_path / "r2.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("best:") == 1  # rank 0 prints, rank 1 does not
    two = json.loads((tmp_path / "r2.json").read_text())
    one = rank_augmentations(digits_teacher[0], digits, cands, repeats=2, per_class=40, batch_size=64, workers=0,
                             progress=False).to_dict()
    assert two["world_size"] == 2 and one["world_size"] == 1
    # the work was split: both ranks scored samples, together exactly the one-process total
    assert len(two["rank_samples"]) == 2 and min(two["rank_samples"]) > 0
    assert sum(two["rank_samples"]) == one["rank_samples"][0] == 400 * 4 * 2
    assert [c["name"] for c in two["candidates"]] == [c["name"] for c in one["candidates"]]
    for a, b in zip(one["candidates"], two["candidates"]):
        for x, y in zip(a["scores"], b["scores"]):
            assert abs(x - y) <= 1e-9 * abs(x), (a["name"], x, y)
        assert a["n"] == b["n"] == 400


def test_search_under_torchrun_equals_one_process(teacher_file: Path, tmp_path: Path, digits, digits_teacher) -> None:
    """Issue 24: a policy search is world-size-independent: each chunk's batches split over the ranks, rank 0
    writes the result and the resume file, and every score equals the one-process search's."""
    from daqakd_plugins.ranking import search_augmentations

    r = _torchrun("search", "--teacher", str(teacher_file), "--num-policies", "6", "--top-k", "2", "--per-class", "20",
                  "--batch-size", "32", "--workers", "0", "--json", str(tmp_path / "s2.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("combined:") == 1  # rank 0 prints
    two = json.loads((tmp_path / "s2.json").read_text())
    one = search_augmentations(digits_teacher[0], digits, "taw2", 6, top_k=2, per_class=20, batch_size=32,
                               workers=0, progress=False)
    assert two["ranking"]["world_size"] == 2 and one.ranking.world_size == 1
    assert two["combined"] == one.combined and two["top"] == one.top
    for c in two["ranking"]["candidates"]:
        for x, y in zip(c["scores"], one.ranking[c["name"]].scores):
            assert abs(x - y) <= 1e-9 * abs(x), (c["name"], x, y)
    lines = (tmp_path / "s2.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 6 + 2  # written once, by rank 0


def test_distill_under_torchrun_reports_and_resumes_in_one_process(teacher_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["distill", "--teacher", str(teacher_file), "--backend", "brevitas", "--bits", "4", "--epochs", "3",
            "--augment", "randaugment+cutmix", "--train-per-class", "60", "--batch-size", "32", "--workers", "0",
            "--no-export", "--out", str(out)]
    stdout, first = _torchrun_keeping_epoch_1(args, out, tmp_path)
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["distributed"]["student"] == "DistributedDataParallel"
    assert report["distributed"]["rank_samples_per_epoch"] == [300, 300]  # 600 training samples, split
    assert report["distributed"]["replicas_in_sync"] is True  # DDP kept the two students equal
    assert len(report["history"]) == 3 and all(h["loss"] > 0 for h in report["history"])
    assert report["accuracy"]["student_after"] > 0.8
    assert stdout.count("report:") == 1

    saved = torch.load(first, weights_only=False)
    assert saved["epoch"] == 1 and saved["world_size"] == 2
    shutil.copy(first, out / "checkpoint.pt")  # as if the 2-process run had stopped after epoch 1
    (out / "report.json").unlink()
    r = _cli("distill", "--resume", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["world_size"] == 1 and resumed["resumed_from_epoch"] == 1
    assert len(resumed["history"]) == 3 and resumed["history"][0] == report["history"][0]
    assert resumed["accuracy"]["student_after"] > 0.8
    # one process reads the whole epoch with the same cosine schedule, restarted at its step count
    assert resumed["distributed"]["rank_samples_per_epoch"] == [600]
    # the cosine is per step, so after epoch e of E it is lr0·(1 + cos(πe/E))/2 at any world size
    for run in (report, resumed):
        for e, h in enumerate(run["history"], start=1):
            assert h["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * e / 3)), abs=1e-9), (e, h["lr"])


@pytest.mark.parametrize("backend", ["pytorch-quantization", "modelopt"])
def test_replicas_stay_equal_with_quantizer_and_batchnorm_buffers(backend: str, teacher_file: Path, tmp_path: Path) -> None:
    """pytorch-quantization and Model Optimizer keep BatchNorm unfused (and in train mode) next to their
    amax buffers: the last step's forward updated each rank's running statistics from its own batch, and the
    run warned on every torchrun that the ranks' students differ (issue 29). Rank 0's buffers are broadcast
    after every epoch, as DDP's next forward would, so the replicas are equal and nothing is warned."""
    out = tmp_path / "run"
    r = _torchrun("distill", "--teacher", str(teacher_file), "--backend", backend, "--bits", "8", "--epochs", "1",
                  "--augment", "none", "--train-per-class", "20", "--batch-size", "16", "--workers", "0", "--no-export",
                  "--out", str(out), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["distributed"]["replicas_in_sync"] is True
    assert "students differ" not in r.stderr


FAIL_PLUGIN = '''
import os
from daqakd_plugins.contracts import Augmentation
from daqakd_plugins.hookspecs import hookimpl


def _fail_on_rank_1(images, targets):
    if os.environ.get("RANK") == "1":
        raise RuntimeError("rank 1 was told to fail")
    return images, targets


@hookimpl
def daqakd_register_augmentations(register):
    register(Augmentation(name="fail-on-rank-1", fn=_fail_on_rank_1, description="test: fails on rank 1"))
'''


def test_a_failing_rank_ends_the_whole_run_quickly(teacher_file: Path, tmp_path: Path) -> None:
    (tmp_path / "failplug.py").write_text(FAIL_PLUGIN)
    # never a hang: torchrun stops rank 0 once rank 1 exits, or rank 0's collective times out (60 s); the
    # subprocess timeout (240 s, no wall-clock assertion beyond it) fails the test if neither happens
    r = _torchrun("rank", "--teacher", str(teacher_file), "--candidates", "none,fail-on-rank-1", "--workers", "0",
                  "--per-class", "40", "--batch-size", "64", cwd=tmp_path, timeout=240,
                  DAQAKD_PLUGINS="failplug", DAQAKD_DIST_TIMEOUT="60",
                  PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    assert r.returncode != 0
    assert "[rank 1/2]: error: candidate 'fail-on-rank-1' failed" in r.stderr and "rank 1 was told to fail" in r.stderr


DATAFREE_TINY = {"iterations": 3, "warmup_steps": 4, "rank_samples": 64, "width": 8, "latent_dim": 16}


def test_data_free_under_torchrun_reports_and_resumes_in_one_process(teacher_file: Path, tmp_path: Path) -> None:
    """The run engine gives data-free runs what data-driven ones have: DDP over two ranks (each draws its own
    latent codes, the generator's gradients averaged), one report and checkpoint, resumed in one process."""
    out = tmp_path / "df"
    args = ["distill", "--data-free", "--teacher", str(teacher_file), "--backend", "brevitas", "--bits", "4",
            "--epochs", "3", "--batch-size", "16", "--calib-batches", "2", "--augment", "none", "--workers", "0",
            "--no-export", "--out", str(out), *[f"--generator-option={k}={v}" for k, v in DATAFREE_TINY.items()]]
    stdout, first = _torchrun_keeping_epoch_1(args, out, tmp_path)
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "data-free" and report["no_real_training_sample_used"] is True
    assert report["world_size"] == 2 and report["distributed"]["student"] == "DistributedDataParallel"
    per_rank = 3 * report["generator"]["s_steps"] * 16  # iterations × student steps × batch: its own G(z) batches
    assert report["distributed"]["rank_samples_per_epoch"] == [per_rank, per_rank]
    assert report["distributed"]["replicas_in_sync"] is True
    assert len(report["history"]) == 3 and (out / "generator.pt").exists()
    assert stdout.count("report:") == 1

    saved = torch.load(first, weights_only=True)
    assert saved["epoch"] == 1 and saved["world_size"] == 2 and saved["mode"] == "data-free"
    assert {"generator", "generator_optimizer"} <= set(saved)
    shutil.copy(first, out / "checkpoint.pt")  # as if the 2-process run had stopped after epoch 1
    (out / "report.json").unlink()
    r = _cli("distill", "--resume", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["world_size"] == 1 and resumed["resumed_from_epoch"] == 1 and resumed["mode"] == "data-free"
    assert len(resumed["history"]) == 3 and resumed["history"][0] == report["history"][0]
    assert resumed["distributed"]["rank_samples_per_epoch"] == [per_rank]
    assert resumed["accuracy"]["ptq_noise"] == report["accuracy"]["ptq_noise"]  # baselines from the checkpoint
