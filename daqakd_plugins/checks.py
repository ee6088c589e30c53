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

from .errors import CheckpointError, ConfigError, DataError, NonFiniteError

__all__ = ["check_output_dir", "check_output_file", "check_device", "check_batch", "check_finite_model",
           "check_lr", "check_model_file", "check_act_bits_default",
           "check_candidates", "new_dirs", "remove_empty_dirs", "safe_load_reason", "default_workers", "check_workers",
           "check_image_size", "check_normalization", "check_out_outside_data"]


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


def check_out_outside_data(out: str | Path, data: str | Path | None, *, flag: str = "--out") -> None:
    """A run directory must not be the data folder or inside it: the run's files would land among the
    images, and the next run would read ``export/`` or ``teacher.pt``'s folder as a class."""
    if data is None or str(data).lower() == "digits":
        return
    d = Path(data).expanduser()
    if not d.is_dir():
        return  # the data loader names a missing folder
    o, d = Path(out).expanduser().resolve(), d.resolve()
    if o == d or d in o.parents:
        where = "is" if o == d else "is inside"
        raise ConfigError(f"{flag} {out} {where} the data folder {data}: the run's files (checkpoint, export/, "
                          "report) would be written among the images and read as data by the next run. Pass "
                          f"a directory outside it, e.g. {flag} runs/{d.name}.")


def check_output_file(path: str | Path, *, flag: str) -> Path:
    """``path`` can be written as a file: not a directory, its directory writable (or creatable)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {p} is a directory; pass a file path (e.g. {p / 'out.json'}).")
    check_output_dir(p.parent, flag=f"{flag} {p}: the directory")
    return p


def new_dirs(path: str | Path) -> list[Path]:
    """The directories that creating ``path`` would make, deepest first (what a refused run removes)."""
    p, made = Path(path).absolute(), []
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    return made


def remove_empty_dirs(dirs: list[Path]) -> None:
    """Remove those of ``dirs`` (deepest first, from :func:`new_dirs`) that a failed run left empty;
    stop at the first one that holds something (its parents hold it too)."""
    for d in dirs:
        if not d.is_dir():
            continue
        if any(d.iterdir()):
            return
        d.rmdir()


_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save: a zip archive; the legacy format: a pickle


def check_model_file(path: str | Path, *, flag: str = "--teacher") -> Path:
    """``path`` is an existing file that torch wrote: checked before any data is loaded, so a wrong
    --teacher fails in the first second (and leaves no run directory behind)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{flag} {p} does not exist; train one with `daqakd teacher --out {p}`, or leave "
                              f"{flag} out to have a teacher trained.")
    if p.is_dir():
        inside = sorted(q.name for q in p.glob("*.pt"))[:3]
        raise CheckpointError(f"{flag} {p} is a directory; pass the model file"
                              + (f" (it holds {', '.join(inside)})." if inside else f" (e.g. {p / 'teacher.pt'})."))
    with open(p, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{flag} {p} is an empty file; pass a model file written by `daqakd teacher` or "
                              "torch.save(model.state_dict(), PATH).")
    if not head.startswith(_TORCH_MAGIC):
        raise CheckpointError(f"{flag} {p} is not a PyTorch file (torch.save writes a zip archive); pass a model "
                              "file written by `daqakd teacher` or torch.save(model.state_dict(), PATH).")
    return p


def check_act_bits_default(backend: str, bits: int | None, act_bits: int | None) -> None:
    """--act-bits defaults to --bits: when that default is outside the backend's activation range, say
    so (instead of blaming an --act-bits the user never typed)."""
    from .plugins import get_backend

    if bits is None or act_bits is not None:
        return
    info = get_backend(backend)
    lo, hi = info.act_bits
    wlo, whi = info.weight_bits
    if wlo <= bits <= whi and not lo <= bits <= hi:
        raise ConfigError(
            f"--bits {bits} also sets the activation bits (--act-bits defaults to --bits), and backend "
            f"{backend!r} quantizes activations with {lo}..{hi} bits; pass --act-bits in {lo}..{hi} (e.g. "
            f"--bits {bits} --act-bits {max(lo, min(hi, 8))})."
        )


def check_candidates(candidates: str | None, *, flag: str = "--candidates") -> None:
    """The ranking candidates resolve (known names, not an empty list) before any data is loaded."""
    from .augment import resolve_candidates

    if candidates is not None and not [c for c in candidates.split(",") if c.strip()]:
        raise ConfigError(f"{flag} {candidates!r} names no candidates; pass names or groups such as "
                          "'none,randaugment' or 'paper', or leave it out for the paper's 16.")
    resolve_candidates(candidates)


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


def default_workers() -> int:
    """DataLoader worker processes when none are asked for: half the cores this process may use (the
    other half runs the teacher and the student), at most 8, at least 0 on one core."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(0, min(8, cores // 2))


def check_workers(workers: Any, *, flag: str = "workers (--workers)") -> None:
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"{flag} must be an integer ≥ 0 (0 = load data in the main process), got {workers!r}.")


def check_image_size(size: Any, *, flag: str = "image_size (--image-size)") -> None:
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"{flag} must be a positive integer number of pixels (e.g. 32 or 224), got {size!r}.")


def check_normalization(mean: Any, std: Any) -> tuple[list[float] | None, list[float] | None]:
    """``--mean``/``--std``: both or neither, equal lengths (1 or the image channels), finite, std > 0.
    Returned as lists of floats (the form a run's config and checkpoint keep)."""
    if mean is None and std is None:
        return None, None
    if (mean is None) != (std is None):
        raise ConfigError("pass --mean and --std together (e.g. --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225), "
                          "or neither to use the teacher file's normalisation (none: images in [0, 1]).")
    out = []
    for flag, v in (("--mean", mean), ("--std", std)):
        if isinstance(v, str):
            v = [s for s in v.replace(" ", ",").split(",") if s]
        try:
            vals = [float(t) for t in (v if isinstance(v, (list, tuple)) else [v])]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{flag} {v!r} must be numbers, one per channel, e.g. 0.5 or 0.485,0.456,0.406.") from exc
        if not vals or not all(math.isfinite(t) for t in vals):
            raise ConfigError(f"{flag} {v!r} must be finite numbers, one per channel.")
        out.append(vals)
    if len(out[0]) != len(out[1]):
        raise ConfigError(f"--mean has {len(out[0])} values but --std has {len(out[1])}; give one per channel.")
    if any(s <= 0 for s in out[1]):
        raise ConfigError(f"--std {out[1]} must be > 0 for every channel.")
    return out[0], out[1]


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
    if len(x) == 0:
        raise DataError(f"{where}: the batch is empty (0 images); skip empty batches (e.g. DataLoader(..., "
                        "drop_last=True) when the data is smaller than a batch).")
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
        sums = y.detach().float().sum(dim=1)
        if not bool(torch.isfinite(y).all()) or bool((y < 0).any()) or not bool(torch.allclose(
                sums, torch.ones_like(sums), atol=1e-3)):
            raise DataError(f"{where}: [batch, classes] labels must be probability distributions (finite, ≥ 0, "
                            f"each row summing to 1; row sums here range {float(sums.min()):.3g}.."
                            f"{float(sums.max()):.3g}); pass class indices [batch] or normalised targets "
                            "(e.g. y.softmax(1) for logits, y / y.sum(1, keepdim=True) for counts).")
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
    if isinstance(exc, IsADirectoryError):
        return "it is a directory, not a file; pass the file inside it"
    text = str(exc)
    # What torch says about a file it did not write (a text file, an image, a truncated download):
    # a bare KeyError of a byte, "invalid load key", or a zip reader failure. Say that plainly.
    if (isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], int)) or "invalid load key" in text \
            or "PytorchStreamReader failed" in text or "Unsupported operand" in text or isinstance(exc, EOFError):
        return "not a PyTorch file, or a truncated one (torch.save writes a zip archive)"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            reason = line.split("WeightsUnpickler error:", 1)[1].split(" Please use", 1)[0].strip()
            rest = [ln.strip() for ln in lines[i + 1:] if ln.strip()]
            return reason or (rest[0].split(" Please use", 1)[0] if rest else type(exc).__name__)
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {first}" if "weights_only" not in first else type(exc).__name__
