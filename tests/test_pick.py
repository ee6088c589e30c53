"""Is the pick a pick? ``Ranking.separation`` and where it shows: the rank table, its JSON and the distill report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from daqakd_plugins.ranking import RankEntry, Ranking, rank_augmentations
from daqakd_plugins.ranking.result import Separation


def _entry(name: str, scores: list[float]) -> RankEntry:
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)) if len(scores) > 1 else float("nan")
    return RankEntry(name=name, score=mean, score_std=std, scores=scores)


def _ranking(per_candidate: dict[str, list[float]], **kw: object) -> Ranking:
    repeats = len(next(iter(per_candidate.values())))
    return Ranking(metric="cmi", entries=[_entry(n, s) for n, s in per_candidate.items()], repeats=repeats,
                   **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# the rule, on constructed entries
# ---------------------------------------------------------------------------------------------------
def test_clearly_separated_pick() -> None:
    r = _ranking({"b": [0.50, 0.51, 0.49], "a": [0.10, 0.11, 0.09], "c": [0.90, 0.91, 0.92]})
    sep = r.separation()
    assert isinstance(sep, Separation)
    assert (sep.best, sep.runner_up, sep.separated, sep.reason) == ("a", "b", True, "separated")
    assert sep.gap == pytest.approx(0.40)
    assert sep.se == pytest.approx(math.sqrt((0.01**2 + 0.01**2) / 3))
    assert sep.z > 2 and sep.tied == ("a",) and sep.suggested_repeats is None
    assert "separated" in sep.message and "NOT" not in sep.message and "--repeats" not in sep.message
    assert r.differs("a", "b") is True  # the same rule as differs()


def test_unseparated_pick_names_the_tied_candidates_and_recommends_repeats() -> None:
    # the CIFAR situation: the top three are within one another's spread, the fourth is clearly behind
    r = _ranking({
        "trivialaugmentwide": [0.030, 0.080, 0.057],
        "autoaugment-cifar10": [0.010, 0.065, 0.024],
        "randaugment": [0.040, 0.074, 0.069],
        "autoaugment-svhn": [0.60, 0.61, 0.62],
    })
    sep = r.separation()
    assert (sep.best, sep.runner_up, sep.separated, sep.reason) == (
        "autoaugment-cifar10", "trivialaugmentwide", False, "not_separated")
    assert set(sep.tied) == {"autoaugment-cifar10", "trivialaugmentwide", "randaugment"}
    assert sep.tied[0] == "autoaugment-cifar10" and "autoaugment-svhn" not in sep.tied
    assert sep.gap <= 2 * sep.se
    assert sep.suggested_repeats is not None and sep.suggested_repeats > 3
    assert "NOT separated" in sep.message and f"--repeats {sep.suggested_repeats}" in sep.message
    assert "`randaugment`" in sep.message  # the third tied candidate is named too
    # the suggestion is what the same spread would need: at that many repeats the gap clears 2 SE
    n = sep.suggested_repeats
    assert sep.gap > 2 * sep.se * math.sqrt(3 / n) and sep.gap <= 2 * sep.se * math.sqrt(3 / (n - 1))
    # the caller's flag goes into the advice (distill calls it --rank-repeats)
    assert "--rank-repeats" in r.separation(option="--rank-repeats").message


def test_one_pass_cannot_be_judged_and_recommends_repeats() -> None:
    r = _ranking({"a": [0.1], "b": [0.9]})
    sep = r.separation()
    assert sep.separated is None and sep.reason == "one_pass"
    assert (sep.best, sep.runner_up) == ("a", "b") and math.isnan(sep.se) and sep.tied == ()
    assert sep.suggested_repeats and sep.suggested_repeats >= 2
    assert f"--repeats {sep.suggested_repeats}" in sep.message and "cannot be judged" in sep.message


def test_edge_cases_one_candidate_no_spread_higher_is_better() -> None:
    one = _ranking({"a": [0.1, 0.2]}).separation()
    assert one.separated is None and one.reason == "one_candidate" and one.suggested_repeats is None
    # deterministic candidates (no spread): a real gap is separated, an exact tie is not and more repeats cannot help
    assert _ranking({"a": [0.1, 0.1], "b": [0.2, 0.2]}).separation().separated is True
    tie = _ranking({"a": [0.1, 0.1], "b": [0.1, 0.1]}).separation()
    assert tie.separated is False and tie.suggested_repeats is None
    nan = _ranking({"a": [float("nan"), float("nan")], "b": [float("nan"), float("nan")]}).separation()
    assert nan.reason == "no_score" and nan.best is None
    up = Ranking(metric="acc", lower_is_better=False, repeats=3,
                 entries=[_entry("lo", [0.1, 0.11, 0.09]), _entry("hi", [0.9, 0.91, 0.89])]).separation()
    assert (up.best, up.runner_up, up.separated) == ("hi", "lo", True) and up.gap == pytest.approx(0.8)


def test_table_and_json_carry_the_pick(tmp_path: Path) -> None:
    r = _ranking({"a": [0.030, 0.080, 0.057], "b": [0.010, 0.065, 0.024]})
    md = r.to_markdown()
    assert r.separation().message in md
    d = r.to_dict()
    assert d["pick"] == r.separation().to_dict()
    assert d["pick"]["separated"] is False and d["pick"]["runner_up"] == "a"
    back = Ranking.load_json(r.save_json(tmp_path / "r.json"))  # the extra key does not disturb the round trip
    assert back.separation() == r.separation()
    json.dumps(_ranking({"a": [0.1], "b": [0.2]}).to_dict(), allow_nan=False)  # one pass: NaNs written as null


# ---------------------------------------------------------------------------------------------------
# real rankings: the digits teacher, few samples
# ---------------------------------------------------------------------------------------------------
def test_real_ranking_with_repeats(digits, digits_teacher) -> None:
    teacher, _ = digits_teacher
    r = rank_augmentations(teacher, digits, ["none", "randomerasing+cutmix", "autoaugment-svhn"], per_class=10,
                           repeats=3, batch_size=50, progress=False)
    sep = r.separation()
    a, b = r.entries[0], r.entries[1]
    se = math.sqrt((a.score_std**2 + b.score_std**2) / 3)
    assert (sep.best, sep.runner_up) == (a.name, b.name) and sep.se == pytest.approx(se)
    assert sep.separated is (abs(a.score - b.score) > 2 * se) and sep.separated is r.differs(a.name, b.name)
    assert sep.message in r.to_markdown()


def test_cli_rank_prints_and_writes_the_pick(digits_teacher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daqakd_plugins.cli import main
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    tp = save_model(tmp_path / "t.pt", model, meta["arch"], meta)
    out = tmp_path / "one.json"
    assert main(["rank", "--teacher", str(tp), "--candidates", "none,randomerasing", "--per-class", "5",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["pick"]["reason"] == "one_pass" and d["pick"]["separated"] is None
    assert d["pick"]["best"] == d["best"] and "--repeats 5" in d["pick"]["message"]
    assert d["pick"]["message"] in text  # the table's footer
    assert "one pass: separation from runner-up" in text and "rerun with --repeats 5" in text.splitlines()[-1]

    out2 = tmp_path / "two.json"
    assert main(["rank", "--teacher", str(tp), "--candidates", "none,randomerasing", "--per-class", "5",
                 "--repeats", "2", "--json", str(out2)]) == 0
    text = capsys.readouterr().out
    d2 = json.loads(out2.read_text())
    assert d2["pick"]["separated"] in (True, False) and d2["pick"]["repeats"] == 2
    assert d2["pick"] == Ranking.load_json(out2).separation().to_dict()
    assert ("NOT separated from runner-up" in text) is (d2["pick"]["separated"] is False)


# ---------------------------------------------------------------------------------------------------
# the distill report
# ---------------------------------------------------------------------------------------------------
def test_distill_report_pick_and_markdown() -> None:
    from daqakd_plugins.distill.report import pick_summary as _pick
    from daqakd_plugins.distill.report import render_markdown

    ranking = _ranking({"a": [0.030, 0.080, 0.057], "b": [0.010, 0.065, 0.024]}).to_dict()
    pick = _pick(json.loads(json.dumps(ranking)))
    assert pick is not None and pick["separated"] is False and "--rank-repeats" in pick["message"]
    assert "--repeats " not in pick["message"]
    assert _pick(None) is None
    report = {
        "backend": "brevitas", "bits": 2, "act_bits": 4, "data": {"name": "digits", "train_used": 10, "test": 5},
        "loss": "paper", "loss_terms": [], "augmentation": "b", "ranking": ranking["candidates"], "pick": pick,
        "epochs": 1, "lr": 1e-3, "batch_size": 8, "optimizer": "adam", "seed": 0, "seconds": 1.0,
        "accuracy": {"teacher_fp": 1.0, "student_before": 0.5, "student_after": 0.9}, "history": [], "export": {},
    }
    md = render_markdown(report)
    assert "Is the pick separated?" in md and pick["message"] in md
    top = ranking["candidates"][0]
    assert f"| b | {top['score']:.4f} ± {top['score_std']:.4f} |" in md  # rows show the spread the verdict uses


@pytest.mark.slow
def test_run_distill_reports_the_pick(fresh_plugins, digits_teacher, tmp_path: Path) -> None:
    from daqakd_plugins.distill import DistillConfig, run_distill
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    tp = save_model(tmp_path / "t.pt", model, meta["arch"], meta)
    r = run_distill(DistillConfig(
        backend="brevitas", bits=4, act_bits=4, data="digits", teacher=str(tp), epochs=1, augment="auto",
        candidates="none,randomerasing", rank_per_class=5, train_per_class=5, batch_size=32, export=False,
        progress=False, out=str(tmp_path / "run"),
    ))
    pick = r["pick"]
    assert pick["reason"] == "one_pass" and pick["best"] == r["augmentation"]
    assert "--rank-repeats 5" in pick["message"]
    assert r["ranking_detail"]["pick"] == pick
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["pick"] == pick
    assert pick["message"] in (tmp_path / "run" / "report.md").read_text()
