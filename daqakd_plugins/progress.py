"""Progress lines on stderr, and a heartbeat so that no phase of a long command is silent.

:func:`say` writes ``daqakd: <what it does now>`` (through ``tqdm.write``, so a bar on a terminal is not
torn) and remembers it; :func:`doing` only remembers it. Inside :func:`heartbeat`, a small watcher
*process* follows what the command does (a pipe carries each phase and each line written) and, when
stderr has been quiet for :data:`HEARTBEAT_S` seconds, writes ``daqakd: still <what> (N s)``. A process,
not a thread: exporters, graph passes and backends spend seconds in C++ holding Python's GIL, which
would silence a thread exactly when a line is wanted. Whatever is written on ``sys.stderr`` meanwhile (a
warning, a backend's message, a bar drawn on a terminal) counts as a line; in a log, where tqdm draws
nothing, the heartbeat is what a reader sees. ``DAQAKD_HEARTBEAT_S`` sets the interval (``0`` turns it
off).

Nothing here imports torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["HEARTBEAT_S", "ENV", "say", "doing", "heartbeat", "bar", "interval"]

#: seconds without a line before the heartbeat writes one (issue 29: no silent phase over ~5 s)
HEARTBEAT_S = 4.0
ENV = "DAQAKD_HEARTBEAT_S"

# The watcher: reads "M" (a line was written), "P<0|1><label>" (the phase; 1: a new one, its clock restarts;
# an empty label: nothing to repeat) and "Q" (quit) from the pipe; exits when the pipe closes or the
# command's process is gone. Written for `python -I -S -c` (no site, no daqakd, no torch: it starts in ms).
_WATCHER = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on a terminal reaches the whole group: the command answers it
fd, every, parent = int(sys.argv[1]), float(sys.argv[2]), os.getppid()
tty = os.isatty(2)
now = time.monotonic()
last = since = now
label, buf = "", b""
while True:
    ready, _, _ = select.select([fd], [], [], min(0.25, every / 4))
    now = time.monotonic()
    if ready:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *msgs, buf = (buf + chunk).split(b"\n")
        quit_ = False
        for m in msgs:
            kind = m[:1]
            if kind == b"M":
                last = now
            elif kind == b"P":
                label = m[2:].decode("utf-8", "replace")
                if m[1:2] == b"1":
                    since = now
            elif kind == b"Q":
                quit_ = True
        if quit_:
            break
    if os.getppid() != parent:
        break
    if now - last >= every:
        text = f"still {label} ({now - since:.0f} s)" if label else f"still working ({now - since:.0f} s)"
        try:
            os.write(2, (("\r\x1b[K" if tty else "") + "daqakd: " + text + "\n").encode())
        except OSError:
            break
        last = now
"""


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pipe: int | None = None  # the write end of the watcher's pipe, while a heartbeat runs
        self.label: str | None = None  # what the command does now, as "still <label>" would say it
        self.depth = 0  # nested heartbeat() contexts; the outermost owns the watcher


_S = _State()


def interval() -> float:
    """The heartbeat interval: ``DAQAKD_HEARTBEAT_S`` if set (``0``: off), else :data:`HEARTBEAT_S`."""
    raw = os.environ.get(ENV)
    if raw is None or not raw.strip():
        return HEARTBEAT_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        return HEARTBEAT_S


def _send(msg: str) -> None:
    """One message to the watcher; never blocks (the pipe is non-blocking) and never fails the run."""
    fd = _S.pipe
    if fd is None:
        return
    try:
        os.write(fd, msg.replace("\n", " ").encode("utf-8", "replace") + b"\n")
    except OSError:  # a full pipe (the watcher is behind) or a gone watcher: a heartbeat is not worth an error
        pass


def _mark() -> None:
    _send("M")


def _write(line: str) -> None:
    _mark()
    bars = sys.modules.get("tqdm.auto")  # no bar can be drawn before tqdm is imported: don't import it for one line
    try:
        if bars is None:
            raise LookupError
        bars.tqdm.write(line, file=sys.stderr)
    except Exception:  # noqa: BLE001 - a progress line must never break the run
        print(line, file=sys.stderr)
    try:
        sys.stderr.flush()
    except Exception:  # noqa: BLE001, S110 - a closed stream at shutdown
        pass


def _label_of(msg: str) -> str | None:
    """``"quantized in 3 s; evaluating the student on 500 images ..."`` -> ``"evaluating the student on 500
    images"``: a line that announces a phase (ends with ``...``) names what the heartbeat repeats."""
    text = msg.rstrip()
    if not text.endswith("..."):
        return None
    text = text[:-3].rstrip()
    return text.rsplit("; ", 1)[-1] or None


def _phase(label: str | None, new_phase: bool) -> None:
    with _S.lock:
        _S.label = label
    _send(f"P{1 if new_phase else 0}{label or ''}")


def say(msg: str, *, enabled: bool = True) -> None:
    """Write ``daqakd: msg`` on stderr now (when ``enabled``) and make it what the heartbeat repeats."""
    _phase(_label_of(msg), True)
    if enabled:
        _write(f"daqakd: {msg}")


def doing(label: str | None, *, new_phase: bool = True) -> None:
    """Say silently what the command does now (e.g. ``"training epoch 2/5: 13/40 batches done"``): the
    heartbeat repeats it if nothing is written meanwhile. ``new_phase=False`` updates the words of the phase
    under way without restarting its clock. ``None``: nothing to repeat (the heartbeat then says how long
    the command has been quiet)."""
    _phase(label, new_phase)


class _Tap:
    """``sys.stderr`` while a heartbeat runs: every line written (a warning, a backend's message, a bar on a
    terminal, a line of ours) counts as progress."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, s: str) -> int:
        if s.strip():
            _mark()
        return int(self._inner.write(s) or 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _start_watcher(every: float) -> tuple[subprocess.Popen[bytes], int] | None:
    """The watcher process and the write end of its pipe; ``None`` where it cannot start (then no heartbeat:
    it is never worth failing a run)."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WATCHER, str(r), repr(every)], pass_fds=(r,),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True)
    except (OSError, ValueError):  # ValueError: pass_fds where the platform has none (Windows)
        os.close(r)
        os.close(w)
        return None
    os.close(r)
    os.set_blocking(w, False)
    return proc, w


@contextmanager
def heartbeat(enabled: bool = True) -> Iterator[None]:
    """While the block runs, a ``still ...`` line whenever nothing was written on stderr for the interval.

    Nested blocks share the outermost one's watcher. ``enabled=False`` (progress off, a rank other than 0)
    or an interval of 0 starts nothing."""
    every = interval()
    with _S.lock:
        _S.depth += 1
        owner = _S.depth == 1
    watcher = tap = None
    if owner and enabled and every > 0:
        watcher = _start_watcher(every)
        if watcher is not None:
            _S.pipe = watcher[1]
            tap = _Tap(sys.stderr)
            sys.stderr = tap
    if watcher is not None:  # the phase said before the watcher existed (the CLI's start line)
        _phase(_S.label, True)
    try:
        yield
    finally:
        if watcher is not None:
            proc, w = watcher
            _send("Q")
            _S.pipe = None
            os.close(w)
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if tap is not None and sys.stderr is tap:  # not if someone replaced it meanwhile (they restore theirs)
            sys.stderr = tap._inner
        with _S.lock:
            _S.depth -= 1


def bar(iterable: Iterable[Any], *, desc: str, enabled: bool, **kw: Any) -> Any:
    """A tqdm bar, drawn on a terminal only (tqdm's ``disable=None``); off a terminal the heartbeat speaks."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=None if enabled else True, dynamic_ncols=True, leave=False, **kw)
