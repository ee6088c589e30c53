"""What a run shows while it works and draws when it ends (issue 29: long silent phases, a ranking bar
that counts candidates in "s/batch", a figure without legend whose axes ran past 100 % and through
fractional epochs, and no report.png from `daqakd distill`)."""

from __future__ import annotations

from typing import Any

import pytest


def _report(accs: list[float]) -> dict[str, Any]:
    return {"backend": "brevitas", "bits": 4, "act_bits": 4, "loss": "paper", "augmentation": "none",
            "accuracy": {"teacher_fp": 1.0, "student_before": 0.9, "student_after": accs[-1]},
            "ranking": [{"name": "none", "score": 0.1}, {"name": "randomerasing", "score": 0.2}],
            "history": [{"epoch": i + 1, "loss": 1.0 / (i + 1), "test_accuracy": a} for i, a in enumerate(accs)]}


def test_training_panel_has_a_legend_whole_epochs_and_stops_at_100() -> None:
    import matplotlib.pyplot as plt

    from daqakd_plugins.reporting import report_figure

    fig = report_figure(_report([0.97, 0.995, 1.0]))
    try:
        ax = next(a for a in fig.axes if a.get_xlabel() == "epoch" and a.get_ylabel() == "test accuracy %")
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["test accuracy %", "train loss"]  # both curves, the twin axis's too
        assert ax.get_ylim()[1] == 100  # 100 % accuracy: the axis ends there, not at 100.15
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    finally:
        plt.close(fig)


def test_ranking_bar_counts_candidates(digits, digits_teacher, monkeypatch: pytest.MonkeyPatch) -> None:
    import tqdm.auto

    from daqakd_plugins.ranking import rank_augmentations

    bars: list[Any] = []
    real = tqdm.auto.tqdm

    class Recorder(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **kw: Any) -> None:
            kw["disable"] = False  # draw even off a terminal, so the count is kept
            super().__init__(*a, **kw)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    rank_augmentations(digits_teacher[0], digits, ["none", "randomerasing", "kornia-affine"], repeats=2,
                       per_class=20, progress=True)
    (bar,) = [b for b in bars if b.desc.startswith("rank")]
    assert bar.unit == "candidate" and bar.total == 6  # 3 candidates x 2 repeats
    assert bar.n == pytest.approx(6)  # each pass's batches add up to one candidate
    assert "s/candidate" in str(bar) or "candidate/s" in str(bar)


def test_ranking_off_a_terminal_says_each_candidate(digits, digits_teacher, capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal tqdm draws nothing: a line per candidate instead (issue 29's trial: 44-87 s of ranking
    printed nothing into a log); none without progress."""
    from daqakd_plugins.ranking import rank_augmentations

    rank_augmentations(digits_teacher[0], digits, ["none", "randomerasing"], repeats=2, per_class=10, progress=True)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("daqakd: ranking (cmi)")]
    assert len(lines) == 4 and lines[0].endswith("1/4: none (repeat 1)"), err
    rank_augmentations(digits_teacher[0], digits, ["none", "randomerasing"], per_class=10, progress=False)
    assert "daqakd: ranking" not in capsys.readouterr().err
