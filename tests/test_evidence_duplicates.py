"""`analyse` counts a ranking pass once when the JSONL holds it twice.

Two `reproduce_figure1.py --shard` processes started on a file without ranking rows both run every
ranking pass and both append it. Counted twice, a pass leaves the score means as they are but shrinks
their std and narrows the bootstrap intervals (it resamples passes).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from daqakd_plugins.evidence import analyse, read_results

DATA = Path(__file__).resolve().parents[1] / "docs" / "evidence" / "cifar10-subset-cpu.jsonl"


def test_a_repeated_ranking_pass_is_counted_once() -> None:
    rows = read_results(DATA)
    ranking = [r for r in rows if r["kind"] == "ranking"]
    assert len({(r["candidate"], r["pass"]) for r in ranking}) == len(ranking) == 24
    # the second shard's copy of every pass, appended after the first's (as the race would leave them)
    doubled = rows[:1] + ranking + copy.deepcopy(ranking) + [r for r in rows if r["kind"] == "student"]
    want, got = analyse(rows, n_boot=200), analyse(doubled, n_boot=200)
    assert got == want


def test_the_last_copy_of_a_pass_wins_like_a_repeated_student() -> None:
    rows = read_results(DATA)
    redo = copy.deepcopy(next(r for r in rows if r["kind"] == "ranking" and r["candidate"] == "none" and r["pass"] == 0))
    redo["scores"] = {k: v + 1.0 for k, v in redo["scores"].items()}
    a = analyse(rows, n_boot=10)["configs"]["W2A4"]["scores"]["cmi"]["per_candidate"]["none"]
    b = analyse([*rows, redo], n_boot=10)["configs"]["W2A4"]["scores"]["cmi"]["per_candidate"]["none"]
    assert b["mean"] == pytest.approx(a["mean"] + 1.0 / 3, rel=1e-12)  # one of the three passes moved by 1, none was added
