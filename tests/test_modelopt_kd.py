"""Model Optimizer's own KD (mtd.convert + compute_kd_loss) configured from a daqakd preset gives the
same numbers as daqakd's Distiller on the same student, and the ranked augmentation feeds teacher and
student one view in both."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from daqakd_plugins import backends
from daqakd_plugins.config import QuantConfig
from daqakd_plugins.errors import ConfigError, DataError

mtd = pytest.importorskip("modelopt.torch.distill")


@pytest.fixture(scope="module")
def setup(digits, digits_teacher):
    teacher, meta = digits_teacher
    student = backends.quantize(copy.deepcopy(teacher), "modelopt", QuantConfig(weight_bits=4, act_bits=4),
                                example_input=digits.train_x[:8], calib_data=digits.train_x[:256])
    return teacher, student, digits, meta["arch"]


def _modelopt_step(teacher, student, loss, x, y, aug, seed):
    from daqakd_modelopt.kd import kd_loss_config, one_view

    # mtd.convert hooks the teacher it is given (until mtd.export): give it a copy of the shared fixture
    model = mtd.convert(copy.deepcopy(student), mode=[("kd_loss", kd_loss_config(copy.deepcopy(teacher), loss))])
    model.train()
    seen = {}
    hs = [model.teacher_model.register_forward_pre_hook(lambda m, a: seen.__setitem__("teacher", a[0])),
          model.register_forward_pre_hook(lambda m, a: seen.__setitem__("student", a[0]))]
    torch.manual_seed(seed)
    xa, t = one_view(aug, x, y, num_classes=10)
    out = model(xa)
    parts = model.compute_kd_loss(student_loss=F.cross_entropy(out, t), skip_balancer=True)
    out = model(xa)
    total = model.compute_kd_loss(student_loss=F.cross_entropy(out, t))
    for h in hs:
        h.remove()
    total.backward()
    grad = next(p.grad for n, p in model.named_parameters() if n.endswith("fc.weight") and "teacher" not in n)
    return total, parts, seen, grad, xa


def _distiller_step(teacher, student, loss, x, y, aug, seed):
    from daqakd_plugins.distill import Distiller

    s = copy.deepcopy(student)
    s.train()
    kd = Distiller(teacher, s, loss=loss, augment=aug)
    seen = {}
    hs = [teacher.register_forward_pre_hook(lambda m, a: seen.__setitem__("teacher", a[0])),
          s.register_forward_pre_hook(lambda m, a: seen.__setitem__("student", a[0]))]
    torch.manual_seed(seed)
    total = kd.loss(x, y)
    for h in hs:
        h.remove()
    total.backward()
    return total, kd.last_terms, seen, s.fc.weight.grad


@pytest.mark.parametrize("loss", ["paper", "sqakd"])
def test_same_loss_and_gradient_as_the_distiller(setup, loss) -> None:
    teacher, student, d, _ = setup
    x, y = d.train_x[:64], d.train_y[:64]
    aug = "trivialaugmentwide"  # random: the same seed must give both paths the same view
    a_total, a_terms, _, a_grad = _distiller_step(teacher, student, loss, x, y, aug, seed=5)
    b_total, b_parts, _, b_grad, _ = _modelopt_step(teacher, student, loss, x, y, aug, seed=5)
    assert float(a_total.detach()) > 0
    torch.testing.assert_close(b_total.detach(), a_total.detach(), rtol=1e-5, atol=1e-6)
    kd_weight = 2.0 if loss == "paper" else 1.0
    (kd_key,) = [k for k in b_parts if k.startswith("LogitsDistillationLoss")]
    assert abs(kd_weight * float(b_parts[kd_key]) - a_terms["kd"]) <= 1e-5 * a_terms["kd"]
    if loss == "paper":
        assert abs(float(b_parts["student_loss"]) - a_terms["ce"]) <= 1e-5 * a_terms["ce"]
    torch.testing.assert_close(b_grad, a_grad, rtol=1e-4, atol=1e-6)


def test_the_ranked_augmentation_feeds_both_models_one_view(setup) -> None:
    from daqakd_plugins import rank_augmentations

    teacher, student, d, _ = setup
    # no `none` among the candidates: the default score (teacher-ce) ranks the identity first, and "one view"
    # must not be trivially the input
    ranking = rank_augmentations(teacher, (d.train_x, d.train_y), ["trivialaugmentwide", "none+cutmix"],
                                 per_class=10, progress=False)
    best = ranking.best
    x, y = d.train_x[:64], d.train_y[:64]
    a_total, _, a_seen, _ = _distiller_step(teacher, student, "paper", x, y, best, seed=11)
    b_total, _, b_seen, _, xa = _modelopt_step(teacher, student, "paper", x, y, best, seed=11)
    for seen in (a_seen, b_seen):
        assert torch.equal(seen["teacher"], seen["student"])  # one view for both models
        assert not torch.equal(seen["student"], x)  # and it is the augmented one
    assert torch.equal(a_seen["student"], b_seen["student"]) and torch.equal(b_seen["student"], xa)
    torch.testing.assert_close(b_total.detach(), a_total.detach(), rtol=1e-5, atol=1e-6)


def test_modelopt_default_reduction_is_not_hintons(setup) -> None:
    """Why the config passes reduction='batchmean': modelopt's default 'mean' divides by the classes too."""
    teacher, student, d, _ = setup
    x = d.train_x[:32]
    with torch.no_grad():
        zs, zt = student(x), teacher(x)
    ours = mtd.LogitsDistillationLoss(temperature=4.0, reduction="batchmean")(zs, zt)
    default = mtd.LogitsDistillationLoss(temperature=4.0)(zs, zt)
    torch.testing.assert_close(default * zs.shape[1], ours, rtol=1e-5, atol=1e-7)


def test_presets_without_an_equivalent_are_refused_naming_the_distiller(setup) -> None:
    from daqakd_modelopt.kd import kd_loss_config

    teacher = setup[0]
    for loss in ("dual_view", "mixed", "paper+feature"):
        with pytest.raises(ConfigError, match=r"no Model Optimizer equivalent.*Distiller"):
            kd_loss_config(teacher, loss)
    with pytest.raises(ConfigError, match="no 'kd' term"):
        kd_loss_config(teacher, "ce")
    from daqakd_modelopt.kd import one_view

    with pytest.raises(DataError, match="num_classes"):
        one_view("none", setup[2].train_x[:4], setup[2].train_y[:4])


def test_balancer_asks_for_the_student_loss(setup) -> None:
    from daqakd_modelopt.kd import kd_loss_config

    teacher, student, d, _ = setup
    model = mtd.convert(copy.deepcopy(student), mode=[("kd_loss", kd_loss_config(copy.deepcopy(teacher), "paper"))])
    model(d.train_x[:8])
    with pytest.raises(ConfigError, match=r"student_loss=F.cross_entropy"):
        model.compute_kd_loss()


def test_a_kd_wrapper_saves_and_restores_as_the_plain_student(setup) -> None:
    """Quantize first, then KD; saving the wrapper saves the student; restore does not rebuild KD."""
    from daqakd_modelopt.kd import kd_loss_config

    from daqakd_plugins.models import build_model
    from daqakd_plugins.train import evaluate

    teacher, student, d, arch = setup
    model = mtd.convert(copy.deepcopy(student), mode=[("kd_loss", kd_loss_config(copy.deepcopy(teacher), "paper"))])
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for i in range(3):
        out = model(d.train_x[i * 64:(i + 1) * 64])
        loss = model.compute_kd_loss(student_loss=F.cross_entropy(out, d.train_y[i * 64:(i + 1) * 64]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    cfg = QuantConfig(weight_bits=4, act_bits=4)
    payload = backends.save_student(model, "modelopt", cfg)
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)
    assert not any("teacher" in k for k in payload["model_state_dict"])
    restored = backends.restore_student(build_model(arch), "modelopt", cfg, payload,
                                        example_input=d.train_x[:8])
    assert not hasattr(restored, "teacher_model")
    plain = mtd.export(model).eval()
    with torch.no_grad():
        assert torch.equal(restored(d.test_x), plain(d.test_x))
    assert evaluate(restored, d.test_x, d.test_y) == evaluate(plain, d.test_x, d.test_y)
