"""Full-precision teacher training and evaluation helpers."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .checks import check_finite_model, check_lr
from .data import AnyBundle, DataBundle, make_loader
from .errors import ConfigError, DataError, NonFiniteError
from .models import as_tensor, check_model_fits_data, load_model, save_model

if TYPE_CHECKING:
    from .contracts import Augmentation
    from .streams import Normalizer, TrainLoader

__all__ = ["evaluate", "evaluate_loader", "predict_logits", "train_teacher", "default_arch", "teacher_arch", "get_or_train_teacher",
           "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch RNGs."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512, device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode (restores the previous mode)."""
    was = model.training
    model.eval()
    try:
        outs = [as_tensor(model(x[i : i + batch_size].to(device))).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was)
    return torch.cat(outs)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``: exact hits / n, so it equals the count an exported
    runtime gets on the same predictions (a float32 mean can differ by ~1e-8)."""
    hits = int((predict_logits(model, x, batch_size, device).argmax(1) == y.cpu()).sum())
    return hits / max(1, len(y))


def evaluate_loader(model: nn.Module, loader: Any, *, device: str | torch.device = "cpu",
                    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Top-1 accuracy over a loader of clean batches (see :func:`evaluate_counts`)."""
    hits, n = evaluate_counts(model, loader, device=device, normalize=normalize)
    return hits / max(1, n)


def evaluate_counts(model: nn.Module, loader: Any, *, device: str | torch.device = "cpu",
                    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[int, int]:
    """Top-1 hits and samples over a :func:`daqakd_plugins.streams.eval_loader` (clean batches, eval mode,
    no grad, QuantTensor outputs unwrapped): exact counts, so ranks' shares can be summed."""
    was = model.training
    model.eval()
    hits, n = 0, 0
    try:
        with torch.no_grad():
            for b in loader:
                x = b.images.to(device, non_blocking=True)
                x = normalize(x) if normalize else x
                pred = as_tensor(model(x)).argmax(1).cpu()
                hits += int((pred == b.targets.argmax(1)).sum())
                n += len(pred)
    finally:
        model.train(was)
    return hits, n


def default_arch(bundle: AnyBundle) -> dict[str, Any]:
    """A teacher size that fits the data: 1 stage for tiny images, a ResNet-8 for 32×32 and up."""
    c, h, _ = bundle.image_shape
    if h <= 16:
        return {"name": "small_resnet", "in_channels": c, "num_classes": bundle.num_classes, "width": 32, "stages": 1}
    return {"name": "small_resnet", "in_channels": c, "num_classes": bundle.num_classes, "width": 16, "stages": 3}


def teacher_arch(bundle: AnyBundle, name: str | None = None, *, num_classes: int | None = None,
                 small_input: bool = False) -> dict[str, Any]:
    """The architecture spec for ``--arch NAME`` on this data (``None``: :func:`default_arch`).
    ``num_classes`` defaults to the data's classes, ``in_channels`` comes from the images."""
    from .models import arch_spec

    if name is None or name == "small_resnet":
        spec = default_arch(bundle)
        if num_classes is not None:
            spec["num_classes"] = num_classes
        return spec
    opts: dict[str, Any] = {"small_input": True} if small_input else {}
    return arch_spec(name, num_classes=num_classes or bundle.num_classes, in_channels=bundle.image_shape[0], **opts)


def _check_training_args(bundle: AnyBundle, epochs: int, lr: float) -> None:
    """Refuse ``epochs`` < 1, a learning rate :func:`check_lr` rejects, and data with fewer than 2 classes."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be an integer ≥ 1, got {epochs!r}")
    check_lr(lr, flag="lr (--lr)")
    if bundle.num_classes < 2:
        raise DataError(
            f"the data has {bundle.num_classes} class ({', '.join(bundle.classes)}); a classifier needs at least 2 "
            "classes (an ImageFolder directory needs one sub-folder per class)."
        )


def _build_teacher(bundle: AnyBundle, arch: dict[str, Any] | None, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """Seed every RNG with ``seed``, then build ``arch`` (``None``: :func:`default_arch`) with fresh weights,
    checked against the data's classes and image shape. Returns ``(model, arch)``."""
    from .models import build_model

    seed_everything(seed)
    arch = arch or default_arch(bundle)
    nc = bundle.num_classes
    if arch.get("num_classes") not in (None, nc):
        raise ConfigError(f"--num-classes {arch.get('num_classes')} but the data has {nc} classes "
                          f"({', '.join(map(str, bundle.classes[:10]))}{' ...' if nc > 10 else ''}); drop --num-classes "
                          f"(it defaults to the data's class count) or pass --num-classes {nc}.")
    model = build_model(arch)
    check_model_fits_data(model, bundle.image_shape, nc, what=f"the teacher architecture {arch.get('name')!r}")
    return model, arch


def _teacher_loader(bundle: AnyBundle, base: Augmentation | None, *, batch_size: int, seed: int,
                    workers: int) -> tuple[Any, TrainLoader | None]:
    """The shuffled training batches, ``(loader, stream)``: in-memory tensors are batched here (``stream`` is
    ``None``; the base runs per batch in the loop), a folder streams through DataLoader workers that run the
    base per image (``stream`` is that loader)."""
    from .streams import train_loader

    if isinstance(bundle, DataBundle):
        return make_loader(bundle.train_x, bundle.train_y, batch_size, shuffle=True, seed=seed), None
    stream = train_loader(bundle.train, base, num_classes=bundle.num_classes, batch_size=batch_size, seed=seed,
                          workers=workers)
    return stream, stream


def _train_epoch(model: nn.Module, loader: Any, stream: TrainLoader | None, epoch: int, *,
                 opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, norm: Normalizer,
                 base: Augmentation | None, augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
                 num_classes: int, lr: float) -> float:
    """One epoch of cross-entropy training over ``loader`` (base, then ``augment``, then ``norm`` on each
    batch); returns the loss summed over the samples. A non-finite loss raises :class:`NonFiniteError`."""
    model.train()
    tot = 0.0
    if stream is not None:
        stream.set_epoch(epoch)
    for batch in loader:
        if stream is not None:
            xb, t = batch.images, batch.targets
        else:
            xb, t = batch[0], torch.nn.functional.one_hot(batch[1], num_classes).float()
            if base is not None:
                xb, t = base(xb, t)
        if augment is not None:
            xb, t = augment(xb, t)
        loss = torch.nn.functional.cross_entropy(model(norm(xb)), t)
        if not torch.isfinite(loss):
            raise NonFiniteError(
                f"teacher training diverged (loss {float(loss.detach())}) at lr {lr:g}; lower --lr (the default is 3e-3). "
                "Nothing was saved."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        tot += float(loss.detach()) * len(xb)
    return tot


def _trained_accuracy(model: nn.Module, bundle: AnyBundle, norm: Normalizer, *, workers: int, lr: float) -> float:
    """Put the trained ``model`` in eval mode, refuse non-finite weights, and return its test accuracy."""
    from .streams import eval_loader

    model.eval()
    check_finite_model(model, what="the trained teacher", fix=f"training diverged at lr {lr:g}: lower --lr. Nothing was saved.")
    if isinstance(bundle, DataBundle) and not norm:
        return evaluate(model, bundle.test_x, bundle.test_y)
    return evaluate_loader(model, eval_loader(bundle.test, num_classes=bundle.num_classes, workers=workers),
                           normalize=norm)


def train_teacher(
    bundle: AnyBundle,
    *,
    epochs: int = 15,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    arch: dict[str, Any] | None = None,
    augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: bool = True,
    workers: int | None = 0,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    base_augment: str | Callable[..., Any] | None = "auto",
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a full-precision teacher (Adam + one-cycle schedule), its batches through ``base_augment``
    (:func:`daqakd_plugins.augment.resolve_base`: ``auto`` = crop-flip for 16-64 px images, rrc-flip above,
    none below) and then ``augment``. Returns ``(model, meta)``; ``meta``
    holds the architecture, test accuracy, seconds and the normalisation (``normalize``: ``(mean, std)``
    applied to its inputs; later runs read it from the teacher file). In-memory data is batched from its
    tensors; a folder streams through DataLoader workers (``workers``)."""
    from tqdm.auto import trange

    from .augment import resolve_base
    from .streams import Normalizer, resolve_workers

    _check_training_args(bundle, epochs, lr)
    model, arch = _build_teacher(bundle, arch, seed)
    norm = Normalizer(*(normalize or (None, None)))
    norm.check_channels(bundle.image_shape[0])
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    nworkers = resolve_workers(workers)
    base = resolve_base(base_augment, bundle.image_shape)
    loader, stream = _teacher_loader(bundle, base, batch_size=batch_size, seed=seed, workers=nworkers)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader))
    t0 = time.perf_counter()
    bar = trange(epochs, desc="teacher", unit="epoch", disable=None if progress else True)
    # tqdm draws nothing when stderr is not a terminal (a log, CI): then one line per epoch instead
    lines = progress and bar.disable and not os.environ.get("TQDM_DISABLE")
    for epoch in bar:
        tot = _train_epoch(model, loader, stream, epoch, opt=opt, sched=sched, norm=norm, base=base, augment=augment,
                           num_classes=bundle.num_classes, lr=lr)
        bar.set_postfix(loss=f"{tot / len(bundle.train_labels):.3f}")
        if lines:
            print(f"teacher epoch {epoch + 1}/{epochs}: loss {tot / len(bundle.train_labels):.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    acc = _trained_accuracy(model, bundle, norm, workers=nworkers, lr=lr)
    meta = {"arch": arch, "test_accuracy": acc, "epochs": epochs, "seed": seed, "data": bundle.name,
            "seconds": round(time.perf_counter() - t0, 3), "base_augment": base.name if base is not None else "none"}
    if norm:
        meta["normalize"] = norm.to_dict()
    return model, meta


def get_or_train_teacher(bundle: AnyBundle, path: str | Path | None, **kw: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Load the teacher at ``path`` if it exists, else train one (and save it there when given)."""
    if path is not None and Path(path).exists():  # a factory is rebuilt only if the caller names it (arch=...)
        return load_model(path, trust_factory=str((kw.get("arch") or {}).get("name", "")) or False)
    model, meta = train_teacher(bundle, **kw)
    if path is not None:
        save_model(path, model, meta["arch"], meta)
    return model, meta


