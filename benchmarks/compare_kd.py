"""Plain QAT vs QAT + KD vs DA-QAKD, over several seeds and the same epochs (docs/results.md).

Arms (all through the reference loop `run_distill`, so they share data, student construction,
calibration, optimizer, schedule and evaluation; only the loss and the augmentation differ):

* ``qat``    — plain QAT: loss ``ce`` (CE only, no teacher term), no augmentation;
* ``kd``     — QAT + KD: loss ``paper`` (1·CE + 2·τ²·KL, τ = 4), no augmentation;
* ``daqakd`` — DA-QAKD: loss ``paper`` with the augmentation ranked best by the teacher-only CMI
  metric (ranked once per data set, before any student is trained).

Resumable: each (arm, seed) writes its own run directory; finished ones are skipped, unfinished ones
resume from their last checkpoint.

    python benchmarks/compare_kd.py --data digits --out runs/compare_kd/digits
    tar -xf ../shared/data/cifar10-jpeg-subset.tar -C /tmp/cifar
    python benchmarks/compare_kd.py --data /tmp/cifar --out runs/compare_kd/cifar \\
        --train-per-class 400 --teacher-epochs 20 --rank-per-class 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

ARMS: dict[str, dict[str, str]] = {
    "qat": {"loss": "ce", "augment": "none", "label": "plain QAT (CE only)"},
    "kd": {"loss": "paper", "augment": "none", "label": "QAT + KD (no augmentation)"},
    "daqakd": {"loss": "paper", "augment": "RANKED", "label": "DA-QAKD (ranked augmentation)"},
}


def _teacher(args: argparse.Namespace, bundle: Any, out: Path) -> Path:
    from daqakd_plugins.models import load_model, save_model
    from daqakd_plugins.train import train_teacher

    if args.teacher:
        return Path(args.teacher)
    path = out / "teacher.pt"
    if path.exists():
        load_model(path)
        return path
    model, meta = train_teacher(bundle, epochs=args.teacher_epochs, seed=0, progress=True)
    save_model(path, model, meta["arch"], meta)
    print(f"teacher: test accuracy {meta['test_accuracy']:.4f} after {args.teacher_epochs} epochs ({meta['seconds']:.0f} s)")
    return path


def _ranking(args: argparse.Namespace, teacher_path: Path, train_x: torch.Tensor, train_y: torch.Tensor,
             num_classes: int, out: Path) -> dict[str, Any]:
    from daqakd_plugins.models import load_model
    from daqakd_plugins.ranking import Ranking, rank_augmentations

    path = out / "ranking.json"
    if path.exists():
        return Ranking.load_json(path).to_dict()
    teacher, _ = load_model(teacher_path)
    teacher.requires_grad_(False)
    ranking = rank_augmentations(teacher, (train_x, train_y), args.candidates, "cmi", seed=0,
                                 per_class=args.rank_per_class, num_classes=num_classes, progress=True)
    ranking.save_json(path)
    return ranking.to_dict()


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else float("nan"),
        "min": min(values),
        "max": max(values),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--out", type=Path, default=Path("runs/compare_kd/digits"))
    p.add_argument("--teacher", default=None, help="teacher file; default: train one into OUT/teacher.pt")
    p.add_argument("--teacher-epochs", type=int, default=15)
    p.add_argument("--teacher-only", action="store_true", help="stop after training the teacher")
    p.add_argument("--arms", default="qat,kd,daqakd")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--act-bits", type=int, default=4)
    p.add_argument("--backend", default="brevitas")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-per-class", type=int, default=None)
    p.add_argument("--candidates", default="paper", help="ranking candidates (default: the paper's 16)")
    p.add_argument("--rank-per-class", type=int, default=None)
    p.add_argument("--augment", default=None, help="use this augmentation for daqakd instead of the ranked best")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from daqakd_plugins.data import load_data, stratified_subset
    from daqakd_plugins.distill import DistillConfig, run_distill

    t0 = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    bundle = load_data(a.data, seed=0).to_memory()  # this evidence script subsets tensors: small folders only
    teacher_path = _teacher(a, bundle, a.out)
    if a.teacher_only:
        return 0
    tx, ty = bundle.train_x, bundle.train_y
    if a.train_per_class:
        idx = stratified_subset(ty, a.train_per_class, seed=0)
        tx, ty = tx[idx], ty[idx]
    arms = [s.strip() for s in a.arms.split(",") if s.strip()]
    ranking: dict[str, Any] | None = None
    best = a.augment
    if "daqakd" in arms and best is None:
        ranking = _ranking(a, teacher_path, tx, ty, bundle.num_classes, a.out)
        best = ranking["best"]
        print(f"ranked best augmentation: {best}  (" + ", ".join(
            f"{c['name']} {c['score']:.4f}" for c in ranking["candidates"][:5]) + ", ...)")
    rows: list[dict[str, Any]] = []
    for seed in (int(s) for s in a.seeds.split(",")):
        for arm in arms:
            spec = ARMS[arm]
            run_dir = a.out / f"{arm}-seed{seed}"
            rep_path = run_dir / "report.json"
            if rep_path.exists():
                rep = json.loads(rep_path.read_text())
            else:
                cfg = DistillConfig(
                    backend=a.backend, bits=a.bits, act_bits=a.act_bits, data=a.data, teacher=str(teacher_path),
                    epochs=a.epochs, out=str(run_dir), augment=best if spec["augment"] == "RANKED" else spec["augment"],
                    loss=spec["loss"], lr=a.lr, batch_size=a.batch_size, seed=seed, train_per_class=a.train_per_class,
                    export=False, progress=True, first_last_bits=None,  # uniform, as the committed evidence
                    resume=str(run_dir) if (run_dir / "checkpoint.pt").exists() else None,
                )
                rep = run_distill(cfg)
            acc = rep["accuracy"]
            rows.append({"arm": arm, "seed": seed, "augmentation": rep["augmentation"], "loss": rep["loss"],
                         "student_before": acc["student_before"], "student_after": acc["student_after"],
                         "teacher_fp": acc["teacher_fp"], "seconds": rep["seconds"],
                         "best_epoch_accuracy": max(h["test_accuracy"] for h in rep["history"])})
            print(f"{arm:<7} seed {seed}: {acc['student_after']:.4f} (PTQ {acc['student_before']:.4f}, "
                  f"{rep['seconds']:.0f} s, aug {rep['augmentation']})", flush=True)

    summary = {arm: _summary([r["student_after"] for r in rows if r["arm"] == arm]) for arm in arms}
    teacher_fp = rows[0]["teacher_fp"] if rows else float("nan")
    result = {
        "data": a.data, "backend": a.backend, "bits": a.bits, "act_bits": a.act_bits, "epochs": a.epochs,
        "lr": a.lr, "batch_size": a.batch_size, "train_per_class": a.train_per_class, "train_images": int(len(ty)),
        "test_images": int(len(bundle.test_y)), "teacher": str(teacher_path), "teacher_fp": teacher_fp,
        "augmentation": best, "ranking": ranking, "rows": rows, "summary": summary,
        "seconds": round(time.perf_counter() - t0, 1), "threads": a.threads,
    }
    (a.out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [f"| arm | {' | '.join(f'seed {s}' for s in a.seeds.split(','))} | mean ± std |", "|---|" + "---|" * (len(a.seeds.split(",")) + 1)]
    for arm in arms:
        vals = [r["student_after"] for r in rows if r["arm"] == arm]
        s = summary[arm]
        lines.append(f"| {ARMS[arm]['label']} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {s['mean']:.4f} ± {s['std']:.4f} |")
    table = "\n".join(lines)
    (a.out / "results.md").write_text(table + "\n")
    print(f"\n{a.data}: {a.backend} W{a.bits}A{a.act_bits}, {a.epochs} epochs, {len(ty)} training images, "
          f"teacher FP {teacher_fp:.4f}, DA-QAKD augmentation {best}\n{table}\n({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
