"""One input-validation layer, run before any work or file is written.

The CLI, :func:`~daqakd_plugins.ranking.rank_augmentations`, :class:`~daqakd_plugins.distill.Distiller`,
:func:`~daqakd_plugins.distill.run_distill` and the adapters share these checks, so one mistake gets
one message (naming the problem and the fix) wherever it is made, and a run that cannot finish fails
in its first second instead of after an epoch. docs/troubleshooting.md lists the messages.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, DataError, NonFiniteError

__all__ = ["check_output_dir", "check_output_file", "check_device", "check_batch", "check_finite_model",
           "check_lr", "safe_load_reason"]


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_dir(d: Path) -> bool:
    """Really try: ``os.access`` says yes for root on a read-only filesystem."""
    try:
        fd, name = tempfile.mkstemp(prefix=".daqakd-write-check-", dir=d)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def check_output_dir(path: str | Path, *, flag: str = "--out") -> Path:
    """``path`` can hold a run's files: a directory (existing or to be made) that is writable. Creates
    nothing, so a run refused later leaves no empty directory behind."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p} is a file, not a directory; pass a directory for the run's files (it is "
                          "created if missing).")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise ConfigError(f"{flag} {p}: {base} is a file, so the directory cannot be created; pick another path.")
    if not _writable_dir(base):
        raise ConfigError(f"{flag} {p}: {base} is not writable (read-only filesystem or no permission); pick a "
                          "directory you can write to.")
    return p


def check_output_file(path: str | Path, *, flag: str) -> Path:
    """``path`` can be written as a file: not a directory, its directory writable (or creatable)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {p} is a directory; pass a file path (e.g. {p / 'out.json'}).")
    check_output_dir(p.parent, flag=f"{flag} {p}: the directory")
    return p


def check_device(device: str | torch.device) -> torch.device:
    """A torch device that exists on this machine, or the names that would work."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device {device!r} is not a torch device ({exc}); use 'cpu', 'cuda', 'cuda:0' or "
                          "'mps'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device!r} asks for CUDA, which this machine does not have (torch "
                          f"{torch.__version__}, CUDA available: no); use --device cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device!r}: there are {torch.cuda.device_count()} CUDA devices; use cuda:0 "
                          f"to cuda:{torch.cuda.device_count() - 1}.")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {device!r}: Apple MPS is not available here; use --device cpu.")
    return dev


def check_lr(lr: Any, *, flag: str = "lr") -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"{flag} must be a finite positive number (e.g. 1e-3), got {lr!r}.")
    return float(lr)


def check_batch(x: Any, y: Any, *, where: str = "the batch") -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[B, C, H, W]`` (float; uint8 is scaled to [0, 1]) and labels: class indices ``[B]``
    (integers; integral floats are converted) or label distributions ``[B, K]``. Raises a
    :class:`DataError` naming the fix for channels-last images, fractional labels, other shapes, and
    a different number of images and labels. Returns the (converted) pair."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError(f"{where}: images and labels must be torch tensors, got {type(x).__name__} and "
                        f"{type(y).__name__}; convert with torch.as_tensor(...).")
    if x.dim() != 4:
        raise DataError(f"{where}: images must be [batch, channels, height, width], got shape {tuple(x.shape)}"
                        + ("; add the batch dimension with x.unsqueeze(0)." if x.dim() == 3 else "."))
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        raise DataError(f"{where}: images of shape {tuple(x.shape)} look channels-last (NHWC); daqakd takes NCHW: "
                        "pass x.permute(0, 3, 1, 2).")
    if x.dtype == torch.uint8:
        x = x.float().div(255.0)
    elif not torch.is_floating_point(x):
        raise DataError(f"{where}: images are {x.dtype}; pass float images in [0, 1] (or uint8 0..255).")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels; pass one label per image.")
    if y.dim() == 1:
        if torch.is_floating_point(y):
            if not bool((y == y.round()).all()):
                raise DataError(f"{where}: labels are fractional floats; pass integer class indices (y.long()) or "
                                "label distributions [batch, classes].")
            y = y.long()
        elif y.dtype == torch.bool or torch.is_complex(y):
            raise DataError(f"{where}: labels are {y.dtype}; pass integer class indices.")
    elif y.dim() == 2:
        if not torch.is_floating_point(y):
            raise DataError(f"{where}: [batch, classes] label distributions must be float, got {y.dtype}.")
    else:
        raise DataError(f"{where}: labels must be class indices [batch] or distributions [batch, classes], got "
                        f"shape {tuple(y.shape)}.")
    return x, y


def check_finite_model(model: nn.Module, *, what: str, fix: str) -> None:
    """Refuse a model with NaN/inf weights (a diverged training, a broken file)."""
    bad = [n for n, t in [*model.named_parameters(), *model.named_buffers()]
           if torch.is_floating_point(t) and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteError(f"{what} has non-finite (NaN/inf) weights in {', '.join(bad[:4])}"
                             f"{' ...' if len(bad) > 4 else ''}; {fix}")


def safe_load_reason(exc: BaseException) -> str:
    """The part of a ``torch.load(weights_only=True)`` failure worth showing. torch's own message goes
    on to suggest ``weights_only=False``, which runs arbitrary code from the file: unsafe advice for a
    file from elsewhere, so it is dropped."""
    text = str(exc)
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].split(" Please use", 1)[0].strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {first}" if "weights_only" not in first else type(exc).__name__
