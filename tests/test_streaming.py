"""The streaming data pipeline (issue 14): Datasets through DataLoaders, augmentation where the pipeline
runs it, results independent of the number of workers, variable-size and mixed-mode folders, and the
errors users see for bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from daqakd_plugins.augment import resolve_augmentation, split_stages
from daqakd_plugins.data import load_image_folder
from daqakd_plugins.errors import DataError
from daqakd_plugins.ranking import rank_augmentations
from daqakd_plugins.streams import Normalizer, derive_seed, eval_loader, train_loader

REPO = Path(__file__).resolve().parents[1]


def _folder(root: Path, *, n: int = 12, classes: tuple[str, ...] = ("a", "b", "c"), seed: int = 0) -> Path:
    """Variable-size JPEGs (16..40 px a side), some grayscale and some RGB, with a class-dependent
    brightness so a tiny teacher can learn them."""
    rng = np.random.default_rng(seed)
    for ci, c in enumerate(classes):
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w, h = (int(v) for v in rng.integers(16, 41, size=2))
            base = 40 + 80 * ci
            if i % 3 == 0:
                arr = np.clip(rng.normal(base, 25, (h, w)), 0, 255).astype(np.uint8)
                Image.fromarray(arr, mode="L").save(d / f"{i:03d}.jpg", quality=90)
            else:
                arr = np.clip(rng.normal(base, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                arr[..., ci] = 230
                Image.fromarray(arr, mode="RGB").save(d / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _folder(tmp_path_factory.mktemp("varsize") / "data")


@pytest.fixture(scope="module")
def tiny_teacher(folder: Path) -> torch.nn.Module:
    from daqakd_plugins.train import train_teacher

    bundle = load_image_folder(folder, image_size=12)
    model, _ = train_teacher(bundle, epochs=2, seed=0, progress=False, workers=0,
                             arch={"name": "small_resnet", "in_channels": 3, "num_classes": 3, "width": 8, "stages": 1})
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


# --------------------------------------------------------------------------------------------------
# stages and seeds
# --------------------------------------------------------------------------------------------------
def test_split_stages_keeps_the_order_and_puts_each_piece_where_it_can_run() -> None:
    sample, batch, device = split_stages(resolve_augmentation("randaugment+cutmix"))
    assert [a.name for a in sample] == ["randaugment"] and [a.name for a in batch] == ["cutmix"] and device is None
    sample, batch, device = split_stages(resolve_augmentation("kornia-affine+cutmix"))
    assert sample == () and batch == () and device is not None and device.name == "kornia-affine+cutmix"
    sample, batch, device = split_stages(resolve_augmentation("augmix+kornia-crop"))
    assert [a.name for a in sample] == ["augmix"] and batch == () and device is not None and device.name == "kornia-crop"
    assert split_stages(resolve_augmentation("none")) == ((), (), None)
    assert split_stages(None) == ((), (), None)


def test_derive_seed_is_stable_and_separates_keys() -> None:
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    seeds = {derive_seed(0, 0, i) for i in range(1000)} | {derive_seed(0, 1, i) for i in range(1000)}
    assert len(seeds) == 2000 and all(0 <= s < 2**63 for s in seeds)


def test_train_loader_batches_do_not_depend_on_workers(digits) -> None:
    aug = resolve_augmentation("trivialaugmentwide+cutmix")
    passes = {}
    for w in (0, 2):
        loader = train_loader(digits.train, aug, num_classes=10, batch_size=100, seed=5, workers=w)
        loader.set_epoch(3)
        passes[w] = [(b.images, b.targets, b.indices) for b in loader]
    assert len(passes[0]) == 14
    for (x0, t0, i0), (x2, t2, i2) in zip(passes[0], passes[2]):
        assert torch.equal(i0, i2) and torch.equal(x0, x2) and torch.equal(t0, t2)
    assert not torch.equal(passes[0][0][0], digits.train_x[passes[0][0][2]])  # it did augment
    assert bool((passes[0][0][1].max(1).values < 1).any())  # CutMix made soft targets in the collate function


def test_the_epoch_changes_order_and_draws_and_the_global_rng_is_untouched(digits) -> None:
    loader = train_loader(digits.train, resolve_augmentation("randaugment"), num_classes=10, batch_size=64, seed=0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    loader.set_epoch(0)
    e0 = next(iter(loader))
    loader.set_epoch(1)
    e1 = next(iter(loader))
    assert torch.equal(torch.get_rng_state(), before)  # seeded draws leave the caller's RNG alone
    assert not torch.equal(e0.indices, e1.indices)
    loader.set_epoch(0)
    assert torch.equal(next(iter(loader)).images, e0.images)  # and epoch 0 again is epoch 0 (resume)


def test_eval_loader_reads_the_dataset_in_order(digits) -> None:
    x = torch.cat([b.images for b in eval_loader(digits.test, num_classes=10, batch_size=128, workers=2)])
    assert torch.equal(x, digits.test_x)


def test_normalizer_applies_per_channel_and_checks_channels() -> None:
    n = Normalizer([0.5, 0.25, 0.0], [0.5, 0.25, 1.0])
    x = torch.full((2, 3, 2, 2), 0.5)
    assert n(x)[:, :, 0, 0].tolist() == [[0.0, 1.0, 0.5]] * 2
    with pytest.raises(DataError, match="3 values but the images have 1 channels"):
        n.check_channels(1)
    assert torch.equal(Normalizer()(x), x) and not Normalizer()


# --------------------------------------------------------------------------------------------------
# folders: variable sizes, mixed modes, bad files
# --------------------------------------------------------------------------------------------------
def test_variable_size_mixed_mode_folder_needs_and_takes_image_size(folder: Path) -> None:
    lazy = load_image_folder(folder)
    with pytest.raises(DataError, match="pass --image-size N"):
        lazy.to_memory()
    b = load_image_folder(folder, image_size=12)
    assert b.mode == "RGB" and b.image_shape == (3, 12, 12) and not b.in_memory
    m = b.to_memory(workers=2)
    assert m.train_x.shape[1:] == (3, 12, 12) and float(m.train_x.min()) >= 0 and float(m.train_x.max()) <= 1
    gray_file = next(i for i, f in enumerate(b.train_files) if Image.open(f).mode == "L")
    g = m.train_x[gray_file]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])  # a grayscale JPEG replicated to RGB
    one = load_image_folder(folder, image_size=12, channels=1)
    assert one.image_shape == (1, 12, 12) and one.to_memory().train_x.shape[1] == 1


def test_random_resized_crop_is_seeded_per_sample(folder: Path) -> None:
    b = load_image_folder(folder, image_size=10)
    ds = b.training_set("random")
    runs = []
    for w in (0, 2):
        loader = train_loader(ds, None, num_classes=3, batch_size=8, seed=1, workers=w)
        loader.set_epoch(0)
        runs.append(torch.cat([x.images for x in loader]))
    assert runs[0].shape[1:] == (3, 10, 10) and torch.equal(runs[0], runs[1])
    centre = train_loader(b.train, None, num_classes=3, batch_size=8, seed=1)
    assert not torch.equal(torch.cat([x.images for x in centre]), runs[0])


def _corrupt(folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(folder, root)
    bad = root / "b" / "005.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated JPEG
    return root, bad


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_file_is_named_in_a_clear_error(folder: Path, tiny_teacher, tmp_path: Path, workers: int) -> None:
    root, bad = _corrupt(folder, tmp_path)
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        load_image_folder(root, image_size=12)  # a small folder: the header probe reads every file
    b = load_image_folder(root, image_size=12, channels=3)  # no probe: the file is met while ranking
    with pytest.raises(DataError) as err:
        rank_augmentations(tiny_teacher, b, ["none"], progress=False, workers=workers, batch_size=8)
    msg = str(err.value)
    assert str(bad) in msg and "remove or re-encode it" in msg
    assert "Traceback" not in msg and "worker" not in msg  # raised in the main process, not the worker's dump


# --------------------------------------------------------------------------------------------------
# ranking and distillation do not depend on the worker count
# --------------------------------------------------------------------------------------------------
def test_ranking_scores_do_not_depend_on_workers(folder: Path, tiny_teacher) -> None:
    b = load_image_folder(folder, image_size=12)
    cands = ["none", "augmix", "randaugment+cutmix", "kornia-affine"]
    r0 = rank_augmentations(tiny_teacher, b, cands, progress=False, workers=0, batch_size=8, repeats=2)
    r2 = rank_augmentations(tiny_teacher, b, cands, progress=False, workers=2, batch_size=8, repeats=2)
    assert [e.name for e in r0.entries] == [e.name for e in r2.entries]
    assert [e.scores for e in r0.entries] == [e.scores for e in r2.entries]  # bitwise
    assert len({e.score for e in r0.entries}) == 4  # the candidates really differ
    # a candidate's score does not depend on the other candidates ranked with it
    alone = rank_augmentations(tiny_teacher, b, ["augmix"], progress=False, workers=2, batch_size=8, repeats=2)
    assert alone.entries[0].scores == next(e for e in r0.entries if e.name == "augmix").scores


def test_ranking_streams_a_plain_dataset_of_pil_images(tiny_teacher, folder: Path) -> None:
    class PilFolder(torch.utils.data.Dataset):
        """A user's own dataset: PIL images of one size, int labels, no transform."""

        def __init__(self) -> None:
            b = load_image_folder(folder)
            self.files, self.targets = b.train_files, b.train_labels.tolist()

        def __len__(self) -> int:
            return len(self.files)

        def __getitem__(self, i: int):
            return Image.open(self.files[i]).convert("RGB").resize((12, 12)), self.targets[i]

    r = rank_augmentations(tiny_teacher, PilFolder(), ["none", "augmix"], progress=False, workers=2, batch_size=8,
                           per_class=4)
    assert r.num_samples == 12 and {e.name for e in r.entries} == {"none", "augmix"}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "daqakd_plugins", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_cli_rank_and_distill_on_variable_size_jpegs(folder: Path, tmp_path: Path) -> None:
    """The acceptance run on a small generated folder: `daqakd rank` and `daqakd distill --backend
    brevitas` with --image-size; the distillation's result is the same with 0 and 2 workers."""
    teacher = tmp_path / "teacher.pt"
    r = _cli("teacher", "--data", str(folder), "--image-size", "12", "--epochs", "3", "--out", str(teacher),
             "--workers", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli("rank", "--data", str(folder), "--image-size", "12", "--teacher", str(teacher), "--candidates",
             "none,augmix,randaugment+cutmix", "--workers", "2", "--batch-size", "8", "--json", str(tmp_path / "r.json"),
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ranking = json.loads((tmp_path / "r.json").read_text())
    assert ranking["num_samples"] == 28 and len(ranking["candidates"]) == 3 and ranking["workers"] == 2
    reports = {}
    for w in ("0", "2"):
        out = tmp_path / f"run{w}"
        r = _cli("distill", "--data", str(folder), "--image-size", "12", "--teacher", str(teacher), "--backend",
                 "brevitas", "--bits", "4", "--epochs", "2", "--batch-size", "8", "--augment", "randaugment+cutmix",
                 "--calib-batches", "2", "--workers", w, "--out", str(out), "--no-export", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        reports[w] = json.loads((out / "report.json").read_text())
    h0, h2 = reports["0"]["history"], reports["2"]["history"]
    assert [e["loss"] for e in h0] == [e["loss"] for e in h2]  # bitwise, not approximately
    assert reports["0"]["accuracy"] == reports["2"]["accuracy"]
    p = reports["2"]["pipeline"]
    assert p["workers"] == 2 and p["image_size"] == 12
    assert p["augmentation_stages"] == {"workers_per_image": ["randaugment"], "collate_batch": ["cutmix"],
                                        "step_on_device": []}


def test_distiller_loader_runs_worker_stages_and_seeds_the_device_stage(digits, digits_teacher) -> None:
    from daqakd_plugins import QuantConfig, backends
    from daqakd_plugins.distill import Distiller

    teacher = digits_teacher[0]
    losses = {}
    for w in (0, 2):
        torch.manual_seed(0)
        student = backends.quantize(teacher, "brevitas", QuantConfig(weight_bits=4, act_bits=4),
                                    example_input=digits.train_x[:4])
        kd = Distiller(teacher, student, augment="autoaugment-svhn+kornia-affine", num_classes=10)
        loader = kd.loader(torch.utils.data.Subset(digits.train, range(256)), batch_size=64, workers=w, seed=2)
        assert loader.device_piece is not None and loader.device_piece.name == "kornia-affine"
        opt = torch.optim.SGD(student.parameters(), lr=0.01)
        torch.manual_seed(100 + w)  # a different global stream per run: every draw must come from the batch's seed
        out = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            for x, y in loader:
                assert y.shape == (len(x),) and y.dtype == torch.int64  # no mixer: hard labels
                loss = kd.loss(x, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                out.append(float(loss.detach()))
        losses[w] = out
    assert len(losses[0]) == 8 and losses[0] == losses[2]
