"""``daqakd report RESULTS.jsonl``: analysis (JSON + Markdown) and the score-vs-accuracy figure (PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="analyse a ranking-vs-accuracy experiment (JSONL) and draw its figure")
    p.add_argument("results", type=Path, help="JSONL written by benchmarks/reproduce_figure1.py")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: next to RESULTS)")
    p.add_argument("--metric", default="cmi", help="score on the x axis (default: cmi, the paper's score)")
    p.add_argument("--baseline", default="tstddev", help="score whose pick is drawn as a second line")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the confidence intervals")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checks import check_output_dir
    from ..errors import ConfigError
    from ..evidence import write_report

    if args.bootstrap < 1:
        raise ConfigError(f"--bootstrap {args.bootstrap}: the confidence intervals need resamples (with none they "
                          "would print as nan); pass ≥ 1, e.g. the default 1000.")
    out = check_output_dir(args.out or args.results.parent)  # before the analysis, not after it
    paths = write_report(args.results, out, metric=args.metric, baseline=args.baseline, n_boot=args.bootstrap)
    print(paths["md"].read_text())
    for k, p in paths.items():
        print(f"wrote {k}: {p}")
    return 0
