"""The selectable metric variants share the cmi statistics; only the weights differ."""

from __future__ import annotations

import pytest
import torch

from daqakd_plugins.contracts import MetricBatch
from daqakd_plugins.plugins import get_metrics


@pytest.mark.parametrize("name, expected", [
    ("cmi", lambda c: c["D"] - c["I"]),
    ("teacher-ce", lambda c: c["CE"]),
    ("ce-minus-i", lambda c: c["CE"] - c["I"]),
])
def test_variant_scores_are_their_weighted_components(name, expected):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g) * 3
    targets = torch.nn.functional.one_hot(torch.randint(0, 5, (64,), generator=g), 5).float()
    acc = get_metrics()[name].create(5)
    acc.update(MetricBatch(logits=logits, targets=targets))
    res = acc.result()
    assert set(res.components) >= {"D", "I", "CE"}
    assert res.score == pytest.approx(expected(res.components), rel=1e-12)
    assert res.components["I"] > 0 and res.components["CE"] > 0
