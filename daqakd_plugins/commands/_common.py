"""Arguments several commands share: the teacher's architecture and the backend's options."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_METRIC
from ..errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from ..data import DataBundle, FolderBundle


def add_arch_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("model (docs/models.md)")
    a.add_argument("--arch", default=None,
                   help="teacher architecture: small_resnet (default), torchvision:<name> (e.g. torchvision:resnet18), "
                        "timm:<name>, or your own factory package.module:function")
    a.add_argument("--num-classes", type=int, default=None, help="classifier width (default: the data's classes)")
    a.add_argument("--small-input", action="store_true", default=None,
                   help="torchvision models: a stem for small images (ResNets: 3x3 stride-1 conv, no max-pool)")


def add_backend_option_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend-option", action="append", default=None, metavar="KEY=VALUE",
                   help="a backend option (repeatable), e.g. float_layers=SiLU or reduce_range=true; see "
                        "docs/backends/<backend>.md")


def parse_backend_options(items: list[str] | None, *, flag: str = "--backend-option") -> dict[str, Any]:
    """``["float_layers=SiLU,GELU", "input_bits=8", "merge_bn=false"]`` → typed values: JSON when it
    parses (numbers, true/false, lists), a comma list as a list of strings, else the string."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r} must be KEY=VALUE, e.g. {flag} name=value")
        raw = raw.strip()
        value: Any
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = [v.strip() for v in raw.split(",") if v.strip()] if "," in raw else raw
        if key in out:
            raise ConfigError(f"{flag} {key} is given twice; give each option once (lists: a,b,c).")
        out[key] = value
    return out


def add_data_args(p: argparse.ArgumentParser, *, train: bool = True) -> None:
    """The data pipeline's options (docs/data.md): worker processes, image size, normalisation."""
    a = p.add_argument_group("data pipeline (docs/data.md)")
    a.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes that decode and augment (default: half the cores, at most 8; "
                        "0 = in the main process). Results do not depend on it.")
    a.add_argument("--image-size", type=int, default=None, metavar="PIXELS",
                   help="resize (shorter side) and centre-crop every image to PIXELSxPIXELS; needed for folders of "
                        "variable-size images (default: keep the size; all images must share it)")
    a.add_argument("--mean", default=None, help="per-channel mean to normalise with, e.g. 0.485,0.456,0.406 "
                   "(default: the teacher file's, else none: the models see [0, 1] images)")
    a.add_argument("--std", default=None, help="per-channel std, with --mean")
    a.add_argument("--base-augment", default=None, choices=["auto", "crop-flip", "rrc-flip", "none"],
                   help="the base transform every candidate (and 'none') runs after, as in a training recipe: "
                        "crop-flip = random crop with 1/8 zero padding + flip (CIFAR), rrc-flip = random-resized "
                        "crop + flip (ImageNet), none = candidates alone; auto (default) = crop-flip for 16-64 px "
                        "images, rrc-flip above, none below (8x8 digits)")
    if train:
        a.add_argument("--train-crop", choices=["center", "random"], default=None,
                       help="training images with --image-size: center = the evaluation crop (default: the ranked "
                            "augmentation is the only augmentation), random = random-resized crop as in ImageNet recipes")


def add_export_args(p: argparse.ArgumentParser) -> None:
    """How the exported student is checked against the torch student (docs/distill.md#export)."""
    a = p.add_argument_group("export (docs/distill.md#export)")
    a.add_argument("--export-bound-pp", type=float, default=None, metavar="PP",
                   help="an exported format whose test accuracy differs from the torch student's by more than PP "
                        "percentage points is flagged: a WARNING on the console and in report.md (default 0.5)")
    a.add_argument("--export-formats", default=None, metavar="F1,F2",
                   help="export only these of the backend's formats, comma-separated (default: all it writes for "
                        "the bit widths; an unknown name is refused listing them), e.g. --export-formats onnx-qcdq to skip "
                        "Brevitas' slow QONNX export")
    a.add_argument("--strict-export", action="store_true",
                   help="an export outside --export-bound-pp fails the command (exit status 1) instead of a WARNING; "
                        "the student and the report are written either way")


def export_failed(report: dict[str, Any], command: str, *, strict: bool = False) -> int:
    """After a run: if the export it was asked for failed (the whole export, or a format whose runtime
    could not run it), say so on stderr and return exit status 1; with ``strict`` (``--strict-export``)
    also when an exported format is outside the accuracy bound; else 0. The run's student and report
    are written either way, so a script that checks the exit status does not ship a missing export."""
    import sys

    exp = report.get("export") or {}
    outside = exp.get("outside_bound") or []
    if strict and outside:
        fmts = ", ".join(f"{o['format']} ({o['diff_pp']:.2f} pp)" for o in outside)
        print(f"daqakd {command}: error: --strict-export: {fmts} outside the bound of {exp.get('bound_pp'):g} pp "
              f"between the exported and the torch student's accuracy. The student and the report are written "
              f"({(report.get('files') or {}).get('report_md', 'report.md')}).", file=sys.stderr)
        return 1
    bad = [str(exp["error"])] if exp.get("error") else []
    bad += [str(e["error"]) for e in exp.get("student", []) if isinstance(e, dict) and e.get("error")]
    if not bad:
        return 0
    student = (report.get("files") or {}).get("student", "student.pt")
    print(f"daqakd {command}: error: the export failed, so no exported student was written ({'; '.join(bad)}). "
          f"The trained student is saved in {student} and the report records the error; fix the cause and export "
          "it again, or pass --no-export to skip export.", file=sys.stderr)
    return 1


def add_teacher_args(p: argparse.ArgumentParser, *, verb: str) -> None:
    """What ``rank`` and ``search`` share: the data, the teacher, the metric and the ranking sample."""
    p.add_argument("--data", default="digits", help="'digits' (embedded, default) or an ImageFolder directory")
    p.add_argument("--teacher", type=Path, default=None,
                   help="teacher checkpoint (daqakd save_model format); default: runs/teacher-<data>.pt, trained if missing")
    p.add_argument("--teacher-epochs", type=int, default=15, help="epochs when a teacher has to be trained (default 15)")
    p.add_argument("--metric", default=DEFAULT_METRIC,
                   help=f"score to {verb} with: {DEFAULT_METRIC} (default: the teacher's cross-entropy, what the evidence in "
                   "docs/results.md supports), cmi (the paper's score), ce-minus-i, tstddev (baseline)")
    p.add_argument("--metric-param", action="append", default=[], metavar="KEY=VALUE",
                   help="metric parameter, repeatable; cmi: w_D, w_I, w_CE (e.g. --metric-param w_CE=1); "
                   "tstddev: group, temperature")
    p.add_argument("--repeats", type=int, default=1, help="independent passes (seeds S, S+1, ...): mean ± std")
    p.add_argument("--per-class", type=int, default=None, metavar="K", help=f"{verb} on K samples per class (stratified)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where the teacher and augmentations run, e.g. cpu or cuda")


def parse_metric_params(items: list[str]) -> dict[str, Any]:
    """``["w_CE=1", "group=class"]`` → ``{"w_CE": 1, "group": "class"}`` (JSON values where they parse)."""
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"--metric-param {it!r} must look like KEY=VALUE, e.g. --metric-param w_CE=1")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def teacher_and_data(args: argparse.Namespace, command: str) -> tuple[DataBundle | FolderBundle, nn.Module, Any]:
    """The data bundle, the frozen teacher (``--teacher``, else the cached ``runs/teacher-<data>.pt``, trained
    once when missing; under torchrun rank 0 trains it) and the normalisation to rank with (``--mean/--std``,
    else the teacher file's). Options are checked before any data is read."""
    from .. import distributed, progress
    from ..checks import check_device, check_image_size, check_normalization, check_workers
    from ..data import load_data
    from ..models import check_model_fits_data, load_model
    from ..train import get_or_train_teacher, teacher_arch

    check_device(args.device)
    check_workers(args.workers, flag="--workers")
    check_image_size(args.image_size, flag="--image-size")
    mean, std = check_normalization(args.mean, args.std)
    progress.doing("reading the data")
    bundle = load_data(args.data, seed=0, image_size=args.image_size)
    spec = teacher_arch(bundle, args.arch, num_classes=args.num_classes, small_input=bool(args.small_input))
    if args.teacher is not None:
        teacher, meta = load_model(args.teacher, arch=spec if args.arch is not None else None)
        src = f"teacher {args.teacher}"
    else:
        path = Path("runs") / (f"teacher-{bundle.name}.pt" if args.arch is None else f"teacher-{bundle.name}-{args.arch.replace(':', '-')}.pt")
        existed = path.exists()
        progress.doing(f"loading the teacher {path}" if existed else f"training a teacher ({args.teacher_epochs} epochs) into {path}")
        with distributed.main_first():  # under torchrun rank 0 trains and saves it, the others load it
            teacher, meta = get_or_train_teacher(
                bundle, path, epochs=args.teacher_epochs, seed=args.seed, arch=spec, workers=args.workers,
                normalize=(mean, std) if mean is not None and std is not None else None)
        if existed:
            src = f"teacher {path} (no --teacher given; reusing the one trained earlier on {meta.get('data', bundle.name)})"
        else:
            acc = meta.get("test_accuracy")
            acc_s = f", test accuracy {acc:.4f}" if isinstance(acc, float) else ""
            src = f"teacher {path} (no --teacher given; trained one on {bundle.name} for {args.teacher_epochs} epochs{acc_s} and saved it there)"
    check_model_fits_data(teacher, bundle.image_shape, bundle.num_classes, what=src.split(" (")[0],
                          fix="Pass a --teacher trained on this data, or leave --teacher out to train one.")
    if distributed.current().is_main:
        print(f"daqakd {command}: {src}", file=sys.stderr)
        if meta.get("data") not in (None, bundle.name):
            print(f"daqakd {command}: warning: the teacher was trained on {meta['data']!r}, working on {bundle.name!r}",
                  file=sys.stderr)
    for p in teacher.parameters():
        p.requires_grad_(False)
    rec = meta.get("normalize") or {}
    normalize = (mean, std) if mean is not None and std is not None else ((rec["mean"], rec["std"]) if rec.get("mean") is not None else None)
    return bundle, teacher, normalize


def add_plan_args(p: argparse.ArgumentParser) -> None:
    """The bit-plan flags (docs/models.md, "Bit plans")."""
    a = p.add_argument
    a("--layer-bits", action="append", default=None, metavar="PATTERN=BITS",
      help="per-layer width (repeatable): a module path or glob and 8 (weights), W8A8 or A8, e.g. --layer-bits fc=8 "
      "--layer-bits 'layer1.*=W2'; later ones win")
    a("--first-last-bits", type=int, default=None, metavar="N",
      help="weight bits of the first and last weight layer (default 8, the low-bit convention; 0: like the others)")
    a("--bits-budget", type=float, default=None, metavar="AVG",
      help="let the teacher choose per-layer weight bits: measure each layer's sensitivity on the calibration "
      "images and pick the plan with the least summed sensitivity at this average of weight bits (weighted by "
      "parameters, first/last and --layer-bits pinned); e.g. 3.0")
    a("--size-budget-kb", type=float, default=None, metavar="KIB",
      help="instead of --bits-budget: the same plan under a weight-storage budget (quantized layers' weights × bits, "
      "in KiB)")

