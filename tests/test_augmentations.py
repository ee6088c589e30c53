"""Built-in candidate augmentations: names, batch contract, per-sample randomness, seeding, label mixing,
and clear errors for images a candidate cannot handle."""

from __future__ import annotations

import pytest
import torch

from daqakd_plugins.augment import (
    PAPER_CANDIDATES,
    candidate_notes,
    per_sample,
    resolve_augmentation,
    resolve_candidates,
)
from daqakd_plugins.contracts import Augmentation
from daqakd_plugins.errors import ConfigError, DataError, UnknownNameError
from daqakd_plugins.plugins import get_augmentations
from daqakd_plugins.train import seed_everything

KORNIA = ("kornia-flip-crop", "kornia-crop", "kornia-affine", "kornia-perspective", "kornia-color",
          "kornia-erasing", "kornia-blur-noise", "kornia-elastic")


def _batch(c: int, hw: int, b: int = 12, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, c, hw, hw, generator=g)
    t = torch.nn.functional.one_hot(torch.arange(b) % classes, classes).float()
    return x, t


def test_registered_names_are_the_stable_set() -> None:
    regs = get_augmentations()
    assert len(PAPER_CANDIDATES) == 16
    assert set(PAPER_CANDIDATES) <= set(regs)
    assert {"mixup", *KORNIA} <= set(regs)
    for name, a in regs.items():
        assert a.name == name and a.family in ("none", "torchvision", "kornia"), name
        assert a.description
    assert regs["none"].family == "none" and regs["none+cutmix"].family == "torchvision"
    assert regs["randaugment+cutmix"].mixes_labels and not regs["randaugment"].mixes_labels


@pytest.mark.parametrize("shape", [(1, 8), (3, 32)], ids=["digits-1ch-8px", "rgb-32px"])
def test_every_builtin_keeps_the_batch_contract(shape: tuple[int, int]) -> None:
    """Every registered candidate returns images of the same shape/dtype in [0, 1] and valid targets."""
    c, hw = shape
    x, t = _batch(c, hw)
    for name, aug in get_augmentations().items():
        seed_everything(0)
        xa, ta = aug(x.clone(), t.clone())  # Augmentation.__call__ also checks shape and dtype
        assert xa.shape == x.shape and xa.dtype == x.dtype, name
        assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0 + 1e-6, name
        assert torch.allclose(ta.sum(1), torch.ones(len(ta)), atol=1e-5) and float(ta.min()) >= 0, name
        if name != "none" and name != "kornia-elastic":
            assert not torch.equal(xa, x), f"{name} did nothing to a random batch"


@pytest.mark.parametrize("name", ["autoaugment-cifar10", "randaugment", "trivialaugmentwide", "augmix",
                                  "randomerasing", "kornia-affine", "kornia-color"])
def test_random_parameters_are_drawn_per_sample(name: str) -> None:
    """Identical images in one batch must come out differently (not one draw for the whole batch)."""
    x = torch.rand(1, 3, 32, 32).repeat(16, 1, 1, 1)
    t = torch.eye(4)[torch.arange(16) % 4]
    seed_everything(1)
    xa, _ = resolve_augmentation(name)(x, t)
    distinct = {tuple(v.flatten()[:200].tolist()) for v in xa}
    assert len(distinct) >= 4, f"{name}: {len(distinct)} distinct outputs for 16 identical inputs"


@pytest.mark.parametrize("name", ["augmix+cutmix", "kornia-flip-crop", "mixup"])
def test_same_seed_same_output(name: str) -> None:
    x, t = _batch(3, 16)
    aug = resolve_augmentation(name)
    seed_everything(5)
    a = aug(x, t)
    seed_everything(5)
    b = aug(x, t)
    seed_everything(6)
    c = aug(x, t)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_cutmix_is_torchvisions_and_mixes_labels_by_area() -> None:
    from torchvision.transforms import v2

    x, t = _batch(1, 8, b=10, classes=10)
    seed_everything(3)
    xa, ta = resolve_augmentation("none+cutmix")(x, t)
    seed_everything(3)
    xr, tr = v2.CutMix(alpha=1.0, num_classes=10)(x, torch.arange(10))
    assert torch.equal(xa, xr) and torch.allclose(ta, tr)


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_label_weight_is_the_pasted_area(seed: int) -> None:
    """Every sample i is a constant image of its own value and class i; CutMix pastes a box from its
    neighbour i-1, so each pixel is unambiguously its own or the neighbour's. The neighbour's label
    weight must equal the fraction of pixels that came from the neighbour, and the rest stays on i."""
    b, hw = 10, 8
    values = (torch.arange(b, dtype=torch.float32) + 1) / (b + 1)
    x = values.view(b, 1, 1, 1).expand(b, 1, hw, hw).contiguous()
    t = torch.eye(b)
    seed_everything(seed)
    xa, ta = resolve_augmentation("none+cutmix")(x, t)
    own = (xa == values.view(b, 1, 1, 1)).flatten(1)
    other = (xa == values.roll(1).view(b, 1, 1, 1)).flatten(1)
    assert bool((own ^ other).all()), "every pixel is the sample's own or its neighbour's"
    frac = other.float().mean(1)  # pasted area fraction, per sample
    assert 0 < float(frac[0]) < 1, f"seed {seed}: CutMix pasted an empty or full box ({float(frac[0])})"
    prev = (torch.arange(b) - 1) % b
    expect = (1 - frac).unsqueeze(1) * t + frac.unsqueeze(1) * t[prev]
    assert torch.allclose(ta, expect, atol=1e-6), (ta, frac)
    assert torch.allclose(ta[torch.arange(b), prev], frac, atol=1e-6)  # neighbour's weight = pasted area


def test_single_image_batch_is_left_unmixed() -> None:
    x, t = _batch(1, 8, b=1)
    xa, ta = resolve_augmentation("mixup")(x, t)
    assert torch.equal(xa, x) and torch.equal(ta, t)


def test_one_channel_notes_and_other_channel_counts_error() -> None:
    regs = get_augmentations()
    assert any("identity" in n for n in candidate_notes(regs["randaugment"], (1, 8, 8)))
    assert candidate_notes(regs["randaugment"], (3, 32, 32)) == []
    assert any("identity" in n for n in candidate_notes(regs["augmix+cutmix"], (1, 8, 8)))
    assert any("brightness and contrast" in n for n in candidate_notes(regs["kornia-color"], (1, 8, 8)))
    x = torch.rand(4, 4, 16, 16)  # RGBA-like: torchvision colour ops accept 1 or 3 channels only
    with pytest.raises(DataError, match="1- or 3-channel"):
        regs["autoaugment-cifar10"](x, torch.eye(4))
    xa, _ = regs["kornia-affine"](x, torch.eye(4))  # kornia geometric ops do not care
    assert xa.shape == x.shape


def test_resolve_names_callables_and_compositions() -> None:
    with pytest.raises(UnknownNameError) as ei:
        resolve_augmentation("randaugmnet")
    assert "randaugment" in str(ei.value) and "registered augmentations" in str(ei.value)

    def flip(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.flip(-1), targets

    a = resolve_augmentation(flip)
    assert isinstance(a, Augmentation) and a.name == "flip" and a.family == "user"
    comp = resolve_augmentation("kornia-affine+cutmix")
    assert comp.name == "kornia-affine+cutmix" and comp.mixes_labels and comp.family == "kornia"
    assert resolve_augmentation("RandAugment").name == "randaugment"  # case-insensitive
    names = [c.name for c in resolve_candidates("paper")]
    assert names == list(PAPER_CANDIDATES)
    assert [c.name for c in resolve_candidates(None)] == list(PAPER_CANDIDATES)
    assert {c.name for c in resolve_candidates("kornia")} == set(KORNIA)
    assert [c.name for c in resolve_candidates("none, none ,mixup")] == ["none", "mixup"]
    with pytest.raises(ConfigError, match="both named"):
        resolve_candidates([flip, Augmentation(name="flip", fn=flip)])
    with pytest.raises(ConfigError):
        resolve_candidates("")


def test_shape_or_dtype_changing_candidates_are_rejected() -> None:
    x, t = _batch(1, 8)
    crop = Augmentation(name="crop", fn=lambda i, tt: (i[..., :6, :6], tt))
    with pytest.raises(DataError, match="crop.*keep shape and dtype"):
        crop(x, t)
    half = Augmentation(name="half", fn=lambda i, tt: (i.half(), tt))
    with pytest.raises(DataError, match="half"):
        half(x, t)
    grow = per_sample(lambda img: img[..., : 4 + int(torch.randint(3, (1,))), :], "ragged")
    with pytest.raises(DataError, match="ragged"):
        grow(x, t)


def test_per_sample_uint8_round_trip() -> None:
    """uint8=True hands the transform uint8 images and returns float images on the 1/255 grid."""
    seen: list[torch.dtype] = []

    def inv(img: torch.Tensor) -> torch.Tensor:
        seen.append(img.dtype)
        return 255 - img

    x, t = _batch(3, 8)
    xa, _ = per_sample(inv, "invert8", uint8=True)(x, t)
    assert seen and set(seen) == {torch.uint8}
    assert xa.dtype == torch.float32 and torch.allclose(xa, 1 - x, atol=1 / 255)


def test_third_party_plugin_candidates_and_metrics_rank_by_name(fresh_plugins, digits) -> None:
    """A plugin registers a candidate and a metric through the hooks; both work by name."""
    from daqakd_plugins import hookimpl
    from daqakd_plugins.contracts import Metric, MetricResult
    from daqakd_plugins.plugins import register_plugin
    from daqakd_plugins.ranking import rank_augmentations

    class MeanMax:
        """Toy metric: mean max-probability (higher is better)."""

        def __init__(self, num_classes: int) -> None:
            self.total, self.n = 0.0, 0

        def update(self, batch) -> None:  # noqa: ANN001
            self.total += float(torch.softmax(batch.logits, 1).max(1).values.sum())
            self.n += len(batch.logits)

        def result(self) -> MetricResult:
            return MetricResult(score=self.total / self.n, components={"conf": self.total / self.n}, n=self.n)

    class ToyPlugin:
        @hookimpl
        def daqakd_register_augmentations(self, register) -> None:  # noqa: ANN001
            register(Augmentation(name="invert", fn=lambda x, t: (1 - x, t), description="1 - x", family="user"))

        @hookimpl
        def daqakd_register_metrics(self, register) -> None:  # noqa: ANN001
            register(Metric(name="meanmax", create=MeanMax, lower_is_better=False))

    plugin = ToyPlugin()
    register_plugin(plugin, name="toy")
    assert "invert" in get_augmentations()
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    r = rank_augmentations(teacher, (digits.train_x[:100], digits.train_y[:100]), ["none", "invert", "invert+cutmix"],
                           metric="meanmax", progress=False)
    assert r.metric == "meanmax" and not r.lower_is_better
    scores = [e.score for e in r.entries]
    assert scores == sorted(scores, reverse=True)  # higher first for a higher-is-better metric
