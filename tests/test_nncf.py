"""The NNCF adapter beyond the conformance kit (tests/test_conformance_nncf.py): the traps NNCF sets
(top-level Sequential, untraceable models, bit widths its hardware configurations lack, sub-8-bit QDQ,
the C++ extension, nncf.strip's undeclared torchao), its options (ignored scope, per-layer bits,
calibration data), the NNCF 2.x KD presets and the BatchNorm fold of the QDQ export. Real NNCF,
OpenVINO and onnxruntime on digits; no mocks."""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from daqakd_plugins import backends
from daqakd_plugins.backends import describe_quantizers
from daqakd_plugins.config import QuantConfig
from daqakd_plugins.errors import BackendUnavailableError, ConfigError, ExportError, ModelError
from daqakd_plugins.train import evaluate

nncf = pytest.importorskip("nncf")


def _q(model: nn.Module, digits, w: int = 8, a: int | None = None, **options) -> nn.Module:
    return backends.quantize(copy.deepcopy(model), "nncf", QuantConfig(weight_bits=w, act_bits=a or w, options=options),
                             example_input=digits.train_x[:8], calib_data=digits.train_x[:256])


@pytest.fixture(scope="module")
def student8(digits_teacher, digits):
    return _q(digits_teacher[0], digits, 8).eval()


# --------------------------------------------------------------------------------------------------
# bits
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("w", "a"), [(6, 6), (5, 8), (8, 4), (7, 7)])
def test_bits_nncf_has_no_configuration_for_are_refused_with_the_list(digits_teacher, digits, w, a):
    """Inside the 4..8 range only W8A8, W4A4 and W4A8 exist in NNCF: the core refuses the rest up front
    (BackendInfo.bit_pairs), with NNCF's reason; the adapter's own check says the same for direct calls."""
    with pytest.raises(ConfigError, match=rf"W{w}A{a} is not a bit combination backend 'nncf' supports \(W8A8, W4A4, "
                       r"W4A8\)") as ei:
        _q(digits_teacher[0], digits, w, a)
    assert "incompatible with HW capabilities" in str(ei.value) and "--bits W --act-bits A" in str(ei.value)
    from daqakd_nncf.options import NNCFOptions
    from daqakd_nncf.plugin import _check_bits

    with pytest.raises(ConfigError, match=r"W8A8 \(every target device\); W4A4 \(target_device NPU\); W4A8"):
        _check_bits(QuantConfig(weight_bits=w, act_bits=a), NNCFOptions())


def test_distill_refuses_such_bits_before_writing_anything(tmp_path):
    from daqakd_plugins.distill import DistillConfig

    with pytest.raises(ConfigError, match=r"W6A6 is not a bit combination backend 'nncf' supports"):
        DistillConfig(backend="nncf", bits=6, out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_four_bits_need_the_npu_configuration(digits_teacher, digits):
    with pytest.raises(ConfigError, match=r"NPU hardware configuration.*'CPU'"):
        _q(digits_teacher[0], digits, 4, target_device="CPU")
    with pytest.raises(ConfigError, match="unknown nncf option"):
        _q(digits_teacher[0], digits, 8, bias_correction=True)
    with pytest.raises(ConfigError, match="target_device"):
        _q(digits_teacher[0], digits, 8, target_device="TPU")


def test_w4a8_quantizes_weights_to_4_and_activations_to_8_bits(digits_teacher, digits):
    s = _q(digits_teacher[0], digits, 4, 8)
    qs = describe_quantizers(s)
    # the first and last layers' weights at 8 bits (the default convention), the inner ones at 4
    assert {q.layer: q.bits for q in qs if q.role == "weight"} == {"stem.0": 8, "layers.0.conv1": 4,
                                                                   "layers.0.conv2": 4, "fc": 8}
    assert {q.bits for q in qs if q.role == "activation"} == {8}
    assert evaluate(s, digits.test_x, digits.test_y) > 0.9


# --------------------------------------------------------------------------------------------------
# traps: Sequential, tracing
# --------------------------------------------------------------------------------------------------
def _seq() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))


def test_top_level_sequential_is_wrapped_not_refused(digits, tmp_path):
    """nncf.quantize on an nn.Sequential fails inside NNCF (its HookStorage becomes a layer of the
    Sequential); the adapter wraps it, and the student trains, saves, restores and exports."""
    seq = _seq()
    with pytest.raises(NotImplementedError, match="HookStorage"):  # the trap, in NNCF itself
        nncf.quantize(copy.deepcopy(seq).eval(), nncf.Dataset([digits.train_x[:8]]), subset_size=1)
    s = _q(seq, digits, 8)
    assert type(s).__name__ == "SequentialWrapper" and isinstance(s.model, nn.Sequential)
    assert {q.role for q in describe_quantizers(s)} == {"weight", "activation"}
    opt = torch.optim.Adam(s.parameters(), lr=1e-2)
    s.train()
    for _ in range(20):
        loss = nn.functional.cross_entropy(s(digits.train_x[:256]), digits.train_y[:256])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert evaluate(s, digits.test_x, digits.test_y) > 0.5
    cfg = QuantConfig(weight_bits=8, act_bits=8)
    payload = backends.save_student(s, "nncf", cfg)
    r = backends.restore_student(_seq(), "nncf", cfg, payload, example_input=digits.train_x[:2])
    s.eval()
    with torch.no_grad():
        assert torch.equal(s(digits.test_x), r(digits.test_x))
    (ov_file,) = backends.export(s, "nncf", example_input=digits.test_x[:1], out_dir=tmp_path, formats=("openvino",))
    assert ov_file.predict(digits.test_x[:5].numpy()).shape == (5, 10)


class _Scripted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.jit.script(nn.Conv2d(1, 4, 3))
        self.fc = nn.Linear(4 * 36, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class _ToList(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(x.tolist())


class _Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.detour = _ToList()
        self.fc = nn.Linear(4 * 36, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.detour(self.conv(x)).flatten(1))


def test_a_module_nncf_cannot_trace_is_named(digits):
    with pytest.raises(ModelError, match=r"module\(s\) 'conv' are TorchScript"):
        _q(_Scripted(), digits, 8)
    wrong = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(99, 10))  # 4*6*6 = 144 inputs, not 99
    with pytest.raises(ModelError, match=r"failed in module 'model\.2' \(Linear\): RuntimeError: .*144"):
        _q(wrong, digits, 8)


def test_a_graph_break_is_named_instead_of_leaving_layers_unquantized(digits):
    """NNCF itself quantizes this model without complaint, but the Linear after .tolist() gets no
    quantizer: the adapter refuses it and names the module that breaks the graph and the layer lost."""
    q = nncf.quantize(_Broken().eval(), nncf.Dataset([digits.train_x[:8]]), subset_size=1)
    assert not any("fc/linear" in n for n, _ in q.named_modules())  # the silent failure
    with pytest.raises(ModelError, match=r"through module\(s\) 'detour'.*layer\(s\) fc"):
        _q(_Broken(), digits, 8)


# --------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------
def test_ignored_scope_by_module_path_and_errors_list_the_layers(digits_teacher, digits):
    s = _q(digits_teacher[0], digits, 8, ignored_scope=["fc"])
    names = [q.name for q in describe_quantizers(s)]
    assert not any("fc/linear" in n for n in names) and any("stem/0/conv2d" in n for n in names)
    with pytest.raises(ConfigError, match=r"'head' matches no module path.*Layers with weights: fc, layers\.0\.conv1"):
        _q(digits_teacher[0], digits, 8, ignored_scope=["head"])
    with pytest.raises(ConfigError, match=r"'softmax' is not an operation type of this model; types: .*conv2d"):
        _q(digits_teacher[0], digits, 8, ignored_types=["softmax"])
    s = _q(digits_teacher[0], digits, 8, ignored_types=["linear"])
    assert not any("fc/linear" in q.name for q in describe_quantizers(s))


def test_layer_bits_keep_first_and_last_layers_at_8_bits_through_save_and_export(digits_teacher, digits, tmp_path):
    s = _q(digits_teacher[0], digits, 4, 4, layer_bits={"stem.0": 8, "fc": 8})
    bits = {q.name.split(".")[-2]: q.bits for q in describe_quantizers(s)}
    assert bits["stem/0/conv2d/0__1"] == 8 and bits["fc/linear/0__1"] == 8  # weights
    assert bits["x__0"] == 8 and bits["pool/adaptive_avg_pool2d/0__0"] == 8  # their inputs
    assert bits["layers/0/conv1/conv2d/0__1"] == 4 and bits["layers/0/relu1/relu/0__0"] == 4
    cfg = QuantConfig(weight_bits=4, act_bits=4, options={"layer_bits": {"stem.0": 8, "fc": 8}})
    payload = backends.save_student(s, "nncf", cfg)
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    r = backends.restore_student(copy.deepcopy(digits_teacher[0]), "nncf", cfg, torch.load(buf, weights_only=True),
                                 example_input=digits.train_x[:2])
    assert {q.name: q.bits for q in describe_quantizers(r)} == {q.name: q.bits for q in describe_quantizers(s)}
    (ov_file,) = backends.export(s.eval(), "nncf", example_input=digits.test_x[:1], out_dir=tmp_path)
    import openvino as ov

    levels = sorted(op.get_attributes()["levels"] for op in ov.Core().read_model(str(ov_file.path)).get_ops()
                    if op.get_type_name() == "FakeQuantize")
    assert 16 in levels and 256 in levels
    with pytest.raises(ConfigError, match=r"'head', which is no layer with weights.*fc, layers\.0\.conv1"):
        _q(digits_teacher[0], digits, 4, 4, layer_bits={"head": 8})
    with pytest.raises(ConfigError, match="must be 4 or 8"):
        _q(digits_teacher[0], digits, 4, 4, layer_bits={"fc": 6})


def test_calibration_on_the_ranked_augmentation_is_an_option_and_leaves_the_rng_alone(digits_teacher, digits):
    clean = _q(digits_teacher[0], digits, 8)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    aug = _q(digits_teacher[0], digits, 8, calibration_augment="trivialaugmentwide")
    assert torch.equal(torch.get_rng_state(), state)
    sc = {q.name: m for q in describe_quantizers(clean) for n, m in clean.named_modules() if n == q.name}
    sa = {n: m for n, m in aug.named_modules() if n in sc}
    act = [n for n in sc if "post_hooks" in n and "x__0" not in n]
    assert any(not torch.equal(sc[n].scale, sa[n].scale) for n in act)  # other data, other ranges
    again = _q(digits_teacher[0], digits, 8, calibration_augment="trivialaugmentwide")
    assert all(torch.equal(m.scale, dict(again.named_modules())[n].scale) for n, m in sa.items())  # seeded
    with pytest.raises(Exception, match="nosuchaug"):
        _q(digits_teacher[0], digits, 8, calibration_augment="nosuchaug")


def test_calibrate_works_on_a_model_quantized_with_nncf_directly(digits_teacher, digits):
    """A user's own nncf.quantize student (NNCF's recipe) can be described and recalibrated."""
    q = nncf.quantize(copy.deepcopy(digits_teacher[0]).eval(), nncf.Dataset([digits.train_x[:64]]), subset_size=1,
                      advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=True))
    qs = describe_quantizers(q)
    assert sum(1 for x in qs if x.role == "weight") == 4 and sum(1 for x in qs if x.role == "activation") == 6
    backends.calibrate(q, "nncf", digits.train_x[:512], num_batches=8)
    assert evaluate(q, digits.test_x, digits.test_y) > 0.98


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def test_exports_run_in_their_runtimes_and_the_qdq_file_uses_integer_kernels(student8, digits, tmp_path):
    from daqakd_plugins.onnx_qdq import u8s8_hazards
    from daqakd_plugins.runtime import accuracy_of, ort_integer_kernels

    files = {e.format: e for e in backends.export(student8, "nncf", example_input=digits.test_x[:1], out_dir=tmp_path)}
    assert set(files) == {"openvino", "onnx-qdq"}
    ref = evaluate(student8, digits.test_x, digits.test_y)
    for e in files.values():
        assert abs(accuracy_of(e.predict, digits.test_x, digits.test_y) - ref) <= 0.005
    ov_file = files["openvino"]
    assert ov_file.runtime == "openvino" and ov_file.size_bytes == ov_file.path.stat().st_size + ov_file.path.with_suffix(
        ".bin").stat().st_size
    import onnx

    qdq = onnx.load(str(files["onnx-qdq"].path))
    assert not [n for n in qdq.graph.node if n.op_type == "BatchNormalization"]  # folded
    assert u8s8_hazards(qdq) == []
    assert ort_integer_kernels(files["onnx-qdq"].path)["integer"] >= 3  # every conv (not the Flatten-fed Gemm)
    assert "BatchNorm(s) folded" in files["onnx-qdq"].notes


def test_sub_8_bit_students_export_openvino_only_and_say_why(digits_teacher, digits, tmp_path):
    s = _q(digits_teacher[0], digits, 4, 4).eval()
    assert [e.format for e in backends.export(s, "nncf", example_input=digits.test_x[:1], out_dir=tmp_path)] == ["openvino"]
    with pytest.raises(ExportError, match=r"8-bit only.*formats=\('openvino',\)"):
        backends.export(s, "nncf", example_input=digits.test_x[:1], out_dir=tmp_path, formats=("onnx-qdq",))
    with pytest.raises(ExportError, match="openvino, onnx-qdq"):
        backends.export(s, "nncf", example_input=digits.test_x[:1], out_dir=tmp_path, formats=("tflite",))
    with pytest.raises(ExportError, match="no NNCF quantizers"):
        backends.export(copy.deepcopy(digits_teacher[0]), "nncf", example_input=digits.test_x[:1], out_dir=tmp_path)


def test_batchnorm_fold_is_exact_with_negative_scales(tmp_path):
    """onnx_fold on NNCF's export pattern Q(W) → DQ → Conv → BatchNormalization, with negative BN gammas
    (the sign-flip path): same outputs in onnxruntime, no BatchNormalization left, integer weights."""
    import onnx
    import onnxruntime as ort
    from daqakd_nncf.onnx_fold import fold_batchnorm
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3, 3, 3)).astype(np.float32)
    inits = {
        "w": w, "w_scale": (np.abs(w).reshape(6, -1).max(1) / 127).astype(np.float32), "w_zp": np.zeros(6, np.int8),
        "b": rng.normal(size=6).astype(np.float32), "gamma": np.array([1.5, -0.7, 0.3, -2.0, 1.0, 0.01], np.float32),
        "beta": rng.normal(size=6).astype(np.float32), "mean": rng.normal(size=6).astype(np.float32),
        "var": rng.uniform(0.5, 2, size=6).astype(np.float32),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zp"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wdq"], axis=0),
        helper.make_node("Conv", ["x", "wdq", "b"], ["c"], name="conv"),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6, 6, 6])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert fold_batchnorm(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "Conv", "Relu"]
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert any(v.dtype == np.int8 and v.shape == w.shape for v in stored.values()) and "w" not in stored
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert np.abs(after - before).max() < 1e-4 * max(1.0, float(np.abs(before).max()))


# --------------------------------------------------------------------------------------------------
# NNCF 2.x knowledge distillation presets
# --------------------------------------------------------------------------------------------------
def test_nncf2_kd_presets_compute_what_nncf_2x_computed(student8, digits_teacher, digits):
    import torch.nn.functional as F  # noqa: N812

    from daqakd_plugins.distill import Distiller
    from daqakd_plugins.plugins import get_loss_presets

    presets = get_loss_presets()
    assert {"nncf2_kd_softmax", "nncf2_kd_mse"} <= set(presets)
    teacher = digits_teacher[0]
    x, y = digits.train_x[:64], digits.train_y[:64]
    s = copy.deepcopy(student8).eval()
    with torch.no_grad():
        zs, zt = s(x), teacher(x)
    # NNCF 2.x KnowledgeDistillationLoss, scale = T = 1: -(log_softmax(s) * softmax(t)).mean() * C; mse: MSELoss(t, s)
    soft = -(F.log_softmax(zs, dim=1) * F.softmax(zt, dim=1)).mean() * zs.shape[1]
    mse = F.mse_loss(zt, zs)
    ce = F.cross_entropy(zs, y)
    for name, kd_term in (("nncf2_kd_softmax", soft), ("nncf2_kd_mse", mse)):
        kd = Distiller(teacher, s, loss=name, augment=None)
        with torch.no_grad():
            got = kd.loss(x, y)
        kd.remove_hooks()
        assert torch.allclose(got, ce + kd_term, rtol=1e-5, atol=1e-6), (name, got, ce + kd_term)


# --------------------------------------------------------------------------------------------------
# environment: nncf.strip's torchao, openvino missing, no C++ compiler
# --------------------------------------------------------------------------------------------------
def test_strip_names_the_undeclared_torchao(student8, digits):
    from daqakd_nncf.plugin import strip

    try:
        import torchao  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="pip install torchao"):
            strip(student8, digits.test_x[:1])
    else:  # pragma: no cover - with torchao installed strip works
        stripped = strip(student8, digits.test_x[:1])
        assert evaluate(stripped, digits.test_x, digits.test_y) == evaluate(student8, digits.test_x, digits.test_y)


def _run(code: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_openvino_missing_names_the_install_command():
    r = _run("""
        import sys
        sys.modules["openvino"] = None  # as if it were not installed
        import torch
        from daqakd_plugins import backends
        from daqakd_plugins.config import QuantConfig
        from daqakd_plugins.errors import BackendUnavailableError
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10))
        x = torch.rand(8, 1, 8, 8)
        s = backends.quantize(m, "nncf", QuantConfig(weight_bits=8, act_bits=8), example_input=x)
        try:
            backends.export(s, "nncf", example_input=x[:1], out_dir=sys.argv[0] + "_out", formats=("openvino",))
        except BackendUnavailableError as exc:
            print("MSG", exc)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MSG" in r.stdout and 'pip install "daqakd[nncf]"' in r.stdout


@pytest.mark.slow
def test_no_cpp_compiler_is_said_and_nncf_falls_back(tmp_path):
    """No compiler and no cached build: the adapter says so before NNCF falls back to its pure-torch
    quantizers, and quantization still works."""
    r = _run("""
        import torch, warnings
        from daqakd_plugins import backends
        from daqakd_plugins.config import QuantConfig
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10))
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            s = backends.quantize(m, "nncf", QuantConfig(weight_bits=8, act_bits=8), example_input=torch.rand(8, 1, 8, 8))
        print("WARN", [str(x.message) for x in w if "C++" in str(x.message)])
        print("OUT", tuple(s(torch.rand(2, 1, 8, 8)).shape))
    """, env={"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "CXX": str(tmp_path / "no-such-compiler")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no C++ compiler found" in r.stderr and "apt-get install g++" in r.stderr
    assert "OUT (2, 10)" in r.stdout and "apt-get install g++" in r.stdout


# The first use's compile (announced, then reported ready; loaded once per process) is checked with a cold
# cache and two busy processes alongside in tests/test_first_use.py::test_nncf_cold_start_with_two_busy_...


@pytest.mark.slow
def test_distill_cli_at_4_bits_exports_openvino(tmp_path, digits_teacher):
    from daqakd_plugins.models import save_model

    teacher_file = tmp_path / "teacher.pt"
    save_model(teacher_file, digits_teacher[0], digits_teacher[1]["arch"], digits_teacher[1])
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "daqakd_plugins", "distill", "--backend", "nncf", "--bits", "4",
                        "--data", "digits", "--teacher", str(teacher_file), "--epochs", "1", "--augment", "none",
                        "--train-per-class", "20", "--out", str(out)],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    rep = json.loads((out / "report.json").read_text())
    (e,) = rep["export"]["student"]
    assert e["format"] == "openvino" and e["runtime"] == "openvino" and e["accuracy_abs_diff"] <= 0.005
    assert (out / "export" / "student.openvino.xml").exists() and (out / "export" / "student.openvino.bin").exists()
