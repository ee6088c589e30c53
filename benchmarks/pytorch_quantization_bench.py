"""Measurements behind docs/backends/tensorrt.md (section pytorch-quantization) that
benchmarks/backend_table.py does not take: PTQ accuracy per calibrator, and what onnxruntime makes of
NVIDIA's TensorRT file on a CPU without VNNI.

    # PTQ (calibration only) per calibrator, on the teachers backend_table.py trained (one per seed)
    python benchmarks/pytorch_quantization_bench.py ptq --teachers /tmp/pq_table/teachers --seeds 0,1,2

    # NVIDIA's own QAT distillation (yolov7_qat: label-free layer-wise MSE), trained like `daqakd distill`
    python benchmarks/pytorch_quantization_bench.py layerwise --teachers /tmp/pq_table/teachers --seeds 0,1,2

    # NVIDIA's TensorRT file vs daqakd's onnx-qdq file in a *default* onnxruntime session, natively and
    # on an emulated AVX2-only CPU (qemu-x86_64 -cpu Haswell; apt-get install qemu-user)
    python benchmarks/pytorch_quantization_bench.py encoding --out /tmp/pq_encoding

Calibration uses what ``daqakd distill`` uses: 8 batches of 64 from the class-stratified, seeded
sample of the training images (``daqakd_plugins.data.calibration_sample(labels, 512, seed)``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

CALIBRATORS = ("max", "percentile", "mse", "entropy")


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    m = 100 * statistics.mean(values)
    return f"{m:.1f}" if len(values) == 1 else f"{m:.1f} ± {100 * statistics.stdev(values):.1f}"


def _calib_batches(d: Any, seed: int) -> list[Any]:
    """The calibration batches of a ``daqakd distill`` run with this seed (8 × 64, class-stratified)."""
    from daqakd_plugins.data import calibration_sample

    xs = d.train_x[calibration_sample(d.train_y, 8 * 64, seed=seed)]
    return [xs[i:i + 64] for i in range(0, len(xs), 64)]


def ptq(args: argparse.Namespace) -> None:
    import torch

    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.data import load_digits
    from daqakd_plugins.models import load_model
    from daqakd_plugins.train import evaluate

    torch.set_num_threads(1)
    d = load_digits(seed=0)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    configs = [c.strip().upper() for c in args.configs.split(",") if c.strip()]
    rows: dict[str, dict[str, list[float]]] = {c: {k: [] for k in ("fp", *CALIBRATORS)} for c in configs}
    for seed in seeds:
        teacher, _ = load_model(Path(args.teachers) / f"seed{seed}.pt")
        teacher.eval()
        calib = _calib_batches(d, seed)
        fp = evaluate(teacher, d.test_x, d.test_y)
        for tag in configs:
            w, a = (int(v) for v in tag[1:].split("A"))
            rows[tag]["fp"].append(fp)
            for c in CALIBRATORS:
                s = backends.quantize(teacher, "pytorch-quantization",
                                      QuantConfig(weight_bits=w, act_bits=a, options={"calibrator": c}),
                                      example_input=d.train_x[:4], calib_data=calib)
                acc = evaluate(s, d.test_x, d.test_y)
                rows[tag][c].append(acc)
                print(f"seed {seed} {tag} {c:10s} PTQ {acc:.4f} (FP {fp:.4f})", flush=True)
    lines = ["| config | teacher FP | " + " | ".join(f"PTQ {c}" for c in CALIBRATORS) + " |",
             "|---|---|" + "---|" * len(CALIBRATORS)]
    for tag in configs:
        lines.append(f"| {tag} | {_ms(rows[tag]['fp'])} | " + " | ".join(_ms(rows[tag][c]) for c in CALIBRATORS) + " |")
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "ptq_calibrators.md").write_text(text + "\n")
        (Path(args.out) / "ptq_calibrators.json").write_text(json.dumps(rows, indent=1))


def layerwise(args: argparse.Namespace) -> None:
    """The ``layerwise_mse`` preset on the features :func:`supervision_layers` picks, no labels, no DA,
    trained exactly as a ``daqakd distill`` run (seed_everything, the same calibration batches, Adam with
    a cosine schedule, the loader order of epoch e from seed·100003 + e, batch 64)."""
    import math

    import torch
    from daqakd_pytorch_quantization import supervision_layers

    from daqakd_plugins import Distiller, backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.data import load_digits, make_loader
    from daqakd_plugins.models import load_model
    from daqakd_plugins.train import evaluate, seed_everything

    torch.set_num_threads(1)
    d = load_digits(seed=0)
    seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    configs = [c.strip().upper() for c in args.configs.split(",") if c.strip()]
    res: dict[str, list[float]] = {c: [] for c in configs}
    for seed in seeds:
        teacher, _ = load_model(Path(args.teachers) / f"seed{seed}.pt")
        teacher.eval().requires_grad_(False)
        for tag in configs:
            w, a = (int(v) for v in tag[1:].split("A"))
            seed_everything(seed)
            s = backends.quantize(copy_of(teacher), "pytorch-quantization", QuantConfig(weight_bits=w, act_bits=a),
                                  example_input=d.train_x[:64])
            s = backends.calibrate(s, "pytorch-quantization", _calib_batches(d, seed), num_batches=8)
            for p in s.parameters():
                p.requires_grad_(True)
            kd = Distiller(teacher, s, loss="layerwise_mse", features=supervision_layers(s)).prepare(d.train_x[:64])
            steps = math.ceil(len(d.train_y) / 64)
            opt = torch.optim.Adam([*s.parameters(), *kd.parameters()], lr=args.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps)
            for epoch in range(args.epochs):
                s.train()
                for xb, yb in make_loader(d.train_x, d.train_y, 64, shuffle=True, seed=seed * 100_003 + epoch):
                    loss = kd.loss(xb, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
            kd.remove_hooks()
            acc = evaluate(s, d.test_x, d.test_y)
            res[tag].append(acc)
            print(f"seed {seed} {tag} layerwise_mse {acc:.4f}", flush=True)
    text = "| config | QAT, layerwise_mse (NVIDIA yolov7_qat style, no labels, no DA) |\n|---|---|\n" + "\n".join(
        f"| {tag} | {_ms(res[tag])} |" for tag in configs)
    print("\n" + text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "layerwise_mse.md").write_text(text + "\n")
        (Path(args.out) / "layerwise_mse.json").write_text(json.dumps(res, indent=1))


def copy_of(model: Any) -> Any:
    import copy

    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(True)
    return m


_RUNNER = textwrap.dedent("""
    import json, sys
    import numpy as np, onnxruntime as ort
    x = np.load(sys.argv[1]); out = {}
    for path in sys.argv[2:]:
        res = {}
        for key, lvl in (("default", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                         ("reference", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):
            so = ort.SessionOptions(); so.graph_optimization_level = lvl; so.log_severity_level = 3
            so.intra_op_num_threads = 1
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            res[key] = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        out[path] = {"changed": float((res["default"].argmax(1) != res["reference"].argmax(1)).mean()),
                     "max_abs_diff": float(np.abs(res["default"] - res["reference"]).max())}
    print("RESULT", json.dumps(out))
""")


def encoding(args: argparse.Namespace) -> None:
    """A conv -> conv -> ReLU -> linear student (W8A8): its first conv is followed directly by the next
    layer's input quantizer, the one DQ -> Conv -> Q group onnxruntime can fuse into an integer kernel
    with NVIDIA's placement. Compares each file's default session with ONNX's reference semantics
    (no optimisation) on the same inputs."""
    import numpy as np
    import onnx
    import torch
    from torch import nn

    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.onnx_qdq import u8s8_hazards
    from daqakd_plugins.runtime import ort_integer_kernels

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    fp = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
                       nn.Linear(32 * 64, 10)).eval()
    x = torch.rand(256, 1, 8, 8)
    s = backends.quantize(fp, "pytorch-quantization", QuantConfig(weight_bits=8, act_bits=8), example_input=x[:4],
                          calib_data=x).eval()
    files = {e.format: e.path for e in backends.export(s, "pytorch-quantization", example_input=x[:1], out_dir=out)}
    np.save(out / "x.npy", x.numpy())
    runner = out / "runner.py"
    runner.write_text(_RUNNER)
    paths = [str(files["onnx-qdq-tensorrt"]), str(files["onnx-qdq"])]
    results = {"native": _run([sys.executable, str(runner), str(out / "x.npy"), *paths])}
    qemu = shutil.which("qemu-x86_64")
    if qemu and not args.no_emulation:
        print(f"emulating {args.cpu} with {qemu} (about 2 minutes) ...", flush=True)
        results["emulated"] = _run([qemu, "-cpu", args.cpu, sys.executable, str(runner), str(out / "x.npy"), *paths])
    print(f"\n| file | U8S8 hazards | integer Conv/Gemm (default session) | predictions changed vs ONNX reference, this CPU "
          f"| same, emulated {args.cpu} (AVX2, no VNNI) |")
    print("|---|---|---|---|---|")
    for fmt, p in (("onnx-qdq-tensorrt (NVIDIA's file)", paths[0]), ("onnx-qdq (daqakd)", paths[1])):
        k = ort_integer_kernels(p)
        em = results.get("emulated", {}).get(p)
        nat = results["native"][p]
        print(f"| {fmt} | {len(u8s8_hazards(onnx.load(p)))} | {k['integer']} of {k['compute_ops']} | "
              f"{100 * nat['changed']:.1f} % | " + (f"{100 * em['changed']:.1f} % (largest logit change {em['max_abs_diff']:.3g})"
                                                      if em else "–") + " |")


def _run(cmd: list[str]) -> dict[str, Any]:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"runner failed ({' '.join(cmd[:3])} ...):\n{r.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ptq", help="PTQ accuracy per calibrator")
    p.add_argument("--teachers", required=True, help="directory with seed<N>.pt (benchmarks/backend_table.py OUT/teachers)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--configs", default="W8A8,W4A4")
    p.add_argument("--out", default=None, help="also write ptq_calibrators.md/.json here")
    p.set_defaults(func=ptq)
    lw = sub.add_parser("layerwise", help="QAT with the layerwise_mse preset (NVIDIA's yolov7_qat distillation)")
    lw.add_argument("--teachers", required=True)
    lw.add_argument("--seeds", default="0,1,2")
    lw.add_argument("--configs", default="W8A8,W4A4")
    lw.add_argument("--epochs", type=int, default=30)
    lw.add_argument("--lr", type=float, default=1e-3)
    lw.add_argument("--out", default=None)
    lw.set_defaults(func=layerwise)
    e = sub.add_parser("encoding", help="NVIDIA's TensorRT file vs onnx-qdq in default onnxruntime sessions")
    e.add_argument("--out", default="/tmp/pq_encoding")
    e.add_argument("--cpu", default="Haswell", help="qemu CPU model without VNNI (default Haswell: AVX2)")
    e.add_argument("--no-emulation", action="store_true")
    e.set_defaults(func=encoding)
    args = ap.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
