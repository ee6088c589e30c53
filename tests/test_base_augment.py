"""The base transform (``--base-augment``): every candidate, ``none`` included, runs after the training
recipe's crop + flip, in ranking, distillation and teacher training, and it is recorded where a run is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from daqakd_plugins.augment import resolve_augmentation, resolve_base, split_stages, with_base
from daqakd_plugins.errors import CheckpointError, ConfigError


def _folder(root: Path, n: int = 10, size: int = 16) -> Path:
    """Three classes of ``size``x``size`` RGB PNGs with a class-dependent colour and an asymmetric bar, so a
    crop or a flip changes the pixels."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", 4)):
        for ci, c in enumerate(("a", "b", "c")):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                arr = np.clip(rng.normal(60 + 70 * ci, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                arr[:, : size // 4, ci] = 250
                Image.fromarray(arr).save(d / f"{i:03d}.png")
    return root


def _is_crop_flip(out: torch.Tensor, img: torch.Tensor, pad: int) -> bool:
    """``out`` is a (possibly flipped) crop of ``img`` zero-padded by ``pad``."""
    h, w = img.shape[-2:]
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    for cand in (out, out.flip(-1)):
        for i in range(2 * pad + 1):
            for j in range(2 * pad + 1):
                if torch.equal(padded[:, i:i + h, j:j + w], cand):
                    return True
    return False


def test_crop_flip_is_a_padded_crop_and_a_flip_of_each_image() -> None:
    base = resolve_base("crop-flip")
    assert base is not None and base.stage == "sample"
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    out, t = base(x, torch.eye(6))
    assert out.shape == x.shape and torch.equal(t, torch.eye(6))
    assert all(_is_crop_flip(out[k], x[k], 4) for k in range(6))
    assert not torch.equal(out, x)  # six draws: at least one moved or flipped
    torch.manual_seed(0)
    assert torch.equal(base(x, torch.eye(6))[0], out)  # seeded: the same draws


@pytest.mark.parametrize(("shape", "expected"), [((1, 8, 8), None), ((3, 32, 32), "crop-flip"),
                                                 ((3, 64, 64), "crop-flip"), ((3, 224, 224), "rrc-flip")])
def test_auto_chooses_by_image_size(shape, expected) -> None:
    base = resolve_base("auto", shape)
    assert (base.name if base is not None else None) == expected


def test_unknown_base_and_auto_without_a_size_are_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="crop-flip"):
        resolve_base("cropflip")
    with pytest.raises(ConfigError, match="image shape"):
        resolve_base("auto")


def test_every_candidate_runs_after_the_base_and_keeps_its_name() -> None:
    base = resolve_base("crop-flip")
    none = with_base(base, resolve_augmentation("none"))
    assert none.name == "none" and "crop-flip" in none.description
    assert [p.name for p in split_stages(none)[0]] == ["crop-flip"]  # `none` is the base alone
    mixed = with_base(base, resolve_augmentation("trivialaugmentwide+cutmix"))
    sample, batch, device = split_stages(mixed)
    assert mixed.name == "trivialaugmentwide+cutmix"
    assert [p.name for p in sample] == ["crop-flip", "trivialaugmentwide"] and [p.name for p in batch] == ["cutmix"]
    assert device is None
    assert with_base(None, mixed) is mixed


def test_ranking_records_the_base_and_is_independent_of_workers(tmp_path: Path) -> None:
    from daqakd_plugins.data import load_image_folder
    from daqakd_plugins.models import SmallResNet
    from daqakd_plugins.ranking import rank_augmentations

    bundle = load_image_folder(_folder(tmp_path / "d"))
    torch.manual_seed(0)
    teacher = SmallResNet(in_channels=3, num_classes=3, width=8).eval()
    kw = {"candidates": ["none", "randaugment+cutmix"], "batch_size": 8, "progress": False}
    r0 = rank_augmentations(teacher, bundle, workers=0, **kw)
    r2 = rank_augmentations(teacher, bundle, workers=2, **kw)
    plain = rank_augmentations(teacher, bundle, workers=0, base_augment="none", **kw)
    assert r0.base_augment == "crop-flip" and plain.base_augment == "none"  # auto at 16 px
    assert [e.score for e in r0.entries] == [e.score for e in r2.entries]
    assert r0["none"].score != plain["none"].score  # `none` is crop + flip now, not the identity
    assert "crop-flip" in r0.to_markdown() and type(r0).from_dict(r0.to_dict()).base_augment == "crop-flip"


def test_distiller_base_changes_what_the_student_sees() -> None:
    from daqakd_plugins.distill import Distiller
    from daqakd_plugins.models import SmallResNet

    torch.manual_seed(0)
    teacher = SmallResNet(in_channels=3, num_classes=3, width=8).eval()
    seen: list[torch.Tensor] = []
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    for base in (None, "auto"):
        student = SmallResNet(in_channels=3, num_classes=3, width=8)
        h = student.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
        kd = Distiller(teacher, student, augment="none", base_augment=base)
        kd.loss(x, y, seed=3)
        h.remove()
        kd.remove_hooks()
    assert torch.equal(seen[0], x)  # no base: `none` is the identity
    assert not torch.equal(seen[1], x) and all(_is_crop_flip(seen[1][k], x[k], 2) for k in range(4))


def test_distill_run_records_resumes_and_reads_old_checkpoints_as_no_base(tmp_path: Path) -> None:
    from daqakd_plugins.distill import DistillConfig, run_distill
    from daqakd_plugins.distill.checkpoint import CHECKPOINT_NAME

    data = _folder(tmp_path / "d", n=6)
    common = {"backend": "brevitas", "bits": 8, "data": str(data), "epochs": 2, "augment": "none",
              "teacher_epochs": 1, "batch_size": 8, "export": False, "progress": False, "workers": 0,
              "arch": "small_resnet"}
    out = tmp_path / "run"
    rep = run_distill(DistillConfig(**common, out=str(out)))
    plain = run_distill(DistillConfig(**common, out=str(tmp_path / "plain"), base_augment="none",
                                      teacher=str(out / "teacher.pt")))  # the same teacher: only the base differs
    assert rep["base_augment"] == "crop-flip" and plain["base_augment"] == "none"
    assert rep["history"][0]["loss"] != plain["history"][0]["loss"]  # the students saw other images
    ck = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert json.loads(ck["config"])["base_augment"] == "auto"
    with pytest.raises(CheckpointError, match="base_augment"):
        run_distill(DistillConfig(**{**common, "epochs": 3}, base_augment="none", out=str(out), resume=str(out)))
    # a checkpoint written before the setting existed resumes as what it was: no base
    cfg = json.loads(ck["config"])
    del cfg["base_augment"]
    ck["config"] = json.dumps(cfg)
    torch.save(ck, out / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="base_augment: checkpoint 'none'"):
        run_distill(DistillConfig(**common, out=str(out), resume=str(out)))
    from daqakd_plugins.distill.config import DistillConfig as DC

    assert DC.from_dict(cfg).base_augment == "none"


def test_teacher_trains_through_the_base_and_records_it(tmp_path: Path) -> None:
    from daqakd_plugins.data import load_image_folder
    from daqakd_plugins.train import train_teacher

    bundle = load_image_folder(_folder(tmp_path / "d", n=4))
    arch = {"name": "small_resnet", "in_channels": 3, "num_classes": 3, "width": 8, "stages": 1}
    _, meta = train_teacher(bundle, epochs=1, progress=False, workers=0, arch=arch)
    assert meta["base_augment"] == "crop-flip"
    m1, _ = train_teacher(bundle, epochs=1, progress=False, workers=0, arch=arch, base_augment="none")
    m2, meta2 = train_teacher(bundle, epochs=1, progress=False, workers=0, arch=arch)
    assert meta2["base_augment"] == "crop-flip"
    assert any(not torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_cli_flag_reaches_the_ranking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daqakd_plugins.cli import main
    from daqakd_plugins.data import load_image_folder
    from daqakd_plugins.models import SmallResNet, arch_spec, save_model

    data = _folder(tmp_path / "d", n=4)
    bundle = load_image_folder(data)
    torch.manual_seed(0)
    save_model(tmp_path / "t.pt", SmallResNet(in_channels=3, num_classes=3, width=8),
               arch_spec("small_resnet", num_classes=3, in_channels=3, width=8))
    for flag, expected in (("none", "none"), ("rrc-flip", "rrc-flip")):
        out = tmp_path / f"{flag}.json"
        assert main(["rank", "--data", str(data), "--teacher", str(tmp_path / "t.pt"), "--candidates", "none",
                     "--workers", "0", "--base-augment", flag, "--json", str(out)]) == 0
        assert json.loads(out.read_text())["base_augment"] == expected
    assert bundle.num_classes == 3


def test_auto_always_ranks_none_so_it_can_keep_the_base_alone(tmp_path: Path) -> None:
    from daqakd_plugins.distill import DistillConfig, run_distill

    rep = run_distill(DistillConfig(backend="brevitas", bits=8, data="digits", epochs=1, augment="auto",
                                    candidates="randaugment,augmix", rank_per_class=10, export=False, progress=False,
                                    workers=0, teacher_epochs=2, out=str(tmp_path / "run")))
    detail = rep["ranking_detail"]
    assert sorted(c["name"] for c in detail["candidates"]) == ["augmix", "none", "randaugment"]
    assert any("`none`" in n for n in detail["notes"])
    assert rep["augmentation"] == detail["best"]
