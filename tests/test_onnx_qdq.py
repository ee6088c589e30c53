"""The U8S8 guard: a structural check of Q/DQ ONNX graphs that holds on every CPU.

onnxruntime's U8S8 integer kernels saturate on x86 CPUs without VNNI, so an accuracy test of an
8-bit export passes or fails depending on the machine. These tests read the graph instead: which
Conv/Gemm pairs uint8 activations with full-range int8 weights, and whether the exact U8U8
re-encoding removes every such pair without changing the outputs (compared in onnxruntime with
graph optimisations off, where Q/DQ run as float arithmetic on every host).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from daqakd_plugins import backends
from daqakd_plugins.config import QuantConfig
from daqakd_plugins.contracts import ExportedModel
from daqakd_plugins.errors import ExportError
from daqakd_plugins.onnx_qdq import (
    make_u8s8_safe,
    prepare_for_onnxruntime,
    u8s8_hazards,
    unsign_clipped_activations,
)


def _conv_model(*, act_dtype: type = np.uint8, w_max: int = 127, act_clip: int | None = None,
                op: str = "Conv", seed: int = 0) -> onnx.ModelProto:
    """x -> Q(act) [-> Clip] -> DQ -> Conv/Gemm(DQ(int8 w)) -> y, like an exporter writes it."""
    rng = np.random.default_rng(seed)
    zp = np.array(0 if act_dtype is np.uint8 else (-128 if act_clip is None else 0), dtype=act_dtype)
    if op == "Conv":
        w = rng.integers(-w_max, w_max + 1, size=(4, 3, 3, 3)).astype(np.int8)
        wscale = np.full(4, 0.01, dtype=np.float32)
        x_shape, y_shape = [1, 3, 6, 6], [1, 4, 4, 4]
    else:
        w = rng.integers(-w_max, w_max + 1, size=(8, 5)).astype(np.int8)
        wscale = np.array(0.01, dtype=np.float32)
        x_shape, y_shape = [1, 8], [1, 5]
    inits = [
        numpy_helper.from_array(np.array(0.02, dtype=np.float32), "a_scale"),
        numpy_helper.from_array(zp, "a_zp"),
        numpy_helper.from_array(w, "w_int"),
        numpy_helper.from_array(wscale, "w_scale"),
        numpy_helper.from_array(np.zeros(wscale.shape, dtype=np.int8), "w_zp"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zp"], ["xq"])]
    dq_in = "xq"
    if act_clip is not None:
        inits += [numpy_helper.from_array(np.array(0 if act_dtype is np.uint8 else -act_clip - 1, dtype=act_dtype), "c_lo"),
                  numpy_helper.from_array(np.array(act_clip, dtype=act_dtype), "c_hi")]
        nodes.append(helper.make_node("Clip", ["xq", "c_lo", "c_hi"], ["xc"]))
        dq_in = "xc"
    axis = 0 if op == "Conv" else 1
    nodes += [
        helper.make_node("DequantizeLinear", [dq_in, "a_scale", "a_zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_int", "w_scale", "w_zp"], ["wd"], axis=axis),
        helper.make_node(op, ["xd", "wd"], ["y"], name="the_op"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Float reference semantics on every host: no fusion into integer kernels."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


@pytest.mark.parametrize("op", ["Conv", "Gemm"])
def test_hazard_is_uint8_activations_times_full_range_int8_weights(op: str) -> None:
    hz = u8s8_hazards(_conv_model(op=op))
    assert [(h.node, h.op, h.act_max) for h in hz] == [("the_op", op, 255)]
    assert hz[0].weight_max > 64 and "pair sum" in str(hz[0])
    # the safe patterns: weights within 7 bits, activations clipped to 7 bits
    assert u8s8_hazards(_conv_model(op=op, w_max=64)) == []
    assert u8s8_hazards(_conv_model(op=op, act_clip=127)) == []
    assert len(u8s8_hazards(_conv_model(op=op, act_clip=200))) == 1  # 2·200·127 > 32767
    # signed activations are no escape: onnxruntime shifts int8 activations to uint8 (+128) on x86
    assert [h.act_max for h in u8s8_hazards(_conv_model(op=op, act_dtype=np.int8))] == [255]
    assert [h.act_max for h in u8s8_hazards(_conv_model(op=op, act_dtype=np.int8, act_clip=7))] == [135]
    assert u8s8_hazards(_conv_model(op=op, act_dtype=np.int8, act_clip=7, w_max=7)) == []  # W4A4


@pytest.mark.parametrize("op", ["Conv", "Gemm"])
@pytest.mark.parametrize("clip", [None, 15])
def test_u8u8_rewrite_removes_the_hazard_and_keeps_outputs_bit_exact(op: str, clip: int | None) -> None:
    model = _conv_model(op=op, act_clip=clip)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).uniform(0, 6, size=shape).astype(np.float32)
    before = _run(model, x)
    fixed, n = make_u8s8_safe(onnx.ModelProto.FromString(model.SerializeToString()))
    onnx.checker.check_model(fixed)
    assert u8s8_hazards(fixed) == []
    if clip is None:
        assert n == 1
        w = {t.name: numpy_helper.to_array(t) for t in fixed.graph.initializer}
        wdq = next(nd for nd in fixed.graph.node if nd.op_type == "DequantizeLinear" and "x" not in nd.input[0])
        assert w[wdq.input[0]].dtype == np.uint8 and w[wdq.input[2]].dtype == np.uint8
        assert "w_int" not in w  # the int8 copy is gone, the file holds each weight once
    else:
        assert n == 0  # a 4-bit activation (≤ 15) cannot saturate: nothing to change
    np.testing.assert_array_equal(_run(fixed, x), before)


def test_clipped_signed_activations_become_uint8_bit_exact() -> None:
    """A sub-8-bit signed activation (int8 Q -> Clip(-8, 7) -> DQ, Brevitas' 4-bit form) is stored as
    uint8 (zero point, bounds and DQ zero point + 128), so onnxruntime can fuse it; same outputs."""
    model = _conv_model(act_dtype=np.int8, act_clip=7, w_max=7)
    x = np.random.default_rng(2).uniform(-0.3, 0.3, size=(1, 3, 6, 6)).astype(np.float32)
    before = _run(model, x)
    fixed, n = unsign_clipped_activations(onnx.ModelProto.FromString(model.SerializeToString()))
    onnx.checker.check_model(fixed)
    assert n == 1
    consts = {t.name: numpy_helper.to_array(t) for t in fixed.graph.initializer}
    q = next(nd for nd in fixed.graph.node if nd.op_type == "QuantizeLinear")
    clip = next(nd for nd in fixed.graph.node if nd.op_type == "Clip")
    assert consts[q.input[2]].dtype == np.uint8 and int(consts[q.input[2]]) == 128
    assert (int(consts[clip.input[1]]), int(consts[clip.input[2]])) == (120, 135)
    np.testing.assert_array_equal(_run(fixed, x), before)
    # 8-bit signed activations (no Clip) are onnxruntime's own business: left alone
    assert unsign_clipped_activations(_conv_model(act_dtype=np.int8))[1] == 0


def test_rewrite_of_a_real_brevitas_w8a8_export(digits_teacher, digits, tmp_path: Path) -> None:
    """Brevitas writes uint8 ReLU outputs into full-range int8 convs (the saturating pattern); the
    adapter's file must come out without it and compute what the raw export computed."""
    from brevitas.export import export_onnx_qcdq

    teacher, _ = digits_teacher
    s = backends.quantize(teacher, "brevitas", QuantConfig(weight_bits=8, act_bits=8),
                          example_input=digits.train_x[:4], calib_data=digits.train_x[:512]).eval()
    raw = tmp_path / "raw.onnx"
    export_onnx_qcdq(s, args=digits.test_x[:1], export_path=str(raw), opset_version=13, dynamo=False,
                     input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    raw_model = onnx.load(str(raw))
    assert len(u8s8_hazards(raw_model)) >= 1  # what Brevitas itself writes
    fixed = tmp_path / "fixed.onnx"
    onnx.save(raw_model, str(fixed))
    assert prepare_for_onnxruntime(fixed)["u8u8_weights"] >= 1
    assert u8s8_hazards(onnx.load(str(fixed))) == []
    x = digits.test_x[:64].numpy()
    np.testing.assert_array_equal(_run(onnx.load(str(fixed)), x), _run(raw_model, x))
    exported = backends.export(s, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path / "e",
                               formats=("onnx-qcdq",))
    assert u8s8_hazards(onnx.load(str(exported[0].path))) == []
    assert "U8U8" in exported[0].notes


def test_core_refuses_an_adapter_file_with_the_hazard(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    onnx.save(_conv_model(), str(path))
    bad = ExportedModel(format="onnx-qdq", path=path, runtime="onnxruntime", predict=lambda a: a)
    with pytest.raises(ExportError, match=r"U8S8 pattern.*without VNNI.*prepare_for_onnxruntime"):
        backends._check_onnxruntime_encoding("somebackend", [bad])
    # another runtime's file (OpenVINO, qonnx) is not onnxruntime's concern
    backends._check_onnxruntime_encoding("somebackend", [ExportedModel(
        format="qonnx", path=path, runtime="qonnx", predict=lambda a: a)])
    prepare_for_onnxruntime(path)
    backends._check_onnxruntime_encoding("somebackend", [bad])


def test_the_adapter_says_which_files_get_the_u8s8_guard(tmp_path: Path) -> None:
    """``ExportedModel.u8s8_guard`` decides, not the runtime's name: a file for a session without Q/DQ
    fusion is left alone, any runtime name with the flag is checked; left unset (an adapter older than the
    field), the old rule: runtime "onnxruntime" and a .onnx file."""
    path = tmp_path / "bad.onnx"
    onnx.save(_conv_model(), str(path))

    def exported(runtime: str, guard: bool | None = None) -> ExportedModel:
        return ExportedModel(format="f", path=path, runtime=runtime, predict=lambda a: a, u8s8_guard=guard)

    backends._check_onnxruntime_encoding("somebackend", [exported("onnxruntime", guard=False)])
    with pytest.raises(ExportError, match="U8S8 pattern"):
        backends._check_onnxruntime_encoding("somebackend", [exported("onnxruntime-custom", guard=True)])
    assert exported("onnxruntime").u8s8_guard is True
    assert exported("qonnx").u8s8_guard is False
    assert ExportedModel(format="f", path=tmp_path / "m.xml", runtime="onnxruntime", predict=lambda a: a).u8s8_guard is False


def test_torch_and_exported_w8a8_agree_in_default_session(digits_teacher, digits, tmp_path: Path) -> None:
    """The acceptance check on this host (default onnxruntime session, every optimisation on). On a
    VNNI host it would pass without the rewrite too; the structural tests above are what hold
    everywhere, and `python benchmarks/no_vnni_check.py` runs this under an emulated AVX2-only CPU."""
    teacher, _ = digits_teacher
    s = backends.quantize(teacher, "brevitas", QuantConfig(weight_bits=8, act_bits=8),
                          example_input=digits.train_x[:4], calib_data=digits.train_x[:512]).eval()
    e = backends.export(s, "brevitas", example_input=digits.test_x[:1], out_dir=tmp_path, formats=("onnx-qcdq",))[0]
    with torch.no_grad():
        ref = float((s(digits.test_x).argmax(1) == digits.test_y).double().mean())
    acc = float((e.predict(digits.test_x.numpy()).argmax(1) == digits.test_y.numpy()).mean())
    assert abs(acc - ref) <= 0.005


class _FakeQuantConv(torch.nn.Module):
    """What torch.onnx.export writes for PyTorch's own fake quantization: the weight's scale is computed
    in the graph (Abs -> ReduceMax -> Div), so its int8 values exist only once onnxruntime folds them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.fake_quantize_per_tensor_affine(x, 1.0 / 255, 0, 0, 255)  # uint8 activations
        w = self.conv.weight
        scale = (w.detach().abs().amax() / 127).reshape(1)  # a tensor: computed in the exported graph
        w = torch.fake_quantize_per_tensor_affine(w, scale, torch.zeros(1, dtype=torch.int32), -128, 127)
        return torch.nn.functional.conv2d(x, w, self.conv.bias)


def test_weights_quantized_by_a_computed_scale_are_seen_and_fixed(tmp_path: Path) -> None:
    m = _FakeQuantConv().eval()
    x = torch.rand(2, 3, 8, 8)
    path = tmp_path / "fq.onnx"
    torch.onnx.export(m, (x,), str(path), opset_version=13, dynamo=False, input_names=["x"], output_names=["y"])
    raw = onnx.load(str(path))
    assert len(u8s8_hazards(raw)) == 1  # seen through onnxruntime's constant folding
    before = _run(raw, x.numpy())
    info = prepare_for_onnxruntime(path)
    assert info["folded"] == 1 and info["u8u8_weights"] == 1
    fixed = onnx.load(str(path))
    assert u8s8_hazards(fixed) == []
    np.testing.assert_allclose(_run(fixed, x.numpy()), before, rtol=0, atol=1e-5)


def _weight_fold_model(*, fp8: bool = False) -> onnx.ModelProto:
    """Two Convs whose weights are quantized in the graph, as Model Optimizer's and pytorch-quantization's
    exports write them: ``Mul(w, mult) -> QuantizeLinear (per channel) -> Clip(-8, 7) -> DQ`` feeding one
    Conv, the same quantizer read by a plain DQ too, and by a Clip whose bound is computed at run time
    (which must stay). ``fp8``: one float8 E4M3 weight (opset 19), no Clip."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, size=(4, 3, 3, 3)).astype(np.float32)
    scale = np.array([0.05, 0.1, 0.2, 0.03], np.float32)
    zp_dtype = TensorProto.FLOAT8E4M3FN if fp8 else TensorProto.INT8
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(1.7, np.float32), "mult"),
             numpy_helper.from_array(scale, "w_scale"),
             helper.make_tensor("w_zp", zp_dtype, [4], [0, 0, 0, 0]),
             numpy_helper.from_array(np.array(-8, np.int8), "lo"), numpy_helper.from_array(np.array(7, np.int8), "hi")]
    nodes = [helper.make_node("Mul", ["w", "mult"], ["wm"]),
             helper.make_node("QuantizeLinear", ["wm", "w_scale", "w_zp"], ["wq"], axis=0, name="q_w")]
    if fp8:
        nodes += [helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wd"], axis=0),
                  helper.make_node("Conv", ["x", "wd"], ["y"])]
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])]
    else:
        nodes += [
            helper.make_node("Clip", ["wq", "lo", "hi"], ["wc"]),
            helper.make_node("DequantizeLinear", ["wc", "w_scale", "w_zp"], ["wd"], axis=0),
            helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wd8"], axis=0),
            helper.make_node("Conv", ["x", "wd"], ["y"]),
            helper.make_node("Conv", ["x", "wd8"], ["y8"]),
            # a Clip whose upper bound comes from the input: not a constant, so not folded
            helper.make_node("ReduceMax", ["x"], ["xmax"], keepdims=0),
            helper.make_node("Cast", ["xmax"], ["xmax_i"], to=TensorProto.INT8),
            helper.make_node("Clip", ["wq", "lo", "xmax_i"], ["wdyn"]),
            helper.make_node("DequantizeLinear", ["wdyn", "w_scale", "w_zp"], ["wdd"], axis=0),
            helper.make_node("Conv", ["x", "wdd"], ["ydyn"]),
        ]
        outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 4, 4]) for n in ("y", "y8", "ydyn")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19 if fp8 else 13)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("fp8", [False, True])
def test_weight_quantizers_fold_into_stored_integers_with_the_same_outputs(fp8: bool) -> None:
    """The fold both NVIDIA adapters share (kit.fold_weight_quantizers): the stored values are what ONNX's
    QuantizeLinear (then a constant Clip) computes, so every output is bit-identical."""
    from daqakd_plugins.onnx_qdq import fold_weight_quantizers

    model = _weight_fold_model(fp8=fp8)
    x = np.random.default_rng(1).normal(0, 3, size=(1, 3, 6, 6)).astype(np.float32)
    before = _run_all(model, x)
    assert fold_weight_quantizers(model) == 1
    onnx.checker.check_model(model)
    for a, b in zip(before, _run_all(model, x), strict=True):
        np.testing.assert_array_equal(a, b)
    ops = [n.op_type for n in model.graph.node]
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    if fp8:
        assert "Mul" not in ops and "QuantizeLinear" not in ops
        (name,) = [k for k in stored if k.startswith("daqakd_fp8_weight/")]
        assert stored[name].dtype.name == "float8_e4m3fn"
    else:
        # the constant Clip is folded; the run-time one stays and reads the stored (unclipped) integers
        assert "Mul" not in ops and "QuantizeLinear" not in ops and ops.count("Clip") == 1
        assert sorted(k for k in stored if k.startswith("daqakd_int_weight/")) == [
            "daqakd_int_weight/wc", "daqakd_int_weight/wq"]
        assert stored["daqakd_int_weight/wc"].min() >= -8 and stored["daqakd_int_weight/wc"].max() <= 7
        assert stored["daqakd_int_weight/wq"].dtype == np.int8 and stored["daqakd_int_weight/wq"].max() > 7
        (dyn,) = [n for n in model.graph.node if n.op_type == "Clip"]
        assert dyn.input[0] == "daqakd_int_weight/wq" and "w" not in stored


def _run_all(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [np.asarray(y) for y in sess.run(None, {"x": x})]
