"""Streaming loaders: every pass over data (ranking, calibration, distillation, evaluation) reads a torch
``Dataset`` through a ``DataLoader``, so memory does not grow with the data set.

Where each piece of an augmentation runs (:func:`daqakd_plugins.augment.split_stages`):

* per-image pieces (torchvision v2 policies: ``stage="sample"``) in the loader's worker processes,
  right after the image is decoded;
* batch mixers (CutMix, MixUp: ``stage="batch"``) in the collate function, also in the workers;
* the rest (kornia, user callables: ``stage="device"``) on the batch in the main process, on the device
  the models run on (:func:`device_stage`).

How seeds flow: every random draw is made under a torch RNG seeded from the run's seed and *where* the
draw is — the sample's index (per-image pieces), or the batch's number (batch and device pieces) — and
the pass (ranking repeat, training epoch): :func:`derive_seed`. Batches are made in the main process
from a seeded order. So for a seed the batches and every augmented image are the same with 0, 1 or 8
workers, and a resumed run sees exactly what an uninterrupted one saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .contracts import Augmentation
from .errors import DaqakdError, DataError

__all__ = [
    "derive_seed",
    "seeded",
    "Program",
    "Batch",
    "StreamLoader",
    "to_image",
    "to_target",
    "one_hot",
    "eval_loader",
    "train_loader",
    "dataset_tensors",
    "device_stage",
    "Normalizer",
    "resolve_workers",
]

_M64 = (1 << 64) - 1
#: stream tags, so the draws of different pieces never share a seed
TAG_SAMPLE, TAG_MIX, TAG_DEVICE = 0x5A, 0xB7, 0xDE


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integers (run seed, pass, sample or batch index, tag): well mixed, so
    neighbouring samples get unrelated draws, and the same keys always give the same seed."""
    h = 0x6A09E667F3BCC908
    for k in keys:
        h = _splitmix64(h ^ (int(k) & _M64))
    return h & ((1 << 63) - 1)


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run the block with torch's RNG (and the CUDA one of ``device``) seeded by ``seed``, restoring the
    previous state afterwards, so the caller's random stream is untouched."""
    if device is not None and device.type == "cuda":
        with torch.random.fork_rng(devices=[device.index or 0], enabled=True):
            torch.manual_seed(seed)
            yield
        return
    # CPU only: the default generator directly. torch.manual_seed would also queue a lazy CUDA seeding
    # with a formatted stack trace on every call, which cost more than reading an image.
    gen = torch.default_generator
    state = gen.get_state()
    gen.manual_seed(seed)
    try:
        yield
    finally:
        gen.set_state(state)


def resolve_workers(workers: int | None) -> int:
    """``None`` → :func:`daqakd_plugins.checks.default_workers`; otherwise checked."""
    from .checks import check_workers, default_workers

    check_workers(workers)
    return default_workers() if workers is None else int(workers)


# --------------------------------------------------------------------------------------------------
# items
# --------------------------------------------------------------------------------------------------
def to_image(img: Any, where: str) -> torch.Tensor:
    """A dataset's image as float32 ``[C, H, W]`` in ``[0, 1]``: PIL images and uint8 tensors are
    converted, ``[H, W]`` gets a channel; anything else is a :class:`DataError` naming the fix."""
    if isinstance(img, torch.Tensor):
        t = img
    elif hasattr(img, "mode") and hasattr(img, "size") and hasattr(img, "convert"):  # a PIL image
        mode = "L" if img.mode in ("L", "1", "I;16", "I", "F", "LA") else "RGB"
        arr = np.asarray(img.convert(mode), dtype=np.uint8)
        t = torch.from_numpy(arr.copy())
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    elif isinstance(img, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(img))
    else:
        raise DataError(
            f"{where} holds a {type(img).__name__} image; a dataset item must be (image, label) with the image a "
            "PIL image or a tensor [C, H, W] (e.g. a transform ending in "
            "torchvision.transforms.v2.Compose([ToImage(), ToDtype(torch.float32, scale=True)]))."
        )
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise DataError(f"{where}: images must be [C, H, W]; got shape {tuple(t.shape)}.")
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    if not torch.is_floating_point(t):
        raise DataError(f"{where}: images must be float in [0, 1] or uint8; got {t.dtype}.")
    return t.float()


def one_hot(labels: torch.Tensor, num_classes: int, where: str = "") -> torch.Tensor:
    """Labels ``[B]`` (int) to label distributions ``[B, C]`` (float32), with a clear range error naming
    ``where`` when given; distributions ``[B, C]`` pass (float32). The one one-hot encoding of daqakd
    (:func:`to_target` encodes a dataset item's label with it; ``daqakd_plugins.data.one_hot`` is this)."""
    if labels.dim() == 2:
        return labels.float()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)].unique().tolist()[:5]
        raise DataError(
            f"{where + ': ' if where else ''}labels {bad} are outside [0, {num_classes}); the teacher predicts "
            f"{num_classes} classes. Remap the labels to 0..C-1 or pass a teacher whose output width matches the "
            "class count."
        )
    return torch.nn.functional.one_hot(labels.long(), num_classes).float()


def to_target(label: Any, num_classes: int, where: str) -> torch.Tensor:
    """One dataset item's label as ``[K]``: a label distribution ``[K]`` passes (float32); a class index
    (an int, or a float or 0-d tensor holding one) is checked and encoded by :func:`one_hot`."""
    if isinstance(label, torch.Tensor) and label.dim() == 1:
        if label.shape[0] != num_classes:
            raise DataError(f"{where}: a label distribution has {label.shape[0]} entries but there are {num_classes} classes.")
        return label.float()
    try:
        k = int(label)
        exact = float(label) == k
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: the label {label!r} is not a class index (int) or a distribution [K].") from exc
    if not exact:
        raise DataError(f"{where}: the label {label!r} is fractional; pass class indices or distributions [K].")
    return one_hot(torch.tensor([k]), num_classes, where)[0]


class Program(NamedTuple):
    """What the workers do to one kind of batch: per-image pieces, then batch mixers."""

    sample: tuple[Augmentation, ...] = ()
    batch: tuple[Augmentation, ...] = ()
    keep_clean: bool = False  # also return the un-augmented images (metrics that need both)


class Batch(NamedTuple):
    images: torch.Tensor  # float [B, C, H, W] in [0, 1], after the worker stages
    targets: torch.Tensor  # float [B, K] label distributions (soft after a mixer)
    clean: torch.Tensor | None  # the images before augmentation, when the program keeps them
    program: int
    stream: int
    number: int  # the batch's number within its pass
    indices: torch.Tensor  # the dataset indices of the samples, int64 [B]


class _Failed(NamedTuple):
    message: str


Key = tuple[int, int, int, int]  # (program, stream, batch number, dataset index)


class _View(Dataset[Any]):
    """``base`` read by keys: the item's image after the program's per-image pieces, seeded per sample."""

    def __init__(self, base: Dataset[Any], programs: Sequence[Program], num_classes: int) -> None:
        self.base, self.programs, self.num_classes = base, list(programs), num_classes

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def _item(self, key: Key) -> tuple[Any, ...]:
        prog, stream, _, i = key
        p = self.programs[prog]
        with seeded(derive_seed(stream, i, TAG_SAMPLE)):
            item = self.base[i]  # inside: a random crop in the base transform is seeded per sample too
            if not (isinstance(item, (tuple, list)) and len(item) >= 2):
                raise DataError(f"dataset item {i} is {type(item).__name__}; expected an (image, label) pair.")
            x = to_image(item[0], f"dataset item {i}")
            t = to_target(item[1], self.num_classes, f"dataset item {i}")
            clean = x if p.keep_clean else None
            for piece in p.sample:  # stage "sample" pieces always have sample_fn (Augmentation checks it)
                x = cast(Callable[[torch.Tensor], torch.Tensor], piece.sample_fn)(x)
        return x, t, clean, key

    def __getitem__(self, key: Key) -> tuple[Any, ...]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[Key]) -> list[Any]:
        # One image gains nothing from intra-op threads, and toggling them per image is slow: one thread
        # for the whole batch (a worker process has one already).
        threads = torch.get_num_threads()
        if threads > 1:
            torch.set_num_threads(1)
        try:
            return [self._item(k) for k in keys]
        except DaqakdError as exc:
            return [_Failed(str(exc))]
        except Exception as exc:  # noqa: BLE001 - name the sample and the piece for any failure
            k = keys[0] if keys else None
            names = [a.name for a in self.programs[k[0]].sample] if k else []
            return [_Failed(f"reading or augmenting a sample failed ({', '.join(names) or 'no augmentation'}): "
                            f"{type(exc).__name__}: {exc}")]
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)


class _Collate:
    def __init__(self, programs: Sequence[Program]) -> None:
        self.programs = list(programs)

    def __call__(self, items: list[Any]) -> Batch | _Failed:
        for it in items:
            if isinstance(it, _Failed):
                return it
        prog, stream, number, _ = items[0][3]
        try:
            x = torch.stack([it[0] for it in items])
        except RuntimeError:
            shapes = sorted({tuple(it[0].shape) for it in items})[:3]
            return _Failed(f"the images of one batch have different shapes {shapes}; pass --image-size N "
                           "(image_size=N) to resize and centre-crop every image to NxN, or give the dataset a "
                           "transform that makes them one size.")
        t = torch.stack([it[1] for it in items])
        clean = torch.stack([it[2] for it in items]) if items[0][2] is not None else None
        index = torch.tensor([it[3][3] for it in items], dtype=torch.int64)
        mixers = self.programs[prog].batch
        if mixers:
            try:
                with seeded(derive_seed(stream, number, TAG_MIX)):
                    for m in mixers:
                        x, t = m(x, t)
            except Exception as exc:  # noqa: BLE001
                return _Failed(f"batch augmentation {'+'.join(m.name for m in mixers)} failed on batch {number}: "
                               f"{type(exc).__name__}: {exc}")
        return Batch(x, t, clean, prog, stream, number, index)


def _worker_init(_worker_id: int) -> None:
    """Ctrl-C reaches the whole process group; the main process handles it (checkpoint, message) and
    shuts the workers down, so a worker must not die of it first. And a forked worker inherits copies of
    the main process's other live loader iterators (e.g. the evaluation loader's persistent workers);
    left alone, their finalisers run at the worker's exit and try to shut down processes that are not
    its children, printing a traceback. A worker owns no loader: make those finalisers no-ops, as
    torch does for every loader when the interpreter exits."""
    import signal
    import sys

    from torch.utils.data import _utils

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _utils.python_exit_status = True
    sys.excepthook = _quiet_when_main_is_gone(sys.excepthook)


def _quiet_when_main_is_gone(hook: Any) -> Any:
    """A worker hands tensors to the main process through multiprocessing's resource sharer, whose
    thread reports errors with ``sys.excepthook``. When the main process stops (Ctrl-C, an error) while a
    batch is in flight, that is a broken pipe: expected, and not worth a traceback under the main
    process's own message. Every other exception is reported as before."""

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        if issubclass(exc_type, (BrokenPipeError, ConnectionResetError, EOFError)):
            return
        hook(exc_type, exc, tb)

    return excepthook


class _Keys(Sampler[list[Key]]):
    def __init__(self, owner: StreamLoader) -> None:
        self.owner = owner

    def __iter__(self) -> Iterator[list[Key]]:
        return iter(self.owner._plan())

    def __len__(self) -> int:
        return len(self.owner._plan())


class StreamLoader:
    """A DataLoader over ``dataset`` whose batches are planned in the main process as lists of keys
    ``(program, stream, batch number, index)`` by ``plan()`` (called at the start of every pass, so a
    plan may depend on an epoch set in between). With ``persistent`` the worker processes stay alive
    across passes (loaders read every epoch); otherwise each pass starts and ends its own.

    Iterating yields :class:`Batch` objects; a sample that cannot be read raises a :class:`DataError`
    naming it (raised in the main process, without the worker's traceback)."""

    def __init__(self, dataset: Dataset[Any], programs: Sequence[Program], plan: Callable[[], list[list[Key]]], *,
                 num_classes: int, workers: int = 0, pin_memory: bool = False, persistent: bool = False) -> None:
        self.programs = list(programs)
        self.plan_fn = plan
        self._cached: list[list[Key]] | None = None
        self.workers = workers
        self.loader = DataLoader(
            _View(dataset, self.programs, num_classes),
            batch_sampler=_Keys(self),
            collate_fn=_Collate(self.programs),
            num_workers=workers,
            persistent_workers=persistent and workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            pin_memory=pin_memory,
            worker_init_fn=_worker_init if workers > 0 else None,
            # its own generator: a DataLoader draws its workers' base seed at every pass, from the global
            # RNG unless given one, which would shift the caller's random stream (every draw here is seeded)
            generator=torch.Generator().manual_seed(0),
        )

    def _plan(self) -> list[list[Key]]:
        if self._cached is None:
            self._cached = self.plan_fn()
        return self._cached

    def replan(self) -> None:
        """Forget the current plan (e.g. after a new epoch was set): the next pass asks ``plan()`` again."""
        self._cached = None

    def __len__(self) -> int:
        return len(self._plan())

    def __iter__(self) -> Iterator[Batch]:
        for b in self.loader:
            if isinstance(b, _Failed):
                raise DataError(b.message)
            yield b


def _batches(keys: list[Key], batch_size: int) -> list[list[Key]]:
    return [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]


def eval_loader(dataset: Dataset[Any], *, num_classes: int, batch_size: int = 256, workers: int = 0,
                index: Sequence[int] | torch.Tensor | None = None, pin_memory: bool = False,
                persistent: bool = False) -> StreamLoader:
    """Clean batches in dataset order (or in the order of ``index``); ``persistent`` for one read every
    epoch."""
    idx = list(range(len(dataset))) if index is None else [int(i) for i in index]  # type: ignore[arg-type]

    def plan() -> list[list[Key]]:
        keys = [(0, 0, 0, i) for i in idx]
        out = _batches(keys, batch_size)
        return [[(0, 0, b, k[3]) for k in batch] for b, batch in enumerate(out)]

    return StreamLoader(dataset, [Program()], plan, num_classes=num_classes, workers=workers, pin_memory=pin_memory,
                        persistent=persistent)


class TrainLoader(StreamLoader):
    """The training stream: epoch ``e`` visits the samples in an order that depends only on
    ``(seed, e)`` and runs the worker stages of ``augment``; :meth:`set_epoch` before each epoch.

    With ``world_size`` > 1 (torchrun) each rank reads its share of the epoch, chosen by torch's
    ``DistributedSampler`` (seeded with ``seed``, ``set_epoch`` per epoch, padded by repetition so every
    rank takes the same number of steps); a sample's augmentation still depends only on (seed, epoch,
    index), whichever rank reads it."""

    def __init__(self, dataset: Dataset[Any], augment: Augmentation | None, *, num_classes: int, batch_size: int,
                 seed: int = 0, workers: int = 0, drop_last: bool = False, pin_memory: bool = False,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        from .augment import split_stages

        sample, batch, self.device_piece = split_stages(augment)
        self.n = len(dataset)  # type: ignore[arg-type]
        self.batch_size, self.seed, self.drop_last, self.shuffle = batch_size, seed, drop_last, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        super().__init__(dataset, [Program(sample, batch)], self._epoch_plan, num_classes=num_classes,
                         workers=workers, pin_memory=pin_memory, persistent=True)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.replan()

    @property
    def stream(self) -> int:
        return derive_seed(self.seed, self.epoch)

    def order(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in order."""
        if self.world_size > 1:
            from torch.utils.data.distributed import DistributedSampler

            sized = cast(Dataset[Any], range(self.n))  # the sampler only takes len()
            sampler: DistributedSampler[int] = DistributedSampler(sized, num_replicas=self.world_size, rank=self.rank,
                                                                  shuffle=self.shuffle, seed=self.seed)
            sampler.set_epoch(self.epoch)
            return torch.tensor(list(sampler), dtype=torch.int64)
        if not self.shuffle:
            return torch.arange(self.n)
        # the permutation data.make_loader's DataLoader draws for this seed (it takes its workers' base seed
        # from the generator before its RandomSampler draws the permutation)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=g)
        return torch.randperm(self.n, generator=g)

    def _epoch_plan(self) -> list[list[Key]]:
        order = self.order().tolist()
        s = self.stream
        out = []
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            chunk = order[start : start + self.batch_size]
            if self.drop_last and len(chunk) < self.batch_size:
                break
            out.append([(0, s, b, i) for i in chunk])
        return out

    def device_seed(self, number: int) -> int:
        """The seed of the device stage of batch ``number`` of the current epoch."""
        return derive_seed(self.stream, number, TAG_DEVICE)


def train_loader(dataset: Dataset[Any], augment: Augmentation | None, **kw: Any) -> TrainLoader:
    """:class:`TrainLoader` (see there)."""
    return TrainLoader(dataset, augment, **kw)


def device_stage(piece: Augmentation | None, x: torch.Tensor, t: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The device piece of an augmentation on a batch already on its device, seeded by ``seed``."""
    if piece is None:
        return x, t
    with seeded(seed, x.device):
        return piece(x, t)


def dataset_tensors(dataset: Dataset[Any], *, num_classes: int | None = None, workers: int = 0,
                    index: Sequence[int] | torch.Tensor | None = None, batch_size: int = 256, progress: bool = False,
                    desc: str = "read") -> tuple[torch.Tensor, torch.Tensor]:
    """Read (part of) a dataset into ``(images [N, C, H, W], labels [N])`` — for bounded samples only
    (calibration, an export check, small data). Labels are class indices (the argmax of distributions)."""
    from tqdm.auto import tqdm

    k = num_classes if num_classes is not None else _guess_classes(dataset)
    xs, ys = [], []
    for b in tqdm(eval_loader(dataset, num_classes=k, batch_size=batch_size, workers=workers, index=index),
                  desc=desc, unit="batch", leave=False, disable=None if progress else True):
        xs.append(b.images)
        ys.append(b.targets.argmax(1))
    if not xs:
        raise DataError("the dataset is empty; check the path or the filter that built it.")
    return torch.cat(xs), torch.cat(ys)


def _guess_classes(dataset: Dataset[Any]) -> int:
    classes = getattr(dataset, "classes", None)
    if classes:
        return len(classes)
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets):
        return int(max(int(t) for t in targets)) + 1
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) >= 2 and tensors[1].numel():
        y = tensors[1]
        return int(y.shape[1]) if y.dim() == 2 else int(y.max()) + 1
    raise DataError("cannot tell the number of classes of this dataset; pass num_classes=.")


class Normalizer:
    """``(x - mean) / std`` per channel, applied to batches right before a model sees them (after every
    augmentation, which works on ``[0, 1]`` images). ``None`` values: the identity."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self._cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def __bool__(self) -> bool:
        return self.mean is not None

    def check_channels(self, channels: int) -> None:
        if self.mean is not None and len(self.mean) not in (1, channels):
            raise DataError(f"--mean/--std have {len(self.mean)} values but the images have {channels} channels; "
                            "give one value, or one per channel.")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None or self.std is None:
            return x
        key = (str(x.device), x.shape[1])
        if key not in self._cache:
            c = x.shape[1]
            m = torch.tensor(self.mean * (c if len(self.mean) == 1 else 1), device=x.device).view(1, c, 1, 1)
            s = torch.tensor(self.std * (c if len(self.std) == 1 else 1), device=x.device).view(1, c, 1, 1)
            self._cache[key] = (m, s)
        m, s = self._cache[key]
        return (x - m) / s

    def to_dict(self) -> dict[str, Any] | None:
        return None if self.mean is None else {"mean": self.mean, "std": self.std}
