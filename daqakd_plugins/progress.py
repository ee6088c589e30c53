"""Progress lines on stderr, and a heartbeat so that no phase of a long command is silent.

:func:`say` writes ``daqakd: <what it does now>`` (through ``tqdm.write``, so a bar on a terminal is not
torn) and remembers it. Inside :func:`heartbeat`, a daemon thread watches the time since the last line:
when a phase (quantizing, calibrating, an epoch off a terminal, an export, a backend's own slow step) has
said nothing for :data:`HEARTBEAT_S` seconds, it writes ``daqakd: still <what> (N s)``. Whatever is
written on stderr meanwhile (a warning, a backend's message, a bar drawn on a terminal) counts as a line;
in a log, where tqdm draws nothing, the heartbeat is what a reader sees. ``DAQAKD_HEARTBEAT_S`` sets the interval (``0``
turns it off).

Only this module writes progress lines for the engine; nothing here imports torch.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["HEARTBEAT_S", "say", "doing", "heartbeat", "bar", "interval"]

#: seconds without a line before the heartbeat writes one (issue 29: no silent phase over ~5 s)
HEARTBEAT_S = 4.0
ENV = "DAQAKD_HEARTBEAT_S"


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last = time.monotonic()  # when the last line was written
        self.label: str | None = None  # what the command does now, as "still <label>" would say it
        self.since = time.monotonic()  # when that began
        self.depth = 0  # nested heartbeat() contexts; the outermost owns the thread


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


def _write(line: str) -> None:
    _mark()
    try:
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)
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


def _mark() -> None:
    with _S.lock:
        _S.last = time.monotonic()


def say(msg: str, *, enabled: bool = True) -> None:
    """Write ``daqakd: msg`` on stderr now (when ``enabled``) and make it what the heartbeat repeats."""
    now = time.monotonic()
    with _S.lock:
        _S.label = _label_of(msg)
        _S.since = now
    if enabled:
        _write(f"daqakd: {msg}")


def doing(label: str | None, *, new_phase: bool = True) -> None:
    """Say silently what the command does now (e.g. ``"training epoch 2/5: 13/40 batches done"``): the
    heartbeat repeats it if nothing is written meanwhile. ``new_phase=False`` updates the words of the phase
    under way without restarting its clock. ``None``: nothing to repeat (the heartbeat then says how long
    the command has been quiet)."""
    with _S.lock:
        _S.label = label
        if new_phase:
            _S.since = time.monotonic()


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


def _beat(stop: threading.Event, every: float) -> None:
    while not stop.wait(min(0.5, every / 4)):
        now = time.monotonic()
        with _S.lock:
            if now - _S.last < every:
                continue
            label, since = _S.label, _S.since
        if label:
            _write(f"daqakd: still {label} ({now - since:.0f} s)")
        else:
            _write(f"daqakd: still working ({now - since:.0f} s)")
        _mark()  # also when stderr is not ours to tap


@contextmanager
def heartbeat(enabled: bool = True, *, label: str | None = None) -> Iterator[None]:
    """While the block runs, a ``still ...`` line whenever nothing was written on stderr for the interval.

    Nested blocks share the outermost one's thread. ``enabled=False`` (progress off, a rank other than 0)
    or an interval of 0 starts nothing."""
    every = interval()
    with _S.lock:
        _S.depth += 1
        owner = _S.depth == 1
        if owner:
            _S.last = time.monotonic()
        if label is not None:
            _S.label, _S.since = label, time.monotonic()
    stop = threading.Event()
    thread = tap = None
    if owner and enabled and every > 0:
        tap = _Tap(sys.stderr)
        sys.stderr = tap
        thread = threading.Thread(target=_beat, args=(stop, every), name="daqakd-heartbeat", daemon=True)
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=2)
        if tap is not None and sys.stderr is tap:  # not if someone replaced it meanwhile (they restore theirs)
            sys.stderr = tap._inner
        with _S.lock:
            _S.depth -= 1


def bar(iterable: Iterable[Any], *, desc: str, enabled: bool, **kw: Any) -> Any:
    """A tqdm bar, drawn on a terminal only (tqdm's ``disable=None``); off a terminal the heartbeat speaks."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=None if enabled else True, dynamic_ncols=True, leave=False, **kw)
