"""BatchNorm folded into the quantized convolution before it, in a QDQ ONNX file (exact in real arithmetic).

Why: NNCF trains with BatchNorm after each convolution (as the user's model has it) and its QDQ export
writes ``DQ → Conv → BatchNormalization → ... → Q``. onnxruntime builds integer kernels only from
``DQ → Conv → Q``, so with the BatchNorm in between every convolution ran in float between a
dequantize and a quantize (measured: 0 of 4 layers as integer kernels, 3.3× slower than the float
model). OpenVINO folds the BatchNorm itself when it converts the model; onnxruntime does not.

The fold: ``BN(conv(x, s·q)) = conv(x, (s·|a|)·(sign(a)·q)) + (a·(bias − mean) + beta)`` with
``a = gamma / sqrt(var + eps)`` per output channel. The stored integers ``q`` only change sign (symmetric
weights, zero point 0), the per-channel scale absorbs ``|a|``, so the weights stay 8-bit integers and
the layer computes what it computed before (up to float rounding of the rescaled scale).
"""

from __future__ import annotations

from typing import Any

from daqakd_plugins.kit import QdqGraph, drop_dead_nodes

__all__ = ["fold_batchnorm"]


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def fold_batchnorm(model: Any) -> int:
    """Fold every ``BatchNormalization`` that is the only consumer of a ``Conv`` whose weight is a
    per-channel (axis 0) or per-tensor symmetric int8 ``DequantizeLinear`` of a ``QuantizeLinear`` of a
    constant, in place. Returns how many were folded; anything else is left as it is."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    index = QdqGraph(model)
    consts, producer, consumers, outputs = index.consts, index.producer, index.consumers, index.outputs
    drop: set[int] = set()
    folded = 0
    for bn in list(g.node):
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1 or len(bn.input) != 5:
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or conv.output[0] in outputs:
            continue
        if len(consumers.get(conv.output[0], [])) != 1 or len(conv.input) < 2:
            continue
        params = [consts.get(i) for i in bn.input[1:]]
        if any(p is None for p in params):
            continue
        gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
        a = gamma / np.sqrt(var + float(_attr(bn, "epsilon", 1e-5)))
        dq = producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or len(consumers.get(conv.input[1], [])) != 1:
            continue
        q = producer.get(dq.input[0])
        ints = index.quantize_const(q) if q is not None and q.op_type == "QuantizeLinear" else None
        scale, zp = consts.get(dq.input[1]), consts.get(dq.input[2])
        if ints is None or scale is None or zp is None or ints.dtype != np.int8 or np.any(zp != 0):
            continue
        cout = ints.shape[0]
        if scale.size not in (1, cout) or (scale.size == cout and _attr(dq, "axis", 1) % ints.ndim != 0):
            continue
        if np.any(ints == -128) and np.any(a < 0):
            continue  # -(-128) does not fit int8
        sign = np.where(a < 0, -1, 1).astype(np.int8)
        new_ints = (ints.astype(np.int16) * sign.reshape(-1, *([1] * (ints.ndim - 1)))).astype(np.int8)
        new_scale = (np.broadcast_to(scale.astype(np.float64).reshape(-1), (cout,)) * np.abs(a)).astype(np.float32)
        bias = consts.get(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(cout)
        if bias is None:
            continue
        new_bias = (a * (bias.astype(np.float64) - mean) + beta).astype(np.float32)
        base = f"daqakd_bnfold/{conv.name or conv.output[0]}"
        g.initializer.extend([
            numpy_helper.from_array(new_ints, base + "/w"),
            numpy_helper.from_array(new_scale, base + "/scale"),
            numpy_helper.from_array(np.zeros(cout, np.int8), base + "/zp"),
            numpy_helper.from_array(new_bias, base + "/bias"),
        ])
        dq.input[0], dq.input[1], dq.input[2] = base + "/w", base + "/scale", base + "/zp"
        kept = [a_ for a_ in dq.attribute if a_.name != "axis"]
        del dq.attribute[:]
        dq.attribute.extend([*kept, helper.make_attribute("axis", 0)])
        if len(conv.input) > 2:
            conv.input[2] = base + "/bias"
        else:
            conv.input.append(base + "/bias")
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
        folded += 1
    if folded:
        keep = [n for n in g.node if id(n) not in drop]
        del g.node[:]
        g.node.extend(keep)
        drop_dead_nodes(model)  # the kit's: also drops dead initializers listed as inputs
        keep_vi = [vi for vi in g.value_info if vi.name in {o for n in g.node for o in n.output}]
        del g.value_info[:]
        g.value_info.extend(keep_vi)
    return folded


