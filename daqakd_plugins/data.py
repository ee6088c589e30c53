"""Data: the embedded digits set (no download) and users' ImageFolder directories.

Everything is held as in-memory tensors: images ``float32 [N, C, H, W]`` in ``[0, 1]`` and labels
``int64 [N]``. Augmentations act on such batches, so the same code path serves digits, CIFAR-style
folders and a user's own ``torch.utils.data.Dataset``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .errors import DataError

log = logging.getLogger("daqakd.data")

__all__ = [
    "DataBundle",
    "load_digits",
    "load_image_folder",
    "load_data",
    "tensors_from_dataset",
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

    @property
    def train(self) -> TensorDataset:
        return TensorDataset(self.train_x, self.train_y)

    @property
    def test(self) -> TensorDataset:
        return TensorDataset(self.test_x, self.test_y)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "train": int(self.train_y.numel()),
            "test": int(self.test_y.numel()),
            "classes": self.num_classes,
            "image_shape": list(self.image_shape),
        }


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels ``[B]`` (int) to label distributions ``[B, C]`` (float32), with a clear range error."""
    if labels.dim() == 2:
        return labels.float()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)].unique().tolist()[:5]
        raise DataError(
            f"labels {bad} are outside [0, {num_classes}); the teacher predicts {num_classes} classes. "
            "Remap the labels to 0..C-1 or pass a teacher whose output width matches the class count."
        )
    return torch.nn.functional.one_hot(labels.long(), num_classes).float()


def load_digits(test_size: float = 0.25, seed: int = 0) -> DataBundle:
    """scikit-learn's 8×8 digits (1,797 images, 10 classes; ships inside scikit-learn, no download),
    split with a fixed seed, stratified by class. Pixel values 0..16 are scaled to ``[0, 1]``."""
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    d = _sk_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=d.target)
    tr, te = np.sort(tr), np.sort(te)
    return DataBundle("digits", x[tr], y[tr], x[te], y[te], [str(c) for c in d.target_names])


def _scan_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
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
        raise DataError(
            f"{root} has one class folder ({classes[0]!r}); classification needs at least 2 classes, one "
            "sub-folder each (ROOT/<class>/<image>)."
        )
    return files, labels, classes


def _decode(files: Sequence[Path], desc: str) -> torch.Tensor:
    from PIL import Image
    from tqdm.auto import tqdm

    arrs = []
    size = None
    gray_modes = ("L", "1", "I;16", "I", "LA")
    # One mode for the whole folder: grayscale only if every image is grayscale, else RGB (a grayscale
    # image is replicated to 3 channels). Headers only: PIL reads the mode without decoding pixels.
    modes = set()
    for f in files:
        try:
            with Image.open(f) as raw:
                modes.add(raw.mode)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"cannot read image {f}: {exc}. Remove or re-encode it.") from exc
    mode = "L" if modes <= set(gray_modes) else "RGB"
    if mode == "RGB" and modes & set(gray_modes):
        log.info("mixed grayscale and colour images under %s: grayscale ones are converted to RGB", desc)
    for f in tqdm(files, desc=desc, unit="img", leave=False, disable=None):
        try:
            with Image.open(f) as raw:
                im = raw.convert(mode)
            if size is None:
                size = im.size
            elif im.size != size:
                raise DataError(
                    f"{f} is {im.size[0]}x{im.size[1]} but earlier images are {size[0]}x{size[1]}; "
                    "resize the folder to one size first (daqakd does not guess a resize)."
                )
            arrs.append(np.asarray(im, dtype=np.uint8).copy())
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"cannot read image {f}: {exc}. Remove or re-encode it.") from exc
    a = np.stack(arrs)
    if a.ndim == 3:
        a = a[:, None]
    else:
        a = a.transpose(0, 3, 1, 2)
    return torch.from_numpy(a).float().div_(255.0)


def load_image_folder(root: str | Path, test_size: float = 0.2, seed: int = 0) -> DataBundle:
    """Load an ImageFolder-style directory into memory.

    ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` are used as given; a plain
    ``ROOT/<class>/*`` is split with a fixed seed, stratified by class.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data directory {root} does not exist; pass --data digits or a folder of class sub-folders.")
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; pass an ImageFolder-style directory or 'digits'.")
    if (root / "train").is_dir() and (root / "test").is_dir():
        trf, trl, classes = _scan_folder(root / "train")
        tef, tel, classes_te = _scan_folder(root / "test")
        if classes_te != classes:
            raise DataError(f"train classes {classes} differ from test classes {classes_te} under {root}.")
        trx, tex = _decode(trf, "decode train"), _decode(tef, "decode test")
        return DataBundle(root.name, trx, torch.tensor(trl), tex, torch.tensor(tel), classes)
    files, labels, classes = _scan_folder(root)
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(files))
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=labels)
    x = _decode(files, "decode")
    y = torch.tensor(labels)
    return DataBundle(root.name, x[np.sort(tr)], y[np.sort(tr)], x[np.sort(te)], y[np.sort(te)], classes)


def tensors_from_dataset(dataset: Dataset[Any], limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise a map-style ``Dataset`` of ``(image_tensor, int_label)`` pairs into tensors."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError as exc:
        raise DataError("the dataset has no len(); pass a map-style torch Dataset or an ImageFolder path.") from exc
    if n == 0:
        raise DataError("the dataset is empty; check the path or the filter that built it.")
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2 and limit is None:
        x, y = dataset.tensors[0], dataset.tensors[1]
    else:
        xs, ys = [], []
        for i in range(n if limit is None else min(n, limit)):
            item = dataset[i]
            if not (isinstance(item, (tuple, list)) and len(item) >= 2):
                raise DataError(f"dataset item {i} is {type(item).__name__}; expected an (image, label) pair.")
            img, lab = item[0], item[1]
            if not isinstance(img, torch.Tensor):
                raise DataError(
                    f"dataset item {i} holds a {type(img).__name__} image; give the dataset a transform that "
                    "ends in a float tensor, e.g. torchvision.transforms.v2.Compose([ToImage(), ToDtype(torch.float32, scale=True)])."
                )
            xs.append(img)
            ys.append(int(lab))
        x, y = torch.stack(xs), torch.tensor(ys)
    if x.dim() != 4:
        raise DataError(f"images must be [C, H, W] tensors (batched [N, C, H, W]); got shape {tuple(x.shape)}.")
    if not torch.is_floating_point(x):
        x = x.float().div(255.0)
    return x.float(), y.long()


def load_data(spec: str | Path, seed: int = 0) -> DataBundle:
    """``"digits"`` (embedded) or a path to an ImageFolder-style directory."""
    if str(spec).lower() == "digits":
        return load_digits(seed=seed)
    return load_image_folder(spec, seed=seed)


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


def iterate_images(loader: DataLoader) -> Iterator[torch.Tensor]:
    """Images only, for calibration hooks."""
    for x, _ in loader:
        yield x
