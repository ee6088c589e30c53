"""Which kit checks run at which bit widths: the per-width checks at every width, the width-independent
ones once (first widths), and the resume-state check once at the lowest widths, where the most quantizer
state is learned (it is the kit's slowest check: running it at every width doubled its cost)."""

from __future__ import annotations

from daqakd_plugins import testing


def test_resume_steps_runs_once_at_the_lowest_widths_and_resume_once_at_the_first() -> None:
    sched = testing.checks("brevitas")
    widths = testing.default_bits("brevitas")
    assert widths == [(8, 8), (4, 4)]
    at = {c.__name__: [b for _, b, cc in sched if cc is c] for c in testing.CHECKS}
    assert at["check_resume_steps"] == [(4, 4)]
    assert at["check_resume"] == [(8, 8)]
    assert at["check_exports"] == [(8, 8), (4, 4)]  # width-dependent checks keep every width
    assert at["check_save_restore_shufflenet"] == [(8, 8), (4, 4)]
    # a backend with one width gets every check at it
    one = testing.checks("brevitas", bits=[(8, 8)])
    assert {c.__name__ for _, _, c in one} == {c.__name__ for c in testing.CHECKS}
