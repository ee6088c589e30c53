"""Small things a user hits: iterating a Ranking, image-only candidates, the DAQAKD_TRACE switch."""

from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch

from daqakd_plugins import plugins
from daqakd_plugins.augment import resolve_augmentation, resolve_candidates
from daqakd_plugins.contracts import Augmentation
from daqakd_plugins.errors import DataError, UnknownNameError
from daqakd_plugins.ranking import RankEntry, Ranking, rank_augmentations


# ---------------------------------------------------------------------------------------------------
# a Ranking iterates over its entries, best first
# ---------------------------------------------------------------------------------------------------
def test_ranking_iterates_and_has_a_length() -> None:
    r = Ranking(metric="cmi", entries=[RankEntry(name="b", score=0.5), RankEntry(name="a", score=0.1),
                                       RankEntry(name="c", score=0.9)])
    assert [e.name for e in r] == ["a", "b", "c"] == r.names
    assert list(r) == r.entries and len(r) == 3
    assert r["b"].score == 0.5 and "b" in r and "z" not in r and r.entries[0] in r
    with pytest.raises(UnknownNameError):
        r["z"]
    with pytest.raises(TypeError, match="by candidate name"):
        r[0]  # type: ignore[index]
    assert len(Ranking(metric="cmi", entries=[])) == 0


# ---------------------------------------------------------------------------------------------------
# image-only callables are candidates; targets pass through unchanged
# ---------------------------------------------------------------------------------------------------
def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(4, 3, 8, 8), torch.eye(3)[torch.tensor([0, 1, 2, 1])]


def test_torchvision_v2_transform_instance_is_image_only() -> None:
    from torchvision.transforms import v2

    x, t = _batch()
    aug = resolve_augmentation(v2.RandomHorizontalFlip(p=1.0))
    assert aug.image_only is True and aug.name == "RandomHorizontalFlip" and aug.family == "user"
    xa, ta = aug(x, t)
    assert torch.equal(xa, x.flip(-1)) and ta is t
    composed = resolve_augmentation(v2.Compose([v2.RandomVerticalFlip(p=1.0)]))
    assert torch.equal(composed(x, t)[0], x.flip(-2))


def test_plain_lambda_is_image_only_and_pairs_still_work() -> None:
    x, t = _batch()
    aug = resolve_augmentation(lambda x: x.flip(-1))
    assert aug.image_only is True
    xa, ta = aug(x, t)
    assert torch.equal(xa, x.flip(-1)) and ta is t

    def pair(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.flip(-1), targets.flip(0)

    p = resolve_augmentation(pair)
    assert p.image_only is False and torch.equal(p(x, t)[1], t.flip(0))
    # an Augmentation built by hand decides the same way, and can be told
    assert Augmentation(name="f", fn=lambda x: x.flip(-1)).image_only is True
    assert Augmentation(name="g", fn=lambda x, t: (x, t)).image_only is False
    assert Augmentation(name="h", fn=lambda *a: a).image_only is False  # undecidable: the documented pair
    forced = Augmentation(name="k", fn=lambda x, scale=1.0: x * scale, image_only=True)
    assert torch.equal(forced(x, t)[0], x)


def test_modules_are_classified_by_their_forward() -> None:
    K = pytest.importorskip("kornia.augmentation")

    class Darken(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images * 0.5

    x, t = _batch()
    aug = resolve_augmentation(Darken())
    assert aug.image_only is True and aug.name == "Darken"
    assert torch.equal(aug(x, t)[0], x * 0.5)
    flip = resolve_augmentation(K.RandomHorizontalFlip(p=1.0))  # forward(input, params=None, **kwargs)
    assert flip.image_only is True and torch.equal(flip(x, t)[0], x.flip(-1))


def test_classification_never_calls_the_callable() -> None:
    class Counting:
        calls = 0

        def __call__(self, images: torch.Tensor) -> torch.Tensor:
            Counting.calls += 1
            return images

    c = Counting()
    aug = resolve_augmentation(c)
    assert Counting.calls == 0 and aug.image_only is True
    aug(*_batch())
    assert Counting.calls == 1


@pytest.mark.parametrize("fn", [lambda *a: a, lambda: 0, lambda a, b, c: a, lambda x, *, k: x])
def test_unclassifiable_callable_is_a_data_error(fn) -> None:
    with pytest.raises(DataError, match=r"exactly one required positional parameter.*image_only"):
        resolve_augmentation(fn)


def test_image_only_that_returns_a_pair_is_explained() -> None:
    aug = resolve_augmentation(lambda x, targets=None: (x, targets))
    with pytest.raises(DataError, match="image_only=False"):
        aug(*_batch())


def test_image_only_candidates_rank_like_their_pair_form(digits, digits_teacher) -> None:
    from torchvision.transforms import v2

    teacher, _ = digits_teacher

    def flip_pair(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.flip(-1), targets

    cands = resolve_candidates([v2.RandomHorizontalFlip(p=1.0), lambda x: x.flip(-1), flip_pair, "none"])
    assert [a.image_only for a in cands] == [True, True, False, False]
    r = rank_augmentations(teacher, digits, cands, per_class=5, progress=False)
    flips = {r[n].score for n in ("RandomHorizontalFlip", "<lambda>", "flip_pair")}
    assert len(flips) == 1 and r["none"].score not in flips


def test_distiller_accepts_an_image_only_augmentation(digits, digits_teacher) -> None:
    from daqakd_plugins.distill import Distiller

    teacher, _ = digits_teacher
    student = copy.deepcopy(teacher)
    for p in student.parameters():
        p.requires_grad_(True)
    seen: list[tuple[int, ...]] = []

    def flip(images: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(images.shape))
        return images.flip(-1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the plain student has no quantizers
        kd = Distiller(teacher, student, loss="paper", augment=flip)
    assert kd.augment is not None and kd.augment.image_only is True
    loss = kd.loss(digits.train_x[:8], digits.train_y[:8])
    assert torch.isfinite(loss) and seen == [(8, 1, 8, 8)]


# ---------------------------------------------------------------------------------------------------
# DAQAKD_TRACE
# ---------------------------------------------------------------------------------------------------
def _traced(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str) -> bool:
    monkeypatch.setenv(plugins.TRACE_ENV, value)
    plugins.reset_plugins()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="daqakd.hooks"):
        plugins.get_backends()
    return any("daqakd_register_backends" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("value", ["off", "OFF", "false", "False", "no", "NO", "0", "", " off "])
def test_trace_off_values(fresh_plugins, monkeypatch, caplog, value) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # accepted values do not warn
        assert _traced(monkeypatch, caplog, value) is False


@pytest.mark.parametrize("value", ["1", "on", "ON", "true", "True", "yes", " Yes "])
def test_trace_on_values(fresh_plugins, monkeypatch, caplog, value) -> None:
    assert _traced(monkeypatch, caplog, value) is True


def test_trace_unknown_value_warns_and_stays_off(fresh_plugins, monkeypatch, caplog) -> None:
    with pytest.warns(UserWarning, match=r"DAQAKD_TRACE='maybe'.*1, on, true, yes.*0, off, false, no"):
        assert _traced(monkeypatch, caplog, "maybe") is False


def test_readme_loader_snippet_works_without_num_classes(digits, digits_teacher) -> None:
    """README's `kd.loader(train_set, ...)` on a Distiller made without num_classes: the width comes from
    the teacher's output on the first image (it used to raise ConfigError)."""
    from daqakd_plugins.distill import Distiller

    teacher, _ = digits_teacher
    kd = Distiller(teacher, copy.deepcopy(teacher).requires_grad_(True), loss="paper", augment="none")
    loader = kd.loader(torch.utils.data.Subset(digits.train, range(64)), batch_size=32, workers=0, seed=0)
    assert kd.num_classes == 10
    x, y = next(iter(loader))
    assert x.shape == (32, 1, 8, 8) and float(kd.loss(x, y)) > 0
    kd.remove_hooks()
