"""rank_augmentations end to end on digits: ordering, determinism, repeats, subsets, every bad input of
issue 3, JSON round trip, and the ``daqakd rank`` command."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from daqakd_plugins.contracts import Augmentation
from daqakd_plugins.data import DataBundle, one_hot
from daqakd_plugins.errors import (
    ConfigError,
    DataError,
    ModelError,
    NonFiniteError,
    PluginError,
    UnknownNameError,
)
from daqakd_plugins.plugins import get_augmentations
from daqakd_plugins.ranking import RankEntry, Ranking, rank_augmentations
from daqakd_plugins.train import seed_everything

FAST = ["none", "randomerasing", "none+cutmix", "kornia-affine"]


@pytest.fixture(scope="module")
def teacher(digits_teacher):
    return digits_teacher[0]


def test_ranking_is_sorted_complete_and_documented(digits, teacher) -> None:
    r = rank_augmentations(teacher, digits, FAST, progress=False)
    assert isinstance(r, Ranking) and r.metric == "teacher-ce" and sorted(r.names) == sorted(FAST)  # the default
    scores = [e.score for e in r.entries]
    assert scores == sorted(scores) and r.best == r.entries[0].name
    n_train = len(digits.train_y)
    for e in r.entries:
        assert set(e.components) == {"D", "I", "CE"}
        assert math.isclose(e.score, e.components["CE"], rel_tol=1e-12, abs_tol=1e-15)  # teacher-ce: CE alone
        assert e.n == n_train and e.classes_seen == 10 and e.seconds > 0
        assert math.isnan(e.score_std)  # one repeat: no spread
    # the clean teacher fits its own training data far better than under CutMix
    assert r["none"].components["CE"] < r["none+cutmix"].components["CE"]
    assert r["none"].components["D"] < r["none+cutmix"].components["D"]


def test_same_seed_same_scores_and_independent_of_other_candidates(digits, teacher) -> None:
    a = rank_augmentations(teacher, digits, ["randaugment+cutmix", "kornia-color"], seed=3, progress=False)
    b = rank_augmentations(teacher, digits, ["kornia-color", "none", "randaugment+cutmix"], seed=3, progress=False)
    c = rank_augmentations(teacher, digits, ["randaugment+cutmix"], seed=4, progress=False)
    for name in ("randaugment+cutmix", "kornia-color"):
        assert a[name].score == b[name].score and a[name].components == b[name].components
    assert c["randaugment+cutmix"].score != a["randaugment+cutmix"].score


def test_repeats_report_mean_and_spread(digits, teacher) -> None:
    r = rank_augmentations(teacher, digits, ["none", "randaugment"], repeats=3, per_class=40, seed=0, progress=False)
    ra = r["randaugment"]
    assert len(ra.scores) == 3 and len(set(ra.scores)) == 3
    t = torch.tensor(ra.scores, dtype=torch.float64)
    assert math.isclose(ra.score, float(t.mean()), rel_tol=1e-12)
    assert math.isclose(ra.score_std, float(t.std(unbiased=True)), rel_tol=1e-12)
    assert set(ra.components_std) == {"D", "I", "CE"}
    # "none" is deterministic: only the batch order changes between repeats, which the metric ignores
    assert r["none"].score_std < 1e-9
    # repeat r uses seed + r (the per-class subset itself is drawn once, with seed)
    two = rank_augmentations(teacher, digits, ["randaugment"], seed=0, repeats=2, progress=False)
    single = rank_augmentations(teacher, digits, ["randaugment"], seed=1, progress=False)
    assert single["randaugment"].score == two["randaugment"].scores[1]
    # the 2-SE rule on real repeats (its boundary is pinned down in test_differs_is_the_two_standard_error_rule)
    rn = r["none"]
    se = math.sqrt((ra.score_std**2 + rn.score_std**2) / 3)
    assert r.differs("none", "randaugment") is (abs(ra.score - rn.score) > 2 * se)
    assert "±" in r.to_markdown()


def _two(a: float, b: float, std_a: float = 3.0, std_b: float = 4.0, repeats: int = 4) -> Ranking:
    return Ranking(metric="cmi", repeats=repeats,
                   entries=[RankEntry(name="a", score=a, score_std=std_a), RankEntry(name="b", score=b, score_std=std_b)])


def test_differs_is_the_two_standard_error_rule() -> None:
    """SE of the difference = sqrt((std_a² + std_b²) / repeats); "differs" means |Δ| strictly above 2 SE.
    With std 3 and 4 over 4 repeats: SE = sqrt(25 / 4) = 2.5 exactly, so the threshold is |Δ| > 5."""
    assert _two(10.0, 15.0).differs("a", "b") is False  # exactly 2 SE: not more than 2 SE
    assert _two(10.0, 14.999).differs("a", "b") is False  # just inside
    assert _two(10.0, 15.001).differs("a", "b") is True  # just outside
    assert _two(10.0, 5.001).differs("a", "b") is False and _two(10.0, 4.999).differs("a", "b") is True  # |Δ|
    for a, b in ((10.0, 14.999), (10.0, 15.001)):
        r = _two(a, b)
        assert r.differs("a", "b") is r.differs("b", "a")  # symmetric
    # the standard error shrinks with the repeats: the same Δ and stds over 16 repeats clear 2 SE = 2.5
    assert _two(10.0, 12.4, repeats=16).differs("a", "b") is False
    assert _two(10.0, 12.6, repeats=16).differs("a", "b") is True
    # k is the number of standard errors
    assert _two(10.0, 12.4).differs("a", "b", k=1.0) is False and _two(10.0, 12.6).differs("a", "b", k=1.0) is True
    assert _two(10.0, 17.4).differs("a", "b", k=3.0) is False and _two(10.0, 17.6).differs("a", "b", k=3.0) is True


def test_differs_is_none_without_repeats() -> None:
    """Fewer than two repeats (or no spread recorded): no standard error, so no verdict — None, not False."""
    assert _two(10.0, 1000.0, repeats=1).differs("a", "b") is None  # even with finite stds and a huge Δ
    assert _two(10.0, 1000.0, std_a=float("nan"), std_b=float("nan"), repeats=1).differs("a", "b") is None
    assert _two(10.0, 1000.0, std_b=float("nan"), repeats=3).differs("a", "b") is None
    assert _two(10.0, 1000.0, std_a=float("inf"), repeats=3).differs("a", "b") is None


def test_per_class_subset(digits, teacher) -> None:
    r = rank_augmentations(teacher, digits, ["none"], per_class=7, progress=False)
    assert r.num_samples == 70 and r["none"].n == 70 and r.per_class == 7
    assert any("7 samples per class" in n for n in r.notes)
    with pytest.raises(ConfigError, match="per_class"):
        rank_augmentations(teacher, digits, ["none"], per_class=0, progress=False)


def test_json_round_trip_and_markdown(digits, teacher, tmp_path: Path) -> None:
    r = rank_augmentations(teacher, digits, ["none", "mixup"], "cmi", per_class=20, progress=False)
    path = r.save_json(tmp_path / "sub" / "rank.json")
    d = json.loads(path.read_text())
    assert d["metric"] == "cmi" and [c["name"] for c in d["candidates"]] == r.names
    for c in d["candidates"]:
        assert {"name", "score", "score_std", "components", "n", "classes_seen", "seconds", "notes"} <= set(c)
        assert c["score_std"] is None  # NaN is written as null
    assert d["seed"] == 0 and d["repeats"] == 1 and d["per_class"] == 20
    back = Ranking.from_dict(d)
    assert back.names == r.names and back["mixup"].components == pytest.approx(r["mixup"].components)
    md = r.to_markdown()
    assert md.splitlines()[0].startswith("| # | candidate | cmi ↓ | D | I | CE |") and "`mixup`" in md
    with pytest.raises(UnknownNameError):
        r["nope"]


def test_dataset_and_tensor_pair_inputs(digits, teacher) -> None:
    x, y = digits.train_x[:200], digits.train_y[:200]
    by_pair = rank_augmentations(teacher, (x, y), ["none"], progress=False)
    by_ds = rank_augmentations(teacher, torch.utils.data.TensorDataset(x, y), ["none"], progress=False)
    assert by_pair["none"].score == by_ds["none"].score and by_pair.num_classes == 10
    soft = rank_augmentations(teacher, (x, one_hot(y, 10)), ["none"], progress=False)  # distributions too
    assert math.isclose(soft["none"].score, by_pair["none"].score, rel_tol=1e-12)


def test_user_callable_and_tstddev_baseline(digits, teacher) -> None:
    def flip(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.flip(-1), targets

    r = rank_augmentations(teacher, digits, ["none", flip], metric="tstddev", batch_size=64, progress=False)
    assert r.metric == "tstddev" and set(r.names) == {"none", "flip"}
    assert all(e.components["groups"] == 4.0 and e.score > 0 for e in r.entries)
    with pytest.raises(ConfigError, match="batch_size ≤"):
        rank_augmentations(teacher, digits, ["none"], metric="tstddev", progress=False)  # 6 batches of 256
    with pytest.raises(UnknownNameError, match="cmi"):
        rank_augmentations(teacher, digits, ["none"], metric="cmii", progress=False)
    with pytest.raises(ConfigError, match="w_CE"):
        rank_augmentations(teacher, digits, ["none"], metric_params={"wce": 1}, progress=False)


# ---------------------------------------------------------------------------------------------------
# bad input (issue 3): a clear error naming the fix, nothing half-written
# ---------------------------------------------------------------------------------------------------
def test_labels_outside_range(digits, teacher) -> None:
    y = digits.train_y[:50].clone()
    y[3] = 10
    with pytest.raises(DataError, match=r"outside \[0, 10\)"):
        rank_augmentations(teacher, (digits.train_x[:50], y), ["none"], progress=False)
    y[3] = -1
    with pytest.raises(DataError, match="outside"):
        rank_augmentations(teacher, (digits.train_x[:50], y), ["none"], progress=False)


def test_teacher_width_must_match_classes(digits, teacher) -> None:
    narrow = nn.Sequential(nn.Flatten(), nn.Linear(64, 7)).eval()
    with pytest.raises(ModelError, match="outputs 7 logits but the data has 10 classes"):
        rank_augmentations(narrow, digits, ["none"], progress=False)
    with pytest.raises(ModelError, match="12 classes"):
        rank_augmentations(teacher, digits, ["none"], num_classes=12, progress=False)


class _NaNOnBright(nn.Module):
    """Wraps the teacher and returns NaN logits for a batch whose mean brightness is high."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if float(x.mean()) > 0.9:
            out = out.clone()
            out[0, 0] = float("nan")
        return out


def test_nan_logits_name_the_candidate_and_batch(digits, teacher) -> None:
    def whiten_batch_2(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        whiten_batch_2.calls += 1  # type: ignore[attr-defined]
        return (torch.ones_like(images) if whiten_batch_2.calls == 3 else images), targets  # type: ignore[attr-defined]

    whiten_batch_2.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(NonFiniteError, match=r"candidate 'whiten_batch_2', batch 2"):
        rank_augmentations(_NaNOnBright(teacher).eval(), digits, [whiten_batch_2], batch_size=128, progress=False)


def test_shape_changing_candidate_is_rejected(digits, teacher, tmp_path: Path) -> None:
    def shrink(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images[..., :6, :6], targets

    def to_double(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images.double(), targets

    def drop_label_mass(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images, targets * 0.5

    with pytest.raises(DataError, match="shrink.*keep shape and dtype"):
        rank_augmentations(teacher, digits, ["none", shrink], progress=False)
    with pytest.raises(DataError, match="to_double"):
        rank_augmentations(teacher, digits, [to_double], progress=False)
    with pytest.raises(DataError, match="drop_label_mass.*sum to 1"):
        rank_augmentations(teacher, digits, [drop_label_mass], progress=False)

    def boom(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError("kaput")

    with pytest.raises(PluginError, match="candidate 'boom' failed on batch 0.*kaput"):
        rank_augmentations(teacher, digits, [boom], progress=False)


def test_empty_dataset(teacher) -> None:
    with pytest.raises(DataError, match="empty"):
        rank_augmentations(teacher, (torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), ["none"], progress=False)
    empty = DataBundle("e", torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), torch.zeros(0, 1, 8, 8),
                       torch.zeros(0, dtype=torch.long), [str(i) for i in range(10)])
    with pytest.raises(DataError, match="empty"):
        rank_augmentations(teacher, empty, ["none"], progress=False)


def test_class_with_no_samples_is_excluded_and_reported(digits, teacher) -> None:
    keep = digits.train_y != 3
    r = rank_augmentations(teacher, (digits.train_x[keep], digits.train_y[keep]), ["none", "none+cutmix"],
                           progress=False)
    assert r["none"].classes_seen == 9 and math.isfinite(r["none"].score)
    assert any("[3]" in n for n in r.notes) and any("[3]" in n for n in r["none"].notes)
    assert "[3]" in r.to_markdown()


def test_teacher_in_train_mode_is_switched_to_eval_and_restored(digits, teacher) -> None:
    ref = rank_augmentations(teacher, digits, ["none"], per_class=20, progress=False)
    teacher.train()
    try:
        with pytest.warns(UserWarning, match="train mode"):
            r = rank_augmentations(teacher, digits, ["none"], per_class=20, progress=False)
        assert teacher.training  # the user's mode is restored
        assert r["none"].score == ref["none"].score  # BatchNorm used running statistics
        assert any("train mode" in n for n in r.notes)
    finally:
        teacher.eval()
    # a BatchNorm left in train mode inside an eval-mode teacher is caught too, and only it is restored
    teacher.stem[1].train()
    try:
        with pytest.warns(UserWarning, match="1 of the teacher's modules"):
            rank_augmentations(teacher, digits, ["none"], per_class=5, progress=False)
        assert teacher.stem[1].training and not teacher.training and not teacher.fc.training
    finally:
        teacher.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rank_augmentations(teacher, digits, ["none"], per_class=5, progress=False)  # eval: no warning


def test_bad_arguments(digits, teacher) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        rank_augmentations(teacher, digits, ["none"], batch_size=0, progress=False)
    with pytest.raises(ConfigError, match="repeats"):
        rank_augmentations(teacher, digits, ["none"], repeats=0, progress=False)
    with pytest.raises(UnknownNameError, match="registered augmentations"):
        rank_augmentations(teacher, digits, ["none", "autoaugment"], progress=False)
    with pytest.raises(DataError, match="DataBundle"):
        rank_augmentations(teacher, [1, 2, 3], ["none"], progress=False)
    with pytest.raises(ModelError):
        rank_augmentations(lambda x: x, digits, ["none"], progress=False)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------------
def test_cli_rank_with_saved_teacher(digits_teacher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daqakd_plugins.cli import main
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    tp = save_model(tmp_path / "t.pt", model, meta["arch"], meta)
    out = tmp_path / "out.json"
    rc = main(["rank", "--data", "digits", "--teacher", str(tp), "--candidates", "none,randomerasing+cutmix",
               "--per-class", "15", "--repeats", "2", "--metric", "cmi", "--metric-param", "w_CE=0.5", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| # | candidate | cmi ↓" in text and "best:" in text
    d = json.loads(out.read_text())
    assert d["metric"] == "cmi" and len(d["candidates"]) == 2 and d["repeats"] == 2
    assert d["metric_params"] == {"w_CE": 0.5}
    c0 = d["candidates"][0]
    assert {"name", "score", "components", "n", "seconds"} <= set(c0) and c0["n"] == 150


def test_cli_errors_write_nothing(digits_teacher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daqakd_plugins.cli import main
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    tp = save_model(tmp_path / "t.pt", model, meta["arch"], meta)
    out = tmp_path / "out.json"
    rc = main(["rank", "--teacher", str(tp), "--candidates", "none,nosuch", "--json", str(out)])
    assert rc == 2 and not out.exists()
    assert "unknown augmentation 'nosuch'" in capsys.readouterr().err
    rc = main(["rank", "--teacher", str(tmp_path / "missing.pt"), "--json", str(out)])
    assert rc == 2 and not out.exists()
    assert main(["rank", "--list"]) == 0
    assert "kornia-affine" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_rank_trains_and_caches_a_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """From a fresh directory: no --teacher → train one, save runs/teacher-digits.pt, say so; reuse it next time."""
    from daqakd_plugins.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["rank", "--candidates", "none,none+cutmix", "--per-class", "10", "--teacher-epochs", "3", "--json", "o.json"]
    assert main(args) == 0
    assert (tmp_path / "runs" / "teacher-digits.pt").exists()
    assert "trained one on digits" in capsys.readouterr().err
    assert main(args) == 0
    assert "reusing" in capsys.readouterr().err
    assert json.loads((tmp_path / "o.json").read_text())["candidates"][0]["n"] == 100


def test_seeded_global_rng_does_not_leak_between_candidates(digits, teacher) -> None:
    """A candidate that consumes random numbers must not change the next candidate's draws."""

    def greedy(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.rand(1000)
        return images, targets

    seed_everything(123)
    a = rank_augmentations(teacher, digits, [greedy, "kornia-erasing"], per_class=20, progress=False)
    b = rank_augmentations(teacher, digits, ["kornia-erasing"], per_class=20, progress=False)
    assert a["kornia-erasing"].score == b["kornia-erasing"].score
    aug = Augmentation(name="kornia-erasing-copy", fn=get_augmentations()["kornia-erasing"].fn)
    c = rank_augmentations(teacher, digits, [aug], per_class=20, progress=False)
    assert c["kornia-erasing-copy"].score == b["kornia-erasing"].score
