"""Built-in ranking metrics: the paper's ``cmi`` score and the Good-DA-in-KD ``tstddev`` baseline.

The maths lives in :mod:`daqakd_plugins.ranking.metrics`; this module only registers it, through the
same hook a third-party metric uses.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ..contracts import Metric
from ..hookspecs import hookimpl
from ..ranking.metrics import create_cmi, create_tstddev

CMI = Metric(
    name="cmi",
    create=create_cmi,
    description="the paper's score M = w_D·D − w_I·I + w_CE·CE (defaults 1, 1, 0): label closeness of the "
    "class centroids minus contextual mutual information, one pass, lower is better",
    needs_clean=False,
    lower_is_better=True,
)

TSTDDEV = Metric(
    name="tstddev",
    create=create_tstddev,
    description="Good-DA-in-KD baseline: mean over classes of the std, over groups of 5 batches, of the "
    "teacher's mean probability on clean+augmented batches; lower is better",
    needs_clean=True,
    lower_is_better=True,
)


# Variants of the same one-pass statistics with other weights. On our CPU-scaled CIFAR-10 check
# (docs/results.md) the teacher's CE on augmented data and CE − I predicted the student's accuracy far
# better than the paper's D − I; they are selectable by name, and "cmi" stays the paper's score.
TEACHER_CE = Metric(
    name="teacher-ce",
    create=partial(create_cmi, w_D=0.0, w_I=0.0, w_CE=1.0),
    description="teacher cross-entropy on the augmented data (cmi with w_D=0, w_I=0, w_CE=1); lower is better",
    needs_clean=False,
    lower_is_better=True,
)

CE_MINUS_I = Metric(
    name="ce-minus-i",
    create=partial(create_cmi, w_D=0.0, w_I=1.0, w_CE=1.0),
    description="CE − I, the variant in the authors' code (cmi with w_D=0, w_I=1, w_CE=1); lower is better",
    needs_clean=False,
    lower_is_better=True,
)


@hookimpl
def daqakd_register_metrics(register: Callable[[Metric], None]) -> None:
    for metric in (CMI, TSTDDEV, TEACHER_CE, CE_MINUS_I):
        register(metric)
