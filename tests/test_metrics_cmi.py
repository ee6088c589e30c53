"""The one-pass CMI metric against a naive two-pass implementation (METRIC.md section 1), and the
tstddev baseline (section 2) against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch

from daqakd_plugins.contracts import MetricBatch
from daqakd_plugins.errors import ConfigError, DataError, ModelError, NonFiniteError
from daqakd_plugins.plugins import get_metrics
from daqakd_plugins.ranking.metrics import Q_CLAMP, CMIStats, create_cmi, create_tstddev

REL = 1e-9


def naive_two_pass(logits: torch.Tensor, t: torch.Tensor) -> dict[str, float]:
    """The authors' procedure: pass 1 computes the class centroids, pass 2 the per-sample KL to them."""
    logits, t = logits.double(), t.double()
    n_samples, c = t.shape
    p = torch.softmax(logits, dim=1)
    # pass 1: centroids Q_k = Σ_i t_i[k] p_i / Σ_i t_i[k]
    q = torch.zeros(c, c, dtype=torch.float64)
    seen = []
    for k in range(c):
        w = t[:, k]
        if float(w.sum()) > 0:
            q[k] = (w[:, None] * p).sum(0) / w.sum()
            seen.append(k)
    logq = q.clamp_min(Q_CLAMP).log()
    # pass 2: I = (1/N) Σ_i Σ_k t_i[k] KL(p_i || Q_k), sample by sample
    total = 0.0
    for i in range(n_samples):
        for k in seen:
            if float(t[i, k]) > 0:
                kl = float((torch.special.xlogy(p[i], p[i]) - p[i] * logq[k]).sum())
                total += float(t[i, k]) * kl
    i_val = total / n_samples
    d_val = sum(-float(logq[k, k]) for k in seen) / len(seen)
    ce = float(-(t * torch.log(p)).sum(1).mean())
    return {"D": d_val, "I": i_val, "CE": ce}


def one_pass(logits: torch.Tensor, t: torch.Tensor, batch: int = 37) -> dict[str, float]:
    acc = create_cmi(t.shape[1])
    for b, s in enumerate(range(0, len(t), batch)):
        acc.update(MetricBatch(logits=logits[s : s + batch], targets=t[s : s + batch], batch_index=b))
    return acc.result().components


def assert_close(a: dict[str, float], b: dict[str, float]) -> None:
    for k in ("D", "I", "CE"):
        assert math.isclose(a[k], b[k], rel_tol=REL, abs_tol=1e-15), (k, a[k], b[k], abs(a[k] - b[k]) / abs(b[k]))


def _soft_targets(labels: torch.Tensor, c: int, g: torch.Generator) -> torch.Tensor:
    """CutMix-like soft labels: each row mixes its label with its neighbour's."""
    oh = torch.nn.functional.one_hot(labels, c).double()
    lam = torch.rand(len(labels), 1, generator=g, dtype=torch.float64)
    return lam * oh + (1 - lam) * oh.roll(1, 0)


@pytest.mark.parametrize("scale", [0.5, 3.0, 12.0])
def test_one_pass_equals_two_pass_hard_labels(scale: float) -> None:
    g = torch.Generator().manual_seed(1)
    c, n = 7, 300
    logits = torch.randn(n, c, generator=g) * scale
    labels = torch.randint(c, (n,), generator=g)
    t = torch.nn.functional.one_hot(labels, c).float()
    ref, got = naive_two_pass(logits, t), one_pass(logits, t)
    assert_close(got, ref)
    assert ref["I"] > 1e-3  # a non-trivial case


def test_one_pass_equals_two_pass_soft_labels() -> None:
    g = torch.Generator().manual_seed(2)
    c, n = 10, 256
    logits = torch.randn(n, c, generator=g) * 4
    t = _soft_targets(torch.randint(c, (n,), generator=g), c, g)
    assert_close(one_pass(logits, t), naive_two_pass(logits, t))
    # three-way mixes too (MixUp of a CutMix batch)
    t3 = 0.5 * t + 0.5 * t.roll(3, 0)
    assert_close(one_pass(logits, t3), naive_two_pass(logits, t3))


def test_one_pass_equals_two_pass_on_real_digits_teacher(digits, digits_teacher) -> None:
    """Real teacher logits on the digits train split, clean and under an augmentation with CutMix."""
    from daqakd_plugins.augment import resolve_augmentation
    from daqakd_plugins.data import one_hot
    from daqakd_plugins.train import seed_everything

    model, _ = digits_teacher
    x, y = digits.train_x, digits.train_y
    with torch.inference_mode():
        clean = model(x)
    t = one_hot(y, 10)
    ref = naive_two_pass(clean, t)
    assert_close(one_pass(clean, t, batch=256), ref)
    assert ref["D"] < 0.5 and ref["CE"] < 0.5  # the teacher is good on its training data

    aug = resolve_augmentation("randaugment+cutmix")
    seed_everything(0)
    with torch.inference_mode():
        xa, ta = aug(x[:512], t[:512])
        logits = model(xa)
    assert float((ta.max(1).values < 1).float().mean()) > 0.5  # really soft labels
    assert_close(one_pass(logits, ta), naive_two_pass(logits, ta))


def test_perfect_confident_teacher_gives_zero_I_and_D() -> None:
    """A teacher that puts all its mass on the true class: centroids are one-hot, so I = D = 0."""
    c, n = 5, 200
    labels = torch.arange(n) % c
    logits = 60.0 * torch.nn.functional.one_hot(labels, c).float()
    comp = one_pass(logits, torch.nn.functional.one_hot(labels, c).float())
    assert abs(comp["I"]) < 1e-12 and abs(comp["D"]) < 1e-12 and abs(comp["CE"]) < 1e-12
    # a confident but sometimes-wrong teacher is not zero: the wrong class shows in D and I
    wrong = labels.clone()
    wrong[::10] = (wrong[::10] + 1) % c
    comp2 = one_pass(60.0 * torch.nn.functional.one_hot(wrong, c).float(), torch.nn.functional.one_hot(labels, c).float())
    assert comp2["D"] > 0.05 and comp2["I"] > 0.05


def test_kl_is_nonnegative_and_scores_combine_with_weights() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(100, 4, generator=g) * 2
    t = torch.nn.functional.one_hot(torch.randint(4, (100,), generator=g), 4).float()
    comp = one_pass(logits, t)
    assert comp["I"] >= 0
    acc = create_cmi(4, w_D=0.0, w_I=1.0, w_CE=1.0)  # the authors' CE − I variant
    acc.update(MetricBatch(logits=logits, targets=t))
    res = acc.result()
    assert math.isclose(res.score, comp["CE"] - comp["I"], rel_tol=1e-12)
    default = create_cmi(4)
    default.update(MetricBatch(logits=logits, targets=t))
    assert math.isclose(default.result().score, comp["D"] - comp["I"], rel_tol=1e-12)


def test_stats_merge_and_vector_round_trip_are_exact() -> None:
    """Sufficient statistics are sums: two shards merged equal one pass (what all_reduce relies on)."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(200, 6, generator=g)
    t = _soft_targets(torch.randint(6, (200,), generator=g), 6, g).float()
    whole = CMIStats.zeros(6)
    whole.update(logits, t)
    a, b = CMIStats.zeros(6), CMIStats.zeros(6)
    a.update(logits[:77], t[:77])
    b.update(logits[77:], t[77:])
    merged = a.merge(b)
    assert merged.N == 200 and a.N == 77  # merge does not modify its inputs
    for k in ("D", "I", "CE"):
        assert math.isclose(merged.components()[k], whole.components()[k], rel_tol=1e-12)
    back = CMIStats.from_vector(merged.to_vector(), 6)
    assert back.N == 200 and torch.equal(back.S, merged.S) and torch.equal(back.n, merged.n)
    assert back.all_reduce() is back  # no process group: a no-op
    with pytest.raises(ConfigError):
        CMIStats.zeros(5).merge(whole)


def test_class_without_samples_is_excluded_and_reported() -> None:
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(3, (90,), generator=g)  # classes 3 and 4 never occur
    logits = torch.randn(90, 5, generator=g)
    t = torch.nn.functional.one_hot(labels, 5).float()
    acc = create_cmi(5)
    acc.update(MetricBatch(logits=logits, targets=t))
    res = acc.result()
    assert res.classes_seen == 3 and math.isfinite(res.score)
    assert any("[3, 4]" in n and "excluded from D" in n for n in res.notes)
    assert math.isclose(res.components["D"], naive_two_pass(logits, t)["D"], rel_tol=REL)


def test_centroid_clamp_keeps_D_finite() -> None:
    """A teacher that never predicts a class's label gives Q_k[k] ≈ 0: clamped at 1e-12, not inf."""
    labels = torch.tensor([0, 1, 1, 0])
    logits = torch.tensor([[0.0, 900.0], [0.0, 900.0], [0.0, 900.0], [0.0, 900.0]])
    comp = one_pass(logits, torch.nn.functional.one_hot(labels, 2).float())
    assert math.isclose(comp["D"], -math.log(Q_CLAMP) / 2, rel_tol=1e-9)


def test_metric_bad_inputs() -> None:
    acc = create_cmi(3)
    with pytest.raises(ModelError, match="3 classes"):
        acc.update(MetricBatch(logits=torch.zeros(4, 5), targets=torch.zeros(4, 3), candidate="c"))
    bad = torch.zeros(4, 3)
    bad[2, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"candidate 'mine', batch 7"):
        acc.update(MetricBatch(logits=bad, targets=torch.eye(3)[[0, 1, 2, 0]], candidate="mine", batch_index=7))
    with pytest.raises(DataError, match="label distributions"):
        acc.update(MetricBatch(logits=torch.zeros(2, 3), targets=torch.tensor([[0.5, 0.0, 0.0], [1.0, 0.0, 0.0]])))
    with pytest.raises(DataError, match="empty|no samples"):
        create_cmi(3).result()
    with pytest.raises(ConfigError, match="w_CE"):
        create_cmi(3, w_ce=1.0)


def test_metrics_are_registered_plugins() -> None:
    m = get_metrics()
    assert {"cmi", "tstddev"} <= set(m)
    assert m["tstddev"].needs_clean and not m["cmi"].needs_clean
    assert m["cmi"].lower_is_better and m["tstddev"].lower_is_better


# ---------------------------------------------------------------------------------------------------
# tstddev
# ---------------------------------------------------------------------------------------------------
def test_tstddev_matches_direct_computation() -> None:
    g = torch.Generator().manual_seed(6)
    c, bs, nb = 4, 8, 12  # 12 batches, groups of 5 → 2 complete groups, 2 batches dropped
    clean = [torch.randn(bs, c, generator=g) for _ in range(nb)]
    aug = [torch.randn(bs, c, generator=g) * 2 for _ in range(nb)]
    t = torch.nn.functional.one_hot(torch.arange(bs) % c, c).float()
    acc = create_tstddev(c)
    for b in range(nb):
        acc.update(MetricBatch(logits=aug[b], targets=t, clean_logits=clean[b], batch_index=b))
    res = acc.result()
    means = []
    for gi in range(2):
        probs = [torch.softmax(torch.cat([clean[b], aug[b]]).double(), 1) for b in range(gi * 5, gi * 5 + 5)]
        means.append(torch.cat(probs).mean(0))
    m = torch.stack(means)
    expected = float(((m - m.mean(0)) ** 2).sum(0).div(1).sqrt().mean())  # unbiased std with 2 groups: ddof 1
    assert math.isclose(res.score, expected, rel_tol=1e-12)
    assert res.components["groups"] == 2.0 and res.n == nb * bs
    assert any("dropped the last 2" in n for n in res.notes)


def test_tstddev_needs_two_groups_and_clean_logits() -> None:
    acc = create_tstddev(3)
    with pytest.raises(ConfigError, match="batch_size ≤"):
        acc.check_plan(6, 256, 1347)
    with pytest.raises(ConfigError, match="clean"):
        acc.update(MetricBatch(logits=torch.zeros(2, 3), targets=torch.eye(3)[:2]))
    with pytest.raises(ConfigError, match="group"):
        create_tstddev(3, group=0)
    with pytest.raises(ConfigError, match="unknown tstddev"):
        create_tstddev(3, groups=2)
