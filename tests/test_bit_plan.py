"""Bit plans: per-layer widths from patterns and the first/last convention, the teacher-chosen plan under a
budget, and the plan through the CLI, the report, resume and load_student (issue 25). The per-backend side
(the described quantizers show the plan, through calibration and save → restore) is the conformance kit's
``check_bit_plan``, run for all four backends by tests/test_conformance*.py."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from daqakd_plugins.bitplan import normalize_layer_bits, parse_layer_bits, resolve_plan, weight_layers
from daqakd_plugins.config import QuantConfig
from daqakd_plugins.errors import ConfigError
from daqakd_plugins.sensitivity import Sensitivity, choose_plan, fake_quant_weight, layer_sensitivity


class HeadFirst(nn.Module):
    """Declares its classifier before its stem: the forward order, not the registration order, is first/last."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.mid = nn.Conv2d(4, 8, 3, padding=1)
        self.stem = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.mid(torch.relu(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


def test_layer_bits_specs_parse_and_bad_ones_name_the_fix():
    assert parse_layer_bits("fc=8") == ("fc", {"weight": 8, "act": None})
    assert parse_layer_bits("layers.*=W2A6") == ("layers.*", {"weight": 2, "act": 6})
    assert parse_layer_bits("stem.0=a8") == ("stem.0", {"weight": None, "act": 8})
    assert normalize_layer_bits({"fc": {"weight": 8}, "x": "W3"}) == {"fc": {"weight": 8, "act": None},
                                                                      "x": {"weight": 3, "act": None}}
    assert list(normalize_layer_bits(["a=2", "b=3", "a=4"])) == ["b", "a"]  # a repeated pattern counts where it was last
    with pytest.raises(ConfigError, match="PATTERN=BITS"):
        parse_layer_bits("fc")
    with pytest.raises(ConfigError, match="W8A8"):
        parse_layer_bits("fc=eight")
    with pytest.raises(ConfigError, match="1..16"):
        QuantConfig(layer_bits={"fc": 0})
    with pytest.raises(ConfigError, match="unknown keys"):
        QuantConfig(layer_bits={"fc": {"w": 8}})


def test_first_last_follow_the_forward_order_and_patterns_win_in_order():
    m, x = HeadFirst(), torch.zeros(1, 1, 6, 6)
    assert weight_layers(m, x) == ["stem", "mid", "fc"]
    assert weight_layers(m) == ["fc", "mid", "stem"]  # registration order without an input
    plan = resolve_plan(m, QuantConfig(weight_bits=3, act_bits=4), x)
    assert plan == {"stem": {"weight": 8, "act": 8}, "mid": {"weight": 3, "act": 4}, "fc": {"weight": 8, "act": 8}}
    assert resolve_plan(m, QuantConfig(weight_bits=3, act_bits=4), x, layer_acts=False)["fc"] == {"weight": 8, "act": 4}
    plan = resolve_plan(m, QuantConfig(weight_bits=3, act_bits=4, first_last=None,
                                       layer_bits={"*": 5, "m*": "W2A6", "fc": "A8"}), x)
    assert plan == {"stem": {"weight": 5, "act": 4}, "mid": {"weight": 2, "act": 6}, "fc": {"weight": 5, "act": 8}}
    with pytest.raises(ConfigError, match=r"'head' matches no weight layer .* stem, mid, fc"):
        resolve_plan(m, QuantConfig(layer_bits={"head": 8}), x)


def test_quant_config_round_trips_and_old_files_read_as_uniform():
    cfg = QuantConfig(weight_bits=3, act_bits=4, layer_bits={"fc": 8})
    again = QuantConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.first_last == 8
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("first_last", "layer_bits")}
    assert QuantConfig.from_dict(old).first_last is None  # written before the convention: as it was trained
    assert QuantConfig(first_last=0).first_last is None and QuantConfig(first_last=0).uniform


def test_backends_refuse_widths_they_cannot_set_naming_the_layers(digits_teacher, digits):
    from daqakd_plugins import backends

    model, x = digits_teacher[0], digits.train_x[:2]
    with pytest.raises(ConfigError, match=r"4, 8 bits, not: layers.0.conv1 \(W6\)"):
        backends.resolve_plan(model, "nncf", QuantConfig(layer_bits={"layers.0.conv1": 6}), example_input=x)
    with pytest.raises(ConfigError, match=r"per-layer activation bits .* layers.0.conv1"):
        backends.resolve_plan(model, "brevitas", QuantConfig(layer_bits={"layers.0.conv1": "A8"}), example_input=x)
    with pytest.raises(ConfigError, match=r"input at 4 or 8 bits, not: layers.0.conv1 \(A6\)"):
        backends.quantize(model, "nncf", QuantConfig(layer_bits={"layers.0.conv1": "A6"}), example_input=x)
    plan = backends.resolve_plan(model, "brevitas", QuantConfig(weight_bits=3, act_bits=4), example_input=x)
    assert {e["act"] for e in plan.values()} == {4}  # the convention sets weights only where acts are not per layer


def _brute_force(sens: Sensitivity, budget: float, pinned: dict[str, int]) -> float:
    total = sum(sens.params.values())
    best = float("inf")
    free = [n for n in sens.layers if n not in pinned]
    for combo in itertools.product(sens.widths, repeat=len(free)):
        bits = {**pinned, **dict(zip(free, combo))}
        if sum(sens.params[n] * bits[n] for n in sens.layers) <= budget * total + 1e-9:
            best = min(best, sum(sens.kl[n][bits[n]] for n in sens.layers))
    return best


def test_the_plan_is_the_least_sensitive_one_within_the_budget():
    gen = torch.Generator().manual_seed(0)
    layers = [f"l{i}" for i in range(5)]
    widths = [2, 3, 4, 8]
    for trial in range(6):
        params = {n: int(torch.randint(50, 2000, (1,), generator=gen)) for n in layers}
        base = {n: float(torch.rand(1, generator=gen)) for n in layers}
        kl = {n: {b: base[n] * 4.0 ** -(b - 2) for b in widths} for n in layers}  # falls with the width
        sens = Sensitivity(kl=kl, params=params, layers=layers, images=1, seconds=0.0, widths=widths)
        pinned = {"l0": 8} if trial % 2 else {}
        budget = 3.0 + 0.4 * trial
        plan = choose_plan(sens, budget, pinned=pinned)
        avg = sum(params[n] * plan[n] for n in layers) / sum(params.values())
        assert avg <= budget + 1e-9 and all(plan[n] == b for n, b in pinned.items())
        got = sum(kl[n][plan[n]] for n in layers)
        assert got <= _brute_force(sens, budget, pinned) + 1e-12, (trial, plan)
    with pytest.raises(ConfigError, match=r"below the least average this plan can reach \(3.\d+ bits"):
        choose_plan(sens, 2.5, pinned={"l0": 8})


def test_sensitivity_measures_each_layer_alone_and_leaves_the_teacher_as_it_was(digits_teacher, digits):
    model = digits_teacher[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = weight_layers(model, digits.train_x[:1])
    s = layer_sensitivity(model, [digits.train_x[:128]], layers, [2, 4, 8])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for n in layers:
        assert s.kl[n][2] > s.kl[n][4] > s.kl[n][8] >= 0.0, (n, s.kl[n])
    w = torch.randn(4, 3, 3, 3)
    q = fake_quant_weight(w, 3)
    assert all(len(torch.unique(q[c])) <= 7 for c in range(4))  # the narrow 3-bit grid: -3..3


@pytest.fixture(scope="module")
def teacher_file(digits_teacher, tmp_path_factory) -> Path:
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    return save_model(tmp_path_factory.mktemp("teacher") / "teacher.pt", model, meta["arch"], meta)


def _budget_cfg(teacher: Path, out: Path, **kw):
    from daqakd_plugins.distill import DistillConfig

    base = dict(backend="brevitas", bits=2, act_bits=4, data="digits", teacher=str(teacher), epochs=2,
                augment="none", train_per_class=20, batch_size=32, export=False, progress=False, out=str(out),
                bits_budget=3.5, lr=2e-3)
    return DistillConfig(**{**base, **kw})


def test_a_budgeted_plan_survives_resume_and_load_student(tmp_path, teacher_file, monkeypatch):
    """An interrupted run resumes with the plan of its checkpoint (the sensitivity pass does not run again)
    and ends where the uninterrupted run ends; the student file reloads with the plan's widths."""
    from daqakd_plugins import backends, sensitivity
    from daqakd_plugins.distill import load_student, run_distill
    from daqakd_plugins.run import checkpoint as ckpt

    whole = run_distill(_budget_cfg(teacher_file, tmp_path / "whole"))
    bp = whole["bit_plan"]
    assert set(bp["layer_bits"]) == set(weight_layers(_load(teacher_file), torch.zeros(1, 1, 8, 8)))
    assert bp["avg_weight_bits"] <= 3.5
    inner = [e["weight"] for n, e in bp["layer_bits"].items() if n not in ("stem.0", "fc")]
    assert max(inner) > 2, bp["layer_bits"]  # the budget bought wider inner layers than the uniform --bits 2
    assert whole["layer_bits"] == bp["layer_bits"] and bp["sensitivity"]["layers"]

    real_save = ckpt.Checkpoint.save

    def save_then_stop(self, path):
        real_save(self, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.Checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_distill(_budget_cfg(teacher_file, tmp_path / "cut"))
    monkeypatch.setattr(ckpt.Checkpoint, "save", real_save)
    monkeypatch.setattr(sensitivity, "layer_sensitivity", lambda *a, **k: pytest.fail("a resume measured again"))
    resumed = run_distill(_budget_cfg(teacher_file, tmp_path / "cut", resume=str(tmp_path / "cut")))
    assert resumed["resumed_from_epoch"] == 1 and resumed["bit_plan"]["layer_bits"] == bp["layer_bits"]
    assert resumed["accuracy"]["student_after"] == whole["accuracy"]["student_after"]

    student, meta = load_student(tmp_path / "whole" / "student.pt")
    planned = {q.layer: q.bits for q in backends.describe_quantizers(student) if q.role == "weight"}
    assert planned == {n: e["weight"] for n, e in bp["layer_bits"].items()}
    assert meta["quant_config"]["layer_bits"] == bp["layer_bits"]
    md = (tmp_path / "whole" / "report.md").read_text()
    assert "## Bit plan" in md and "| `fc` |" in md and "KL × 1000" in md
    from daqakd_plugins.reporting import report_figure

    titles = [ax.get_title() for ax in report_figure(whole).axes]
    assert any(t.startswith("bit plan: ") and "budget 3.5" in t for t in titles), titles


def _load(path: Path) -> nn.Module:
    from daqakd_plugins.models import load_model

    return load_model(path)[0]


def test_plan_flags_from_the_command_line(tmp_path, teacher_file):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "daqakd_plugins", "distill", "--backend", "pytorch-quantization", "--bits", "4",
           "--data", "digits", "--teacher", str(teacher_file), "--epochs", "1", "--augment", "none",
           "--train-per-class", "10", "--no-export", "--out", str(out), "--layer-bits", "layers.*=W6A6",
           "--layer-bits", "layers.0.conv2=5", "--first-last-bits", "0"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    lb = json.loads((out / "report.json").read_text())["layer_bits"]
    assert lb == {"stem.0": {"weight": 4, "act": 4}, "layers.0.conv1": {"weight": 6, "act": 6},
                  "layers.0.conv2": {"weight": 5, "act": 6}, "fc": {"weight": 4, "act": 4}}
    bad = subprocess.run(cmd[:-6] + ["--out", str(tmp_path / "bad"), "--bits-budget", "3", "--data-free"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--layer-bits PATTERN=BITS" in bad.stderr


@pytest.mark.parametrize(("backend", "fmt"), [("pytorch-quantization", "onnx-qdq-tensorrt"), ("modelopt", "onnx-trt")])
def test_tensorrt_files_refuse_the_layers_a_plan_put_below_8_bits(backend, fmt, digits_teacher, digits, tmp_path):
    from daqakd_plugins import backends
    from daqakd_plugins.errors import ExportError

    x = digits.train_x[:8]
    cfg = QuantConfig(weight_bits=8, act_bits=8, layer_bits={"layers.0.conv1": "W4A4"})
    s = backends.quantize(digits_teacher[0], backend, cfg, example_input=x, calib_data=digits.train_x[:256])
    with pytest.raises(ExportError, match=r"layers\.0\.conv1"):
        backends.export(s, backend, example_input=x, out_dir=tmp_path, formats=(fmt,))
    (onnx,) = backends.export(s, backend, example_input=x, out_dir=tmp_path, formats=None)  # onnxruntime's file only
    assert onnx.runtime == "onnxruntime"


@pytest.mark.parametrize(("backend", "bits", "budget"), [("nncf", 4, 5.0), ("modelopt", 4, 5.0)])
def test_a_budgeted_run_plans_within_the_backends_widths(backend, bits, budget, tmp_path, teacher_file):
    """run_distill with --bits-budget on the backends with narrower per-layer widths (NNCF 4/8, Model Optimizer
    4..8; Brevitas is the resume test's, pytorch-quantization the CLI test's, all four the conformance kit's
    check_bit_plan): the plan uses only those widths, stays within the budget, and the saved student reloads with
    exactly those widths."""
    from daqakd_plugins import backends
    from daqakd_plugins.distill import load_student, run_distill
    from daqakd_plugins.run.plan import plan_widths

    rep = run_distill(_budget_cfg(teacher_file, tmp_path / backend, backend=backend, bits=bits, act_bits=bits,
                                  epochs=1, bits_budget=budget))
    plan = rep["layer_bits"]
    widths = {e["weight"] for e in plan.values()}
    assert widths <= set(plan_widths(backend)) and rep["bit_plan"]["avg_weight_bits"] <= budget
    assert {plan["stem.0"]["weight"], plan["fc"]["weight"]} == {8}
    student, _ = load_student(tmp_path / backend / "student.pt")
    seen = {q.layer: q.bits for q in backends.describe_quantizers(student) if q.role == "weight" and q.layer}
    assert seen == {n: e["weight"] for n, e in plan.items()}


def test_a_budget_keeps_the_layers_the_user_pinned(tmp_path, teacher_file, digits):
    """``--layer-bits`` weights (and the first/last convention) are pinned: the budget plans the other layers."""
    from daqakd_plugins.run.plan import choose

    teacher = _load(teacher_file)
    calib = [digits.train_x[:128]]
    cfg = _budget_cfg(teacher_file, tmp_path / "p", layer_bits={"layers.0.conv1": 6}, bits_budget=4.5)
    got = choose(cfg, teacher, digits.train_x[:2], calib).record["layer_bits"]
    assert got["layers.0.conv1"]["weight"] == 6 and got["stem.0"]["weight"] == 8 and got["fc"]["weight"] == 8
    free = choose(_budget_cfg(teacher_file, tmp_path / "q", bits_budget=4.5), teacher, digits.train_x[:2], calib)
    assert free.record["layer_bits"]["layers.0.conv1"]["weight"] != 6  # unpinned, the plan chooses otherwise


def test_a_size_budget_is_the_same_plan_in_kib(tmp_path, teacher_file, digits):
    """``--size-budget-kb`` is ``--bits-budget`` stated as weight storage: the same plan at the equivalent
    average, never above the size; both at once are refused."""
    from daqakd_plugins.run.plan import choose

    teacher = _load(teacher_file)
    calib, x = [digits.train_x[:128]], digits.train_x[:2]
    params = sum(m.weight.numel() for m in teacher.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    kb = 3.5 * params / 8192
    sized = choose(_budget_cfg(teacher_file, tmp_path / "s", bits_budget=None, size_budget_kb=kb), teacher, x, calib)
    avg = choose(_budget_cfg(teacher_file, tmp_path / "a", bits_budget=3.5), teacher, x, calib)
    assert sized.record["layer_bits"] == avg.record["layer_bits"] and sized.record["weight_kb"] <= kb + 1e-9
    assert abs(sized.record["budget"] - 3.5) < 1e-9 and sized.record["size_budget_kb"] == kb
    with pytest.raises(ConfigError, match="pass one"):
        _budget_cfg(teacher_file, tmp_path / "b", size_budget_kb=kb)
