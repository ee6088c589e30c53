"""``daqakd distill``: rank augmentations, quantize, distill, evaluate, export, report.

With ``--resume DIR`` every setting not given on the command line is read from DIR's checkpoint, so
``daqakd distill --resume runs/x`` continues a killed run exactly.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import DEFAULT_METRIC
from ._common import (
    add_arch_args,
    add_backend_option_arg,
    add_data_args,
    add_export_args,
    add_plan_args,
    export_failed,
    parse_backend_options,
)

# argparse defaults are None so that --resume can tell what the user actually typed. "backend": None leaves
# the choice to DistillConfig (the backend the adapters declare as the default, plugins.default_backend).
_DEFAULTS: dict[str, Any] = {
    "backend": None, "bits": 4, "act_bits": None, "data": "digits", "teacher": None, "epochs": 8,
    "augment": "auto", "loss": "paper", "lr": 1e-3, "batch_size": 64, "seed": 0, "optimizer": "adam",
    "weight_decay": 0.0, "candidates": None, "metric": DEFAULT_METRIC, "rank_per_class": None, "rank_repeats": 1,
    "search_n": 100, "search_top_k": 5,
    "train_per_class": None, "teacher_epochs": 15, "calib_batches": None, "calib_images": None,
    "device": "cpu",
    "arch": None, "num_classes": None, "small_input": False, "backend_options": {},
    "workers": None, "image_size": None, "mean": None, "std": None, "train_crop": "center", "data_free": False,
    "generator_options": {}, "base_augment": "auto", "export_bound_pp": 0.5,
    "export_formats": None, "layer_bits": {}, "first_last_bits": 8, "bits_budget": None,
    "size_budget_kb": None,
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="distill a quantized student with KD and a ranked data augmentation (DA-QAKD)",
        description="Rank candidate augmentations with the teacher (or take --augment NAME), build a quantized "
        "student through the backend adapter, train it with the KD loss chain, evaluate on clean test data, "
        "export, and write OUT/report.json, OUT/report.md and OUT/student.pt. A checkpoint is written every "
        "epoch; --resume OUT continues a stopped run.",
    )
    a = p.add_argument
    a("--backend", help="quantization backend (see `daqakd plugins`); default: the one the adapters declare (brevitas)")
    a("--bits", type=int, help="weight bits (default 4)")
    a("--act-bits", type=int, help="activation bits (default: same as --bits)")
    a("--data", help="'digits' (embedded) or an ImageFolder directory; default digits")
    a("--teacher", help="teacher model file from `daqakd teacher`; default: train one into OUT/teacher.pt")
    a("--epochs", type=int, help="training epochs (default 8)")
    a("--out", help="run directory (default: the --resume directory)")
    a("--augment", help="augmentation name, 'none', 'auto' = rank the candidates and use the best (default), or "
      "search:<space> = search the space's policies with the teacher and train with the top k combined "
      "(--search-n, --search-top-k; docs/ranking.md#search)")
    a("--candidates", help="candidates for --augment auto: names or groups, comma-separated (default: the paper's 16)")
    a("--metric", help=f"ranking metric for --augment auto (default {DEFAULT_METRIC}, what the evidence supports; "
      "cmi: the paper's score)")
    a("--rank-per-class", type=int, help="rank on a class-stratified subset of this many images per class")
    a("--rank-repeats", type=int, help="ranking repeats with different seeds (default 1)")
    a("--search-n", type=int, help="--augment search:<space>: policies to score (default 100)")
    a("--search-top-k", type=int, help="--augment search:<space>: how many of the best to combine (default 5)")
    a("--loss", help="loss preset/component, or a+b (paper = 1*CE + 2*KD, sqakd, ce = plain QAT, mixed, dual_view)")
    a("--lr", type=float, help="learning rate (default 1e-3)")
    a("--optimizer", choices=["adam", "sgd"], help="optimizer (default adam), cosine schedule")
    a("--weight-decay", type=float, help="weight decay (default 0)")
    a("--batch-size", type=int, help="batch size (default 64)")
    a("--seed", type=int, help="random seed (default 0)")
    a("--train-per-class", type=int, help="train on a class-stratified subset of this many images per class")
    a("--teacher-epochs", type=int, help="epochs when a teacher has to be trained (default 15)")
    a("--calib-images", type=int, help="calibrate the student on this many training images, class-stratified, "
      "whatever --batch-size is (default 512)")
    a("--calib-batches", type=int, help="instead of --calib-images: calibrate on this many batches of --batch-size "
      "images (data-free: generated batches, default 8)")
    a("--device", help="torch device (default cpu)")
    a("--resume", help="continue the run in this directory from its last checkpoint")
    a("--fresh", action="store_true", help="--out holds an earlier run: delete its checkpoint, student, report "
      "and export, and start over (without --fresh or --resume such a directory is refused)")
    a("--no-export", action="store_true", default=None,
      help="skip export and the exported-model measurement (a resumed run keeps the original choice)")
    a("--json", action="store_true", help="print the whole report as JSON")
    a("--data-free", action="store_true", default=None,
      help="train without the training data: a generator synthesises the batches (docs/datafree.md); only the "
      "test split is read, to report accuracy")
    a("--generator-option", action="append", default=None, metavar="KEY=VALUE",
      help="a data-free generator option (repeatable), see docs/datafree.md")
    add_plan_args(p)
    add_arch_args(p)
    add_backend_option_arg(p)
    add_data_args(p)
    add_export_args(p)
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> Any:
    from ..distill import DistillConfig, load_checkpoint

    args.backend_options = parse_backend_options(args.backend_option) if args.backend_option else None
    args.generator_options = parse_backend_options(args.generator_option, flag="--generator-option") \
        if args.generator_option else None
    given = {k: getattr(args, k) for k in _DEFAULTS if getattr(args, k, None) is not None}
    export = True
    if args.resume:
        from ..distill.config import LEGACY_DEFAULTS

        old = {**LEGACY_DEFAULTS, **json.loads(load_checkpoint(args.resume)["config"])}
        base = {k: old[k] for k in _DEFAULTS if k in old}
        export = bool(old.get("export", True))
    else:
        base = {k: v for k, v in _DEFAULTS.items() if not (k == "backend" and v is None)}
    base.update(given)
    if args.no_export:
        export = False
    return DistillConfig(
        **base,
        out=args.out or args.resume,
        resume=args.resume,
        fresh=bool(args.fresh),
        export=export,
        progress=True,
    )


def run(args: argparse.Namespace) -> int:
    from ..distill import run_distill

    if not args.out and not args.resume:
        from ..errors import ConfigError

        raise ConfigError("pass --out DIR (where the report, checkpoint and student go), or --resume DIR")
    report = run_distill(_config(args))
    from .. import distributed

    if not distributed.current().is_main:
        return 0  # under torchrun rank 0 prints (every rank holds the same report)
    from pathlib import Path

    from ..reporting import draw_report_figure

    png = draw_report_figure(report, Path(report["files"]["report_md"]).with_name("report.png"))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return export_failed(report, "distill", strict=args.strict_export)
    acc = report["accuracy"]
    print(
        f"{report['backend']} W{report['bits']}A{report['act_bits']}  augmentation={report['augmentation']}  "
        f"loss={report['loss']}  epochs={report['epochs']}  {report['seconds']:.1f} s"
    )
    if report.get("mode") == "data-free":
        print(report["statement"])
        print(
            f"accuracy: teacher (FP) {acc['teacher_fp']:.4f} | PTQ on random noise {acc['ptq_noise']:.4f} | student "
            f"calibrated on generated images {acc['student_before']:.4f} | student after data-free KD "
            f"{acc['student_after']:.4f}"
        )
    else:
        print(
            f"accuracy: teacher (FP) {acc['teacher_fp']:.4f} | student after calibration {acc['student_before']:.4f} "
            f"| student after KD {acc['student_after']:.4f}"
        )
    exp = report.get("export") or {}
    if exp and not exp.get("skipped"):
        print("export: " + json.dumps(exp, default=str)[:600])
    print(f"report: {report['files']['report_md']} (figure: {png})")
    return export_failed(report, "distill", strict=args.strict_export)
