"""``daqakd run``: the main job, end to end — train (or load) the FP teacher, rank the candidate
augmentations, build the quantized student through the backend, distill with the best candidate,
export it to its real runtime and evaluate everything on clean test data. Writes report.json,
report.md and report.png. Interrupted? Run the same command again: it resumes from the last epoch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import (
    add_arch_args,
    add_backend_option_arg,
    add_data_args,
    add_export_args,
    add_plan_args,
    export_failed,
    parse_backend_options,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the main job: rank -> distill -> export -> evaluate (resumes if interrupted)")
    p.add_argument("--data", default="digits", help="'digits' (embedded, default) or an ImageFolder directory")
    p.add_argument("--out", type=Path, default=Path("runs/main"), help="run directory (default runs/main)")
    p.add_argument("--backend", default=None,
                   help="quantization backend (see `daqakd plugins`); default: the one the adapters declare (brevitas)")
    p.add_argument("--bits", type=int, default=4, help="weight bits (default 4)")
    p.add_argument("--act-bits", type=int, default=None, help="activation bits (default: same as --bits)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--teacher", default=None, help="FP teacher file (default: train one into OUT/teacher.pt)")
    p.add_argument("--augment", default="auto",
                   help="auto (default) = rank the paper's candidates with the teacher and take the best; a name; or "
                        "search:<space> = search the space's policies and train with the top k combined "
                        "(docs/ranking.md#search)")
    p.add_argument("--search-n", type=int, default=100, help="--augment search:<space>: policies to score (default 100)")
    p.add_argument("--search-top-k", type=int, default=5,
                   help="--augment search:<space>: how many of the best to combine (default 5)")
    p.add_argument("--loss", default="paper", help="loss preset (default 'paper': 1*CE + 2*tau^2*KL, tau=4)")
    p.add_argument("--seed", type=int, default=0)
    add_plan_args(p)
    add_arch_args(p)
    add_backend_option_arg(p)
    add_data_args(p)
    add_export_args(p)
    p.add_argument("--fresh", action="store_true",
                   help="start over: delete OUT's earlier checkpoint, student, report and export first")
    p.set_defaults(func=run)


def _first_last(args: argparse.Namespace, resume: str | None) -> int | None:
    """``--first-last-bits``, else what the resumed run used (a run from before the convention: none), else 8."""
    if args.first_last_bits is not None:
        return int(args.first_last_bits)
    if resume is not None:
        from ..distill import load_checkpoint
        from ..distill.config import LEGACY_DEFAULTS

        return {**LEGACY_DEFAULTS, **json.loads(load_checkpoint(resume)["config"])}.get("first_last_bits")
    return 8


def run(args: argparse.Namespace) -> int:
    from ..distill import DistillConfig, run_distill
    from ..distill.checkpoint import CHECKPOINT_NAME
    from ..reporting import draw_report_figure

    out: Path = args.out
    resume = None
    if (out / CHECKPOINT_NAME).exists() and not args.fresh:
        resume = str(out)
        from .. import distributed

        if distributed.current().is_main:
            print(f"[daqakd run] resuming from {out / CHECKPOINT_NAME} (pass --fresh to start over)")
    cfg = DistillConfig(
        **({"backend": args.backend} if args.backend else {}), bits=args.bits, act_bits=args.act_bits,
        data=args.data, teacher=args.teacher,
        epochs=args.epochs, out=str(out), augment=args.augment, loss=args.loss, seed=args.seed, resume=resume,
        fresh=args.fresh, arch=args.arch, num_classes=args.num_classes, small_input=bool(args.small_input),
        backend_options=parse_backend_options(args.backend_option), workers=args.workers,
        image_size=args.image_size, mean=args.mean, std=args.std, train_crop=args.train_crop or "center",
        base_augment=args.base_augment or "auto", search_n=args.search_n, search_top_k=args.search_top_k,
        export_bound_pp=0.5 if args.export_bound_pp is None else args.export_bound_pp,
        export_formats=args.export_formats, layer_bits=args.layer_bits or {}, bits_budget=args.bits_budget,
        size_budget_kb=args.size_budget_kb,
        first_last_bits=_first_last(args, resume),
    )
    report = run_distill(cfg)
    from .. import distributed

    if not distributed.current().is_main:
        return 0  # under torchrun rank 0 draws and prints (every rank holds the same report)
    png = draw_report_figure(report, out / "report.png")
    acc = report["accuracy"]
    summary = {
        "augmentation": report["augmentation"],
        "teacher_fp": acc["teacher_fp"],
        "student_ptq": acc["student_before"],
        "student_after": acc["student_after"],
        "exported": {e["format"]: e.get("accuracy") for e in (report.get("export") or {}).get("student", [])
                     if isinstance(e, dict)},
        "report": [str(out / "report.json"), str(out / "report.md"), str(png)],
    }
    print(json.dumps(summary, indent=2))
    return export_failed(report, "run", strict=args.strict_export)
