"""Arguments several commands share: the teacher's architecture and the backend's options."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError


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
