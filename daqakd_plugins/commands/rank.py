"""``daqakd rank``: rank candidate augmentations with a frozen teacher (``teacher-ce`` by default; the paper's
``cmi`` by name)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import add_arch_args, add_data_args, add_teacher_args, parse_metric_params, teacher_and_data

if TYPE_CHECKING:
    from ..ranking.result import Separation


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rank",
        help="rank candidate data augmentations with a teacher-only metric (no student, no training)",
        description="Score each candidate augmentation with the frozen teacher in one pass and print a table, "
        "best first. Without --teacher a teacher is trained once and cached under runs/teacher-<data>.pt.",
    )
    add_teacher_args(p, verb="rank")
    p.add_argument("--candidates", default="paper",
                   help="comma-separated names or groups: paper (the 16 torchvision candidates, default), kornia, "
                   "torchvision, all; append +cutmix/+mixup to compose (e.g. kornia-affine+cutmix); a searched "
                   "policy search:<space>:<seed> (daqakd search)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the ranking as JSON (best first)")
    p.add_argument("--markdown", type=Path, default=None, metavar="PATH", help="also write the table as Markdown")
    p.add_argument("--list", action="store_true", help="list candidates and metrics, then exit")
    add_arch_args(p)
    add_data_args(p, train=False)
    p.set_defaults(func=run)


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
    from .. import distributed, progress
    from ..checks import check_output_file
    from ..ranking import rank_augmentations

    params = parse_metric_params(args.metric_param)
    if args.json is not None:
        check_output_file(args.json, flag="--json")  # before the ranking, not after it
    bundle, teacher, normalize = teacher_and_data(args, "rank")
    main_rank = distributed.current().is_main
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
