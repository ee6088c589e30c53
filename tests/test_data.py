"""Embedded digits, ImageFolder loading, and the errors users see for bad data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from daqakd_plugins.data import (
    load_data,
    load_digits,
    load_image_folder,
    one_hot,
    stratified_subset,
)
from daqakd_plugins.errors import DataError
from daqakd_plugins.streams import dataset_tensors


def test_digits_is_embedded_seeded_and_stratified():
    a, b = load_digits(), load_digits()
    assert a.describe() == {"name": "digits", "train": 1347, "test": 450, "classes": 10, "image_shape": [1, 8, 8]}
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert 0.0 <= float(a.train_x.min()) and float(a.train_x.max()) <= 1.0
    counts = torch.bincount(a.test_y, minlength=10)
    assert int(counts.min()) >= 43 and int(counts.max()) <= 47  # ~45 per class in a stratified 25 % split
    c = load_digits(seed=1)
    assert not torch.equal(a.test_y, c.test_y)


def _write_images(root, classes, n, size=(6, 5), mode="RGB"):
    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        d = root / c
        d.mkdir(parents=True)
        for i in range(n):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            arr = (rng.random(shape) * 255).astype(np.uint8)
            arr[..., 0] = ci * 40  # class-dependent pixel so labels are checkable
            Image.fromarray(arr, mode=mode).save(d / f"{i:03d}.png")


def test_image_folder_with_train_test_split(tmp_path):
    _write_images(tmp_path / "train", ["cat", "dog"], 4)
    _write_images(tmp_path / "test", ["cat", "dog"], 2)
    lazy = load_data(tmp_path)
    assert lazy.classes == ["cat", "dog"] and lazy.image_shape == (3, 5, 6) and not lazy.in_memory
    b = lazy.to_memory()
    assert b.train_y.tolist() == [0] * 4 + [1] * 4 and len(b.test_y) == 4
    assert torch.allclose(b.train_x[b.train_y == 1][:, 0, 0, 0], torch.full((4,), 40 / 255))


def test_flat_image_folder_is_split_with_a_seed(tmp_path):
    _write_images(tmp_path, ["a", "b", "c"], 10, mode="L")
    b1, b2 = load_image_folder(tmp_path), load_image_folder(tmp_path)
    assert b1.image_shape == (1, 5, 6) and len(b1.train_labels) + len(b1.test_labels) == 30
    assert torch.equal(b1.test_labels, b2.test_labels) and torch.bincount(b1.test_labels).tolist() == [2, 2, 2]


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "no class sub-folders"),
        (lambda p: (p / "cls").mkdir(parents=True), "no image files"),
    ],
)
def test_image_folder_errors_name_the_fix(tmp_path, setup, match):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=match):
        load_image_folder(root)


def test_mixed_image_sizes_are_refused_naming_image_size(tmp_path):
    _write_images(tmp_path / "x", ["a", "b"], 5, size=(6, 5))
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "x" / "a" / "big.png")
    with pytest.raises(DataError, match=r"big\.png is 9x9 .* pass --image-size N"):
        load_image_folder(tmp_path / "x").to_memory()


def test_torch_dataset_is_materialised():
    """streams.dataset_tensors, the one reader of a small dataset into tensors (its twin
    data.tensors_from_dataset is gone)."""
    ds = [(torch.rand(1, 4, 4), i % 3) for i in range(7)]

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return ds[i]

    x, y = dataset_tensors(DS(), num_classes=3)
    assert x.shape == (7, 1, 4, 4) and y.tolist() == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(DataError, match="empty"):
        dataset_tensors([], num_classes=3)

    class PilDS(DS):
        def __getitem__(self, i):
            return Image.new("L", (4, 4), color=51), 0

    x, _ = dataset_tensors(PilDS(), num_classes=3)  # PIL images are converted (float in [0, 1])
    assert x.shape == (7, 1, 4, 4) and torch.allclose(x, torch.full_like(x, 0.2))

    class StrDS(DS):
        def __getitem__(self, i):
            return "img.png", 0

    with pytest.raises(DataError, match="ToDtype"):
        dataset_tensors(StrDS(), num_classes=3)


def test_one_hot_range_error_and_subset():
    assert one_hot(torch.tensor([0, 2]), 3).tolist() == [[1, 0, 0], [0, 0, 1]]
    with pytest.raises(DataError, match=r"outside \[0, 3\)"):
        one_hot(torch.tensor([0, 3]), 3)
    labels = torch.tensor([0] * 10 + [1] * 5)
    idx = stratified_subset(labels, 3, seed=0)
    assert torch.bincount(labels[idx]).tolist() == [3, 3]
    assert torch.equal(idx, stratified_subset(labels, 3, seed=0))


def test_a_dataset_items_label_is_encoded_by_the_one_one_hot():
    """streams.to_target parses one item's label and leaves the encoding and the range error to
    one_hot (data.one_hot is the same function): one encoding, one message, naming the item."""
    from daqakd_plugins import data, streams

    assert data.one_hot is streams.one_hot
    assert streams.to_target(1, 3, "dataset item 0").tolist() == [0.0, 1.0, 0.0]
    assert streams.to_target(torch.tensor(2.0), 3, "x").dtype == torch.float32
    assert torch.equal(streams.to_target(torch.tensor([0.25, 0.75, 0.0]), 3, "x"), torch.tensor([0.25, 0.75, 0.0]))
    with pytest.raises(DataError, match=r"dataset item 2: labels \[5\] are outside \[0, 3\); the teacher predicts 3"):
        streams.to_target(5, 3, "dataset item 2")
    with pytest.raises(DataError, match="fractional"):
        streams.to_target(1.5, 3, "x")
