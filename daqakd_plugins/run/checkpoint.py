"""The run checkpoint as a typed, versioned record (:class:`Checkpoint`).

On disk it is one flat dict of weights_only-safe values (tensors, numbers, strings, lists, dicts) written
atomically by :func:`daqakd_plugins.distill.checkpoint.atomic_save`: the engine's fields, plus the batch
source's own state (a data-free run's generator and its optimizer) under the source's keys. Versions:

* 1 — ``daqakd-distill-checkpoint/1``; a data-free run's also had ``kind: daqakd-datafree/1``. Loads.
* 2 — ``daqakd-run-checkpoint/2``: adds ``mode`` (the batch source: ``data`` or ``data-free``).

A file of another version is refused with a message naming its version and the readable ones.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..distill import checkpoint as store
from ..distill.config import LEGACY_DEFAULTS
from ..errors import CheckpointError

__all__ = ["Checkpoint", "VERSION", "load"]

VERSION = 2
FORMAT = store.FORMAT
#: format string -> version, for every format this daqakd reads
READABLE = {"daqakd-distill-checkpoint/1": 1, FORMAT: VERSION}
_V1_DATAFREE = "daqakd-datafree/1"


@dataclass
class Checkpoint:
    """Everything a run needs to continue after ``epoch`` finished epochs (see the module's notes)."""

    epoch: int
    mode: str
    config: dict[str, Any]
    student: Any  # the backend's save_student payload
    distiller: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    augmentation: str
    ranking: dict[str, Any] | None
    history: list[dict[str, Any]]
    teacher_path: str
    student_before: float
    seconds: float
    world_size: int = 1
    #: the bit plan the student was built with (:func:`daqakd_plugins.run.plan.choose`); ``{}`` before plans
    bit_plan: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # the batch source's state, its own keys
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "mode": self.mode, "epoch": self.epoch, "student": self.student,
                             "distiller": self.distiller, "optimizer": self.optimizer, "scheduler": self.scheduler,
                             "rng": self.rng, "augmentation": self.augmentation, "ranking": json.dumps(self.ranking),
                             "history": json.dumps(self.history), "config": json.dumps(self.config),
                             "teacher_path": self.teacher_path, "student_before": self.student_before,
                             "seconds": self.seconds, "world_size": self.world_size,
                             "bit_plan": json.dumps(self.bit_plan)}
        clash = set(d) & set(self.source)
        if clash:
            raise CheckpointError(f"the batch source's state uses the engine's checkpoint keys {sorted(clash)}")
        return {**d, **self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "the checkpoint") -> Checkpoint:
        fmt = d.get("format")
        version = READABLE.get(fmt) if isinstance(fmt, str) else None
        if version is None:
            readable = ", ".join(f"{v} ({f})" for f, v in READABLE.items())
            raise CheckpointError(f"{where} has checkpoint format {fmt!r}, which this daqakd does not read (it reads "
                                  f"versions {readable}); finish it with the daqakd that wrote it, or start a new run.")
        mode = d.get("mode") or ("data-free" if d.get("kind") == _V1_DATAFREE else "data")
        names = {f.name for f in dataclasses.fields(cls)} | {"format", "kind"}
        try:
            return cls(
                epoch=int(d["epoch"]), mode=str(mode), student=d["student"],
                config={**LEGACY_DEFAULTS, **json.loads(d["config"])},  # a field added later: what the run used
                distiller=d["distiller"], optimizer=d["optimizer"], scheduler=d["scheduler"], rng=d["rng"],
                augmentation=str(d["augmentation"]), ranking=json.loads(d["ranking"]),
                history=json.loads(d["history"]), teacher_path=str(d["teacher_path"]),
                student_before=float(d["student_before"]), seconds=float(d["seconds"]),
                world_size=int(d.get("world_size", 1)), bit_plan=json.loads(d.get("bit_plan") or "{}"), source={k: v for k, v in d.items() if k not in names},
                version=version,
            )
        except KeyError as exc:
            raise CheckpointError(f"{where} (version {version}) lacks {exc}; it is damaged. Start a new run.") from None

    def save(self, path: str | Path) -> Path:
        # through the module attribute, so a test may wrap the atomic write
        return store.atomic_save(self.to_dict(), path)


def load(path: str | Path) -> Checkpoint:
    """The checkpoint of a run directory (or the file itself), any readable version."""
    return Checkpoint.from_dict(store.load_checkpoint(path), where=str(path))
