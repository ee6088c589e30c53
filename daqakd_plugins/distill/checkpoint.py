"""Per-epoch checkpoints that resume bitwise on CPU and load with ``weights_only=True``.

Why each piece is saved: the student and optimizer (Adam moments) carry the training state; the
scheduler the learning-rate position; the RNG states the augmentation draws to come (torch, numpy and
python, all of which augmentation libraries use); the ranking result so a resumed run does not re-rank
(and cannot pick another augmentation). Everything is plain tensors, numbers, strings, lists and dicts,
so ``torch.load(..., weights_only=True)`` accepts it: no pickled code is ever executed on load.
Writes are atomic (temporary file + ``os.replace``), so a SIGKILL leaves the previous good checkpoint.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checks import safe_load_reason
from ..errors import CheckpointError

__all__ = ["CHECKPOINT_NAME", "atomic_save", "load_checkpoint", "capture_rng", "restore_rng", "safe_load_reason"]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "daqakd-run-checkpoint/2"  # daqakd_plugins.run.checkpoint: the versions and what each holds


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a distill checkpoint (a file, or a run directory holding ``checkpoint.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}; --resume takes the --out directory of an earlier `daqakd distill` run "
            "(it writes checkpoint.pt after every epoch)."
        )
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a checkpoint error
        raise CheckpointError(
            f"cannot load {path} safely (weights_only=True: {safe_load_reason(exc)}); it is not a daqakd "
            "distill checkpoint or it is damaged. Start a new run without --resume."
        ) from exc
    if not isinstance(ck, dict) or not str(ck.get("format", "")).startswith(("daqakd-distill-checkpoint/",
                                                                             "daqakd-run-checkpoint/")):
        raise CheckpointError(f"{path} is not a daqakd distill checkpoint (format {FORMAT!r}); start a new run.")
    return ck


def capture_rng() -> dict[str, Any]:
    """Every RNG state a training step may draw from, as weights_only-safe values."""
    st: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    st["numpy"] = {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }
    version, internal, gauss = random.getstate()
    st["python"] = {"version": int(version), "state": [int(v) for v in internal], "gauss": gauss}
    return st


def restore_rng(st: dict[str, Any]) -> None:
    """Undo :func:`capture_rng`."""
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
    n = st["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
