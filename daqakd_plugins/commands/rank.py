"""``daqakd rank``: rank candidate augmentations with a frozen teacher (``teacher-ce`` by default; the paper's
``cmi`` by name)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_METRIC
from ..errors import ConfigError
from ._common import add_arch_args, add_data_args

if TYPE_CHECKING:
    from ..ranking.result import Separation


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rank",
        help="rank candidate data augmentations with a teacher-only metric (no student, no training)",
        description="Score each candidate augmentation with the frozen teacher in one pass and print a table, "
        "best first. Without --teacher a teacher is trained once and cached under runs/teacher-<data>.pt.",
    )
    p.add_argument("--data", default="digits", help="'digits' (embedded, default) or an ImageFolder directory")
    p.add_argument("--teacher", type=Path, default=None,
                   help="teacher checkpoint (daqakd save_model format); default: runs/teacher-<data>.pt, trained if missing")
    p.add_argument("--teacher-epochs", type=int, default=15, help="epochs when a teacher has to be trained (default 15)")
    p.add_argument("--candidates", default="paper",
                   help="comma-separated names or groups: paper (the 16 torchvision candidates, default), kornia, "
                   "torchvision, all; append +cutmix/+mixup to compose (e.g. kornia-affine+cutmix)")
    p.add_argument("--metric", default=DEFAULT_METRIC,
                   help=f"ranking metric: {DEFAULT_METRIC} (default: the teacher's cross-entropy, what the evidence in "
                   "docs/results.md supports), cmi (the paper's score), ce-minus-i, tstddev (baseline)")
    p.add_argument("--metric-param", action="append", default=[], metavar="KEY=VALUE",
                   help="metric parameter, repeatable; cmi: w_D, w_I, w_CE (e.g. --metric-param w_CE=1); "
                   "tstddev: group, temperature")
    p.add_argument("--repeats", type=int, default=1, help="independent passes (seeds S, S+1, ...): mean ± std")
    p.add_argument("--per-class", type=int, default=None, metavar="K", help="rank on K samples per class (stratified)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where the teacher and augmentations run, e.g. cpu or cuda")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the ranking as JSON (best first)")
    p.add_argument("--markdown", type=Path, default=None, metavar="PATH", help="also write the table as Markdown")
    p.add_argument("--list", action="store_true", help="list candidates and metrics, then exit")
    add_arch_args(p)
    add_data_args(p, train=False)
    p.set_defaults(func=run)


def _parse_params(items: list[str]) -> dict[str, Any]:
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


def _list() -> int:
    from ..plugins import get_augmentations, get_metrics

    print("Candidates (append +cutmix or +mixup to any):")
    for name, a in get_augmentations().items():
        print(f"  {name:28s} [{a.family}] {a.description}")
    print("Groups: paper, kornia, torchvision, all")
    print("Metrics:")
    for name, m in get_metrics().items():
        print(f"  {name:10s} {m.description}")
    return 0


def _verdict(sep: Separation) -> str:
    """The pick's separation in a few words for the last line (the table's footer has the full sentence)."""
    again = f"; rerun with {sep.option} {sep.suggested_repeats}" if sep.suggested_repeats else ""
    if sep.separated:
        return f" - separated from runner-up {sep.runner_up}"
    if sep.separated is False:
        return f" - NOT separated from runner-up {sep.runner_up}" + (f", tied with {len(sep.tied) - 1} other(s)"
                                                                      if len(sep.tied) > 2 else "") + again
    if sep.reason == "one_pass":
        return f" - one pass: separation from runner-up {sep.runner_up} not judged{again}"
    return ""


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    from ..checks import check_device, check_image_size, check_normalization, check_output_file, check_workers
    from ..data import load_data
    from ..models import load_model
    from ..ranking import rank_augmentations
    from ..train import get_or_train_teacher

    params = _parse_params(args.metric_param)
    if args.json is not None:
        check_output_file(args.json, flag="--json")  # before the ranking, not after it
    check_device(args.device)
    check_workers(args.workers, flag="--workers")
    check_image_size(args.image_size, flag="--image-size")
    mean, std = check_normalization(args.mean, args.std)
    from .. import progress

    progress.doing("reading the data")
    bundle = load_data(args.data, seed=0, image_size=args.image_size)
    from ..train import teacher_arch

    spec = teacher_arch(bundle, args.arch, num_classes=args.num_classes, small_input=bool(args.small_input))
    if args.teacher is not None:
        teacher, meta = load_model(args.teacher, arch=spec if args.arch is not None else None)
        src = f"teacher {args.teacher}"
    else:
        path = Path("runs") / (f"teacher-{bundle.name}.pt" if args.arch is None else f"teacher-{bundle.name}-{args.arch.replace(':', '-')}.pt")
        existed = path.exists()
        from .. import distributed

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
    from .. import distributed
    from ..models import check_model_fits_data

    check_model_fits_data(teacher, bundle.image_shape, bundle.num_classes, what=src.split(" (")[0],
                          fix="Pass a --teacher trained on this data, or leave --teacher out to train one.")
    main_rank = distributed.current().is_main
    if main_rank:
        print(f"daqakd rank: {src}", file=sys.stderr)
    if main_rank and meta.get("data") not in (None, bundle.name):
        print(f"daqakd rank: warning: the teacher was trained on {meta['data']!r}, ranking on {bundle.name!r}",
              file=sys.stderr)
    for p in teacher.parameters():
        p.requires_grad_(False)
    rec = meta.get("normalize") or {}
    normalize = (mean, std) if mean is not None and std is not None else ((rec["mean"], rec["std"]) if rec.get("mean") is not None else None)
    progress.doing("ranking the candidate augmentations with the teacher")
    ranking = rank_augmentations(
        teacher, bundle, args.candidates, args.metric, metric_params=params, batch_size=args.batch_size,
        seed=args.seed, repeats=args.repeats, per_class=args.per_class, device=args.device, progress=True,
        workers=args.workers, normalize=normalize, base_augment=args.base_augment or "auto",
    )
    if not main_rank:
        return 0  # every rank holds the same result; rank 0 prints and writes it
    print(ranking.to_markdown())  # its footer says whether the pick is separated (Ranking.separation)
    print(f"best: {ranking.best}  ({ranking.seconds:.1f} s){_verdict(ranking.separation(option='--repeats'))}")
    if args.json is not None:
        ranking.save_json(args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(ranking.to_markdown())
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0
