"""What a plugin tells the core travels in typed contract fields (issue 10): ``LossComponent.two_views``,
``Augmentation.notes``, the ``LossContext`` fields the Distiller fills, and the optional
``PlannedMetricAccumulator.check_plan``. The old function attributes still work, with a
DeprecationWarning."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from daqakd_plugins import hookimpl
from daqakd_plugins.augment import candidate_notes, compose, mix_augmentation, resolve_augmentation
from daqakd_plugins.contracts import (
    Augmentation,
    LossComponent,
    LossContext,
    LossTerm,
    Metric,
    MetricAccumulator,
    MetricResult,
    PlannedMetricAccumulator,
)
from daqakd_plugins.distill import Distiller
from daqakd_plugins.errors import ConfigError
from daqakd_plugins.plugins import get_loss_components, get_plugin_manager, register_plugin
from daqakd_plugins.projections import projection_key
from daqakd_plugins.ranking import rank_augmentations
from daqakd_plugins.ranking.metrics import create_cmi, create_tstddev


def _models(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    student = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 3))
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval(), student


def _distiller(**kw: object) -> Distiller:
    teacher, student = _models()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float student: "plain KD, not QAT"
        return Distiller(teacher, student, **kw)  # type: ignore[arg-type]


def _kl(ctx: LossContext) -> torch.Tensor:
    assert ctx.teacher_logits is not None
    return (ctx.student_logits - ctx.teacher_logits).square().mean()


# --------------------------------------------------------------------------------------------------
# LossComponent.two_views
# --------------------------------------------------------------------------------------------------
def test_two_views_is_a_component_field(fresh_plugins):
    comps = get_loss_components()
    assert comps["dual_view"].two_views and not comps["kd"].two_views
    assert not hasattr(comps["dual_view"].fn, "two_views")  # the built-in uses the field, not an attribute


def test_a_third_party_two_view_component_gets_two_views(fresh_plugins):
    seen: dict[str, torch.Tensor | None] = {}

    class P:
        @hookimpl
        def daqakd_register_losses(self, register):
            register(LossComponent(name="my_consistency", fn=_kl, two_views=True))

        @hookimpl(wrapper=True)
        def daqakd_compute_loss(self, ctx):
            seen["s"], seen["t"] = ctx.inputs, ctx.teacher_inputs
            return (yield)

    register_plugin(P(), name="p")

    def noise(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x + 0.1 * torch.rand_like(x)).clamp(0, 1), t

    kd = _distiller(loss="ce+my_consistency", augment=Augmentation(name="noise", fn=noise))
    assert kd.two_views
    kd.loss(torch.rand(4, 1, 8, 8), torch.randint(0, 3, (4,)))
    assert seen["t"] is not None and not torch.equal(seen["s"], seen["t"])  # type: ignore[arg-type]


def test_the_old_two_views_attribute_still_works_with_a_deprecation_warning():
    def legacy(ctx: LossContext) -> torch.Tensor:
        return _kl(ctx)

    legacy.two_views = True  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match="two_views=True"):
        comp = LossComponent(name="legacy", fn=legacy)
    assert comp.two_views
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not LossComponent(name="plain", fn=_kl).two_views


# --------------------------------------------------------------------------------------------------
# LossComponent.needs_features / feature_param / needs_teachers
# --------------------------------------------------------------------------------------------------
def _messages(**kw: object) -> list[str]:
    teacher, student = _models()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Distiller(teacher, student, **kw).remove_hooks()  # type: ignore[arg-type]
    return [str(w.message) for w in caught]


def test_what_a_term_reads_is_declared_by_its_component_not_its_name(fresh_plugins):
    """A third-party component's declared needs act as the built-ins' do: the command line refuses a term
    that reads named layers (always, or with its feature parameter set), a Distiller given features=
    does not warn when a term can use them, and one given no extra teachers warns for a term that needs
    them."""
    from daqakd_plugins.distill.distiller import check_cli_loss

    class P:
        @hookimpl
        def daqakd_register_losses(self, register):
            register(LossComponent(name="my_hint", fn=_kl, needs_features=True))
            register(LossComponent(name="my_rel", fn=_kl, feature_param="at"))
            register(LossComponent(name="my_ensemble", fn=_kl, needs_teachers=True))

    register_plugin(P(), name="p")
    comps = get_loss_components()
    assert comps["feature"].needs_features and comps["rkd_angle"].feature_param == "layer"
    assert comps["multi_teacher"].needs_teachers and not comps["kd"].may_read_features()
    with pytest.raises(ConfigError, match="my_hint, which needs named feature layers"):
        check_cli_loss("ce+my_hint")
    check_cli_loss("ce+my_rel")  # on logits: no layer named
    assert comps["my_rel"].reads_features({"at": "0"}) and not comps["my_rel"].reads_features({})
    unused = "no loss term uses them"
    assert any(unused in m for m in _messages(loss="ce", features=["0"]))
    assert not any(unused in m for m in _messages(loss="ce+my_rel", features=["0"]))
    assert not any(unused in m for m in _messages(loss="ce+my_hint", features=["0"]))
    assert any("'my_ensemble' with a single teacher is plain KD" in m for m in _messages(loss="ce+my_ensemble"))
    assert not any("plain KD; pass teachers" in m for m in _messages(loss="ce+kd"))


# --------------------------------------------------------------------------------------------------
# LossContext fields
# --------------------------------------------------------------------------------------------------
def test_the_distiller_fills_typed_context_fields_and_leaves_state_to_plugins(fresh_plugins):
    got: list[LossContext] = []

    class Spy:
        @hookimpl(wrapper=True)
        def daqakd_compute_loss(self, ctx):
            got.append(ctx)
            return (yield)

    register_plugin(Spy(), name="spy")
    kd = _distiller(loss="paper+feature", features={"0": "0"})
    kd.prepare(torch.rand(2, 1, 8, 8))
    kd.loss(torch.rand(4, 1, 8, 8), torch.randint(0, 3, (4,)))
    ctx = got[0]
    assert ctx.state == {}
    assert ctx.feature_pairs == {"0": "0"}
    assert ctx.projections is kd.projections and projection_key("0", "0") in kd.projections  # 2 -> 4 channels
    assert ctx.components is not None and set(ctx.components) == {"ce", "kd", "feature"}


def test_compute_loss_uses_ctx_components_when_given(fresh_plugins):
    seven = LossComponent(name="kd", fn=lambda ctx: torch.tensor(7.0), needs_teacher=False)
    ctx = LossContext(student_logits=torch.zeros(2, 3), teacher_logits=None, targets=torch.eye(3)[:2],
                      terms=(LossTerm(component="kd", weight=2.0),), components={"kd": seven})
    result = get_plugin_manager().hook.daqakd_compute_loss(ctx=ctx)
    assert float(result.total) == 14.0


# --------------------------------------------------------------------------------------------------
# Augmentation.notes
# --------------------------------------------------------------------------------------------------
def _ident(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, t


def test_augmentation_notes_is_a_field_and_compose_collects_them():
    def gray_note(shape: tuple[int, ...]) -> list[str]:
        return ["grey images: no hue"] if shape[0] == 1 else []

    a = Augmentation(name="a", fn=_ident, notes=gray_note)
    assert candidate_notes(a, (1, 8, 8)) == ["grey images: no hue"]
    assert candidate_notes(a, (3, 8, 8)) == []
    assert candidate_notes(Augmentation(name="b", fn=_ident), (1, 8, 8)) == []
    both = compose("a+cutmix", [a, mix_augmentation("cutmix")])
    assert both.notes is not None and candidate_notes(both, (1, 8, 8)) == ["grey images: no hue"]


def test_builtin_candidates_use_the_notes_field(fresh_plugins):
    aug = resolve_augmentation("randaugment")
    assert aug.notes is not None and not hasattr(aug.fn, "daqakd_notes")
    assert candidate_notes(resolve_augmentation("kornia-color+mixup"), (1, 8, 8))


def test_the_old_daqakd_notes_attribute_still_works_with_a_deprecation_warning():
    def fn(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, t

    fn.daqakd_notes = lambda shape: ["old-style note"]  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match="notes="):
        aug = Augmentation(name="old", fn=fn)
    assert candidate_notes(aug, (1, 8, 8)) == ["old-style note"]


def test_the_batch_mixes_live_in_the_core():
    from daqakd_plugins.builtin import augmentations as builtin_augs

    assert builtin_augs.mix_augmentation is mix_augmentation
    cut = mix_augmentation("cutmix")
    assert cut.mixes_labels and cut.family == "torchvision"
    with pytest.raises(ConfigError, match="cutmix"):
        mix_augmentation("mosaic")


# --------------------------------------------------------------------------------------------------
# MetricAccumulator / PlannedMetricAccumulator
# --------------------------------------------------------------------------------------------------
def test_check_plan_is_the_planned_accumulator_protocol():
    assert isinstance(create_tstddev(3), PlannedMetricAccumulator)
    assert not isinstance(create_cmi(3), PlannedMetricAccumulator)


def test_the_ranking_calls_a_third_party_check_plan_before_any_work(fresh_plugins):
    plans: list[tuple[int, int, int]] = []
    updates: list[int] = []

    class Acc:
        def __init__(self, num_classes: int) -> None:
            pass

        def check_plan(self, num_batches: int, batch_size: int, num_samples: int) -> None:
            plans.append((num_batches, batch_size, num_samples))
            if num_batches < 3:
                raise ConfigError(f"needs 3 batches, got {num_batches}")

        def update(self, batch) -> None:
            updates.append(len(batch.logits))

        def result(self) -> MetricResult:
            return MetricResult(score=float(sum(updates)), n=sum(updates))

    acc: MetricAccumulator = Acc(3)  # the protocols type-check a plain class
    assert isinstance(acc, PlannedMetricAccumulator)

    class P:
        @hookimpl
        def daqakd_register_metrics(self, register):
            register(Metric(name="planned", create=Acc))

    register_plugin(P(), name="p")
    teacher, _ = _models()
    data = (torch.rand(30, 1, 8, 8), torch.arange(30) % 3)
    with pytest.raises(ConfigError, match="needs 3 batches, got 2"):
        rank_augmentations(teacher, data, ["none"], metric="planned", batch_size=16, progress=False)
    assert plans == [(2, 16, 30)] and not updates
    r = rank_augmentations(teacher, data, ["none"], metric="planned", batch_size=10, progress=False)
    assert plans[-1] == (3, 10, 30) and r["none"].score == 30.0
