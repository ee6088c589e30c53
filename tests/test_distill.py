"""The drop-in Distiller: frozen teacher, same augmented batch, hook chain, loud bad-input errors.

Students are hand-built with real Brevitas layers (qnn.QuantConv2d / QuantReLU / QuantLinear) so
these tests exercise real QAT without depending on a backend adapter.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from daqakd_plugins import hookimpl
from daqakd_plugins.contracts import Augmentation, LossTerm
from daqakd_plugins.data import make_loader
from daqakd_plugins.distill import Distiller, NoQuantizersWarning, TeacherFrozenWarning
from daqakd_plugins.errors import ConfigError, ModelError, NonFiniteError, UnknownNameError
from daqakd_plugins.models import SmallResNet
from daqakd_plugins.plugins import get_plugin_manager, register_plugin
from daqakd_plugins.train import evaluate


class BrevitasStudent(nn.Module):
    """A W2A4 student written the way a Brevitas user writes one (8-bit input and classifier)."""

    def __init__(self, width: int = 16, weight_bits: int = 2, act_bits: int = 4, classes: int = 10) -> None:
        import brevitas.nn as qnn

        super().__init__()
        self.inp = qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(1, width, 3, padding=1, bias=False, weight_bit_width=weight_bits)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=True)
        self.conv2 = qnn.QuantConv2d(width, width, 3, padding=1, bias=False, weight_bit_width=weight_bits)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = qnn.QuantLinear(width, classes, bias=True, weight_bit_width=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(self.inp(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


def _random_shift() -> Augmentation:
    def fn(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = int(torch.randint(-1, 2, ()).item())
        return torch.roll(x, shifts=s, dims=-1), t

    return Augmentation(name="test-shift", fn=fn, family="user")


@pytest.fixture
def teacher(digits_teacher):
    return digits_teacher[0]


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_teacher_is_frozen_and_unchanged_after_training(fresh_plugins, teacher, digits):
    for p in teacher.parameters():
        p.grad = None  # left over from the teacher's own training
    before = _state(teacher)
    torch.manual_seed(0)
    student = BrevitasStudent(weight_bits=4)
    acc0 = evaluate(student, digits.test_x, digits.test_y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoQuantizersWarning)  # a real QAT student: no "plain KD" warning
        kd = Distiller(teacher, student, loss="paper", augment=_random_shift())
    assert kd.num_quantizers > 0
    opt = torch.optim.Adam([*student.parameters(), *kd.parameters()], lr=1e-2)
    for epoch in range(3):
        student.train()
        for x, y in make_loader(digits.train_x[:800], digits.train_y[:800], 32, shuffle=True, seed=epoch):
            loss = kd.loss(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = _state(teacher)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "teacher parameters or BN statistics changed"
    assert not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert set(kd.last_terms) == {"ce", "kd", "total"}
    assert kd.step == 3 * 25
    acc = evaluate(student, digits.test_x, digits.test_y)
    assert acc > max(0.35, acc0 + 0.2), (acc0, acc)  # it learns (3 short epochs of a tiny W4A4 net)


def test_same_augmented_batch_and_teacher_in_inference_mode(fresh_plugins, teacher):
    seen: dict[str, tuple[torch.Tensor, bool]] = {}

    def rec(name):
        def hook(_m, inp, _out):
            seen[name] = (inp[0].detach().clone(), torch.is_inference_mode_enabled())

        return hook

    student = BrevitasStudent()
    h1 = teacher.register_forward_hook(rec("teacher"))
    h2 = student.register_forward_hook(rec("student"))
    try:
        noise = Augmentation(name="test-noise", fn=lambda x, t: ((x + 0.1 * torch.rand_like(x)).clamp(0, 1), t))
        kd = Distiller(teacher, student, loss="paper", augment=noise)  # a fresh random draw on every call
        x = torch.rand(8, 1, 8, 8)
        torch.manual_seed(1)
        kd.loss(x, torch.randint(0, 10, (8,)))
    finally:
        h1.remove()
        h2.remove()
    (xt, t_inf), (xs, s_inf) = seen["teacher"], seen["student"]
    assert t_inf and not s_inf
    assert torch.equal(xt, xs)
    assert not torch.equal(xs, x)  # augmented once, and that one draw went to both models


def test_dual_view_feeds_two_independent_draws(fresh_plugins, teacher):
    views: dict[str, torch.Tensor] = {}

    class Spy:
        @hookimpl(wrapper=True)
        def daqakd_compute_loss(self, ctx):
            views["s"], views["t"] = ctx.inputs, ctx.teacher_inputs
            return (yield)

    def noise(x, t):
        return (x + 0.1 * torch.rand_like(x)).clamp(0, 1), t

    register_plugin(Spy(), name="spy")
    kd = Distiller(teacher, BrevitasStudent(), loss="dual_view", augment=Augmentation(name="noise", fn=noise))
    assert kd.two_views
    kd.loss(torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    assert not torch.equal(views["s"], views["t"])
    kd2 = Distiller(teacher, BrevitasStudent(), loss="paper", augment=Augmentation(name="noise", fn=noise))
    kd2.loss(torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    assert views["s"] is views["t"]


def test_ce_only_does_not_run_the_teacher(fresh_plugins, teacher):
    calls = []
    h = teacher.register_forward_hook(lambda *_: calls.append(1))
    try:
        kd = Distiller(teacher, BrevitasStudent(), loss="ce", num_classes=10)  # no class-count probe either
        for _ in range(2):
            kd.loss(torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    finally:
        h.remove()
    assert calls == [] and set(kd.last_terms) == {"ce", "total"}


def test_float_student_warns_plain_kd_not_qat(fresh_plugins, teacher):
    with pytest.warns(NoQuantizersWarning, match="this is plain KD, not QAT"):
        Distiller(teacher, SmallResNet(1, 10, width=8))


def test_teacher_that_requires_grad_is_frozen_with_a_warning(fresh_plugins, teacher):
    t = copy.deepcopy(teacher).train()
    t.requires_grad_(True)
    with pytest.warns(TeacherFrozenWarning, match="froze them"):
        Distiller(t, BrevitasStudent())
    assert not any(p.requires_grad for p in t.parameters()) and not t.training


def test_width_mismatch_is_a_model_error(fresh_plugins, teacher):
    kd = Distiller(teacher, BrevitasStudent(classes=7))
    with pytest.raises(ModelError, match="teacher outputs 10 classes but the student outputs 7"):
        kd.loss(torch.rand(4, 1, 8, 8), torch.randint(0, 7, (4,)))


def test_unknown_names_list_the_registered_ones(fresh_plugins, teacher):
    with pytest.raises(UnknownNameError, match="registered augmentations: .*none"):
        Distiller(teacher, BrevitasStudent(), augment="no-such-aug")
    with pytest.raises(UnknownNameError, match="registered loss(?:es)?: .*paper.*sqakd"):
        Distiller(teacher, BrevitasStudent(), loss="no-such-loss")


def test_non_finite_loss_names_the_step_and_the_term(fresh_plugins, teacher):
    class Poison:
        @hookimpl(wrapper=True)
        def daqakd_compute_loss(self, ctx):
            result = yield
            if ctx.step == 2:
                result.terms["poison"] = result.terms["kd"] * float("nan")
            return result

    register_plugin(Poison(), name="poison")
    kd = Distiller(teacher, BrevitasStudent(), loss="paper")
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    kd.loss(x, y)
    kd.loss(x, y)
    with pytest.raises(NonFiniteError, match=r"step 2: term\(s\) poison=nan"):
        kd.loss(x, y)


def test_feature_hint_with_learned_projection(fresh_plugins, teacher, digits):
    student = BrevitasStudent(width=8)  # 8 channels vs the teacher's 32
    kd = Distiller(teacher, student, loss=[LossTerm(component="ce"), LossTerm(component="feature", weight=0.5)],
                   features={"bn2": "layers.0.bn2"})
    with pytest.raises(ConfigError, match="kd.prepare"):
        kd.parameters()
    kd.prepare(digits.train_x[:4])
    params = list(kd.parameters())
    assert [tuple(p.shape) for p in params] == [(32, 8, 1, 1)]
    w0 = params[0].detach().clone()
    opt = torch.optim.SGD([*student.parameters(), *params], lr=0.1)
    loss = kd.loss(digits.train_x[:16], digits.train_y[:16])
    loss.backward()
    opt.step()
    assert set(kd.last_terms) == {"ce", "feature", "total"}
    assert not torch.equal(w0, params[0])
    with pytest.raises(ModelError, match="no layer named 'nope'"):
        Distiller(teacher, student, loss="paper+feature", features=["nope"])


def test_multi_teacher_freezes_every_teacher(fresh_plugins, teacher):
    t2 = copy.deepcopy(teacher)
    t2.requires_grad_(True)
    with pytest.warns(TeacherFrozenWarning):
        kd = Distiller(teacher, BrevitasStudent(), loss=[LossTerm(component="multi_teacher", params={"weights": [2, 1]})],
                       teachers=[t2])
    loss = kd.loss(torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    loss.backward()
    assert not any(p.requires_grad or p.grad is not None for p in t2.parameters())


def test_label_mixing_augmentation_gives_soft_targets(fresh_plugins, teacher):
    got = {}

    class Spy:
        @hookimpl(wrapper=True)
        def daqakd_compute_loss(self, ctx):
            got["labels"], got["targets"] = ctx.labels, ctx.targets
            return (yield)

    def mix(x, t):
        perm = torch.arange(len(x)).flip(0)
        return 0.5 * x + 0.5 * x[perm], 0.5 * t + 0.5 * t[perm]

    register_plugin(Spy(), name="spy")
    kd = Distiller(teacher, BrevitasStudent(), loss="paper", augment=Augmentation(name="halfmix", fn=mix, mixes_labels=True))
    y = torch.tensor([0, 1, 2, 3])
    kd.loss(torch.rand(4, 1, 8, 8), y)
    assert got["labels"] is None
    assert torch.allclose(got["targets"].sum(1), torch.ones(4)) and got["targets"].max() == 0.5
    # without mixing, hard labels are passed along
    Distiller(teacher, BrevitasStudent(), loss="paper").loss(torch.rand(4, 1, 8, 8), y)
    assert torch.equal(got["labels"], y)
    assert get_plugin_manager().has_plugin("spy")
