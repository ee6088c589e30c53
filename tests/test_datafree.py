"""Data-free DA-QAKD (issue 16, METRIC.md section 4): the generator's loss terms, gradient isolation between
the two alternating steps, a training split that is never read, the CLI end to end, resume, and option errors.

Fast on purpose (tiny schedules on digits with Brevitas); the acceptance numbers come from
benchmarks/datafree_digits.py (docs/results.md, "Data-free").
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from daqakd_plugins import hookimpl, plugins
from daqakd_plugins.datafree import GeneratorOptions, ImageGenerator, resolve_generator_options
from daqakd_plugins.datafree.losses import BNStatsLoss, class_balance_loss, generator_loss, kl_teacher_student
from daqakd_plugins.errors import ConfigError, UnknownNameError

pytest.importorskip("brevitas")

# a schedule that exercises every stage in seconds
TINY = {"iterations": 3, "warmup_steps": 4, "rank_samples": 64, "width": 8, "latent_dim": 16}


@pytest.fixture(scope="module")
def teacher_file(digits_teacher, tmp_path_factory) -> Path:
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    return save_model(tmp_path_factory.mktemp("teacher") / "teacher.pt", model, meta["arch"], meta)


class _RaisingDataset(torch.utils.data.Dataset):
    """A training split that fails the test on any access."""

    def __getitem__(self, i: int) -> Any:
        raise AssertionError(f"the data-free run read training sample {i}")

    def __len__(self) -> int:
        raise AssertionError("the data-free run asked for the training split's length")

    def __iter__(self) -> Any:
        raise AssertionError("the data-free run iterated over the training split")


class GuardedBundle:
    """The digits bundle with only its evaluation split, classes, image shape and name reachable: the
    training split (``train``) raises on any access, and every other attribute (``train_x``, ``train_y``,
    ``train_labels``, ``describe()``, ...) raises when looked up."""

    def __init__(self, real: Any) -> None:
        self.__dict__.update(name=real.name, classes=list(real.classes), image_shape=tuple(real.image_shape),
                             test=real.test, reads=[])

    @property
    def train(self) -> _RaisingDataset:
        return _RaisingDataset()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the data-free run touched bundle.{name}")


@pytest.fixture
def guarded_data(monkeypatch, digits):
    from daqakd_plugins import data

    monkeypatch.setattr(data, "load_data", lambda spec, **kw: GuardedBundle(digits))


def _config(out: Path, teacher: Path, **kw: Any) -> Any:
    from daqakd_plugins.distill import DistillConfig

    base: dict[str, Any] = dict(backend="brevitas", bits=4, data="digits", teacher=str(teacher) if teacher else None, epochs=2, out=str(out),
                                augment="none", batch_size=16, calib_batches=2, seed=1, export=False, progress=False,
                                data_free=True, generator_options=dict(TINY))
    base.update(kw)
    return DistillConfig(**base)


# ------------------------------------------------------------------------------------------ the hook
def test_hook_daqakd_register_generators(fresh_plugins):
    from daqakd_plugins.datafree.loop import build_generator

    class Flat(nn.Module):
        def __init__(self, latent: int, shape: tuple[int, int, int]) -> None:
            super().__init__()
            self.shape = shape
            self.fc = nn.Linear(latent, shape[0] * shape[1] * shape[2])

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.fc(z)).view(len(z), *self.shape)

    class P:
        @hookimpl
        def daqakd_register_generators(self, register):
            register(ImageGenerator(name="flat", build=lambda req: Flat(req.latent_dim, req.image_shape)))

    plugins.register_plugin(P(), name="p")
    gens = plugins.get_generators()
    assert {"dcgan", "flat"} <= set(gens)
    opts = resolve_generator_options({"name": "flat", "latent_dim": 5})
    g = build_generator(opts, (1, 8, 8), 10)
    assert isinstance(g, Flat) and g(torch.randn(3, 5)).shape == (3, 1, 8, 8)


def test_a_generator_with_the_wrong_output_is_named(fresh_plugins):
    from daqakd_plugins.datafree.loop import build_generator
    from daqakd_plugins.errors import ModelError

    class P:
        @hookimpl
        def daqakd_register_generators(self, register):
            register(ImageGenerator(name="raw", build=lambda req: nn.Sequential(nn.Linear(req.latent_dim, 64),
                                                                                nn.Unflatten(1, (1, 8, 8)))))

    plugins.register_plugin(P(), name="p")
    with pytest.raises(ModelError, match=r"generator 'raw' returned values in .*\[0, 1\]"):
        build_generator(resolve_generator_options({"name": "raw"}), (1, 8, 8), 10)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 30, 30)])
def test_dcgan_makes_images_of_the_data_shape(shape):
    from daqakd_plugins.datafree.loop import build_generator

    g = build_generator(GeneratorOptions(width=8, latent_dim=16), shape, 10)
    with torch.no_grad():
        x = g(torch.randn(4, 16))
    assert x.shape == (4, *shape) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert any(isinstance(m, nn.BatchNorm2d) for m in g.modules())


# ------------------------------------------------------------------------------------------ the loss terms
def test_bn_loss_is_zero_at_the_teachers_own_running_statistics(digits_teacher, digits):
    """Set every BN layer's running statistics to what a batch produces at that layer (an eval-mode pass
    whose pre-hooks write each layer's input mean and unbiased variance into its running buffers before
    the layer uses them); that same batch then meets exactly the teacher's running statistics everywhere."""
    teacher = copy.deepcopy(digits_teacher[0]).double().eval()  # float64: exact up to ~1e-12
    x = digits.test_x[:64].double()

    def adopt(m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        m.running_mean.copy_(inputs[0].mean((0, 2, 3)))
        m.running_var.copy_(inputs[0].var((0, 2, 3), unbiased=True))

    hooks = [m.register_forward_pre_hook(adopt) for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        teacher(x)
    for h in hooks:
        h.remove()
    bn = BNStatsLoss(teacher)
    assert len(bn.layers) >= 3
    with bn:
        teacher(x)
    assert len(bn.per_layer) == len(bn.layers)
    assert float(bn.loss) < 1e-8, bn.per_layer
    with bn:
        teacher(torch.rand(64, 1, 8, 8, dtype=torch.float64))  # noise: far from the statistics of digits
    assert float(bn.loss) > 1.0
    with torch.no_grad():
        teacher(x)  # outside the context: nothing is recorded
    assert float(bn.loss) > 1.0
    bn.remove()


def test_bn_loss_is_positive_on_the_real_teacher_for_noise_and_smaller_for_real_digits(digits_teacher, digits):
    teacher = digits_teacher[0]
    bn = BNStatsLoss(teacher)
    with bn, torch.no_grad():
        teacher(digits.test_x[:256])
    real = float(bn.loss)
    with bn, torch.no_grad():
        teacher(torch.rand(256, 1, 8, 8))
    noise = float(bn.loss)
    bn.remove()
    assert 0 < real < noise


def test_class_balance_wants_high_entropy_and_the_generator_maximises_the_divergence():
    c = 10
    balanced = torch.eye(c) * 20  # every class once: the batch-mean prediction is ~uniform
    one_class = torch.zeros(c, c)
    one_class[:, 3] = 20
    assert float(class_balance_loss(balanced)) == pytest.approx(-torch.log(torch.tensor(10.0)).item(), abs=1e-4)
    assert float(class_balance_loss(one_class)) == pytest.approx(0.0, abs=1e-4)
    z_t, z_s = torch.randn(8, c), torch.randn(8, c)
    kl = float(kl_teacher_student(z_t, z_s))
    assert kl > 0 and float(kl_teacher_student(z_t, z_t)) == pytest.approx(0.0, abs=1e-6)
    t = generator_loss(z_t, z_s, torch.tensor(0.5), adv_weight=2.0, bn_weight=3.0, balance_weight=4.0)
    assert float(t["adv"]) == pytest.approx(-2.0 * kl, rel=1e-5)  # maximise KL = minimise -KL
    assert float(t["bn"]) == pytest.approx(1.5)
    assert float(t["balance"]) == pytest.approx(4.0 * float(class_balance_loss(z_t)), rel=1e-5)
    assert float(t["total"]) == pytest.approx(float(t["adv"] + t["bn"] + t["balance"]), rel=1e-5)
    warm = generator_loss(z_t, None, torch.tensor(0.5), adv_weight=2.0, bn_weight=3.0, balance_weight=4.0)
    assert "adv" not in warm


# ------------------------------------------------------------------------------------------ gradient isolation
def test_generator_and_student_each_get_gradients_only_from_their_own_step(digits_teacher):
    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.datafree.loop import _Trainer, build_generator
    from daqakd_plugins.distill import Distiller

    teacher = copy.deepcopy(digits_teacher[0]).eval()
    fp = copy.deepcopy(teacher)
    for p in fp.parameters():
        p.requires_grad_(True)
    student = backends.quantize(fp, "brevitas", QuantConfig(weight_bits=4, act_bits=4), example_input=torch.rand(4, 1, 8, 8))
    for p in student.parameters():
        p.requires_grad_(True)
    opts = GeneratorOptions(width=8, latent_dim=16)
    torch.manual_seed(0)
    gen = build_generator(opts, (1, 8, 8), 10)
    tr = _Trainer(teacher, student, gen, opts, batch_size=16, device="cpu")
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    g_before = {k: v.clone() for k, v in gen.state_dict().items() if "running" not in k and "batches" not in k}

    student.train()  # as in the loop, where student steps leave it in train mode
    tr.generator_step(adversarial=True)  # the generator's step
    assert student.training, "the generator step must give the student back in the mode it found it"

    assert all(p.grad is None for p in student.parameters()), "the generator step left gradients on the student"
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, s_before[k]) for k, v in student.state_dict().items()), "the generator step changed the student"
    assert any(not torch.equal(gen.state_dict()[k], v) for k, v in g_before.items()), "the generator did not learn"
    assert {"adv", "bn", "balance", "total"} <= set(tr.last) and tr.last["adv"] < 0
    copy.deepcopy(teacher)  # the BN hooks keep no autograd graph between steps (a teacher copy must still work)

    kd = Distiller(teacher, student, loss="paper", augment="none", num_classes=10)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    g_now = {k: v.clone() for k, v in gen.state_dict().items() if k in g_before}
    captured: dict[str, list[bool]] = {}

    def look(*_: Any) -> None:  # the gradients the student step produced, just before the optimizer applies them
        captured["gen"] = [p.grad is not None for p in gen.parameters()]
        captured["student"] = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in student.parameters()]

    opt.register_step_pre_hook(look)
    tr.student_step(kd, opt, sched)  # the student's step
    assert not any(captured["gen"]), "the student step sent gradients into the generator"
    assert any(captured["student"]), "the student got no gradient from its own step"
    assert all(torch.equal(gen.state_dict()[k], v) for k, v in g_now.items()), "the student step changed the generator"
    tr.remove()


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("generator", ["dcgan", "bnbank"])
def test_cli_data_free_run_never_reads_the_training_split(guarded_data, teacher_file, tmp_path, capsys, generator):
    """`daqakd distill --data-free` with Brevitas: ranking on generated images, calibration, alternating
    training, student file and the report stating that no real training sample was used, while the data
    bundle raises on every access to the training split. Both built-in generators."""
    from daqakd_plugins.cli import main

    out = tmp_path / "run"
    opts = [f"--generator-option={k}={v}" for k, v in {**TINY, "name": generator}.items()]
    rc = main(["distill", "--data-free", "--backend", "brevitas", "--bits", "4", "--data", "digits", "--teacher",
               str(teacher_file), "--epochs", "1", "--batch-size", "16", "--calib-batches", "2", "--augment", "auto",
               "--candidates", "none,randomerasing", "--out", str(out), *opts])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["no_real_training_sample_used"] is True and report["data"]["train_used"] == 0
    assert "No real training sample was used" in (out / "report.md").read_text()
    assert report["augmentation_choice"]["how"] == "ranked" and report["augmentation"] in ("none", "randomerasing")
    assert report["augmentation_choice"]["samples"] == TINY["rank_samples"]
    assert {r["name"] for r in report["ranking"]} == {"none", "randomerasing"}
    acc = report["accuracy"]
    assert set(acc) >= {"teacher_fp", "quantized_uncalibrated", "ptq_noise", "ptq_generated", "student_after"}
    assert report["num_quantizers"] > 0 and len(report["history"]) == 1
    for f in ("checkpoint.pt", "student.pt", "generator.pt", "report.md"):
        assert (out / f).exists(), f
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"generator", "generator_optimizer", "student", "optimizer"} <= set(ck)
    assert report["export"]["student"], report["export"]  # exported and measured on the test split

    from daqakd_plugins.distill import load_student

    student, meta = load_student(out)
    assert meta["backend"] == "brevitas"
    printed = capsys.readouterr().out
    assert "No real training sample was used" in printed  # the statement, and the data-free baselines
    assert "PTQ on random noise" in printed and "student after data-free KD" in printed
    assert report["generator"]["name"] == generator
    # what the student was taught with: a 4 x 8 grid of the final generator's images (8x8 digits scaled to 32 px),
    # also a panel of report.png
    from PIL import Image

    from daqakd_plugins.reporting import report_figure

    assert report["files"]["generated_images"] == str(out / "generated.png")
    grid = Image.open(out / "generated.png")
    assert grid.size == (8 * 34 + 2, 4 * 34 + 2) and len(set(grid.getdata())) > 10  # not one flat colour
    with_grid = len(report_figure(report).axes)
    (out / "generated.png").unlink()
    assert len(report_figure(report).axes) == with_grid - 1
    if generator == "bnbank":  # produced once in the warm-up, then frozen: its defaults, under the user's options
        assert report["generator"]["g_steps"] == 0 and report["generator"]["g_lr"] == 0.05
        assert report["generator"]["warmup_steps"] == TINY["warmup_steps"] and report["history"][0]["generator_loss"] is None
        assert "| 1 |" in (out / "report.md").read_text() and "frozen" in (out / "report.md").read_text()


@pytest.mark.parametrize("generator", ["dcgan", "bnbank-refreshed"])
def test_resume_restores_the_generator_and_matches_an_uninterrupted_run(guarded_data, teacher_file, tmp_path,
                                                                         monkeypatch, generator):
    from daqakd_plugins.cli import main
    from daqakd_plugins.distill import checkpoint, run_distill

    gopts = {**TINY, "name": "bnbank", "g_steps": 1} if generator == "bnbank-refreshed" else dict(TINY)
    full = run_distill(_config(tmp_path / "full", teacher_file, generator_options=gopts))

    real_save = checkpoint.atomic_save

    def save_then_stop(obj: Any, path: Any) -> Any:
        res = real_save(obj, path)
        if obj.get("epoch") == 1:
            raise KeyboardInterrupt  # killed right after the first epoch's checkpoint
        return res

    monkeypatch.setattr(checkpoint, "atomic_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_distill(_config(tmp_path / "cut", teacher_file, generator_options=gopts))
    monkeypatch.setattr(checkpoint, "atomic_save", real_save)
    assert not (tmp_path / "cut" / "report.json").exists()

    # the CLI reads every setting, data_free included, back from the checkpoint
    assert main(["distill", "--resume", str(tmp_path / "cut")]) == 0
    resumed = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert resumed["resumed_from_epoch"] == 1 and resumed["mode"] == "data-free"
    assert [h["test_accuracy"] for h in resumed["history"]] == [h["test_accuracy"] for h in full["history"]]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    g_full = torch.load(tmp_path / "full" / "generator.pt", weights_only=True)
    g_cut = torch.load(tmp_path / "cut" / "generator.pt", weights_only=True)
    assert all(torch.equal(g_full[k], g_cut[k]) for k in g_full), "the resumed generator differs"
    s_full = torch.load(tmp_path / "full" / "student.pt", weights_only=True)["payload"]["state_dict"]
    s_cut = torch.load(tmp_path / "cut" / "student.pt", weights_only=True)["payload"]["state_dict"]
    assert all(torch.equal(s_full[k], s_cut[k]) for k in s_full), "the resumed student differs"
    assert resumed["accuracy"] == full["accuracy"]


# ------------------------------------------------------------------------------------------ errors
def test_unknown_generator_option_names_the_known_ones(teacher_file, tmp_path):
    with pytest.raises(ConfigError) as err:
        _config(tmp_path / "x", teacher_file, generator_options={"adv_wieght": 1.0})
    msg = str(err.value)
    assert "adv_wieght" in msg
    for name in GeneratorOptions.__dataclass_fields__:
        assert name in msg
    with pytest.raises(ConfigError, match="bn_weight must be a finite number"):
        resolve_generator_options({"bn_weight": -1})
    with pytest.raises(ConfigError, match="s_steps must be an integer"):
        resolve_generator_options({"s_steps": 0})
    with pytest.raises(UnknownNameError, match="dcgan"):
        resolve_generator_options({"name": "stylegan9"})
    with pytest.raises(ConfigError, match="only with --data-free"):
        _config(tmp_path / "x", teacher_file, data_free=False)
    assert not (tmp_path / "x").exists()


def test_data_free_without_a_teacher_is_refused_before_any_work(guarded_data, tmp_path):
    from daqakd_plugins.distill import run_distill

    with pytest.raises(ConfigError, match="--teacher"):
        run_distill(_config(tmp_path / "x", None))  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend,bits", [("nncf", 8), ("pytorch-quantization", 4), ("modelopt", 8)])
def test_every_backend_adapter_runs_data_free(guarded_data, teacher_file, tmp_path, backend, bits):
    """The same data-free loop through the other adapters (quantize, calibrate on generated images, train,
    save/restore through the checkpoint), with the training split still unreadable."""
    from daqakd_plugins.distill import run_distill

    report = run_distill(_config(tmp_path / "run", teacher_file, backend=backend, bits=bits, epochs=1))
    assert report["no_real_training_sample_used"] and report["num_quantizers"] > 0
    assert report["accuracy"]["student_after"] > 0.5
    assert (tmp_path / "run" / "student.pt").exists()


@pytest.mark.parametrize("generator", ["dcgan", "bnbank"])
def test_normalisation_comes_from_the_flags_or_the_teacher_file_and_reaches_every_model_call(guarded_data, tmp_path,
                                                                                              digits, generator):
    """A teacher trained on normalised digits (its file records ``normalize``): the data-free run must normalise
    the generated images before the teacher, the student, calibration, ranking and evaluation, or the
    teacher's and the student's accuracies collapse. Both generators (the bank's own terms see [0, 1] images)."""
    from types import SimpleNamespace

    from daqakd_plugins.datafree.loop import normalization
    from daqakd_plugins.distill import run_distill
    from daqakd_plugins.models import save_model
    from daqakd_plugins.train import train_teacher

    flags = SimpleNamespace(mean=[0.5], std=[0.25])
    none = SimpleNamespace(mean=None, std=None)
    assert normalization(flags, {"normalize": {"mean": [0.1], "std": [0.2]}}, 1) == ([0.5], [0.25])
    assert normalization(none, {"normalize": {"mean": [0.1], "std": [0.2]}}, 1) == ([0.1], [0.2])
    assert normalization(none, {}, 1) is None
    with pytest.raises(ConfigError, match="does not fit 1-channel"):
        normalization(SimpleNamespace(mean=[0.5, 0.5, 0.5], std=[1.0, 1.0, 1.0]), {}, 1)

    model, meta = train_teacher(digits, epochs=8, seed=0, normalize=([0.8], [0.1]), progress=False)
    assert meta["normalize"] == {"mean": [0.8], "std": [0.1]}
    teacher = save_model(tmp_path / "teacher-norm.pt", model, meta["arch"], meta)
    gopts = {**TINY, "iterations": 10} if generator == "dcgan" else {**TINY, "iterations": 10, "name": "bnbank",
                                                                       "warmup_steps": 60, "bank_size": 64}
    report = run_distill(_config(tmp_path / "run", teacher, epochs=1, augment="auto", candidates="none,randomerasing",
                                 generator_options=gopts))
    assert report["normalize"] == {"mean": [0.8], "std": [0.1]}
    acc = report["accuracy"]
    assert acc["teacher_fp"] > 0.9 and acc["ptq_generated"] > 0.8 and acc["student_after"] > 0.9, acc
    # ranking: the teacher agrees with its own labels of the clean generated images (0.69 here; 1.56 unnormalised)
    none = next(e for e in report["ranking"] if e["name"] == "none")
    assert none["components"]["CE"] < 1.2, none


def test_the_image_bank_learns_the_teachers_statistics_and_classes(digits_teacher):
    """`bnbank` (issue 26): the warm-up's steps lower the BatchNorm-statistics distance and the class term on
    the bank's images until the teacher reads most images as their assigned class; a draw is a function of z;
    the user's options win over the generator's defaults."""
    from daqakd_plugins.datafree.loop import _Trainer, build_generator

    opts = resolve_generator_options({"name": "bnbank", "bank_size": 40})
    assert (opts.g_lr, opts.warmup_steps, opts.g_steps) == (0.05, 500, 0)  # the bank's own defaults
    assert resolve_generator_options({"name": "bnbank", "g_lr": 0.01}).g_lr == 0.01
    assert resolve_generator_options({}).g_lr == 1e-3  # dcgan keeps the core's
    teacher = copy.deepcopy(digits_teacher[0]).eval()
    torch.manual_seed(0)
    bank = build_generator(opts, (1, 8, 8), 10)
    z = torch.randn(64, opts.latent_dim)
    with torch.no_grad():
        assert torch.equal(bank(z), bank(z)) and float(bank(z).min()) >= 0 and float(bank(z).max()) <= 1
    tr = _Trainer(teacher, None, bank, opts, batch_size=40, device="cpu")

    def state() -> tuple[float, float, float]:
        with torch.no_grad():
            images = torch.sigmoid(bank.pixels)
            with tr.bn:
                logits = teacher(images)
            bn = float(tr.bn.loss)
            tr.bn.clear()
            ce = float(torch.nn.functional.cross_entropy(logits, bank.labels))
            return bn, ce, float((logits.argmax(1) == bank.labels).float().mean())

    bn0, ce0, agree0 = state()
    first = tr.generator_step(adversarial=False)
    assert {"bn", "balance", "class_ce", "tv", "total"} <= set(first)
    for _ in range(60):
        tr.generator_step(adversarial=False)
    bn1, ce1, agree1 = state()
    assert bn1 < 0.7 * bn0 and ce1 < 0.5 * ce0 and agree1 >= 0.8 > agree0, (bn0, bn1, ce0, ce1, agree0, agree1)
    tr.remove()


def test_a_generators_defaults_must_be_known_options(fresh_plugins):
    from daqakd_plugins.datafree.generators import _build_bank

    class P:
        @hookimpl
        def daqakd_register_generators(self, register):
            register(ImageGenerator(name="typo", build=_build_bank, defaults={"g_rate": 0.1}))

    plugins.register_plugin(P(), name="p")
    with pytest.raises(ConfigError, match=r"generator 'typo' declares defaults for unknown option\(s\) \['g_rate'\]"):
        resolve_generator_options({"name": "typo"})
