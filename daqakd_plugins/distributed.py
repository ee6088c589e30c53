"""torch.distributed for daqakd: ranking and distillation launched with ``torchrun`` (docs/scaling.md).

daqakd uses the process group PyTorch users already run — ``torchrun --nproc_per_node N`` (and its
multi-node form) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous; daqakd joins it with
NCCL on GPUs and gloo on CPUs. Without those variables (a plain ``daqakd ...`` or ``python``) nothing
here does anything: one process, world size 1.

A collective that waits for a rank that died or hangs fails after ``DAQAKD_DIST_TIMEOUT`` seconds
(default 300) instead of hanging; torchrun also stops the other ranks as soon as one exits with an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from .errors import ConfigError

__all__ = ["Dist", "launched", "setup", "current", "all_reduce_sum", "all_gather_object", "barrier",
           "broadcast_object", "broadcast_buffers", "main_first", "TIMEOUT_ENV"]

TIMEOUT_ENV = "DAQAKD_DIST_TIMEOUT"


@dataclass(frozen=True)
class Dist:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def device(self, device: str | torch.device) -> torch.device:
        """``cuda`` becomes this rank's GPU (``cuda:LOCAL_RANK``); other devices are kept."""
        dev = torch.device(device)
        if self.active and dev.type == "cuda" and dev.index is None:
            return torch.device("cuda", self.local_rank)
        return dev


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={v!r} is not an integer (set by torchrun).") from exc


def launched() -> bool:
    """True when this process was started by torchrun (or another launcher) with a world size above 1."""
    ws = _env_int("WORLD_SIZE")
    return ws is not None and ws > 1 and _env_int("RANK") is not None


def timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "300")
    try:
        secs = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} must be a number of seconds, e.g. 300.") from exc
    if secs <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} must be > 0 seconds.")
    return timedelta(seconds=secs)


def current() -> Dist:
    """The process group this process is in (world size 1 when none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK") or 0, str(dist.get_backend()))


def setup(device: str | torch.device = "cpu") -> Dist:
    """Join the torchrun process group (once per process; NCCL for CUDA devices, gloo otherwise) and
    return where this process stands. A plain single process gets ``Dist()`` (world size 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return current()
    if not launched():
        return Dist()
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run without torchrun (one process).")
    dev = torch.device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(_env_int("LOCAL_RANK") or 0)
    dist.init_process_group(backend=backend, timeout=timeout())
    return current()


def _ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum over ranks (float64 stays float64; on the group's device: CPU for gloo)."""
    if not _ready():
        return t
    import torch.distributed as dist

    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = t.detach().to(dev).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not _ready():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not _ready():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers (BatchNorm running statistics, quantizers' calibrated ranges) on every rank,
    in place: what DistributedDataParallel does at the start of every forward (``broadcast_buffers``).
    Needed after the last training step, whose forward updated each rank's running statistics from its
    own batch, before the replicas are evaluated, compared or saved."""
    if not _ready():
        return
    import torch.distributed as dist

    for buf in model.buffers():
        if buf.is_contiguous():
            dist.broadcast(buf.data, src=src)
        else:  # broadcast needs a dense tensor
            dense = buf.detach().contiguous()
            dist.broadcast(dense, src=src)
            buf.data.copy_(dense)


def barrier() -> None:
    if _ready():
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@contextmanager
def main_first() -> Iterator[bool]:
    """Rank 0 runs the block first (e.g. trains and saves a teacher); the others wait, then run it
    (e.g. load that file). Yields whether this process is rank 0. An error on rank 0 reaches the others
    as their collective failing (torchrun stops them), never as a hang."""
    d = current()
    if d.active and not d.is_main:
        barrier()
    yield d.is_main
    if d.active and d.is_main:
        barrier()
