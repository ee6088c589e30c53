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


@pytest.mark.parametrize("name", ["teacher-ce", "ce-minus-i"])
def test_a_named_variant_refuses_weights_that_would_make_it_another_score(name):
    """Its weights are what the name means: --metric-param w_D=1 with teacher-ce would silently rank with
    another score under teacher-ce's name."""
    from daqakd_plugins.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"{name} takes no metric parameters .* use --metric cmi --metric-param"):
        get_metrics()[name].create(5, w_D=1.0)


def test_the_default_metric_is_registered_and_is_what_distill_and_rank_use():
    import argparse

    from daqakd_plugins.commands import rank
    from daqakd_plugins.config import DEFAULT_METRIC
    from daqakd_plugins.distill import DistillConfig

    assert DEFAULT_METRIC == "teacher-ce" and DEFAULT_METRIC in get_metrics()
    assert DistillConfig.__dataclass_fields__["metric"].default == DEFAULT_METRIC
    p = argparse.ArgumentParser()
    rank.add_parser(p.add_subparsers(dest="cmd"))
    assert p.parse_args(["rank"]).metric == DEFAULT_METRIC
