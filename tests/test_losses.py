"""KD loss components and presets (METRIC.md section 3) and the daqakd_compute_loss hook chain."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from daqakd_plugins import hookimpl
from daqakd_plugins.builtin import losses as L
from daqakd_plugins.contracts import LossContext, LossResult, LossTerm
from daqakd_plugins.distill import Distiller, resolve_loss
from daqakd_plugins.errors import ConfigError, ModelError, UnknownNameError
from daqakd_plugins.plugins import get_loss_components, get_loss_presets, get_plugin_manager, register_plugin


def _ctx(B: int = 8, C: int = 5, seed: int = 0, **kw: object) -> LossContext:
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(B, C, generator=g, requires_grad=True)
    zt = torch.randn(B, C, generator=g) * 3
    y = torch.randint(0, C, (B,), generator=g)
    base = dict(student_logits=zs, teacher_logits=zt, targets=F.one_hot(y, C).float(), labels=y)
    base.update(kw)
    return LossContext(**base)  # type: ignore[arg-type]


def _naive_kl(zs: torch.Tensor, zt: torch.Tensor, tau: float) -> torch.Tensor:
    """Σ_i Σ_c p_t log(p_t / p_s) / B · τ², written out without kl_div."""
    pt = torch.softmax(zt / tau, 1)
    ps = torch.softmax(zs / tau, 1)
    return (pt * (pt.log() - ps.log())).sum(1).mean() * tau**2


def test_registered_names_and_presets(fresh_plugins):
    comps, presets = get_loss_components(), get_loss_presets()
    assert {"ce", "kd", "hard_kd", "feature", "rkd_distance", "rkd_angle", "multi_teacher", "dual_view"} <= set(comps)
    assert {"paper", "sqakd", "ce", "mixed"} <= set(presets)
    paper = {t.component: (t.weight, dict(t.params)) for t in presets["paper"].terms}
    assert paper == {"ce": (1.0, {}), "kd": (2.0, {"tau": 4.0})}  # γ=1, α=2, τ=4
    sqakd = {t.component: (t.weight, dict(t.params)) for t in presets["sqakd"].terms}
    assert sqakd == {"kd": (1.0, {"tau": 4.0})}  # label-free
    assert [t.component for t in presets["ce"].terms] == ["ce"]
    assert not comps["ce"].needs_teacher and comps["kd"].needs_teacher


@pytest.mark.parametrize("tau", [1.0, 4.0, 10.0])
def test_kd_is_tau_squared_kl(tau):
    ctx = _ctx()
    got = L.kd(ctx, tau=tau)
    assert torch.allclose(got, _naive_kl(ctx.student_logits, ctx.teacher_logits, tau), atol=1e-6)
    got.backward()
    assert ctx.student_logits.grad is not None and ctx.student_logits.grad.abs().sum() > 0


def test_kd_is_zero_when_student_matches_teacher():
    ctx = _ctx()
    ctx.student_logits = ctx.teacher_logits.clone().requires_grad_(True)
    assert float(L.kd(ctx).detach()) == pytest.approx(0.0, abs=1e-6)


def test_ce_soft_targets_equal_index_form_and_mixed_targets():
    ctx = _ctx()
    hard = L.ce(ctx)
    soft = L.ce(LossContext(student_logits=ctx.student_logits, teacher_logits=None, targets=ctx.targets))
    assert torch.allclose(hard, soft, atol=1e-6)
    t = torch.full_like(ctx.targets, 1 / ctx.targets.shape[1])  # uniform (soft) targets
    uni = L.ce(LossContext(student_logits=ctx.student_logits, teacher_logits=None, targets=t))
    expect = -(t * torch.log_softmax(ctx.student_logits, 1)).sum(1).mean()
    assert torch.allclose(uni, expect, atol=1e-6)


def test_hard_kd_uses_teacher_argmax():
    ctx = _ctx()
    assert torch.allclose(L.hard_kd(ctx), F.cross_entropy(ctx.student_logits, ctx.teacher_logits.argmax(1)))


def test_multi_teacher_average_and_sum():
    ctx = _ctx()
    # one teacher: both modes are plain KD
    assert torch.allclose(L.multi_teacher(ctx), L.kd(ctx), atol=1e-6)
    z2 = torch.randn_like(ctx.teacher_logits)
    ctx.extra_teacher_logits = (z2,)
    tau = 4.0
    p = 0.25 * torch.softmax(ctx.teacher_logits / tau, 1) + 0.75 * torch.softmax(z2 / tau, 1)
    ps = torch.softmax(ctx.student_logits / tau, 1)
    expect = (p * (p.log() - ps.log())).sum(1).mean() * tau**2
    assert torch.allclose(L.multi_teacher(ctx, weights=[1, 3]), expect, atol=1e-5)
    s = L.multi_teacher(ctx, weights=[1, 3], mode="sum")
    ref = 0.25 * _naive_kl(ctx.student_logits, ctx.teacher_logits, tau) + 0.75 * _naive_kl(ctx.student_logits, z2, tau)
    assert torch.allclose(s, ref, atol=1e-5)
    with pytest.raises(ConfigError, match="one weight per teacher"):
        L.multi_teacher(ctx, weights=[1.0])


def test_rkd_is_invariant_to_scale_and_shift_of_the_embedding():
    ctx = _ctx(B=16, C=7)
    ctx.student_logits = (ctx.teacher_logits * 3.0 + 1.0).requires_grad_(True)  # same relations
    assert float(L.rkd_distance(ctx)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.rkd_angle(ctx)) == pytest.approx(0.0, abs=1e-6)
    ctx2 = _ctx(B=16, C=7, seed=3)
    d, a = L.rkd_distance(ctx2), L.rkd_angle(ctx2)
    assert float(d) > 1e-3 and float(a) > 1e-3
    (d + a).backward()
    assert ctx2.student_logits.grad.abs().sum() > 0


def test_feature_uses_learned_projection_when_shapes_differ():
    fs = torch.randn(4, 8, 6, 6, requires_grad=True)
    ft = torch.randn(4, 16, 3, 3)
    store = nn.ModuleDict()
    ctx = _ctx(B=4, student_features={"s": fs}, teacher_features={"t": ft},
               projections=store, feature_pairs={"s": "t"})
    val = L.feature(ctx)
    key = L.projection_key("s", "t")
    assert key in store and isinstance(store[key].proj, nn.Conv2d)
    assert store[key].proj.weight.shape == (16, 8, 1, 1)
    expect = F.mse_loss(F.adaptive_avg_pool2d(store[key].proj(fs), (3, 3)), ft)
    assert torch.allclose(val, expect)
    val.backward()
    assert store[key].proj.weight.grad is not None
    # same shapes: no projection, plain MSE
    ctx_same = _ctx(B=4, student_features={"a": ft + 1}, teacher_features={"a": ft}, projections=nn.ModuleDict())
    assert float(L.feature(ctx_same)) == pytest.approx(1.0)


def test_bad_parameters_are_config_errors(fresh_plugins):
    with pytest.raises(ConfigError, match="positive"):
        L.kd(_ctx(), tau=0)
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['temperature'\].*accepts \['tau'\]"):
        resolve_loss([LossTerm(component="kd", params={"temperature": 2})])
    with pytest.raises(ConfigError, match="label="):
        resolve_loss([LossTerm(component="kd"), LossTerm(component="kd", weight=2)])
    with pytest.raises(ModelError, match="needs teacher logits"):
        L.kd(_ctx(teacher_logits=None))


def test_unknown_loss_name_lists_registered(fresh_plugins):
    with pytest.raises(UnknownNameError) as ei:
        resolve_loss("hinton-ish")
    msg = str(ei.value)
    for name in ("paper", "sqakd", "ce", "kd", "rkd_angle", "dual_view"):
        assert name in msg


def test_loss_strings_compose():
    terms = resolve_loss("paper+rkd_distance")
    assert [t.component for t in terms] == ["ce", "kd", "rkd_distance"]
    assert [t.weight for t in terms] == [1.0, 2.0, 1.0]


def test_compute_loss_hook_returns_weighted_terms(fresh_plugins):
    ctx = _ctx(terms=resolve_loss("paper"))
    res = get_plugin_manager().hook.daqakd_compute_loss(ctx=ctx)
    assert isinstance(res, LossResult) and set(res.terms) == {"ce", "kd"}
    expect = F.cross_entropy(ctx.student_logits, ctx.labels) + 2 * _naive_kl(ctx.student_logits, ctx.teacher_logits, 4.0)
    assert torch.allclose(res.total, expect, atol=1e-5)


class _ReweightAndAdd:
    """A third-party plugin: halves the KD term and adds an L2 penalty on the logits, without
    touching daqakd's code — it wraps the built-in (trylast) implementation."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl(wrapper=True)
    def daqakd_compute_loss(self, ctx):
        result = yield
        self.calls += 1
        result.terms["kd"] = 0.5 * result.terms["kd"]
        result.terms["logit_l2"] = 1e-3 * ctx.student_logits.pow(2).mean()
        return result


def _scale_plugin(where: str) -> object:
    """Multiplies every term by 10. ``where`` is ``tryfirst`` (outermost wrapper: runs after every other
    wrapper has returned, so it also scales their additions) or ``trylast`` (innermost: scales only what
    the built-in implementation computed). pluggy orders wrappers by these marks, never by registration."""

    class _Scale:
        @hookimpl(wrapper=True, **{where: True})
        def daqakd_compute_loss(self, ctx):
            result = yield
            result.terms = {k: 10 * v for k, v in result.terms.items()}
            return result

    return _Scale()


@pytest.mark.parametrize("scale_first", [True, False], ids=["register-scale-first", "register-reweight-first"])
@pytest.mark.parametrize("where", ["tryfirst", "trylast"])
def test_third_party_wrappers_stack_without_core_changes(fresh_plugins, where, scale_first):
    from daqakd_plugins.models import SmallResNet

    torch.manual_seed(0)
    teacher = SmallResNet(1, 10, width=8).eval().requires_grad_(False)  # any frozen model will do here
    student = SmallResNet(1, 10, width=8)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    with pytest.warns(UserWarning, match="plain KD, not QAT"):
        kd = Distiller(teacher, student, loss="paper")
    student.eval()  # BN in eval: the same input gives the same logits in every call below
    base = kd.loss(x, y)
    base_terms = kd.last_terms
    with torch.no_grad():
        l2 = 1e-3 * float(student(x).pow(2).mean())
    plug = _ReweightAndAdd()
    plugins = [("scale", _scale_plugin(where)), ("reweight", plug)]
    for name, p in plugins if scale_first else plugins[::-1]:
        register_plugin(p, name=name)
    try:
        wrapped = kd.loss(x, y)
        terms = kd.last_terms
    finally:
        get_plugin_manager().unregister(name="reweight")
        get_plugin_manager().unregister(name="scale")
    assert plug.calls == 1
    assert set(terms) == {"ce", "kd", "logit_l2", "total"}
    # both wrappers applied: ce ×10, kd ×0.5 ×10, in either nesting order
    assert terms["ce"] == pytest.approx(10.0 * base_terms["ce"], rel=1e-5)
    assert terms["kd"] == pytest.approx(5.0 * base_terms["kd"], rel=1e-5)
    # the nesting is set by tryfirst/trylast alone (both registration orders give the same result): an
    # outermost (tryfirst) scaler also scales the L2 term added by the inner wrapper; an innermost
    # (trylast) one runs before that term exists
    assert terms["logit_l2"] == pytest.approx((10.0 if where == "tryfirst" else 1.0) * l2, rel=1e-5)
    expect_total = 10.0 * base_terms["ce"] + 5.0 * base_terms["kd"] + terms["logit_l2"]
    assert float(wrapped.detach()) == pytest.approx(expect_total, rel=1e-5)
    assert terms["total"] == pytest.approx(expect_total, rel=1e-5)
    assert float(base.detach()) == pytest.approx(base_terms["ce"] + base_terms["kd"], rel=1e-5)
    # gone again after unregistering
    again = kd.loss(x, y)
    assert set(kd.last_terms) == {"ce", "kd", "total"}
    assert float(again.detach()) == pytest.approx(float(base.detach()), rel=1e-6)
