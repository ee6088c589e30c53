"""Mixed precision chosen by the teacher (issue 25): CIFAR-10 ResNet-20 DA-QAKD students at equal size.

Three arms, each through ``run_distill`` (the code behind ``daqakd distill``), the same schedule and seeds:
  - ``uniform-w3a4`` — ``--bits 3 --act-bits 4`` (first and last layer at 8 bits, the default convention);
  - ``plan-w3a4``    — the same, plus ``--bits-budget B`` with B = the uniform student's own average weight bits
                       (so both students hold exactly as many weight bits): the teacher's sensitivity pass
                       chooses each inner layer's width from 2..8 bits;
  - ``uniform-w4a4`` — ``--bits 4`` (first and last at 8): the larger student the plan tries to approach.
One JSON line per run goes to ``--jsonl`` (appended; an (arm, seed) already there is skipped, and a run another
live process claimed is left to it, so the same command resumes and two processes may share the grid).

    mkdir -p /tmp/cifar50k && tar -xf ../shared/data/cifar10-jpeg-train50k.tar -C /tmp/cifar50k
    python benchmarks/mixed_precision_cifar.py --data /tmp/cifar50k
    python benchmarks/mixed_precision_cifar.py --data x --table-only     # docs/models.md's table

The teacher is the paper-recipe CIFAR ResNet-20 (docs/evidence/paper-recipe/teacher.pt, 84.75 %).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datafree_cifar import TEACHER, _cell  # noqa: E402 - the sibling benchmark's teacher and table cell

ARMS = ("uniform-w3a4", "plan-w3a4", "uniform-w4a4")


def _rows(jsonl: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()] if jsonl.exists() else []


def _claim(out: Path, arm: str, seed: int) -> bool:
    """True when this process may run (arm, seed): it created the claim file, or the claimer is gone."""
    out.mkdir(parents=True, exist_ok=True)
    claim = out / f"{arm}-s{seed}.claim"
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(claim.read_text() or 0)
                os.kill(owner, 0)
                return owner == os.getpid()
            except (ProcessLookupError, ValueError):
                claim.unlink(missing_ok=True)
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def uniform_average(teacher: str, bits: int, act: int) -> float:
    """The average weight bits of the uniform student (first/last at 8): the plan's budget."""
    import torch

    from daqakd_plugins.bitplan import layer_params, plan_param_bits, resolve_plan
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.models import load_model

    model, _ = load_model(teacher)
    plan = resolve_plan(model, QuantConfig(weight_bits=bits, act_bits=act), torch.zeros(1, 3, 32, 32),
                        layer_acts=False)
    return plan_param_bits(plan, layer_params(model, list(plan)))


def _row(arm: str, seed: int, a: argparse.Namespace, rep: dict[str, Any], wall: float) -> dict[str, Any]:
    import torch

    acc, bp = rep["accuracy"], rep["bit_plan"] or {}
    sens = bp.get("sensitivity") or {}
    images = rep["data"]["train_used"] * rep["epochs"]
    return {"arm": arm, "seed": seed, "backend": a.backend, "bits": rep["bits"], "act_bits": rep["act_bits"],
            "epochs": rep["epochs"], "train_used": rep["data"]["train_used"], "batch_size": a.batch_size, "lr": a.lr,
            "teacher_fp": acc["teacher_fp"], "ptq": acc["student_before"], "student_after": acc["student_after"],
            "avg_weight_bits": bp.get("avg_weight_bits"), "budget": bp.get("budget"),
            "layer_bits": {n: e["weight"] for n, e in (bp.get("layer_bits") or {}).items()},
            "sensitivity_seconds": sens.get("seconds"), "sensitivity_images": sens.get("images"),
            "train_seconds": rep["seconds"], "seconds_per_50k_images": round(rep["seconds"] * 50000 / images, 3),
            "wall_seconds": round(wall, 3), "torch_threads": a.threads, "python": platform.python_version(),
            "torch": torch.__version__}


def table(rows: list[dict[str, Any]]) -> str:
    """docs/models.md's table from the JSONL rows (mean ± sample std over seeds; the plan's gaps paired by seed).
    tests/test_results_mixed_precision.py checks the doc's block is exactly this."""
    by = {arm: sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"]) for arm in ARMS}
    seeds = sorted({r["seed"] for r in rows})
    base = {r["seed"]: r["student_after"] for r in by["plan-w3a4"]}

    def gap(arm: str) -> str:
        if arm == "plan-w3a4":
            return "–"
        d = [base[r["seed"]] - r["student_after"] for r in by[arm] if r["seed"] in base]
        cell = _cell(d)
        return f"{'+' if not cell.startswith('-') else ''}{cell} ({sum(x > 0 for x in d)}/{len(d)} seeds)"

    def f(arm: str, key: str, scale: float = 100.0, digits: int = 2) -> str:
        return _cell([float(r[key]) for r in by[arm] if r.get(key) is not None], scale, digits)

    r0 = rows[0]
    head = (f"Brevitas, paper-recipe ResNet-20 teacher ({100 * r0['teacher_fp']:.2f} %), seeds {', '.join(map(str, seeds))}; "
            f"{r0['epochs']} epochs × {r0['train_used']} images (crop + flip, `--augment none`), batch {r0['batch_size']}, "
            f"lr {r0['lr']:g}, one CPU thread per run.")
    lines = [head, "", "| student | average weight bits | PTQ | DA-QAKD student | plan − this (points, paired; seeds the plan won) |",
             "|---|---:|---:|---:|---:|"]
    for arm in ARMS:
        lines.append(f"| `{arm}` | {f(arm, 'avg_weight_bits', 1, 3)} | {f(arm, 'ptq')} | **{f(arm, 'student_after')}** "
                     f"| {gap(arm)} |")
    plan = by["plan-w3a4"]
    if plan:
        sens = statistics.mean(float(r["sensitivity_seconds"]) for r in plan)
        epoch = statistics.mean(float(r["seconds_per_50k_images"]) for r in plan)
        lines += ["", f"Sensitivity pass: {sens:.1f} s on {plan[0]['sensitivity_images']} images "
                  f"({len(plan[0]['layer_bits'])} layers × 7 widths); one student epoch (50,000 images) {epoch:.0f} s: "
                  f"the pass costs {100 * sens / epoch:.1f} % of an epoch.",
                  "", "Chosen plan (weight bits per layer, seed " + str(plan[0]["seed"]) + "): "
                  + ", ".join(f"`{n}` {b}" for n, b in plan[0]["layer_bits"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the CIFAR-10 ImageFolder (train/, test/)")
    p.add_argument("--out", default="runs/mixed_precision_cifar")
    p.add_argument("--jsonl", default="docs/evidence/mixed-precision-cifar.jsonl")
    p.add_argument("--teacher", default=str(TEACHER))
    p.add_argument("--backend", default="brevitas")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-per-class", type=int, default=2000, help="images per class per epoch (2000: 20,000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4, help="student lr (as the data-free benchmark's data-driven arm)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table-only", action="store_true", help="print the table from --jsonl and exit")
    a = p.parse_args(argv)
    if a.table_only:
        print(table(_rows(Path(a.jsonl))))
        return 0
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(a.threads)
    from daqakd_plugins.distill import DistillConfig, run_distill

    jsonl = Path(a.jsonl)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    budget = uniform_average(a.teacher, 3, 4)
    common = dict(backend=a.backend, data=a.data, teacher=a.teacher, augment="none", export=False, fresh=True,
                  progress=False, batch_size=a.batch_size, lr=a.lr, epochs=a.epochs, train_per_class=a.train_per_class)
    for seed in [int(s) for s in a.seeds.split(",")]:
        for arm in a.arms.split(","):
            if any(r["arm"] == arm and r["seed"] == seed for r in _rows(jsonl)) or not _claim(Path(a.out), arm, seed):
                continue
            extra: dict[str, Any] = {"bits": 4 if arm.endswith("w4a4") else 3, "act_bits": 4}
            if arm.startswith("plan"):
                extra["bits_budget"] = budget  # exact: the uniform plan itself is within it
            t0 = time.perf_counter()
            rep = run_distill(DistillConfig(**common, **extra, seed=seed, out=f"{a.out}/{arm}-s{seed}"))  # type: ignore[arg-type]
            row = _row(arm, seed, a, rep, time.perf_counter() - t0)
            with jsonl.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{arm} seed {seed}: PTQ {row['ptq']:.4f} -> {row['student_after']:.4f}, {row['avg_weight_bits']} bits "
                  f"({row['wall_seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
