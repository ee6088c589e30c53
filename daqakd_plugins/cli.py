"""The ``daqakd`` command line. Each sub-command lives in ``daqakd_plugins/commands/<name>.py`` and
exposes ``add_parser(subparsers)`` (which sets ``func``); errors daqakd raises on purpose become a
one-paragraph message and exit code 2 instead of a traceback."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from . import __version__
from .errors import DaqakdError


def _command_modules() -> list[str]:
    """Every module in daqakd_plugins/commands (one sub-command each), in a stable order."""
    from . import commands

    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="daqakd",
        description="Data-augmented quantization-aware knowledge distillation: rank augmentations with a "
        "teacher-only metric, then distill a quantized student (NNCF, Brevitas, pytorch-quantization, ModelOpt).",
    )
    p.add_argument("--version", action="version", version=f"daqakd {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug, hook traces with DAQAKD_TRACE=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    return p


def _how_to_continue(args: argparse.Namespace) -> str:
    """What keeps the work done so far, per command (a plain re-run of `distill` would be refused)."""
    out = getattr(args, "resume", None) or getattr(args, "out", None)
    if args.command == "distill" and out:
        return f"The last finished epoch is saved: continue with `daqakd distill --resume {out}`."
    if args.command == "run":
        return "The last finished epoch is saved: run the same command again to continue (--fresh starts over)."
    return "Nothing was saved; run the command again."


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2), format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DaqakdError as exc:
        print(f"daqakd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"daqakd {args.command}: interrupted. {_how_to_continue(args)}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
