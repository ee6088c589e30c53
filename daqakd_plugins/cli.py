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
from pathlib import Path

from .errors import ConfigError, DaqakdError
from .version import __version__


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
    """What keeps the work done so far, per command (a plain re-run of `distill` would be refused). Only a
    checkpoint can be resumed: stopped before the first one, say so instead of promising `--resume`."""
    out = getattr(args, "resume", None) or getattr(args, "out", None)
    if args.command not in ("distill", "run") or not out:
        return "Nothing was saved; run the command again."
    try:
        from .distill.checkpoint import CHECKPOINT_NAME
    except ImportError:  # pragma: no cover - the name the checkpoint has had since daqakd-checkpoint/1
        CHECKPOINT_NAME = "checkpoint.pt"  # noqa: N806
    d = Path(out)
    if (d / CHECKPOINT_NAME).exists():
        if args.command == "distill":
            return f"The last finished epoch is saved: continue with `daqakd distill --resume {out}`."
        return "The last finished epoch is saved: run the same command again to continue (--fresh starts over)."
    left = d.is_dir() and any(d.iterdir())
    return ("It stopped before the first checkpoint (written after the first epoch), so there is nothing to resume: "
            "run the same command again" + (f" with --fresh (it clears what this start left in {out})." if left else "."))


def _preflight(args: argparse.Namespace) -> None:
    """Checks that need no data, model or ranking work, so a wrong flag fails in the first second
    (before a data set is decoded, a teacher loaded or candidates ranked)."""
    from . import checks

    cmd = args.command
    if cmd not in ("distill", "run", "rank", "search") or getattr(args, "list", False):
        return
    if cmd == "distill" and args.fresh and args.resume:
        raise ConfigError(f"--fresh starts over and --resume continues a run: pass one of them (--resume "
                          f"{args.resume} to continue it, or --fresh --out DIR to start over).")
    if getattr(args, "teacher", None) is not None:
        checks.check_model_file(args.teacher, flag="--teacher")
    if cmd in ("rank", "search"):
        if args.markdown is not None:
            checks.check_output_file(args.markdown, flag="--markdown")  # before the ranking, not after it
        if cmd == "rank":
            checks.check_candidates(args.candidates)
        return
    resumed = cmd == "distill" and bool(args.resume)
    if args.backend is not None or not resumed:
        from .backends import require_backend
        from .plugins import default_backend

        backend = args.backend or default_backend()

        require_backend(backend, flag="--backend", quantizes=True)
        if not resumed:
            checks.check_act_bits_default(backend, 4 if args.bits is None else args.bits, args.act_bits)
    if args.loss is not None:
        from .distill.distiller import check_cli_loss

        check_cli_loss(args.loss)
    if cmd == "distill" and args.candidates is not None and args.augment in (None, "auto"):
        checks.check_candidates(args.candidates)


def _import_torch_holding_ctrl_c() -> bool:
    """``import torch`` with Ctrl-C held back until it is done; returns whether Ctrl-C came meanwhile.

    Why: a KeyboardInterrupt raised inside torch's C initialisation (``from torch._C import *``) can crash
    the interpreter (SIGSEGV, "bad call flags") instead of unwinding; a handler that only notes the signal
    lets the import finish, and the caller then exits 130 as for any Ctrl-C during start-up."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        import torch  # noqa: F401
        return False
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        import torch  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, previous)
    return bool(pressed)


#: the commands that run for minutes: they say so from the first second, and a heartbeat keeps them talking
LONG_COMMANDS = ("distill", "run", "rank", "search", "teacher")


def _long_command(argv: Sequence[str] | None) -> str | None:
    """The long command about to run (rank 0 only under torchrun), read before argparse and torch exist."""
    import os

    args = list(sys.argv[1:] if argv is None else argv)
    cmd = next((a for a in args if not a.startswith("-")), None)
    if cmd not in LONG_COMMANDS or any(a in ("-h", "--help", "--version") for a in args):
        return None
    if os.environ.get("RANK", "0") != "0":
        return None
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    from contextlib import ExitStack

    with ExitStack() as stack:
        try:  # Ctrl-C this early: no traceback either, the shell's 130
            from . import progress

            cmd = _long_command(argv)
            if cmd is not None:  # importing torch and the backends takes seconds on a cold machine: say so first
                progress.say(f"starting daqakd {cmd} (importing torch and the quantization backends) ...")
            stack.enter_context(progress.heartbeat(cmd is not None))
        except KeyboardInterrupt:
            print("daqakd: interrupted while starting; nothing was done.", file=sys.stderr)
            return 130
        return _main(argv)
    return 0  # pragma: no cover - the block returns (mypy cannot tell)


def _main(argv: Sequence[str] | None) -> int:
    try:  # Ctrl-C while the sub-commands import: no traceback, the shell's 130
        if _import_torch_holding_ctrl_c():
            raise KeyboardInterrupt
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("daqakd: interrupted while starting; nothing was done.", file=sys.stderr)
        return 130
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2), format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    where = ""
    from . import progress

    progress.doing(f"checking the inputs of daqakd {args.command}")
    try:
        _preflight(args)
        from . import distributed

        if distributed.launched():  # torchrun: join the process group before any work (docs/scaling.md)
            if args.command not in ("rank", "search", "distill", "run"):
                raise ConfigError(f"`daqakd {args.command}` runs in one process; start it without torchrun (rank, search, "
                                  "distill and run are the commands that use several).")
            d = distributed.setup(getattr(args, "device", None) or "cpu")
            where = f" [rank {d.rank}/{d.world_size}]"
        return int(args.func(args) or 0)
    except DaqakdError as exc:
        print(f"daqakd {args.command}{where}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"daqakd {args.command}{where}: interrupted. {_how_to_continue(args)}", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        if where and _peer_failure(exc):
            print(f"daqakd {args.command}{where}: error: another rank failed or stopped answering ({exc}); its own "
                  "message above says why. Every rank stops.", file=sys.stderr)
            return 3
        raise
    finally:
        if where:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _peer_failure(exc: BaseException) -> bool:
    """A collective that failed because another process died or timed out (gloo/NCCL messages)."""
    msg = str(exc).lower()
    return any(w in msg for w in ("connection closed", "connection reset", "timed out", "timeout", "broken pipe",
                                  "peer", "nccl", "gloo"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
