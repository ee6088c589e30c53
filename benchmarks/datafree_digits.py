"""Data-free DA-QAKD on digits over seeds (issue 16's acceptance run): docs/results.md, "Data-free".

For each seed, one ``run_distill(DistillConfig(data_free=True, ...))`` (the code behind
``daqakd distill --data-free``) gives the teacher's accuracy, the quantized copy without calibration, PTQ
calibrated on uniform noise, PTQ calibrated on the warmed-up generator's images and the data-free student
after training; then, unless ``--no-reference``, the data-driven run with the same settings
(``daqakd distill`` without ``--data-free``) as the reference. One JSON line per run goes to ``--jsonl``
(appended; a (arm, seed, bits) already there is skipped, so an interrupted benchmark resumes).

    python benchmarks/datafree_digits.py --out runs/datafree_digits --jsonl docs/evidence/datafree-digits.jsonl

The teacher is "the teacher you already have": ``--teacher FILE``, or the default digits teacher
(``daqakd teacher --data digits``: SmallResNet, 15 epochs, seed 0) trained once into ``OUT/teacher.pt``
before any data-free run starts (that step reads the training data; the data-free runs never do).
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


def _teacher(args: argparse.Namespace) -> Path:
    if args.teacher:
        return Path(args.teacher)
    path = Path(args.out) / "teacher.pt"
    if not path.exists():
        from daqakd_plugins.data import load_data
        from daqakd_plugins.models import save_model
        from daqakd_plugins.train import teacher_arch, train_teacher

        bundle = load_data("digits", seed=0)
        model, meta = train_teacher(bundle, epochs=15, seed=0, arch=teacher_arch(bundle), progress=False)
        save_model(path, model, meta["arch"], meta)
    return path


def _done(jsonl: Path) -> set[tuple[str, int, int, int]]:
    if not jsonl.exists():
        return set()
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return {(r["arm"], r["seed"], r["bits"], r["act_bits"]) for r in rows}


#: the rows of the docs/results.md table: (label, arm, field, digits)
TABLE_ROWS = (
    ("teacher (FP)", "datafree", "teacher_fp", 4),
    ("quantized copy, no calibration", "datafree", "quantized_uncalibrated", 4),
    ("PTQ calibrated on random noise", "datafree", "ptq_noise", 4),
    ("PTQ calibrated on generated images", "datafree", "ptq_generated", 4),
    ("**data-free DA-QAKD**", "datafree", "student_after", 4),
    ("data-driven reference: PTQ calibrated on real images", "data-driven", "ptq_real", 4),
    ("data-driven reference: DA-QAKD", "data-driven", "student_after", 4),
    ("data-free: training seconds", "datafree", "seconds", 1),
    ("data-driven reference: training seconds", "data-driven", "seconds", 1),
)


def table(rows: list[dict[str, Any]], bits: int, act_bits: int) -> str:
    """The Markdown table docs/results.md shows for one bit setting (tests/test_results_datafree.py checks it)."""
    rows = [r for r in rows if (r["bits"], r["act_bits"]) == (bits, act_bits)]
    seeds = sorted({r["seed"] for r in rows})
    out = ["| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |", "|---" * (len(seeds) + 2) + "|"]
    for label, arm, field, digits in TABLE_ROWS:
        vals = []
        for s in seeds:
            match = [r for r in rows if r["arm"] == arm and r["seed"] == s and field in r]
            vals.append(float(match[0][field]) if match else float("nan"))
        cells = [f"{v:.{digits}f}" for v in vals]
        agg = f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}" if len(vals) > 1 else "–"
        if label.startswith("**"):
            agg = f"**{agg}**"
        out.append(f"| {label} | " + " | ".join(cells) + f" | {agg} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/datafree_digits")
    p.add_argument("--jsonl", default="docs/evidence/datafree-digits.jsonl")
    p.add_argument("--teacher", default=None, help="teacher file (default: train the default one into OUT/teacher.pt)")
    p.add_argument("--backend", default="brevitas")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--act-bits", type=int, default=None)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--augment", default="auto")
    p.add_argument("--metric", default="cmi", help="--augment auto's score (cmi: the default when the committed "
                   "tables were measured; the product's default is teacher-ce now)")
    p.add_argument("--generator-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-reference", action="store_true", help="skip the data-driven reference runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table-only", action="store_true", help="print the results.md table from --jsonl and exit")
    args = p.parse_args(argv)
    act = args.act_bits if args.act_bits is not None else args.bits
    if args.table_only:
        lines = Path(args.jsonl).read_text().splitlines()
        print(table([json.loads(x) for x in lines if x.strip()], args.bits, act))
        return 0

    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from daqakd_plugins.commands._common import parse_backend_options
    from daqakd_plugins.distill import DistillConfig, run_distill

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = Path(args.jsonl)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    teacher = _teacher(args)
    gopts = parse_backend_options(args.generator_option, flag="--generator-option")
    done = _done(jsonl)
    common = dict(backend=args.backend, bits=args.bits, act_bits=args.act_bits, data="digits", teacher=str(teacher),
                  epochs=args.epochs, augment=args.augment, metric=args.metric, export=False, fresh=True, progress=False,
                  first_last_bits=None)  # every layer at --bits, as the committed evidence was measured
    for seed in [int(s) for s in args.seeds.split(",")]:
        arms = [("datafree", True)] + ([] if args.no_reference else [("data-driven", False)])
        for arm, free in arms:
            if (arm, seed, args.bits, act) in done:
                print(f"{arm} seed {seed}: already in {jsonl}")
                continue
            run_dir = out / f"{arm}-w{args.bits}a{act}-seed{seed}"
            t0 = time.perf_counter()
            extra: dict[str, Any] = {"data_free": True, "generator_options": gopts} if free else {}
            rep = run_distill(DistillConfig(**common, seed=seed, out=str(run_dir), **extra))  # type: ignore[arg-type]
            acc = rep["accuracy"]
            row: dict[str, Any] = {
                "arm": arm, "seed": seed, "backend": args.backend, "bits": args.bits, "act_bits": act,
                "epochs": args.epochs, "augmentation": rep["augmentation"], "teacher_fp": acc["teacher_fp"],
                "student_after": acc["student_after"], "seconds": rep["seconds"],
                "wall_seconds": round(time.perf_counter() - t0, 3), "teacher": str(teacher),
                "torch_threads": args.threads, "python": platform.python_version(), "torch": torch.__version__,
            }
            if free:
                row.update(quantized_uncalibrated=acc["quantized_uncalibrated"], ptq_noise=acc["ptq_noise"],
                           ptq_generated=acc["ptq_generated"], generator=rep["generator"],
                           train_used=rep["data"]["train_used"], rank_seconds=rep["rank_seconds"],
                           warmup_seconds=rep["warmup_seconds"])
            else:
                row.update(ptq_real=acc["student_before"], train_used=rep["data"]["train_used"])
            with jsonl.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{arm} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                    if k in ("ptq_noise", "ptq_generated", "ptq_real", "student_after")))
    print(table([json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()], args.bits, act))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
