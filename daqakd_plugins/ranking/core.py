"""``rank_augmentations``: score every candidate augmentation with a frozen teacher, in one pass each.

For each candidate and repeat the samples are visited once, in a shuffled order that depends only on
``seed + repeat`` (the same for every candidate, so candidates are compared on the same batches), and
torch's RNG is reseeded with ``seed + repeat`` before the candidate runs (so a candidate's score does not
depend on which other candidates are ranked or in what order). Per batch: augment on the teacher's
device → teacher forward under ``inference_mode`` → metric accumulator.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..augment import candidate_notes, resolve_candidates
from ..checks import check_batch as check_images_and_labels
from ..contracts import Augmentation, Metric, MetricBatch, MetricResult, PlannedMetricAccumulator
from ..data import DataBundle, one_hot, stratified_subset, tensors_from_dataset
from ..errors import ConfigError, DaqakdError, DataError, ModelError, PluginError, UnknownNameError
from .metrics import check_batch
from .result import RankEntry, Ranking

__all__ = ["rank_augmentations", "prepare_data", "resolve_metric", "RankData"]

log = logging.getLogger("daqakd.ranking")


class RankData:
    """The samples a ranking visits: images ``[N, C, H, W]`` float, targets ``[N, K]`` distributions."""

    def __init__(self, x: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, num_classes: int, name: str,
                 notes: list[str]) -> None:
        self.x, self.targets, self.labels = x, targets, labels
        self.num_classes, self.name, self.notes = num_classes, name, notes

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor, str, int | None]:
    if isinstance(data, DataBundle):
        return data.train_x, data.train_y, data.name, data.num_classes
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0], data[1], "tensors", None
    if isinstance(data, torch.utils.data.Dataset):
        x, y = tensors_from_dataset(data)
        return x, y, type(data).__name__, None
    raise DataError(
        f"cannot rank on {type(data).__name__}; pass a DataBundle (its train split is used), a map-style torch "
        "Dataset of (image tensor, label) pairs, or an (images [N,C,H,W], labels [N]) tensor pair."
    )


def _probe_width(teacher: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    with torch.inference_mode():
        out = teacher(x[:2].to(device))
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"the teacher returned {type(out).__name__}; it must return a logits tensor [batch, classes] "
            "(wrap it, e.g. lambda x: model(x).logits, in an nn.Module)."
        )
    if out.dim() != 2:
        raise ModelError(f"the teacher returned shape {tuple(out.shape)}; expected logits [batch, classes].")
    return int(out.shape[1])


def prepare_data(data: Any, teacher: nn.Module, *, num_classes: int | None, per_class: int | None, seed: int,
                 device: torch.device) -> RankData:
    """Validate and materialise the ranking samples; every data problem is raised here, before any work."""
    x, y, name, bundle_classes = _as_tensors(data)
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise DataError("the data set is empty; rank on a data set with at least one labelled sample.")
    x, y = check_images_and_labels(x, y, where="the ranking data")  # the same rules as Distiller.loss
    width = _probe_width(teacher, x, device)
    c = num_classes if num_classes is not None else (bundle_classes if bundle_classes is not None else width)
    if c < 1:
        raise ConfigError(f"num_classes must be ≥ 1, got {c}")
    if width != c:
        raise ModelError(
            f"the teacher outputs {width} logits but the data has {c} classes; pass a teacher trained on this data "
            "(its last layer must have one output per class)" + (" or the right num_classes=." if num_classes else ".")
        )
    notes: list[str] = []
    if y.dim() == 1:
        if torch.is_floating_point(y):
            if not bool((y == y.round()).all()):
                raise DataError("labels are fractional; pass integer class labels [N] or label distributions [N, C].")
            y = y.long()
        targets = one_hot(y, c)  # raises DataError for labels outside [0, C)
        labels = y.long()
    elif y.dim() == 2:
        if y.shape[1] != c:
            raise DataError(f"label distributions have {y.shape[1]} columns but there are {c} classes.")
        targets = y.float()
        rows = targets.double().sum(1)
        if float(targets.min()) < 0 or float((rows - 1).abs().max()) > 1e-4:
            raise DataError("label distributions must be ≥ 0 with rows summing to 1.")
        labels = targets.argmax(1)
    else:
        raise DataError(f"labels must be [N] class indices or [N, C] distributions; got shape {tuple(y.shape)}.")
    if per_class is not None:
        if not (isinstance(per_class, int) and per_class >= 1):
            raise ConfigError(f"per_class must be an integer ≥ 1 (samples per class), got {per_class!r}")
        idx = stratified_subset(labels, per_class, seed=seed)
        counts = torch.bincount(labels[idx], minlength=c)
        short = [k for k in labels.unique().tolist() if int(counts[k]) < per_class]
        x, targets, labels = x[idx], targets[idx], labels[idx]
        notes.append(f"class-stratified subset: up to {per_class} samples per class ({len(idx)} samples, seed {seed})")
        if short:
            notes.append(f"classes {short} have fewer than {per_class} samples; all of theirs are used")
    missing = [k for k in range(c) if not bool((targets[:, k] > 0).any())]
    if missing:
        notes.append(f"classes {missing} have no samples in the data; they are excluded from D")
    # Keep the images' memory layout: ImageFolder data decodes channels-last, and on CPU the teacher ran
    # ~1.5x faster on it than on an NCHW-contiguous copy (benchmarks/rank_speed.py, docs/ranking.md).
    return RankData(x, targets.contiguous(), labels, c, name, notes)


def resolve_metric(metric: str | Metric) -> Metric:
    """A registered metric name or a :class:`Metric` object."""
    from ..plugins import get_metrics

    if isinstance(metric, Metric):
        return metric
    metrics = get_metrics()
    if not isinstance(metric, str) or metric not in metrics:
        raise UnknownNameError("metric", str(metric), list(metrics),
                               "Register one with the daqakd_register_metrics hook.")
    return metrics[metric]


@contextmanager
def _teacher_ready(teacher: nn.Module, device: torch.device, notes: list[str]) -> Any:
    """Eval mode on ``device`` for the ranking; the teacher's mode and device are restored afterwards."""
    modes = [(m, m.training) for m in teacher.modules()]  # restore per module, not just the top flag
    training = [m for m, t in modes if t]
    params = list(teacher.parameters()) + list(teacher.buffers())
    orig_device = params[0].device if params else device
    if training:
        what = "the teacher was" if teacher.training else f"{len(training)} of the teacher's modules were"
        msg = (f"{what} in train mode; ranking switched it to eval mode (BatchNorm/Dropout must not "
               "change with augmented batches) and restores its mode afterwards. Call teacher.eval() to silence this.")
        warnings.warn(msg, UserWarning, stacklevel=4)
        log.warning(msg)
        notes.append("teacher was in train mode: ranked in eval mode")
    try:
        teacher.eval()
        if orig_device != device:
            teacher.to(device)
        yield teacher
    finally:
        if orig_device != device:
            teacher.to(orig_device)
        for m, t in modes:
            m.training = t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_candidate(
    aug: Augmentation, teacher: nn.Module, rd: RankData, metric: Metric, params: Mapping[str, Any], *,
    order: torch.Tensor, batch_size: int, seed: int, device: torch.device, progress: bool, label: str,
) -> MetricResult:
    """One pass of one candidate over the samples in ``order`` (one repeat)."""
    from tqdm.auto import tqdm

    from ..train import seed_everything

    acc = metric.create(rd.num_classes, **params)
    seed_everything(seed)
    n = len(order)
    nb = math.ceil(n / batch_size)
    bar = tqdm(range(nb), desc=label, unit="batch", leave=False, disable=None if progress else True)
    for b in bar:
        idx = order[b * batch_size : (b + 1) * batch_size]
        xb = rd.x.index_select(0, idx).to(device, non_blocking=True)
        tb = rd.targets.index_select(0, idx).to(device, non_blocking=True)
        with torch.inference_mode():
            try:
                xa, ta = aug(xb.clone() if metric.needs_clean else xb, tb)
            except DaqakdError:
                raise
            except Exception as exc:  # noqa: BLE001 - name the candidate and batch for any failure
                raise PluginError(
                    f"candidate {aug.name!r} failed on batch {b} (images {tuple(xb.shape)} {xb.dtype} on {device}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if metric.needs_clean:
                out = teacher(torch.cat([xb, xa]))
                clean, logits = out[: xb.shape[0]], out[xb.shape[0] :]
            else:
                clean, logits = None, teacher(xa)
        check_batch(logits, ta, rd.num_classes, candidate=aug.name, batch_index=b)
        acc.update(MetricBatch(logits=logits, targets=ta, clean_logits=clean, candidate=aug.name, batch_index=b))
    return acc.result()


def _mean_std(vals: list[float]) -> tuple[float, float]:
    t = torch.tensor(vals, dtype=torch.float64)
    mean = float(t.mean())
    std = float(t.std(unbiased=True)) if len(vals) > 1 else float("nan")
    return mean, std


def rank_augmentations(
    teacher: nn.Module,
    data: DataBundle | torch.utils.data.Dataset[Any] | tuple[torch.Tensor, torch.Tensor],
    candidates: Iterable[str | Augmentation | Callable[..., Any]] | str | None = None,
    metric: str | Metric = "cmi",
    *,
    metric_params: Mapping[str, Any] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    repeats: int = 1,
    per_class: int | None = None,
    device: str | torch.device | None = "cpu",
    num_classes: int | None = None,
    progress: bool = True,
) -> Ranking:
    """Rank candidate augmentations for distilling from ``teacher`` (lower score is better for ``cmi``).

    :param teacher: the frozen full-precision model; left in train mode it is ranked in eval mode (with a
        warning) and its mode and device are restored afterwards.
    :param data: a :class:`DataBundle` (its train split), a map-style ``Dataset`` of ``(image, label)``, or
        an ``(images, labels)`` pair; labels are class indices ``[N]`` or distributions ``[N, C]``.
    :param candidates: ``None`` for the paper's 16 torchvision candidates; otherwise names (``A+cutmix``
        composes; groups ``paper``, ``kornia``, ``torchvision``, ``all``), :class:`Augmentation` objects or
        callables ``fn(images, targets) -> (images, targets)``.
    :param metric: ``"cmi"`` (the paper), ``"tstddev"`` (Good-DA-in-KD baseline) or a registered metric.
    :param metric_params: e.g. ``{"w_CE": 1.0, "w_D": 0.0}`` for the authors' CE − I variant.
    :param repeats: independent passes with seeds ``seed, seed+1, ...``; entries report mean and std.
    :param per_class: rank on a class-stratified subset of this many samples per class.
    :param device: where the teacher and the augmentations run (``None``: the teacher's device).
    :param num_classes: defaults to the bundle's classes, else the teacher's output width.
    """
    if not isinstance(teacher, nn.Module):
        raise ModelError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ConfigError(f"repeats must be an integer ≥ 1, got {repeats!r}")
    if device is None:
        p = next(iter(teacher.parameters()), None)
        dev = p.device if p is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} requested but CUDA is not available here; use device='cpu'.")
    met = resolve_metric(metric)
    params = dict(metric_params or {})
    cands = resolve_candidates(candidates)
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    notes: list[str] = []
    with _teacher_ready(teacher, dev, notes):
        rd = prepare_data(data, teacher, num_classes=num_classes, per_class=per_class, seed=seed, device=dev)
        notes = notes + rd.notes
        probe = met.create(rd.num_classes, **params)  # unknown metric parameters fail here, before any work
        n = len(rd)
        nb = math.ceil(n / batch_size)
        if isinstance(probe, PlannedMetricAccumulator):
            probe.check_plan(nb, batch_size, n)
        shape = tuple(int(s) for s in rd.x.shape[1:])
        orders = [torch.randperm(n, generator=torch.Generator().manual_seed(seed + r)) for r in range(repeats)]
        entries: list[RankEntry] = []
        outer = tqdm(total=len(cands) * repeats, desc=f"rank ({met.name})", unit="pass",
                     disable=None if progress else True)
        try:
            for aug in cands:
                results: list[MetricResult] = []
                t0 = time.perf_counter()
                for r in range(repeats):
                    outer.set_postfix_str(aug.name + (f" r{r}" if repeats > 1 else ""))
                    results.append(_run_candidate(
                        aug, teacher, rd, met, params, order=orders[r], batch_size=batch_size, seed=seed + r,
                        device=dev, progress=progress, label=aug.name,
                    ))
                    outer.update(1)
                _sync(dev)
                secs = time.perf_counter() - t0
                entries.append(_entry(aug, results, secs, shape))
        finally:
            outer.close()
    return Ranking(
        metric=met.name,
        entries=entries,
        lower_is_better=met.lower_is_better,
        seed=seed,
        repeats=repeats,
        per_class=per_class,
        batch_size=batch_size,
        num_classes=rd.num_classes,
        num_samples=len(rd),
        data=rd.name,
        device=str(dev),
        metric_params=params,
        notes=notes,
        seconds=time.perf_counter() - t_start,
    )


def _entry(aug: Augmentation, results: list[MetricResult], seconds: float, shape: tuple[int, ...]) -> RankEntry:
    score, score_std = _mean_std([r.score for r in results])
    comps: dict[str, float] = {}
    comps_std: dict[str, float] = {}
    for k in results[0].components:
        comps[k], comps_std[k] = _mean_std([r.components.get(k, float("nan")) for r in results])
    notes = list(dict.fromkeys(candidate_notes(aug, shape) + [n for r in results for n in r.notes]))
    return RankEntry(
        name=aug.name,
        score=score,
        score_std=score_std,
        components=comps,
        components_std=comps_std,
        n=results[0].n,
        classes_seen=max(r.classes_seen for r in results),
        seconds=seconds,
        notes=notes,
        scores=[r.score for r in results],
        family=aug.family,
        description=aug.description,
    )
