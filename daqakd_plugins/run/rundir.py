"""The rules of a run directory, in one place: which files a run writes (and ``--fresh`` deletes), when a
new run may start in it, when ``--resume`` may continue it, and the lock that keeps two processes from
writing one run at the same time.

The lock is a file, ``OUT/.daqakd-run.lock``, created with ``O_CREAT | O_EXCL`` (atomic on a local
filesystem) and holding the owner's host and pid. A second ``daqakd distill --out OUT`` (or ``--resume
OUT``) while the owner lives is refused, naming it. A lock whose owner is gone (SIGKILL, a crash; same
host, the pid no longer runs) is stale and taken over, so a killed run can always be resumed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from ..distill.checkpoint import CHECKPOINT_NAME
from ..distill.config import TRAJECTORY
from ..distill.student_file import STUDENT_NAME
from ..errors import CheckpointError, RunDirError

__all__ = ["RUN_FILES", "LOCK_NAME", "GENERATOR_NAME", "RunLock", "claim_run_dir", "check_resume"]

GENERATOR_NAME = "generator.pt"
LOCK_NAME = ".daqakd-run.lock"

#: the files a run writes into its directory; --fresh deletes exactly these
RUN_FILES = (CHECKPOINT_NAME, STUDENT_NAME, "report.json", "report.md", "report.png", "teacher.pt", "export",
             GENERATOR_NAME, "search.jsonl")



def _alive(pid: int) -> bool:
    """The process runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): trust the signal check
        return True


class RunLock:
    """One process at a time writes a run directory (see the module's notes)."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / LOCK_NAME
        self.held = False

    def owner(self) -> dict[str, Any] | None:
        """The live owner's record, or ``None`` when nobody (or only a dead process) holds the lock."""
        try:
            rec = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            rec = {}
        pid, host = rec.get("pid"), rec.get("host")
        if isinstance(pid, int) and host == socket.gethostname() and not _alive(pid):
            return None  # stale: its process is gone
        if not isinstance(pid, int) and time.time() - self.path.stat().st_mtime > 60:
            return None  # unreadable and old: a writer died between create and write
        return rec

    def acquire(self, *, resuming: bool = False) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                rec = self.owner()
                if rec is not None:
                    raise RunDirError(self._busy(rec, resuming)) from None
                self.path.unlink(missing_ok=True)  # stale: take it over
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, fh)
            self.held = True
            return
        raise RunDirError(f"cannot take the run lock {self.path}; another process keeps replacing it.")

    def _busy(self, rec: dict[str, Any], resuming: bool) -> str:
        out = self.path.parent
        who = f"process {rec.get('pid', '?')} on {rec.get('host', '?')}"
        if resuming:
            return (f"cannot resume {out}: its run is still going ({who} holds {self.path.name}). Wait for it to "
                    f"end, or stop it first; `daqakd distill --resume {out}` then continues from its last checkpoint.")
        return (f"{out} is in use: another daqakd run ({who}) is writing there. Pass another --out, or wait for "
                "it to end.")

    def release(self) -> None:
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)


def claim_run_dir(out: Path, *, fresh: bool, teacher: str | None) -> None:
    """A new run may not write over an earlier one: refuse (naming ``--resume`` and ``--fresh``), or with
    ``fresh`` delete the earlier run's files first, so nothing of it is left next to the new report
    (the teacher the user passed is input, never deleted)."""
    found = [n for n in RUN_FILES if (out / n).exists()]
    if not found:
        return
    if not fresh:
        unfinished = (out / CHECKPOINT_NAME).exists() and not (out / "report.json").exists()
        state = "an unfinished run (checkpoint.pt)" if unfinished else "a daqakd run"
        raise RunDirError(
            f"{out} already holds {state} ({', '.join(found)}). Continue it with `daqakd distill --resume {out}`, "
            f"or start over with --fresh (deletes {', '.join(found)} there), or pass another --out."
        )
    keep = Path(teacher).resolve() if teacher else None
    for n in found:
        p = out / n
        if keep is not None and p.resolve() == keep:
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _calibration(cfg: dict[str, Any]) -> str:
    """What a config calibrates on: a run from before ``calib_images`` (``calib_batches`` 8 at batch size 64)
    and a run with the default 512 images calibrate on the same sample."""
    from ..distill.config import DEFAULT_CALIB_IMAGES

    if cfg.get("data_free"):
        return f"{cfg.get('calib_batches') or 8} generated batches"
    if cfg.get("calib_batches") is not None:
        return f"{cfg['calib_batches'] * cfg.get('batch_size', 64)} training images"
    return f"{cfg.get('calib_images') or DEFAULT_CALIB_IMAGES} training images"


def check_resume(new: dict[str, Any], old: dict[str, Any]) -> None:
    """A resumed run must agree with its checkpoint on every :data:`TRAJECTORY` setting and the teacher.
    How ``--augment auto`` ranks (candidates, metric, ranking sample) counts only for a run that ranked: a
    default that changed since (``metric``: ``cmi`` before ``teacher-ce``) does not block a fixed-augment run."""
    calib = ("calib_batches", "calib_images")
    searched = any(str(d.get("augment") or "").lower().startswith("search:") for d in (old, new))
    ranked = "auto" in (old.get("augment"), new.get("augment")) or searched
    skip = set(calib) | (set() if ranked else {"candidates", "metric", "rank_per_class", "rank_repeats"}) \
        | (set() if searched else {"search_n", "search_top_k"})
    diff = [f"{k}: checkpoint {old.get(k)!r} vs now {new.get(k)!r}" for k in TRAJECTORY
            if k not in skip and old.get(k) != new.get(k)]
    if _calibration(old) != _calibration(new):  # the same sample, however it was asked for, is the same run
        diff.append(f"calibration: checkpoint {_calibration(old)} vs now {_calibration(new)} "
                    f"(calib_images / calib_batches)")
    if new.get("teacher") != old.get("teacher"):
        diff.append(f"teacher: checkpoint {old.get('teacher')!r} vs now {new.get('teacher')!r}")
    if diff:
        raise CheckpointError(
            "cannot resume: the run's settings differ from the checkpoint's (" + "; ".join(diff) + "). "
            "Resume with the original settings (omit them: `daqakd distill --resume DIR` reads them from "
            "the checkpoint) or start a new run in another --out directory."
        )
