"""Brevitas' raw QCDQ export against daqakd's: correctness on an *emulated* AVX2-only CPU, and speed.

W8A8 is also exported with ``options={"reduce_range": True}`` (8-bit weights in the 7-bit range).

onnxruntime picks its integer kernels from the CPU it runs on, so an export that is right on this
machine can be wrong on the next (uint8 activations x int8 weights saturate without VNNI; see
daqakd_plugins/onnx_qdq.py). This script makes that visible on any x86 host: it exports Brevitas
students of the digits teacher, keeps Brevitas' raw QCDQ file next to daqakd's (U8U8 where needed),
and measures both in a *default* onnxruntime session: accuracy natively and under
``qemu-x86_64 -cpu Haswell`` (AVX2, no VNNI), which makes onnxruntime choose the AVX2 kernels; how
many Conv/Gemm onnxruntime runs as integer kernels; and latency per batch of 64 against the float
teacher's ONNX, timed interleaved in one process (ratios, robust to a shared machine's load).

    apt-get install qemu-user        # once (Debian/Ubuntu); ~1-2 minutes of emulation per file
    python benchmarks/onnx_encoding.py --out /tmp/onnx_encoding            # --no-emulation: skip qemu

Not a test: it needs qemu and takes minutes; tests/test_onnx_qdq.py holds the host-independent check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

_RUNNER = textwrap.dedent("""
    import json, sys
    import numpy as np, onnxruntime as ort
    x = np.load(sys.argv[1]); y = np.load(sys.argv[2]); out = {}
    for path in sys.argv[3:]:
        row = {}
        for key, lvl in (("default", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                         ("no_optimisation", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):
            so = ort.SessionOptions(); so.graph_optimization_level = lvl; so.log_severity_level = 3
            so.intra_op_num_threads = 1
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            row[key] = float((sess.run(None, {name: x})[0].argmax(1) == y).mean())
        out[path] = row
    print("RESULT", json.dumps(out))
""")


def _run(cmd: list[str]) -> dict[str, dict[str, float]]:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"runner failed ({' '.join(cmd[:3])} ...):\n{r.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/daqakd_no_vnni"))
    ap.add_argument("--bits", default="8,4", help="comma-separated W=A bit widths to export (default 8,4)")
    ap.add_argument("--cpu", default="Haswell", help="qemu CPU model without VNNI (default Haswell: AVX2)")
    ap.add_argument("--no-emulation", action="store_true", help="skip the qemu run (accuracy on this CPU only)")
    ap.add_argument("--repeats", type=int, default=200, help="interleaved latency rounds (default 200)")
    args = ap.parse_args()
    qemu = shutil.which("qemu-x86_64")
    if qemu is None and not args.no_emulation:
        raise SystemExit("qemu-x86_64 not found: install it with `apt-get install qemu-user` (Debian/Ubuntu).")

    import numpy as np
    import onnx
    import torch
    from brevitas.export import export_onnx_qcdq

    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.data import load_digits
    from daqakd_plugins.onnx_qdq import u8s8_hazards
    from daqakd_plugins.runtime import export_fp_onnx, interleaved_latency, ort_integer_kernels
    from daqakd_plugins.train import train_teacher

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    d = load_digits()
    teacher, _ = train_teacher(d, epochs=15, seed=0, progress=False)
    np.save(args.out / "x.npy", d.test_x.numpy())
    np.save(args.out / "y.npy", d.test_y.numpy())
    files: dict[str, tuple[str, float, int]] = {}
    _, fp_predict = export_fp_onnx(teacher, d.test_x[:1], args.out / "teacher.fp32.onnx")
    variants = [(int(v), False) for v in args.bits.split(",")]
    variants += [(8, True)] if 8 in {b for b, _ in variants} else []
    for b, reduce in variants:
        s = backends.quantize(teacher, "brevitas",
                              QuantConfig(weight_bits=b, act_bits=b, options={"reduce_range": reduce}),
                              example_input=d.train_x[:4], calib_data=d.train_x[:512]).eval()
        with torch.no_grad():
            acc = float((s(d.test_x).argmax(1) == d.test_y).double().mean())
        tag = f"W{b}A{b}" + (" reduce_range" if reduce else "")
        sub = tag.replace(" ", "-")
        raw = args.out / f"{sub}.brevitas-raw.onnx"
        export_onnx_qcdq(s, args=d.test_x[:1], export_path=str(raw), opset_version=13, dynamo=False,
                         input_names=["input"], output_names=["logits"],
                         dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        shipped = backends.export(s, "brevitas", example_input=d.test_x[:1], out_dir=args.out / sub,
                                  formats=("onnx-qcdq",))[0].path
        for label, p in ((f"{tag} Brevitas raw QCDQ", raw), (f"{tag} daqakd export", shipped)):
            files[str(p)] = (label, acc, len(u8s8_hazards(onnx.load(str(p)))))
    runner = args.out / "runner.py"
    runner.write_text(_RUNNER)
    base = [str(runner), str(args.out / "x.npy"), str(args.out / "y.npy"), *files]
    native = _run([sys.executable, *base])
    emulated: dict[str, dict[str, float]] = {}
    if not args.no_emulation:
        print(f"emulating {args.cpu} with {qemu} (minutes) ...", flush=True)
        emulated = _run([str(qemu), "-cpu", args.cpu, sys.executable, *base])
    from daqakd_plugins.runtime import ort_predict  # the same single-threaded session daqakd reports with

    predicts = {p: ort_predict(p) for p in files}
    lat = interleaved_latency({**predicts, "fp": fp_predict}, d.test_x[:64].numpy(), repeats=args.repeats,
                              budget_s=120.0)
    fp_ms = lat["fp"]["median"]
    emu = f"ORT default, emulated {args.cpu}" if emulated else "(no emulation)"
    print(f"\n| file | U8S8 hazards | integer Conv/Gemm in ORT | torch | ORT default, this CPU | {emu} | "
          "ORT no optimisation | ms per batch of 64 (x FP) |")
    print("|---|---|---|---|---|---|---|---|")
    for p, (label, acc, hz) in files.items():
        k = ort_integer_kernels(p)
        em = emulated.get(p, {})
        print(f"| {label} | {hz} | {k['integer']} of {k['compute_ops']} | {acc:.4f} | {native[p]['default']:.4f} | "
              f"{em.get('default', float('nan')):.4f} | {native[p]['no_optimisation']:.4f} | "
              f"{lat[p]['median']:.3f} ({lat[p]['median'] / fp_ms:.2f}x) |")
    print(f"| FP teacher (float ONNX) | – | – | – | – | – | – | {fp_ms:.3f} (1.00x) |")


if __name__ == "__main__":
    main()
