"""``rank_augmentations``: score every candidate augmentation with a frozen teacher, in one pass each.

For each candidate and repeat the samples are visited once, in a shuffled order that depends only on
``seed + repeat`` (the same for every candidate, so candidates are compared on the same batches). Every
random draw is seeded from ``seed + repeat`` and the sample's index (per-image pieces, in the DataLoader
workers) or the batch's number (mixers, device pieces): a candidate's score does not depend on which
other candidates are ranked, in what order, or on the number of workers (:mod:`daqakd_plugins.streams`).
Per batch: worker stages → device stage on the teacher's device → teacher forward under
``inference_mode`` → metric accumulator.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ..augment import candidate_notes, resolve_base, resolve_candidates, with_base
from ..checks import check_batch as check_images_and_labels
from ..config import DEFAULT_METRIC
from ..contracts import (
    Augmentation,
    Metric,
    MetricBatch,
    MetricResult,
    PlannedMetricAccumulator,
    ReducibleMetricAccumulator,
)
from ..data import DataBundle, FolderBundle, dataset_len, one_hot, stratified_subset
from ..errors import ConfigError, DaqakdError, DataError, ModelError, PluginError, UnknownNameError
from ..streams import (
    TAG_DEVICE,
    Batch,
    Key,
    Normalizer,
    Program,
    StreamLoader,
    dataset_tensors,
    derive_seed,
    device_stage,
    resolve_workers,
    to_image,
)
from .metrics import check_batch
from .result import RankEntry, Ranking

if TYPE_CHECKING:
    from ..distributed import Dist

__all__ = ["rank_augmentations", "prepare_data", "resolve_metric", "RankData", "DEFAULT_METRIC"]


log = logging.getLogger("daqakd.ranking")


class RankData:
    """The samples a ranking visits: ``dataset`` items at ``index`` (in that order before shuffling), read
    through a DataLoader; ``labels`` are their class indices (for the notes), ``image_shape`` (C, H, W)."""

    def __init__(self, dataset: Dataset[Any], index: torch.Tensor, labels: torch.Tensor | None, num_classes: int,
                 name: str, notes: list[str], image_shape: tuple[int, ...]) -> None:
        self.dataset, self.index, self.labels = dataset, index, labels
        self.num_classes, self.name, self.notes, self.image_shape = num_classes, name, notes, image_shape

    def __len__(self) -> int:
        return int(self.index.numel())


def _source(data: Any) -> tuple[Dataset[Any], torch.Tensor | None, str, int | None, torch.Tensor | None]:
    """(dataset, labels [N] or None, name, classes, targets [N, K] of a tensor pair or None)."""
    if isinstance(data, (DataBundle, FolderBundle)):
        return data.train, data.train_labels, data.name, data.num_classes, None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.shape[0] == 0 or y.shape[0] == 0:
            raise DataError("the data set is empty; rank on a data set with at least one labelled sample.")
        x, y = check_images_and_labels(x, y, where="the ranking data")  # the same rules as Distiller.loss
        return TensorDataset(x, y), None, "tensors", None, y
    if isinstance(data, Dataset):
        return data, _known_labels(data), type(data).__name__, None, None
    raise DataError(
        f"cannot rank on {type(data).__name__}; pass a DataBundle (its train split is used), a map-style torch "
        "Dataset of (image, label) pairs, or an (images [N,C,H,W], labels [N]) tensor pair."
    )


def _known_labels(ds: Dataset[Any]) -> torch.Tensor | None:
    """Class indices a dataset states without reading its images: ``targets`` (torchvision datasets) or
    a TensorDataset's second tensor."""
    t = getattr(ds, "targets", None)
    if t is not None:
        try:
            lab = torch.as_tensor(np.asarray(t))  # a list, a NumPy array or a tensor, without a Python loop
        except (TypeError, ValueError):
            return None
        return lab.long() if lab.dim() == 1 else None
    tensors = getattr(ds, "tensors", None)
    if tensors is not None and len(tensors) >= 2 and tensors[1].dim() == 1:
        return tensors[1].long()
    return None


def _probe(teacher: nn.Module, dataset: Dataset[Any], device: torch.device,
           normalize: Normalizer) -> tuple[int, tuple[int, ...]]:
    """The teacher's output width on the first sample, and the images' shape (C, H, W)."""
    dataset_len(dataset, "the data set is empty; rank on a data set with at least one labelled sample.")
    item = dataset[0]
    if not (isinstance(item, (tuple, list)) and len(item) >= 2):
        raise DataError(f"dataset item 0 is {type(item).__name__}; expected an (image, label) pair.")
    x = to_image(item[0], "dataset item 0")[None]
    normalize.check_channels(int(x.shape[1]))
    with torch.inference_mode():
        out = teacher(normalize(x.to(device)))
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"the teacher returned {type(out).__name__}; it must return a logits tensor [batch, classes] "
            "(wrap it, e.g. lambda x: model(x).logits, in an nn.Module)."
        )
    if out.dim() != 2:
        raise ModelError(f"the teacher returned shape {tuple(out.shape)}; expected logits [batch, classes].")
    return int(out.shape[1]), tuple(int(s) for s in x.shape[1:])


def prepare_data(data: Any, teacher: nn.Module, *, num_classes: int | None, per_class: int | None, seed: int,
                 device: torch.device, normalize: Normalizer | None = None, workers: int = 0) -> RankData:
    """Validate the ranking samples without reading them all; every problem found here is raised before
    any candidate runs (a bad file further in is named when it is read)."""
    normalize = normalize or Normalizer()
    dataset, labels, name, bundle_classes, pair_targets = _source(data)
    width, shape = _probe(teacher, dataset, device, normalize)
    c = num_classes if num_classes is not None else (bundle_classes if bundle_classes is not None else width)
    if c < 1:
        raise ConfigError(f"num_classes must be ≥ 1, got {c}")
    if width != c:
        raise ModelError(
            f"the teacher outputs {width} logits but the data has {c} classes; pass a teacher trained on this data "
            "(its last layer must have one output per class)" + (" or the right num_classes=." if num_classes else ".")
        )
    notes: list[str] = []
    if pair_targets is not None:
        y = pair_targets
        if y.dim() == 1:
            if torch.is_floating_point(y):
                if not bool((y == y.round()).all()):
                    raise DataError("labels are fractional; pass integer class labels [N] or label distributions [N, C].")
                y = y.long()
            one_hot(y, c)  # raises DataError for labels outside [0, C)
            labels = y.long()
            dataset = TensorDataset(dataset.tensors[0], labels)  # type: ignore[attr-defined]
        elif y.dim() == 2:
            if y.shape[1] != c:
                raise DataError(f"label distributions have {y.shape[1]} columns but there are {c} classes.")
            rows = y.double().sum(1)
            if float(y.min()) < 0 or float((rows - 1).abs().max()) > 1e-4:
                raise DataError("label distributions must be ≥ 0 with rows summing to 1.")
            labels = y.argmax(1)
            dataset = TensorDataset(dataset.tensors[0], y.float())  # type: ignore[attr-defined]
        else:
            raise DataError(f"labels must be [N] class indices or [N, C] distributions; got shape {tuple(y.shape)}.")
    elif labels is not None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c):
            one_hot(labels, c)  # the range error, naming the fix
    index = torch.arange(len(dataset))  # type: ignore[arg-type]
    if per_class is not None:
        if not (isinstance(per_class, int) and per_class >= 1):
            raise ConfigError(f"per_class must be an integer ≥ 1 (samples per class), got {per_class!r}")
        if labels is None:
            labels = dataset_tensors(dataset, num_classes=c, workers=workers, desc="read labels")[1]
        index = stratified_subset(labels, per_class, seed=seed)
        counts = torch.bincount(labels[index], minlength=c)
        short = [k for k in labels.unique().tolist() if int(counts[k]) < per_class]
        notes.append(f"class-stratified subset: up to {per_class} samples per class ({len(index)} samples, seed {seed})")
        if short:
            notes.append(f"classes {short} have fewer than {per_class} samples; all of theirs are used")
    sub = labels[index] if labels is not None else None
    if sub is not None:
        missing = [k for k in range(c) if not bool((sub == k).any())] if pair_targets is None or pair_targets.dim() == 1 \
            else [k for k in range(c) if not bool((pair_targets[index][:, k] > 0).any())]
        if missing:
            notes.append(f"classes {missing} have no samples in the data; they are excluded from D")
    return RankData(dataset, index, sub, c, name, notes, shape)


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
def teacher_ready(teacher: nn.Module, device: torch.device, notes: list[str]) -> Any:
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


def _plan_batches(num_candidates: int, rd: RankData, *, repeats: int, batch_size: int, seed: int,
                  split: bool, dist: Dist) -> list[list[Key]]:
    """This rank's batches in order, as keys ``(candidate, seed + repeat, batch number, index)``: every
    candidate × repeat pass over the samples in the repeat's shuffled order (the same for every candidate).
    Under a ``split`` whole batches go to ranks, so each batch is the single-process batch (the same teacher
    outputs); batch b of pass p goes to rank (b + p) mod world, so the short last batches rotate over the ranks."""
    n = len(rd)
    nb = math.ceil(n / batch_size)
    orders = [rd.index[torch.randperm(n, generator=torch.Generator().manual_seed(seed + r))].tolist()
              for r in range(repeats)]
    mine = []
    for ci in range(num_candidates):
        for r in range(repeats):
            order, p = orders[r], ci * repeats + r
            for b in range(nb):
                if not split or (b + p) % dist.world_size == dist.rank:
                    mine.append([(ci, seed + r, b, i) for i in order[b * batch_size : (b + 1) * batch_size]])
    return mine


class _RankProgress:
    """The ranking's progress: a bar counting candidates (× repeats), each advanced batch by batch
    ("s/candidate", not "s/batch"), or, off a terminal (a log, CI: tqdm draws nothing there), one line on
    stderr per candidate as it starts (issue 29's trial: 44-87 s of ranking printed no line)."""

    def __init__(self, cands: list[Augmentation], metric: str, repeats: int, seed: int, plan: list[list[Key]], *,
                 show: bool) -> None:
        from tqdm.auto import tqdm

        self.names, self.metric, self.repeats = [a.name for a in cands], metric, repeats
        self.per_pass: dict[int, int] = {}  # batches of each (candidate, repeat) pass on this rank
        for items in plan:
            key = items[0][0] * repeats + items[0][1] - seed  # (candidate, seed + repeat, ...)
            self.per_pass[key] = self.per_pass.get(key, 0) + 1
        self.bar = tqdm(total=len(cands) * repeats, desc=f"rank ({metric})", unit="candidate",
                        bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} candidates [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
                        disable=None if show else True, dynamic_ncols=True)
        self.lines = bool(show and self.bar.disable)
        self.current: tuple[int, int] | None = None
        self.started = 0

    def batch_of(self, ci: int, r: int) -> None:
        """A batch of candidate ``ci``'s repeat ``r`` is being scored: name the pass when it is a new one."""
        if (ci, r) == self.current:
            return
        self.current = (ci, r)
        self.bar.set_postfix_str(self.names[ci] + (f" r{r}" if self.repeats > 1 else ""))
        self.started += 1
        if self.lines:
            print(f"daqakd: ranking ({self.metric}) {self.started}/{len(self.names) * self.repeats}: {self.names[ci]}"
                  + (f" (repeat {r + 1})" if self.repeats > 1 else ""), file=sys.stderr, flush=True)

    def done(self, ci: int, r: int) -> None:
        """One batch of candidate ``ci``'s repeat ``r`` is scored."""
        self.bar.update(1 / self.per_pass[ci * self.repeats + r])

    def close(self) -> None:
        """Close the bar (also when the ranking fails)."""
        self.bar.close()


def _score_batch(batch: Batch, aug: Augmentation, device_piece: Augmentation | None, acc: Any, *,
                 teacher: nn.Module, metric: Metric, num_classes: int, device: torch.device,
                 normalize: Normalizer) -> None:
    """One batch of one candidate: its device piece on ``device`` (seeded by the pass's stream and the batch
    number), the teacher's logits (and the clean images' when the metric needs them), checked and added to
    the candidate's accumulator ``acc``. Any failure of the piece is raised naming the candidate and batch."""
    xb = batch.images.to(device, non_blocking=True)
    tb = batch.targets.to(device, non_blocking=True)
    with torch.inference_mode():
        try:
            xa, ta = device_stage(device_piece, xb, tb, derive_seed(batch.stream, batch.number, TAG_DEVICE))
        except DaqakdError:
            raise
        except Exception as exc:  # noqa: BLE001 - name the candidate and batch for any failure
            raise PluginError(
                f"candidate {aug.name!r} failed on batch {batch.number} (images {tuple(xb.shape)} {xb.dtype} "
                f"on {device}): {type(exc).__name__}: {exc}"
            ) from exc
        if metric.needs_clean:
            clean = batch.clean.to(device) if batch.clean is not None else xb
            out = teacher(normalize(torch.cat([clean, xa])))
            clean_logits, logits = out[: xa.shape[0]], out[xa.shape[0] :]
        else:
            clean_logits, logits = None, teacher(normalize(xa))
    check_batch(logits, ta, num_classes, candidate=aug.name, batch_index=batch.number)
    acc.update(MetricBatch(logits=logits, targets=ta, clean_logits=clean_logits, candidate=aug.name,
                           batch_index=batch.number))


def _results(accs: dict[tuple[int, int], Any], metric: Metric, params: Mapping[str, Any], num_classes: int, *,
             num_candidates: int, repeats: int, split: bool) -> list[list[MetricResult]]:
    """Each candidate's result per repeat: a pass this rank scored no batch of starts empty, and under a
    ``split`` every accumulator's float64 state is summed over the ranks first (one all-reduce)."""
    from .. import distributed

    keys = [(ci, r) for ci in range(num_candidates) for r in range(repeats)]
    for k in keys:
        accs.setdefault(k, metric.create(num_classes, **params))
    if split:
        vecs = [accs[k].state_vector().to(torch.float64).cpu() for k in keys]
        total = distributed.all_reduce_sum(torch.cat(vecs))
        start = 0
        for k, v in zip(keys, vecs):
            accs[k].load_state_vector(total[start : start + v.numel()])
            start += v.numel()
    return [[accs[(ci, r)].result() for r in range(repeats)] for ci in range(num_candidates)]


def _run_all(
    cands: list[Augmentation], teacher: nn.Module, rd: RankData, metric: Metric, params: Mapping[str, Any], *,
    repeats: int, batch_size: int, seed: int, device: torch.device, progress: bool, workers: int,
    normalize: Normalizer,
) -> tuple[list[list[MetricResult]], list[float], int, bool]:
    """Every candidate and repeat in one DataLoader pass (the workers start once): per-image pieces and
    mixers run in the workers, the rest here on ``device``; each batch goes through the teacher into the
    candidate's accumulator. Under torchrun each rank takes every ``world_size``-th batch of the plan and
    the accumulators' float64 states are summed over the ranks (metrics whose accumulator is a
    :class:`ReducibleMetricAccumulator`; others run whole on every rank). Returns the results per
    candidate (one per repeat), seconds per candidate, the samples this rank scored, and whether the work
    was split."""
    from .. import distributed
    from ..augment import split_stages

    stages = [split_stages(a) for a in cands]
    programs = [Program(sm, bt, keep_clean=metric.needs_clean) for sm, bt, _ in stages]
    d = distributed.current()
    split = d.active and isinstance(metric.create(rd.num_classes, **params), ReducibleMetricAccumulator)
    mine = _plan_batches(len(cands), rd, repeats=repeats, batch_size=batch_size, seed=seed, split=split, dist=d)
    loader = StreamLoader(rd.dataset, programs, lambda: mine, num_classes=rd.num_classes, workers=workers,
                          pin_memory=device.type == "cuda")
    accs: dict[tuple[int, int], Any] = {}
    seconds = [0.0] * len(cands)
    samples = 0
    bar = _RankProgress(cands, metric.name, repeats, seed, mine, show=progress and d.is_main)
    t_last = time.perf_counter()
    try:
        for batch in loader:
            ci, r = batch.program, batch.stream - seed
            acc = accs.get((ci, r))
            if acc is None:
                acc = accs[(ci, r)] = metric.create(rd.num_classes, **params)
            bar.batch_of(ci, r)
            _score_batch(batch, cands[ci], stages[ci][2], acc, teacher=teacher, metric=metric,
                         num_classes=rd.num_classes, device=device, normalize=normalize)
            _sync(device)
            now = time.perf_counter()
            seconds[ci] += now - t_last
            t_last = now
            samples += len(batch.indices)
            bar.done(ci, r)
    finally:
        bar.close()
    results = _results(accs, metric, params, rd.num_classes, num_candidates=len(cands), repeats=repeats, split=split)
    return results, seconds, samples, split


def _mean_std(vals: list[float]) -> tuple[float, float]:
    t = torch.tensor(vals, dtype=torch.float64)
    mean = float(t.mean())
    std = float(t.std(unbiased=True)) if len(vals) > 1 else float("nan")
    return mean, std


class _Args(NamedTuple):
    """:func:`rank_augmentations`' arguments, checked and resolved."""

    workers: int
    normalize: Normalizer
    device: torch.device
    metric: Metric
    params: dict[str, Any]
    candidates: list[Augmentation]


def resolve_args(
    teacher: nn.Module, candidates: Iterable[str | Augmentation | Callable[..., Any]] | str | None,
    metric: str | Metric, metric_params: Mapping[str, Any] | None, *, batch_size: int, repeats: int,
    device: str | torch.device | None, workers: int | None,
    normalize: Normalizer | tuple[Sequence[float], Sequence[float]] | None,
) -> _Args:
    """Check and resolve :func:`rank_augmentations`' arguments before any sample is read, reporting the
    first problem in this order: teacher, batch size, repeats, workers, device, metric, candidates."""
    if not isinstance(teacher, nn.Module):
        raise ModelError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ConfigError(f"repeats must be an integer ≥ 1, got {repeats!r}")
    nworkers = resolve_workers(workers)
    norm = normalize if isinstance(normalize, Normalizer) else Normalizer(*(normalize or (None, None)))
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
    return _Args(nworkers, norm, dev, met, params, cands)


def _check_plan(metric: Metric, params: Mapping[str, Any], num_classes: int, *, num_samples: int,
                batch_size: int) -> None:
    """Create one accumulator before any work, so unknown metric parameters fail here, and let a planned
    metric refuse a plan it cannot score (e.g. ``tstddev`` with too few batches)."""
    probe = metric.create(num_classes, **params)
    nb = math.ceil(num_samples / batch_size)
    if isinstance(probe, PlannedMetricAccumulator):
        probe.check_plan(nb, batch_size, num_samples)


def _rank_samples(samples: int, split: bool, metric: str, notes: list[str]) -> tuple[int, list[int]]:
    """The world size and the samples each rank scored (gathered from every rank); when the metric could
    not be split over the ranks, a note in ``notes`` that each rank scored every sample."""
    from .. import distributed

    world = distributed.current()
    rank_samples = [int(s) for s in distributed.all_gather_object(samples)]
    if world.active and not split:
        notes.append(f"metric {metric!r} cannot be summed over processes: each of the {world.world_size} ranks "
                     "scored every sample")
    return world.world_size, rank_samples


def rank_augmentations(
    teacher: nn.Module,
    data: DataBundle | FolderBundle | Dataset[Any] | tuple[torch.Tensor, torch.Tensor],
    candidates: Iterable[str | Augmentation | Callable[..., Any]] | str | None = None,
    metric: str | Metric = DEFAULT_METRIC,
    *,
    metric_params: Mapping[str, Any] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    repeats: int = 1,
    per_class: int | None = None,
    device: str | torch.device | None = "cpu",
    num_classes: int | None = None,
    progress: bool = True,
    workers: int | None = 0,
    normalize: Normalizer | tuple[Sequence[float], Sequence[float]] | None = None,
    base_augment: str | Augmentation | Callable[..., Any] | None = "auto",
) -> Ranking:
    """Rank candidate augmentations for distilling from ``teacher`` (lower score is better for ``cmi``).

    :param teacher: the frozen full-precision model; left in train mode it is ranked in eval mode (with a
        warning) and its mode and device are restored afterwards.
    :param data: a :class:`DataBundle` or :class:`FolderBundle` (its train split), a map-style ``Dataset`` of
        ``(image, label)`` (read through a DataLoader, never all in memory), or an ``(images, labels)`` pair;
        labels are class indices or distributions ``[C]``.
    :param candidates: ``None`` for the paper's 16 torchvision candidates; otherwise names (``A+cutmix``
        composes; groups ``paper``, ``kornia``, ``torchvision``, ``all``), :class:`Augmentation` objects or
        callables ``fn(images, targets) -> (images, targets)``.
    :param metric: ``"teacher-ce"`` (default: what the evidence supports, see :data:`DEFAULT_METRIC`),
        ``"cmi"`` (the paper's score), ``"tstddev"`` (Good-DA-in-KD baseline) or a registered metric.
    :param metric_params: e.g. ``{"w_CE": 1.0, "w_D": 0.0}`` for the authors' CE − I variant.
    :param repeats: independent passes with seeds ``seed, seed+1, ...``; entries report mean and std.
    :param per_class: rank on a class-stratified subset of this many samples per class.
    :param device: where the teacher and the device-stage augmentations run (``None``: the teacher's device).
    :param num_classes: defaults to the bundle's classes, else the teacher's output width.
    :param workers: DataLoader worker processes that decode and run the per-image and batch pieces of
        each candidate (``None``: half the cores). The scores do not depend on it (docs/data.md).
    :param normalize: ``(mean, std)`` applied after augmentation, right before the teacher.
    :param base_augment: the base transform every candidate (``none`` included) runs after, as in a
        training recipe: ``"auto"`` (crop-with-padding + flip for 16-64 px images, random-resized crop +
        flip above, nothing below, e.g. 8x8 digits), ``"crop-flip"``, ``"rrc-flip"``, ``"none"``/``None``,
        or your own augmentation or callable. Candidate names stay as they are; ``Ranking.base_augment``
        records the base.
    """
    nworkers, norm, dev, met, params, cands = resolve_args(
        teacher, candidates, metric, metric_params, batch_size=batch_size, repeats=repeats, device=device,
        workers=workers, normalize=normalize)
    t_start = time.perf_counter()
    notes: list[str] = []
    with teacher_ready(teacher, dev, notes):
        rd = prepare_data(data, teacher, num_classes=num_classes, per_class=per_class, seed=seed, device=dev,
                          normalize=norm, workers=nworkers)
        notes = notes + rd.notes
        base = resolve_base(base_augment, rd.image_shape)
        cands = [with_base(base, c) for c in cands]
        _check_plan(met, params, rd.num_classes, num_samples=len(rd), batch_size=batch_size)
        results, seconds, samples, split = _run_all(
            cands, teacher, rd, met, params, repeats=repeats, batch_size=batch_size, seed=seed, device=dev,
            progress=progress, workers=nworkers, normalize=norm)
        entries = [_entry(aug, res, secs, rd.image_shape) for aug, res, secs in zip(cands, results, seconds)]
    world_size, rank_samples = _rank_samples(samples, split, met.name, notes)
    return Ranking(
        metric=met.name,
        entries=entries,
        lower_is_better=met.lower_is_better,
        seed=seed, repeats=repeats, per_class=per_class, batch_size=batch_size,
        num_classes=rd.num_classes,
        num_samples=len(rd),
        data=rd.name,
        device=str(dev),
        metric_params=params,
        notes=notes,
        seconds=time.perf_counter() - t_start,
        workers=nworkers,
        world_size=world_size,
        rank_samples=rank_samples,
        base_augment=base.name if base is not None else "none",
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
