"""Data-free DA-QAKD on natural images (issue 26): CIFAR-10, both generators, against the data-driven student.

For each seed and bit setting, through ``run_distill`` (the code behind ``daqakd distill``):
  - ``datafree-dcgan``  — ``--data-free`` with the GDFQ/DCGAN generator (trained with the student);
  - ``datafree-bnbank`` — ``--data-free`` with the image bank (BN statistics + class CE + TV, produced once);
  - ``data-driven``     — the same student on real training images (crop + flip), the same number of steps.
Each data-free run also reports PTQ on uniform noise and PTQ on its generated images. One JSON line per run
goes to ``--jsonl`` (appended; an (arm, seed, bits) already there is skipped, so the benchmark resumes).

    mkdir -p /tmp/cifar50k && tar -xf ../shared/data/cifar10-jpeg-train50k.tar -C /tmp/cifar50k
    python benchmarks/datafree_cifar.py --data /tmp/cifar50k --jsonl docs/evidence/datafree-cifar.jsonl

The teacher is the paper-recipe CIFAR ResNet-20 (docs/evidence/paper-recipe/teacher.pt, 84.75 %, trained on
all 50,000 images with crop + flip, no normalisation). Student steps: data-free ``iterations × s_steps``
batches of ``--batch-size``; data-driven ``--train-per-class × 10 / batch × epochs`` batches, set equal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "docs" / "evidence" / "paper-recipe" / "teacher.pt"
ARMS = ("datafree-bnbank", "datafree-dcgan", "data-driven")


def _done(jsonl: Path) -> set[tuple[str, int, int, int, str]]:
    if not jsonl.exists():
        return set()
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return {(r["arm"], r["seed"], r["bits"], r["act_bits"], r["backend"]) for r in rows}


def _claimed(out: Path, arm: str, seed: int, a: argparse.Namespace) -> bool:
    """Whether another live process is training this run now: the first to create its claim file owns it;
    a claim whose process is gone (killed) is taken over, so the same command resumes. The JSONL row, not
    the claim, marks a run done."""
    out.mkdir(parents=True, exist_ok=True)
    claim = out / f"{arm}-{a.backend}-w{a.bits}a{a.act_bits}-s{seed}.claim"
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = int(claim.read_text() or 0)
            try:
                os.kill(owner, 0)
                return owner != os.getpid()
            except (ProcessLookupError, ValueError):
                claim.unlink(missing_ok=True)  # its process died: take it over
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return False
    return True


def _row(arm: str, seed: int, a: argparse.Namespace, rep: dict[str, Any], wall: float, steps: int) -> dict[str, Any]:
    import torch

    acc = rep["accuracy"]
    row: dict[str, Any] = {
        "arm": arm, "seed": seed, "backend": a.backend, "bits": a.bits, "act_bits": a.act_bits, "student_steps": steps,
        "batch_size": a.batch_size, "teacher_fp": acc["teacher_fp"], "student_after": acc["student_after"],
        "seconds": rep["seconds"], "wall_seconds": round(wall, 3), "torch_threads": a.threads,
        "python": platform.python_version(), "torch": torch.__version__,
    }
    if arm.startswith("datafree"):
        row.update(quantized_uncalibrated=acc["quantized_uncalibrated"], ptq_noise=acc["ptq_noise"],
                   ptq_generated=acc["ptq_generated"], generator=rep["generator"], train_used=rep["data"]["train_used"],
                   warmup_seconds=rep["warmup_seconds"])
    else:
        row.update(ptq_real=acc["student_before"], train_used=rep["data"]["train_used"])
    return row


def _cell(vals: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not vals:
        return "–"
    mean = round(statistics.mean(vals) * scale, digits) or 0.0  # no "-0.00"
    return f"{mean:.{digits}f} ± {statistics.stdev(vals) * scale:.{digits}f}" if len(vals) > 1 else f"{mean:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """docs/results.md's CIFAR-10 data-free tables, one per (backend, bits), from the JSONL rows (mean ± sample
    std over seeds; tests/test_results_datafree.py checks the doc's block is exactly this)."""
    out: list[str] = []
    for key in sorted({(r["backend"], r["bits"], r["act_bits"]) for r in rows}):
        out += _one_table([r for r in rows if (r["backend"], r["bits"], r["act_bits"]) == key], *key)
    return "\n".join(out)


def _one_table(mine: list[dict[str, Any]], backend: str, bits: int, act: int) -> list[str]:
    by = {arm: [r for r in mine if r["arm"] == arm] for arm in ARMS}
    seeds = sorted({r["seed"] for r in mine})
    real = {r["seed"]: r["student_after"] for r in by["data-driven"]}

    def gap(arm: str) -> str:
        d = [r["student_after"] - real[r["seed"]] for r in by[arm] if r["seed"] in real]
        return _cell(d) if d else "–"

    def f(arm: str, key: str, scale: float = 100.0, digits: int = 2) -> str:
        return _cell([float(r[key]) for r in by[arm] if r.get(key) is not None], scale, digits)

    teacher = mine[0]["teacher_fp"]
    return [f"**{backend} W{bits}A{act}** (teacher {100 * teacher:.2f} %; seeds {', '.join(map(str, seeds))}; "
            f"{mine[0]['student_steps']} student steps of {mine[0]['batch_size']} images)", "",
            "| | `bnbank` (data-free) | `dcgan` (data-free) | real images (data-driven) |", "|---|---:|---:|---:|",
            f"| PTQ calibrated on uniform noise | {f('datafree-bnbank', 'ptq_noise')} | {f('datafree-dcgan', 'ptq_noise')} | – |",
            f"| PTQ calibrated on generated / real images | {f('datafree-bnbank', 'ptq_generated')} | "
            f"{f('datafree-dcgan', 'ptq_generated')} | {f('data-driven', 'ptq_real')} |",
            f"| **DA-QAKD student** | **{f('datafree-bnbank', 'student_after')}** | **{f('datafree-dcgan', 'student_after')}** "
            f"| **{f('data-driven', 'student_after')}** |",
            f"| student − data-driven student (points, paired by seed) | {gap('datafree-bnbank')} | {gap('datafree-dcgan')} | – |",
            f"| generator warm-up (s) | {f('datafree-bnbank', 'warmup_seconds', 1, 0)} | "
            f"{f('datafree-dcgan', 'warmup_seconds', 1, 0)} | – |",
            f"| whole run (s) | {f('datafree-bnbank', 'wall_seconds', 1, 0)} | {f('datafree-dcgan', 'wall_seconds', 1, 0)} "
            f"| {f('data-driven', 'wall_seconds', 1, 0)} |", ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the CIFAR-10 ImageFolder (train/, test/)")
    p.add_argument("--out", default="runs/datafree_cifar")
    p.add_argument("--jsonl", default="docs/evidence/datafree-cifar.jsonl")
    p.add_argument("--teacher", default=str(TEACHER))
    p.add_argument("--backend", default="brevitas")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--act-bits", type=int, default=4)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--iterations", type=int, default=40, help="data-free iterations (x s_steps 5 student steps)")
    p.add_argument("--lr", type=float, default=1e-4, help="student lr (1e-3 broke the W4A4 ResNet-20: results.md)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table-only", action="store_true", help="print docs/results.md's tables from --jsonl and exit")
    a = p.parse_args(argv)
    if a.table_only:
        print(table([json.loads(x) for x in Path(a.jsonl).read_text().splitlines() if x.strip()]))
        return 0
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(a.threads)
    from daqakd_plugins.distill import DistillConfig, run_distill

    jsonl = Path(a.jsonl)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    steps = a.iterations * 5
    per_class = steps * a.batch_size // 10 // 4  # 4 epochs of real images = the same number of student steps
    common = dict(backend=a.backend, bits=a.bits, act_bits=a.act_bits, data=a.data, teacher=a.teacher,
                  augment="none", export=False, fresh=True, progress=False, batch_size=a.batch_size, lr=a.lr,
                  first_last_bits=None)  # every layer at --bits, as the committed evidence was measured
    for seed in [int(s) for s in a.seeds.split(",")]:
        for arm in a.arms.split(","):
            done = _done(jsonl)  # read again: another process (--seeds of its own) may have finished it
            if (arm, seed, a.bits, a.act_bits, a.backend) in done or _claimed(Path(a.out), arm, seed, a):
                continue
            extra: dict[str, Any]
            if arm.startswith("datafree"):
                extra = {"data_free": True, "epochs": 1,
                         "generator_options": {"name": arm.split("-")[1], "iterations": a.iterations}}
            else:
                extra = {"epochs": 4, "train_per_class": per_class}
            t0 = time.perf_counter()
            rep = run_distill(DistillConfig(**common, seed=seed, out=f"{a.out}/{arm}-{a.backend}-w{a.bits}a{a.act_bits}-s{seed}",
                                            **extra))  # type: ignore[arg-type]
            row = _row(arm, seed, a, rep, time.perf_counter() - t0, steps)
            with jsonl.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{arm} seed {seed}: " + ", ".join(f"{k} {row[k]:.4f}" for k in
                                                    ("ptq_noise", "ptq_generated", "ptq_real", "student_after") if k in row)
                  + f" ({row['wall_seconds']:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
