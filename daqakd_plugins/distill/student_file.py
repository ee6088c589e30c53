"""The student file (``student.pt``): a trained student that restores without the command line that made it.

It holds the architecture of the float model, the backend, the full quantization config including
the adapter's options, and the adapter's own payload (``daqakd_save_student``), all loadable with
``torch.load(weights_only=True)``. :func:`load_student` rebuilds the float model, and the adapter
rebuilds the student from it (``daqakd_restore_student``). Versioned: ``format`` names the layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checks import safe_load_reason
from ..config import QuantConfig
from ..errors import CheckpointError
from .checkpoint import atomic_save

__all__ = ["STUDENT_NAME", "STUDENT_FORMAT", "save_student_file", "load_student"]

STUDENT_NAME = "student.pt"
STUDENT_FORMAT = "daqakd-student/2"


def save_student_file(path: str | Path, student: nn.Module, *, backend: str, config: QuantConfig,
                      arch: dict[str, Any] | None, input_shape: list[int], meta: dict[str, Any]) -> Path:
    """Write ``student`` atomically through its adapter's save hook, with everything needed to restore it."""
    from .. import backends
    from ..plugins import backend_status, get_backend
    from ..version import __version__

    if arch is None:
        raise CheckpointError(
            "the teacher has no recorded architecture, so its student cannot be rebuilt from a file; train or "
            "save the teacher with daqakd (save_model(path, model, arch)) so the architecture travels with it."
        )
    status = backend_status(get_backend(backend))
    return atomic_save(
        {
            "format": STUDENT_FORMAT,
            "backend": backend,
            "versions": {"daqakd": __version__, backend: status.get("version"), "torch": str(torch.__version__)},
            "quant_config": config.to_dict(),
            "arch": arch,
            "input_shape": [int(v) for v in input_shape],
            "payload": backends.save_student(student, backend, config),
            "meta": meta,
        },
        path,
    )


def load_student(path: str | Path, *, example_input: torch.Tensor | None = None,
                 trust_factory: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a student saved by ``daqakd distill`` (a run directory or its ``student.pt``) in a fresh
    process: the float architecture is rebuilt and the backend's adapter restores the student into it
    with the recorded quantization config and options (``weights_only=True``: no pickled code runs).
    Only registered architectures are rebuilt from the file's record; a student of your own
    ``package.module:factory`` needs ``trust_factory=True`` (importing and calling what a file names
    runs code)."""
    from .. import backends
    from ..models import build_model

    path = Path(path)
    if path.is_dir():
        path = path / STUDENT_NAME
    if not path.exists():
        raise CheckpointError(f"no student file at {path}; `daqakd distill --out DIR` writes DIR/{STUDENT_NAME}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a checkpoint error
        raise CheckpointError(f"cannot load {path} safely (weights_only=True: {safe_load_reason(exc)}); "
                              "it is not a daqakd student file or it is damaged.") from exc
    if isinstance(ck, dict) and ck.get("format") != STUDENT_FORMAT:
        from .checkpoint import FORMAT as CHECKPOINT_FORMAT

        what = None
        if ck.get("format") == CHECKPOINT_FORMAT:
            what = (f"the checkpoint of a distill run (continue it with `daqakd distill --resume {path.parent}`; "
                    f"the finished run writes {STUDENT_NAME} next to it)")
        elif "format" not in ck and "state_dict" in ck:
            what = "a float model file (a teacher from `daqakd teacher` / save_model): load it with daqakd_plugins.load_model"
        if what is not None:
            raise CheckpointError(f"{path} is not a student file: it is {what}. load_student takes the run directory "
                                  f"of `daqakd distill` or its {STUDENT_NAME}.")
    if not isinstance(ck, dict) or ck.get("format") != STUDENT_FORMAT:
        found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(
            f"{path} is not a daqakd student file of format {STUDENT_FORMAT!r} (found {found!r}); files "
            "written before daqakd-student/2 cannot be restored: re-run `daqakd distill --resume DIR` from "
            "its checkpoint or distill again."
        )
    fp = build_model(ck["arch"], trust_factory=trust_factory, where=str(path))
    if example_input is None:
        example_input = torch.zeros(1, *ck["input_shape"])
    config = QuantConfig.from_dict(ck["quant_config"])
    student = backends.restore_student(fp, ck["backend"], config, ck["payload"], example_input=example_input)
    meta = dict(ck.get("meta", {}))
    meta.update(backend=ck["backend"], quant_config=ck["quant_config"], versions=ck.get("versions", {}))
    return student, meta
