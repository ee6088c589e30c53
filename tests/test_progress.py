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
    lines = [ln for ln in err.splitlines() if ln.startswith("daqakd: ranking (teacher-ce)")]
    assert len(lines) == 4 and lines[0].endswith("1/4: none (repeat 1)"), err
    rank_augmentations(digits_teacher[0], digits, ["none", "randomerasing"], per_class=10, progress=False)
    assert "daqakd: ranking" not in capsys.readouterr().err


def _hold_the_gil(seconds: float) -> None:
    """One C call that never releases the GIL for about ``seconds`` (as a TorchScript export pass does):
    ``sum`` over a range runs no bytecode, so no other thread of this process runs meanwhile."""
    import time

    t0 = time.perf_counter()
    sum(range(10**6))
    per_million = max(time.perf_counter() - t0, 1e-6)
    sum(range(int(10**6 * seconds / per_million)))


def test_heartbeat_repeats_a_silent_phase_and_stops_with_its_block(monkeypatch: pytest.MonkeyPatch,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 29: NNCF's quantize and calibrate (67-69 s), exports (16-50 s) and epochs in a log printed one
    line each; the heartbeat repeats the phase under way whenever stderr stays quiet for the interval, also
    while the command holds Python's GIL in C code (a watcher process, not a thread)."""
    import time

    from daqakd_plugins import progress

    monkeypatch.setenv(progress.ENV, "0.2")
    with progress.heartbeat():
        # a slow or busy host may take a while to start the watcher: wait for its first line (not a timing bound)
        progress.say("starting ...")
        deadline, seen = time.monotonic() + 60, ""
        while "daqakd: still starting (" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
            seen += capfd.readouterr().err
        assert "daqakd: still starting (" in seen, seen
        progress.say("quantizing a copy of the teacher with nncf W4A4 ...")
        _hold_the_gil(1.5)
        progress.doing("training epoch 1/2: 3/9 batches done", new_phase=False)
        time.sleep(1.0)
    err = capfd.readouterr().err
    still = [ln for ln in err.splitlines() if ln.startswith("daqakd: still ")]
    # the phase was one C call holding the GIL for 1.5 s: lines came meanwhile (a thread could write none)
    assert sum(ln.startswith("daqakd: still quantizing a copy of the teacher with nncf W4A4 (") for ln in still) >= 3, err
    assert still[-1].startswith("daqakd: still training epoch 1/2: 3/9 batches done ("), err
    time.sleep(0.5)
    assert capfd.readouterr().err == ""  # the block is over: no thread left talking


def test_heartbeat_is_quiet_while_lines_flow_and_when_off(monkeypatch: pytest.MonkeyPatch,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    """Anything written on stderr (a backend's warning, a bar on a terminal) counts as a line; progress off or
    an interval of 0 starts nothing."""
    import sys
    import time

    from daqakd_plugins import progress

    monkeypatch.setenv(progress.ENV, "1.0")  # ten times the gap between the lines below: a busy host keeps up
    with progress.heartbeat():
        progress.say("exporting ...")
        for i in range(15):
            print(f"a backend's line {i}", file=sys.stderr)
            time.sleep(0.1)
    assert "still" not in capfd.readouterr().err
    for enabled, every in ((False, "0.1"), (True, "0")):
        monkeypatch.setenv(progress.ENV, every)
        with progress.heartbeat(enabled):
            progress.say("exporting ...", enabled=False)
            time.sleep(0.5)
        assert capfd.readouterr().err == ""


def test_a_run_says_what_it_does_in_a_log_every_few_seconds(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    """The engine wires the heartbeat: off a terminal an epoch is repeated with its batch count, and the CLI
    says it is starting before it imports torch and the backends."""
    from daqakd_plugins import cli, progress
    from daqakd_plugins.distill import DistillConfig, run_distill

    monkeypatch.setenv(progress.ENV, "0.05")
    run_distill(DistillConfig(backend="brevitas", bits=8, data="digits", epochs=1, augment="none", export=False,
                              train_per_class=60, out=str(tmp_path / "run"), progress=True))
    err = capfd.readouterr().err
    assert "daqakd: still training epoch 1/1: " in err and " batches done, loss " in err, err[-2000:]
    rc = cli.main(["distill", "--fresh", "--resume", str(tmp_path / "run"), "--out", str(tmp_path / "x")])
    err = capfd.readouterr().err
    assert rc == 2 and err.startswith("daqakd: starting daqakd distill (importing torch"), err
