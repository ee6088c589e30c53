"""Data: the embedded digits set (no download) and users' ImageFolder directories and Datasets.

The digits set (1,797 images) is held in memory (:class:`DataBundle`). An ImageFolder directory is read
lazily (:class:`FolderBundle`: file lists in memory, pixels decoded per item in DataLoader workers), so
memory does not grow with the folder. Both expose ``train``/``test`` Datasets of ``(float32 [C, H, W] in
[0, 1], class index)`` and ``train_labels``/``test_labels``; :mod:`daqakd_plugins.streams` builds the
loaders (augmentation in the workers, seeds per sample) that ranking, calibration, distillation and
evaluation read through.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .errors import DataError
from .streams import one_hot  # re-exported: daqakd_plugins.data.one_hot is the public name

log = logging.getLogger("daqakd.data")

__all__ = [
    "DataBundle",
    "FolderBundle",
    "ImageFolderDataset",
    "folder_mode",
    "load_digits",
    "load_image_folder",
    "load_data",
    "make_loader",
    "stratified_subset",
    "one_hot",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class DataBundle:
    """A labelled train/test split held as tensors."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    in_memory = True

    @property
    def train(self) -> TensorDataset:
        return TensorDataset(self.train_x, self.train_y)

    @property
    def train_labels(self) -> torch.Tensor:
        return self.train_y

    @property
    def test_labels(self) -> torch.Tensor:
        return self.test_y

    def training_set(self, crop: str = "center") -> TensorDataset:
        """The training split as distillation reads it (in memory: the tensors themselves)."""
        if crop == "random":
            raise DataError("--train-crop random applies to image folders read with --image-size; in-memory data "
                            "is used as it is.")
        return self.train

    def subset(self, train_index: torch.Tensor) -> DataBundle:
        return DataBundle(self.name, self.train_x[train_index], self.train_y[train_index], self.test_x,
                          self.test_y, list(self.classes))

    def to_memory(self, workers: int = 0, progress: bool = False) -> DataBundle:
        return self

    @property
    def test(self) -> TensorDataset:
        return TensorDataset(self.test_x, self.test_y)

    def describe(self) -> dict[str, Any]:
        return _describe(self)


def _describe(bundle: DataBundle | FolderBundle) -> dict[str, Any]:
    return {
        "name": bundle.name,
        "train": int(bundle.train_labels.numel()),
        "test": int(bundle.test_labels.numel()),
        "classes": bundle.num_classes,
        "image_shape": list(bundle.image_shape),
    }


def load_digits(test_size: float = 0.25, seed: int = 0, *, image_size: int | None = None) -> DataBundle:
    """scikit-learn's 8×8 digits (1,797 images, 10 classes; ships inside scikit-learn, no download),
    split with a fixed seed, stratified by class. Pixel values 0..16 are scaled to ``[0, 1]``.
    ``image_size``: resized (bilinear) to that square, e.g. for torchvision models that need more pixels."""
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    d = _sk_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    if image_size is not None and image_size != 8:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                                            antialias=True).clamp_(0.0, 1.0)
    y = torch.from_numpy(d.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=d.target)
    tr, te = np.sort(tr), np.sort(te)
    return DataBundle("digits", x[tr], y[tr], x[te], y[te], [str(c) for c in d.target_names])


def _loops_back(p: Path, root: Path) -> bool:
    """A symlinked folder that resolves to ``root`` or to a folder above it (``ROOT/loop -> ROOT``): as a
    class it would hold every image of the other classes (and more of itself)."""
    if not p.is_symlink():
        return False
    target, top = p.resolve(), root.resolve()
    return target == top or target in top.parents


def _class_dirs(root: Path) -> list[str]:
    """The class folder names under ``root`` (sorted), leaving out hidden folders and symlinks that loop
    back to ``root`` or above it (said once, as a warning: that is a mistake in the data, not a class)."""
    names = []
    for p in root.iterdir():
        if not p.is_dir() or p.name.startswith("."):
            continue
        if _loops_back(p, root):
            log.warning("skipping %s: it is a symlink to %s, which contains it (a loop), not a class folder; "
                        "remove the link to silence this.", p, p.resolve())
            continue
        names.append(p.name)
    return sorted(names)


def _scan_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = _class_dirs(root)
    if not classes:
        raise DataError(
            f"{root} has no class sub-folders; expected ImageFolder layout ROOT/<class>/<image>.jpg "
            "(or ROOT/train/<class>/... and ROOT/test/<class>/...)."
        )
    files: list[Path] = []
    labels: list[int] = []
    empty = []
    for i, c in enumerate(classes):
        imgs = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not imgs:
            empty.append(c)
        files += imgs
        labels += [i] * len(imgs)
    if not files:
        raise DataError(f"{root} has class folders {classes[:5]} but no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    if empty:
        raise DataError(
            f"class folder(s) {', '.join(repr(str(root / c)) for c in empty[:5])} hold no images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); a class without samples cannot be learned or ranked. Add "
            "images or remove the folder."
        )
    if len(classes) < 2:
        if classes[0] in SPLIT_NAMES:
            raise DataError(
                f"{root} holds only a {classes[0]}/ folder: no test/ (or val/) split next to it. Add "
                f"{root}/test/<class>/... (or val/), or move the class folders up to {root}/<class>/... and "
                "daqakd splits them (80/20, stratified)."
            )
        raise DataError(
            f"{root} has one class folder ({classes[0]!r}); classification needs at least 2 classes, one "
            "sub-folder each (ROOT/<class>/<image>)."
        )
    return files, labels, classes


#: folder names that mean a split, not a class: ROOT/train + ROOT/test, or ImageNet's ROOT/train + ROOT/val
TEST_SPLITS = ("test", "val")
SPLIT_NAMES = ("train", *TEST_SPLITS)


def _splits(root: Path) -> tuple[Path, Path] | None:
    """``(train, test)`` folders when ``root`` is split (``train/`` with ``test/``, else ImageNet's
    ``val/``), ``None`` for a plain ``ROOT/<class>`` folder. A root whose folders are only split names
    but miss a side is refused here, rather than trained as classes named ``train`` and ``val``."""
    dirs = set(_class_dirs(root))
    if "train" in dirs:
        for name in TEST_SPLITS:
            if name in dirs:
                if name != "test":
                    log.info("%s: using %s/ as the test split (no test/ folder; ImageNet's naming)", root, name)
                return root / "train", root / name
        if dirs <= set(SPLIT_NAMES):
            raise DataError(
                f"{root} has a train/ folder but no test/ (or val/) next to it. Add {root}/test/<class>/... "
                f"(or val/), or move the class folders up to {root}/<class>/... and daqakd splits them."
            )
    elif dirs and dirs <= set(TEST_SPLITS):
        raise DataError(f"{root} has {', '.join(sorted(d + '/' for d in dirs))} but no train/ folder; add "
                        f"{root}/train/<class>/....")
    return None


GRAY_MODES = ("L", "1", "I;16", "I", "LA", "I;16B", "I;16L", "F")


def folder_mode(files: Sequence[str | Path], channels: int | None = None, probe: int = 64) -> str:
    """The PIL mode every image of a folder is converted to: ``"L"`` (1 channel) or ``"RGB"`` (3).

    ``channels`` (e.g. the teacher's input channels) decides when given. Otherwise up to ``probe`` image
    headers, spread evenly over the files, are read (headers only, no pixels): grayscale only if every
    probed image is grayscale, else RGB — a grayscale image is then replicated to 3 channels, and an RGB
    image in a grayscale folder is converted to luminance. Reading every header of an ImageNet-size folder
    would cost a full pass, hence the probe."""
    from PIL import Image

    if channels is not None:
        if channels not in (1, 3):
            raise DataError(f"images can be read as 1 (grayscale) or 3 (RGB) channels, not {channels}.")
        return "L" if channels == 1 else "RGB"
    if not files:
        raise DataError("no image files to read.")
    step = max(1, len(files) // probe)
    modes = set()
    for f in list(files)[::step][:probe]:
        try:
            with Image.open(f) as raw:
                modes.add(raw.mode)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"cannot read image {f}: {exc}. Remove or re-encode it.") from exc
    return "L" if modes <= set(GRAY_MODES) else "RGB"


class ImageFolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """One image file per item, decoded when it is read (in a DataLoader worker): converted to ``mode``
    (``"L"``/``"RGB"``), then sized: with ``size`` the shorter side is resized to ``size`` and the centre
    ``size``×``size`` cut out (``crop="random"``: a random-resized crop, scale 0.35–1, drawn from torch's
    RNG, which the pipeline seeds per sample); without ``size`` every image must be ``expect`` (W, H).
    Items are ``(float32 [C, H, W] in [0, 1], class index)``. Memory: the file list and labels only.

    A file that cannot be decoded (corrupt, truncated, not an image) raises a :class:`DataError` naming
    it: daqakd stops rather than silently training on fewer samples (docs/data.md)."""

    def __init__(self, files: Sequence[str | Path], labels: Sequence[int], classes: Sequence[str], *, mode: str,
                 size: int | None = None, crop: str = "center", expect: tuple[int, int] | None = None) -> None:
        if crop not in ("center", "random"):
            raise DataError(f"crop must be 'center' or 'random', got {crop!r}")
        # NumPy arrays, not Python lists: DataLoader workers are forked, and touching list items' reference
        # counts copies their pages into every worker (memory per file × workers); arrays stay shared.
        self.files = np.array([os.fsencode(str(f)) for f in files], dtype=np.bytes_)
        self.targets = np.asarray([int(t) for t in labels], dtype=np.int64)  # torchvision ImageFolder's name
        self.classes = list(classes)
        self.mode, self.size, self.crop, self.expect = mode, size, crop, expect

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> str:
        return os.fsdecode(bytes(self.files[i]))

    def _open(self, i: int) -> Any:
        from PIL import Image

        f = self.path(i)
        try:
            with Image.open(f) as raw:
                im = _eight_bit(raw).convert(self.mode)
                im.load()
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem of this file
            raise DataError(f"cannot read image {f}: {type(exc).__name__}: {exc}. The file is corrupt, truncated or "
                            "not an image: remove or re-encode it, then run again (--resume continues a "
                            "distillation).") from exc
        return im

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        im = self._open(i)
        if self.size is None:
            if self.expect is not None and im.size != self.expect:
                raise DataError(
                    f"{self.path(i)} is {im.size[0]}x{im.size[1]} but the folder's images are "
                    f"{self.expect[0]}x{self.expect[1]}; pass --image-size N (image_size=N) to resize and "
                    "centre-crop every image to NxN."
                )
            arr = np.asarray(im, dtype=np.uint8)
            return _to_chw_float(arr), int(self.targets[i])
        s = self.size
        if self.crop == "random":
            from torchvision.transforms.v2 import RandomResizedCrop
            from torchvision.transforms.v2 import functional as F

            t = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())
            t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
            top, left, h, w = RandomResizedCrop.get_params(t, scale=[0.35, 1.0], ratio=[3 / 4, 4 / 3])
            t = F.resized_crop(t, top, left, h, w, [s, s], antialias=True)
            return t.float().div_(255.0), int(self.targets[i])
        w, h = im.size
        r = s / min(w, h)
        nw, nh = max(s, round(w * r)), max(s, round(h * r))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
        left, top = (nw - s) // 2, (nh - s) // 2
        im = im.crop((left, top, left + s, top + s))
        return _to_chw_float(np.asarray(im, dtype=np.uint8)), int(self.targets[i])


#: PIL modes of 16-bit grayscale images (16-bit PNG, TIFF)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _eight_bit(im: Any) -> Any:
    """``im`` with 8-bit samples. PIL converts 16-bit grayscale to ``L``/``RGB`` by clipping at 255 (a
    16-bit PNG of an 8-bit image, value v*257, came out nearly white), so scale 0..65535 to 0..255 here:
    v*257 gives back v exactly. A 32-bit ``I`` image (how some PIL versions open 16-bit PNGs) whose values
    exceed 255 is scaled the same way; 16-bit colour PNGs already open as 8-bit ``RGB``."""
    from PIL import Image

    if im.mode not in SIXTEEN_BIT_MODES and im.mode != "I":
        return im
    arr = np.asarray(im).astype(np.int64)
    if im.mode == "I" and (arr.size == 0 or int(arr.max()) <= 255):
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))  # 2-D uint8: mode L
    return Image.fromarray(((np.clip(arr, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8))  # 2-D uint8: mode L


def _to_chw_float(arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(arr.copy())
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()
    return t.float().div_(255.0)


@dataclass
class FolderBundle:
    """An ImageFolder directory read lazily: file lists and labels in memory, pixels decoded per item.

    ``train`` and ``test`` are the deterministic (evaluation) views — ranking, calibration and evaluation
    read them; :meth:`training_set` is what distillation reads (``crop="random"``: random-resized crops)."""

    name: str
    classes: list[str]
    train_files: list[str]
    train_labels: torch.Tensor
    test_files: list[str]
    test_labels: torch.Tensor
    mode: str
    size: int | None
    native_size: tuple[int, int]  # (W, H) of the first training image
    root: str = ""

    in_memory = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c = 1 if self.mode == "L" else 3
        if self.size is not None:
            return c, self.size, self.size
        return c, self.native_size[1], self.native_size[0]

    def _ds(self, files: list[str], labels: torch.Tensor, crop: str) -> ImageFolderDataset:
        return ImageFolderDataset(files, labels.tolist(), self.classes, mode=self.mode, size=self.size, crop=crop,
                                  expect=None if self.size is not None else self.native_size)

    @property
    def train(self) -> ImageFolderDataset:
        return self._ds(self.train_files, self.train_labels, "center")

    @property
    def test(self) -> ImageFolderDataset:
        return self._ds(self.test_files, self.test_labels, "center")

    def training_set(self, crop: str = "center") -> ImageFolderDataset:
        """The training split as distillation reads it (``crop="random"`` needs ``image_size``)."""
        if crop == "random" and self.size is None:
            raise DataError("--train-crop random needs --image-size N (the size the random-resized crops are scaled to).")
        return self._ds(self.train_files, self.train_labels, crop)

    def subset(self, train_index: torch.Tensor) -> FolderBundle:
        """The same bundle with only these training samples (e.g. a class-stratified subset)."""
        idx = [int(i) for i in train_index]
        return dataclasses.replace(self, train_files=[self.train_files[i] for i in idx],
                                   train_labels=self.train_labels[train_index])

    def to_memory(self, workers: int = 0, progress: bool = False) -> DataBundle:
        """Decode both splits into a :class:`DataBundle` (for small folders and tests: memory grows with
        the folder)."""
        from .streams import dataset_tensors

        trx, _ = dataset_tensors(self.train, workers=workers, progress=progress, desc="decode train")
        tex, _ = dataset_tensors(self.test, workers=workers, progress=progress, desc="decode test")
        return DataBundle(self.name, trx, self.train_labels.clone(), tex, self.test_labels.clone(), list(self.classes))

    def describe(self) -> dict[str, Any]:
        return {
            **_describe(self),
            "streaming": True,
            "mode": self.mode,
            "image_size": self.size,
        }


def load_image_folder(root: str | Path, test_size: float = 0.2, seed: int = 0, *, image_size: int | None = None,
                      channels: int | None = None) -> FolderBundle:
    """An ImageFolder-style directory, read lazily (:class:`FolderBundle`): only the file lists are held.

    ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` are used as given (``ROOT/val/`` is the test split
    when there is no ``test/``: ImageNet's naming); a plain ``ROOT/<class>/*`` is split with a fixed seed,
    stratified by class. A symlink that loops back (``ROOT/loop -> ROOT``) is skipped with a warning. ``image_size``: resize + centre-crop every image to
    that square (needed when the images differ in size). ``channels``: 1 or 3 (default: probed, see
    :func:`folder_mode`). Call :meth:`FolderBundle.to_memory` for tensors.
    """
    from PIL import Image

    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data directory {root} does not exist; pass --data digits or a folder of class sub-folders.")
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; pass an ImageFolder-style directory or 'digits'.")
    split = _splits(root)
    if split is not None:
        trf, trl, classes = _scan_folder(split[0])
        tef, tel, classes_te = _scan_folder(split[1])
        if classes_te != classes:
            raise DataError(f"train classes {classes} differ from {split[1].name} classes {classes_te} under {root}.")
    else:
        files, labels, classes = _scan_folder(root)
        from sklearn.model_selection import train_test_split

        counts = np.bincount(labels, minlength=len(classes))
        few = [f"{classes[i]!r} ({int(counts[i])})" for i in np.flatnonzero(counts < 2)]
        if few:
            raise DataError(
                f"class folder(s) {', '.join(few[:5])} under {root} hold a single image: a stratified train/test "
                "split needs at least 2 per class (one for each side). Add images, remove the class, or give "
                f"the split yourself ({root}/train/<class>/... and {root}/test/<class>/...)."
            )
        idx = np.arange(len(files))
        tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=labels)
        tr, te = np.sort(tr), np.sort(te)
        trf, trl = [files[i] for i in tr], [labels[i] for i in tr]
        tef, tel = [files[i] for i in te], [labels[i] for i in te]
    mode = folder_mode(trf + tef, channels)
    try:
        with Image.open(trf[0]) as raw:
            native = raw.size
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read image {trf[0]}: {exc}. Remove or re-encode it.") from exc
    return FolderBundle(root.name, classes, [str(f) for f in trf], torch.tensor(trl), [str(f) for f in tef],
                        torch.tensor(tel), mode, image_size, (int(native[0]), int(native[1])), str(root))


def dataset_len(dataset: Any, empty: str) -> int:
    """``len(dataset)``, with a :class:`DataError` for a dataset without one (not map-style) and the
    message ``empty`` for an empty one."""
    try:
        n = len(dataset)
    except TypeError as exc:
        raise DataError("the dataset has no len(); pass a map-style torch Dataset or an ImageFolder path.") from exc
    if n == 0:
        raise DataError(empty)
    return int(n)


#: what ranking, distillation and teacher training accept as data
AnyBundle = DataBundle | FolderBundle


def load_data(spec: str | Path, seed: int = 0, *, image_size: int | None = None,
              channels: int | None = None) -> DataBundle | FolderBundle:
    """``"digits"`` (embedded, in memory) or a path to an ImageFolder-style directory (read lazily)."""
    if str(spec).lower() == "digits":
        return load_digits(seed=seed, image_size=image_size)
    return load_image_folder(spec, seed=seed, image_size=image_size, channels=channels)


def stratified_subset(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of up to ``per_class`` samples of each class, chosen with a fixed seed (sorted)."""
    if per_class < 1:
        raise DataError(f"per_class must be ≥ 1, got {per_class}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        out.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(out).sort().values


def calibration_sample(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` samples (fewer if the data is smaller) for calibration: class-stratified (as
    even over the classes as their sizes allow) and seeded, in a shuffled order so every calibration
    batch mixes classes. Why: an ImageFolder split is sorted by class, so "the first 512 images" are
    one class, and calibration ranges set on one class clip the others."""
    g = torch.Generator().manual_seed(seed)
    classes = labels.unique().tolist()
    pools = {c: (labels == c).nonzero().flatten() for c in classes}
    pools = {c: idx[torch.randperm(len(idx), generator=g)] for c, idx in pools.items()}
    take = dict.fromkeys(classes, 0)
    left = min(n, len(labels))
    while left > 0:  # round-robin over the classes that still have samples
        progressed = False
        for c in classes:
            if left and take[c] < len(pools[c]):
                take[c] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    idx = torch.cat([pools[c][: take[c]] for c in classes])
    return idx[torch.randperm(len(idx), generator=g)]


def make_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """A deterministic loader over in-memory tensors (the shuffle order depends only on ``seed``)."""
    if batch_size < 1:
        raise DataError(f"batch_size must be ≥ 1, got {batch_size}")
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=g if shuffle else None)
