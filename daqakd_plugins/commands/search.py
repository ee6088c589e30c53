"""``daqakd search``: score N policies drawn from a search space with the frozen teacher, keep the top k and
combine them (docs/ranking.md#search)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_arch_args, add_data_args, add_teacher_args, parse_metric_params, teacher_and_data


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search an augmentation policy space with the teacher: score N drawn policies, combine the top k",
        description="Draw N policies search:<space>:<seed> from a search space, score each with the frozen teacher "
        "(one pass each, no student), and combine the best k into search:<space>:<s1>-<s2>-... (a random choice "
        "among them per image). Resumable: the scored policies go to a JSONL next to --json, and the same command "
        "continues where it stopped. Use the result with `daqakd distill --augment <combined name>`.",
    )
    p.add_argument("--space", default="taw2", help="search space (default taw2: 2 TrivialAugment-Wide operations with "
                   "magnitude caps; taw3: 3; `daqakd plugins` lists the registered spaces)")
    p.add_argument("--n", "--num-policies", dest="n", type=int, default=100,
                   help="policies to draw and score (default 100); under torchrun write --num-policies (torchrun "
                        "reads --n as an abbreviation of its own --nnodes)")
    p.add_argument("--start", type=int, default=0, help="first policy seed (policies START .. START+N-1; default 0)")
    p.add_argument("--top-k", type=int, default=5, help="how many of the best to combine (default 5)")
    p.add_argument("--json", type=Path, default=Path("runs/search.json"), metavar="PATH",
                   help="write the result as JSON (default runs/search.json); the scored policies go to PATH with "
                        ".jsonl, which a rerun continues")
    p.add_argument("--markdown", type=Path, default=None, metavar="PATH", help="also write the table as Markdown")
    p.add_argument("--chunk", type=int, default=16, help="policies per ranking call and per write of the JSONL")
    add_teacher_args(p, verb="search")
    add_arch_args(p)
    add_data_args(p, train=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import distributed, progress
    from ..checks import check_output_file
    from ..ranking import search_augmentations
    from ..ranking.search import check_search_args

    params = parse_metric_params(args.metric_param)
    check_output_file(args.json, flag="--json")  # before the search, not after it
    if args.markdown is not None:
        check_output_file(args.markdown, flag="--markdown")
    check_search_args(args.space, args.n, args.top_k, args.start, args.chunk)  # before the data is read
    bundle, teacher, normalize = teacher_and_data(args, "search")
    progress.doing(f"scoring {args.n} policies of {args.space} with the teacher")
    result = search_augmentations(
        teacher, bundle, args.space, args.n, top_k=args.top_k, metric=args.metric, metric_params=params,
        start=args.start, seed=args.seed, repeats=args.repeats, per_class=args.per_class, batch_size=args.batch_size,
        device=args.device, progress=True, workers=args.workers, normalize=normalize,
        base_augment=args.base_augment or "auto", resume=args.json.with_suffix(".jsonl"), chunk=args.chunk,
    )
    if not distributed.current().is_main:
        return 0
    md = result.to_markdown()
    print(md)
    print(f"combined: {result.combined}   (daqakd distill --augment {result.combined} ...)")
    result.save_json(args.json)
    print(f"wrote {args.json} (scored policies: {args.json.with_suffix('.jsonl')})", file=sys.stderr)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md)
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0
