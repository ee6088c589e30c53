"""Real Brevitas on digits: graph-mode quantization at W2A4/W4A4/W8A8, calibration, QAT over PTQ,
QCDQ (onnxruntime) and QONNX (qonnx) export equal to torch, and every bad-input error."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from daqakd_plugins import backends
from daqakd_plugins.config import QuantConfig
from daqakd_plugins.errors import BackendError, BackendUnavailableError, ConfigError, DataError, ExportError
from daqakd_plugins.train import evaluate

REPO = Path(__file__).resolve().parents[1]


def _quant_bits(model: nn.Module) -> tuple[list[int], dict[str, int]]:
    """Weight quantizer bit widths, and activation quantizer bit widths by module path."""
    from brevitas.proxy.parameter_quant import WeightQuantProxyFromInjectorBase
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjectorBase

    w, a = [], {}
    for name, m in model.named_modules():
        if isinstance(m, WeightQuantProxyFromInjectorBase) and m.is_quant_enabled:
            w.append(int(m.bit_width()))
        elif isinstance(m, ActQuantProxyFromInjectorBase) and m.is_quant_enabled:
            a[name] = int(m.bit_width())
    return w, a


def _quantize(teacher: nn.Module, digits, w: int, a: int, **kw) -> nn.Module:
    return backends.quantize(teacher, "brevitas", QuantConfig(weight_bits=w, act_bits=a, **kw),
                             example_input=digits.train_x[:4], calib_data=digits.train_x[:512])


def _qat(student: nn.Module, digits, epochs: int = 2, lr: float = 1e-3) -> nn.Module:
    from daqakd_plugins.data import make_loader

    torch.manual_seed(0)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    loader = make_loader(digits.train_x, digits.train_y, 64, shuffle=True, seed=0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(loader))
    student.train()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = nn.functional.cross_entropy(student(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return student.eval()


def _exported_accuracy(predict, x: torch.Tensor, y: torch.Tensor) -> float:
    logits = np.concatenate([predict(x[i : i + 64].numpy()) for i in range(0, len(x), 64)])
    return float((logits.argmax(1) == y.numpy()).mean())


def _same_rows(a: np.ndarray, b: np.ndarray, tol: float = 1e-3) -> float:
    """Fraction of samples whose logits agree within ``tol``. Not 1.0 by necessity: a float sum in a
    different order can land a value on the other side of a rounding boundary, which moves one logit
    by one output-quantizer step."""
    return float((np.abs(a - b).max(1) < tol).mean())


def _torch_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).double().mean())


@pytest.fixture(scope="module")
def qat_w4(digits_teacher, digits):
    """A uniform W4A4 (per-tensor, first and last layer too) student: PTQ accuracy, then 2 epochs of QAT (used by
    several tests)."""
    teacher, _ = digits_teacher
    s = _quantize(teacher, digits, 4, 4, per_channel=False, first_last=None)
    ptq = evaluate(s, digits.test_x, digits.test_y)
    return _qat(s, digits), ptq


# --------------------------------------------------------------------------------------------------
def test_backend_is_registered_and_implemented() -> None:
    info = __import__("daqakd_plugins.plugins", fromlist=["get_backend"]).get_backend("brevitas")
    assert info.implemented
    assert info.weight_bits == (1, 8) and info.act_bits == (2, 8)
    assert info.export_formats == ("onnx-qcdq", "qonnx")


def test_plugin_load_and_count_do_not_import_brevitas() -> None:
    code = textwrap.dedent("""
        import sys, torch
        import daqakd_plugins
        from daqakd_plugins import plugins, backends
        plugins.load_plugins(); plugins.get_backends()
        assert backends.count_quantizers(torch.nn.Linear(2, 2)) == 0
        assert "brevitas" not in sys.modules, "brevitas was imported"
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.mark.parametrize(("w", "a"), [(2, 4), (4, 4), (8, 8)])
def test_graph_mode_quantize_sets_bits_and_leaves_fp_model_alone(digits_teacher, digits, w: int, a: int) -> None:
    teacher, meta = digits_teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    # SmallResNet(stages=1): stem conv, block conv1/conv2, fc; by default the first and last at 8 bits
    assert _quant_bits(_quantize(teacher, digits, w, a))[0] == [8, w, w, 8]
    s = _quantize(teacher, digits, w, a, first_last=None)  # uniform: every layer at w
    # the FP teacher is untouched (graph mode merges BN in place: it must work on a copy)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(not p.requires_grad for p in teacher.parameters())
    assert evaluate(teacher, digits.test_x, digits.test_y) == pytest.approx(meta["test_accuracy"])
    assert s is not teacher and all(p.requires_grad for p in s.parameters())
    wb, ab = _quant_bits(s)
    assert wb == [w] * 4
    assert ab.pop("x_quant.act_quant") == 8 and ab.pop("fc_output_quant.act_quant") == 8  # input, logits
    assert ab and set(ab.values()) == {a}
    assert backends.count_quantizers(s) == 4 + 2 + len(ab)
    # PTQ (calibration only) accuracy, measured with the seed-0 teacher at 99.6 %: W8A8 99.6, W4A4 96.4,
    # W2A4 20.2 — 8-bit is near-lossless, 4-bit within a few points, 2-bit collapses (why QAT exists)
    acc = evaluate(s, digits.test_x, digits.test_y)
    fp = meta["test_accuracy"]
    if w == 8:
        assert acc >= fp - 0.01
    elif w == 4:
        assert fp - 0.08 <= acc < fp
    else:
        assert 0.1 <= acc <= fp - 0.5, acc  # collapsed, yet no worse than chance: the scales are sane


def test_per_channel_scales_by_default(digits_teacher, digits) -> None:
    teacher, _ = digits_teacher
    s = _quantize(teacher, digits, 4, 4)
    conv = s.get_submodule("stem.0")
    assert conv.quant_weight().scale.numel() == conv.out_channels
    s2 = _quantize(teacher, digits, 4, 4, per_channel=False)
    assert s2.get_submodule("stem.0").quant_weight().scale.numel() == 1


def test_short_qat_improves_over_ptq_at_w4(qat_w4, digits) -> None:
    student, ptq = qat_w4
    qat = evaluate(student, digits.test_x, digits.test_y)
    assert qat > ptq + 0.02, (ptq, qat)


def test_calibration_accepts_loaders_and_recalibrates(digits_teacher, digits) -> None:
    teacher, _ = digits_teacher
    s = backends.quantize(teacher, "brevitas", QuantConfig(weight_bits=4, act_bits=4), example_input=digits.train_x[:4])
    x = digits.train_x[:512]
    backends.calibrate(s, "brevitas", x)
    ref = evaluate(s, digits.test_x, digits.test_y)
    scale = s.get_submodule("stem.2").act_quant.scale().clone()
    backends.calibrate(s, "brevitas", x * 3)  # re-estimated, not multiplied onto the old scale
    assert 2 * scale < s.get_submodule("stem.2").act_quant.scale() < 4 * scale
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, digits.train_y[:512]), batch_size=64)
    backends.calibrate(s, "brevitas", loader)  # (images, labels) pairs
    assert torch.allclose(s.get_submodule("stem.2").act_quant.scale(), scale, rtol=1e-4)
    assert evaluate(s, digits.test_x, digits.test_y) == pytest.approx(ref, abs=1e-6)
    with pytest.raises(DataError, match="no batches"):
        backends.calibrate(s, "brevitas", [])
    with pytest.raises(DataError, match=r"\[B, C, H, W\]"):
        backends.calibrate(s, "brevitas", [torch.zeros(8, 64)])


def test_hand_built_brevitas_model_is_taken_as_is(digits) -> None:
    import brevitas.nn as qnn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = qnn.QuantConv2d(1, 8, 3, padding=1, weight_bit_width=3)
            self.bn = nn.BatchNorm2d(8)
            self.relu = qnn.QuantReLU(bit_width=3)
            self.fc = qnn.QuantLinear(8, 10, bias=True, weight_bit_width=3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.relu(self.bn(self.conv(x))), 1), 1))

    net = Net().eval()
    with pytest.warns(UserWarning, match=r"already a Brevitas model with \[3\]-bit weights"):
        s = backends.quantize(net, "brevitas", QuantConfig(weight_bits=4, act_bits=4),
                              example_input=digits.train_x[:4], calib_data=digits.train_x[:128])
    assert s is not net and type(s) is Net
    assert backends.count_quantizers(s) == 3  # 2 weight quantizers + QuantReLU
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        backends.quantize(net, "brevitas", QuantConfig(weight_bits=3, act_bits=3), example_input=digits.train_x[:4])


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
def test_qcdq_and_qonnx_match_torch_on_digits_test_split(qat_w4, digits, tmp_path: Path) -> None:
    student, _ = qat_w4
    ref = _torch_accuracy(student, digits.test_x, digits.test_y)
    assert ref > 0.9
    exported = backends.export(student, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path)
    assert [(e.format, e.runtime) for e in exported] == [("onnx-qcdq", "onnxruntime"), ("qonnx", "qonnx")]
    import onnx

    for e in exported:
        assert e.path.exists() and e.size_bytes > 0
        acc = _exported_accuracy(e.predict, digits.test_x, digits.test_y)
        assert abs(acc - ref) <= 0.005, (e.format, acc, ref)
        ops = {n.op_type for n in onnx.load(e.path).graph.node}
        assert ({"QuantizeLinear", "DequantizeLinear"} <= ops) if e.format == "onnx-qcdq" else ("Quant" in ops)
    with torch.no_grad():
        lt = student(digits.test_x[:128]).numpy()
    for e in exported:  # logits agree too, not only the argmax
        assert _same_rows(e.predict(digits.test_x[:128].numpy()), lt) >= 0.95, e.format


@pytest.mark.parametrize(("w", "a"), [(2, 4), (8, 8)])
def test_export_matches_torch_at_other_bit_widths(digits_teacher, digits, tmp_path: Path, w: int, a: int) -> None:
    teacher, _ = digits_teacher
    s = _quantize(teacher, digits, w, a).eval()
    ref = _torch_accuracy(s, digits.test_x, digits.test_y)
    for e in backends.export(s, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path):
        assert abs(_exported_accuracy(e.predict, digits.test_x, digits.test_y) - ref) <= 0.005, e.format


def test_binary_weights_export_qonnx_only(digits_teacher, digits, tmp_path: Path) -> None:
    teacher, _ = digits_teacher
    s = _quantize(teacher, digits, 1, 4).eval()
    assert _quant_bits(s)[0] == [8, 1, 1, 8]  # binary inner layers; first and last at 8 bits (the default)
    exported = backends.export(s, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path)
    assert [e.format for e in exported] == ["qonnx"]
    ref = _torch_accuracy(s, digits.test_x, digits.test_y)
    assert abs(_exported_accuracy(exported[0].predict, digits.test_x, digits.test_y) - ref) <= 0.005
    with torch.no_grad():
        lt = s(digits.test_x[:128]).numpy()
    assert _same_rows(exported[0].predict(digits.test_x[:128].numpy()), lt) >= 0.95
    with pytest.raises(ExportError, match=r"1-bit.*formats=\('qonnx',\)"):
        backends.export(s, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path, formats=("onnx-qcdq",))


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("w", "a", "match"), [
    (9, 4, r"weight bits 9 .*1\.\.8"),
    (4, 1, r"activation bits 1 .*2\.\.8"),
    (0, 4, r"out of range"),
    (2.5, 4, r"integer number of bits"),
    ("4", 4, r"integer number of bits"),
])
def test_bad_bit_widths_name_the_fix(digits_teacher, digits, w, a, match: str) -> None:
    teacher, _ = digits_teacher
    with pytest.raises(ConfigError, match=match):
        backends.quantize(teacher, "brevitas", QuantConfig(weight_bits=w, act_bits=a), example_input=digits.train_x[:2])


def test_bit_range_errors_carry_the_adapters_reason(digits_teacher, digits) -> None:
    """The core checks the registered range once and appends Brevitas' reason; calls for another backend
    never reach the Brevitas adapter."""
    teacher, _ = digits_teacher
    for w, a, match in ((4, 1, r"activation bits 1 .*\(2\.\.8\).*BipolarQuant"), (12, 4, r"weight bits 12 .*at most 8 bits")):
        with pytest.raises(ConfigError, match=match):
            backends.quantize(teacher, "brevitas", QuantConfig(weight_bits=w, act_bits=a), example_input=digits.train_x[:2])
    from daqakd_plugins import plugins

    for other in ("nncf", "pytorch-quantization", "modelopt"):  # their calls never reach the Brevitas adapter
        impls = plugins.backend_hook(other, "daqakd_quantize").get_hookimpls()
        assert [i.plugin_name for i in impls] == [plugins.backend_owner(other)] != ["brevitas"]
    assert [i.plugin_name for i in plugins.backend_hook("brevitas", "daqakd_quantize").get_hookimpls()] == ["brevitas"]


class _GeluNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.act = nn.GELU()
        self.fc = nn.Linear(4 * 36, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.silu(self.act(self.conv(x))).flatten(1))


def test_unsupported_layer_is_named_and_can_stay_float(digits, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _GeluNet().eval()
    with pytest.raises(BackendError, match=r"GELU \(at act\).*silu.*options=\{'float_layers': \['GELU', 'silu'\]\}"):
        backends.quantize(net, "brevitas", QuantConfig(weight_bits=4, act_bits=4), example_input=digits.train_x[:2])
    cfg = QuantConfig(weight_bits=4, act_bits=4, options={"float_layers": ["GELU", "silu"]})
    s = backends.quantize(net, "brevitas", cfg, example_input=digits.train_x[:2], calib_data=digits.train_x[:128]).eval()
    assert isinstance(s.get_submodule("act"), nn.GELU)
    assert hasattr(s, "fc_input_quant")  # the float output is re-quantized before the next layer
    with torch.no_grad():
        lt = s(digits.test_x[:128]).numpy()
    for e in backends.export(s, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path):
        assert _same_rows(e.predict(digits.test_x[:128].numpy()), lt) >= 0.95, e.format


def test_unknown_option_and_bad_option_values(digits_teacher, digits) -> None:
    teacher, _ = digits_teacher
    for opts, match in (({"float_layer": ["GELU"]}, r"unknown brevitas option.*'float_layer'.*known: .*float_layers"),
                        ({"input_bits": 1}, r"input_bits"), ({"merge_bn": "yes"}, r"merge_bn")):
        with pytest.raises(ConfigError, match=match):
            backends.quantize(teacher, "brevitas", QuantConfig(options=opts), example_input=digits.train_x[:2])


def test_untraceable_model_says_what_works(digits) -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = x * 2
            return self.fc(x.flatten(1))

    with pytest.raises(BackendError, match=r"could not trace Branchy.*brevitas\.nn"):
        backends.quantize(Branchy(), "brevitas", QuantConfig(), example_input=digits.train_x[:2])


def test_export_errors_say_what_works(digits_teacher, digits, qat_w4, tmp_path: Path) -> None:
    teacher, _ = digits_teacher
    with pytest.raises(ExportError, match=r"no enabled Brevitas quantizers.*quantize"):
        backends.export(teacher, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path)
    student, _ = qat_w4
    with pytest.raises(ExportError, match=r"cannot export format 'tflite'; supported: onnx-qcdq, qonnx"):
        backends.export(student, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path, formats=("tflite",))
    bad = copy.deepcopy(student)
    bad.fc_input_quant.forward = lambda x: torch.nonzero(x).float()  # not exportable: data-dependent shape
    with pytest.raises(ExportError, match=r"could not export .* to onnx-qcdq.*What exports on torch"):
        backends.export(bad, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path, formats=("qcdq",))


def test_missing_brevitas_gives_install_command() -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["brevitas"] = None  # makes `import brevitas` fail as if it were not installed
        import torch
        from daqakd_plugins import backends
        from daqakd_plugins.config import QuantConfig
        from daqakd_plugins.errors import BackendUnavailableError
        try:
            backends.quantize(torch.nn.Linear(2, 2), "brevitas", QuantConfig(), example_input=torch.zeros(1, 2))
        except BackendUnavailableError as exc:
            print("MSG", exc)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'MSG' in r.stdout and 'pip install "daqakd[brevitas]"' in r.stdout, r.stdout
    assert issubclass(BackendUnavailableError, ImportError)


def test_bias_quant_option_keeps_biases_float_and_exports(digits_teacher, digits, tmp_path: Path) -> None:
    """bias_quant=False: no Int32 bias quantizer (what EfficientNet-B0 and MobileNetV3 need, whose
    biases Brevitas' QCDQ exporter refuses), and the export still equals torch."""
    teacher, _ = digits_teacher
    s = _quantize(teacher, digits, 4, 4, options={"bias_quant": False}).eval()
    assert not s.get_submodule("fc").bias_quant.is_quant_enabled
    assert _quantize(teacher, digits, 4, 4).get_submodule("fc").bias_quant.is_quant_enabled
    ref = _torch_accuracy(s, digits.test_x, digits.test_y)
    (e,) = backends.export(s, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path, formats=("onnx-qcdq",))
    assert abs(_exported_accuracy(e.predict, digits.test_x, digits.test_y) - ref) <= 0.005


class _CatNet(nn.Module):
    """Two ReLU branches concatenated: graph mode gives both ReLUs and the cat one quantizer core."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def _cat_student(digits, bits: int = 4) -> tuple[nn.Module, QuantConfig]:
    torch.manual_seed(0)
    cfg = QuantConfig(weight_bits=bits, act_bits=bits)
    return backends.quantize(_CatNet().eval(), "brevitas", cfg, example_input=digits.train_x[:8],
                             calib_data=digits.train_x[:256]), cfg


def test_calibration_leaves_shared_concat_quantizers_quantizing(digits) -> None:
    """Brevitas' calibration_mode recorded a quantizer core shared by several proxies (the inputs of a
    torch.cat) once per proxy, so it left it observer-only (float) after calibration; the adapter puts
    every flag back. Issues 28/29: resume and save/restore diverged on ShuffleNet because of it."""
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjectorBase

    s, _ = _cat_student(digits)
    cores: dict[int, int] = {}
    for m in s.modules():
        if isinstance(m, ActQuantProxyFromInjectorBase) and m.fused_activation_quant_proxy is not None:
            tq = m.fused_activation_quant_proxy.tensor_quant
            cores[id(tq)] = cores.get(id(tq), 0) + 1
    assert max(cores.values()) >= 2, "no quantizer core is shared: the model no longer exercises the case"
    stuck = [n for n, m in s.named_modules() if getattr(m, "observer_only", False)]
    assert not stuck, f"calibration left these quantizers observer-only (not quantizing): {stuck}"


def test_save_restore_of_a_concat_student_is_exact_and_keeps_observer_flags(digits) -> None:
    import io

    s, cfg = _cat_student(digits)
    x = digits.test_x[:128]
    for observe in (False, True):
        if observe:  # a quantizer a user (or another Brevitas flow) left observer-only is restored as such
            next(m for m in s.modules() if hasattr(m, "observer_only")).observer_only = True
        payload = backends.save_student(s, "brevitas", cfg)
        buf = io.BytesIO()
        torch.save(payload, buf)
        buf.seek(0)
        payload = torch.load(buf, weights_only=True)
        torch.manual_seed(1)
        r = backends.restore_student(_CatNet().eval(), "brevitas", cfg, payload, example_input=x[:8])
        s.eval()
        with torch.no_grad():
            a, b = s(x), r(x)
        assert torch.equal(a, b), (observe, float((a - b).abs().max()))
        assert sum(bool(getattr(m, "observer_only", False)) for m in r.modules()) == int(observe)
