"""Size and latency of NNCF students next to the FP model *in the same runtime*: OpenVINO IR against the
FP teacher converted to OpenVINO IR, QDQ ONNX against the FP teacher in onnxruntime.

benchmarks/backend_table.py measures every export against the FP teacher in onnxruntime; for the
OpenVINO column that compares two runtimes. This reads the DA-QAKD runs that script wrote, converts each
run's teacher to OpenVINO IR (``ov.convert_model``, FP32), and times all four models interleaved
(batch 64, one thread each, static shapes, f32 precision; median over round-robin repeats), so the
ratios hold on a shared machine.

    python benchmarks/nncf_runtime_table.py --runs /tmp/nncf_table            # after backend_table.py --backend nncf
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def measure_run(run: Path, repeats: int = 60, trials: int = 3) -> dict[str, Any]:
    """Accuracy, size and latency of one run's exports and of its FP teacher in both runtimes. Latency is
    the median over ``trials`` interleaved measurements of ``repeats`` rounds each (OpenVINO's FP32
    model read 1.1 ms in most trials and 3-5 ms in some on this shared machine, so one trial is not
    enough); every trial's median is kept in ``ms_trials``."""
    import torch
    from daqakd_nncf.plugin import export_openvino, export_qdq, ov_predict

    from daqakd_plugins.data import load_digits
    from daqakd_plugins.distill import load_student
    from daqakd_plugins.models import load_model
    from daqakd_plugins.runtime import accuracy_of, export_fp_onnx, interleaved_latency, ort_predict

    report = json.loads((run / "report.json").read_text())
    student, _ = load_student(run)
    student.eval()
    teacher, _ = load_model(report["teacher"])
    teacher.eval()
    data = load_digits(seed=0)
    x1 = data.test_x[:1]
    fp_dir = run / "export" / "fp"
    fp_dir.mkdir(parents=True, exist_ok=True)
    fp_onnx, fp_ort = export_fp_onnx(teacher, x1, fp_dir / "teacher.fp32.onnx")
    fp_xml = export_openvino(teacher, x1, fp_dir / "teacher.fp32.xml")
    models: dict[str, tuple[Path, Any, int]] = {
        "fp:onnxruntime": (fp_onnx, fp_ort, fp_onnx.stat().st_size),
        "fp:openvino": (fp_xml, ov_predict(fp_xml), fp_xml.stat().st_size + fp_xml.with_suffix(".bin").stat().st_size),
    }
    xml = run / "export" / "student.openvino.xml"
    if xml.exists():
        models["student:openvino"] = (xml, ov_predict(xml), xml.stat().st_size + xml.with_suffix(".bin").stat().st_size)
    qdq = run / "export" / "student.qdq.onnx"
    if qdq.exists():
        models["student:onnxruntime"] = (qdq, ort_predict(qdq), qdq.stat().st_size)
        # the same student exported without the BatchNorm fold: what NNCF's QDQ export alone gives onnxruntime
        raw = fp_dir / "student.qdq.unfolded.onnx"
        export_qdq(student, x1, raw, fold=False)
        models["student-unfolded:onnxruntime"] = (raw, ort_predict(raw), raw.stat().st_size)
    batch = data.test_x[:64].numpy()
    per: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for _ in range(max(1, trials)):
            lat = interleaved_latency({k: v[1] for k, v in models.items()}, batch, repeats=repeats, budget_s=120)
            for k in models:
                per[k].append(lat[k]["median"])
    with torch.no_grad():
        ref = student(data.test_x).numpy()
    out: dict[str, Any] = {}
    for k, v in models.items():
        out[k] = {"path": str(v[0]), "size_bytes": v[2], "accuracy": accuracy_of(v[1], data.test_x, data.test_y),
                  "ms": statistics.median(per[k]), "ms_trials": per[k]}
        if k.startswith("student"):
            logits = v[1](data.test_x.numpy())
            out[k]["max_abs_logit_diff_vs_torch"] = float(abs(logits - ref).max())
            out[k]["argmax_differs_vs_torch"] = int((logits.argmax(1) != ref.argmax(1)).sum())
    return out


def table(rows: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| config | runtime | FP size | student size (× FP) | FP ms/batch | student ms/batch (× FP) | FP acc | student acc |",
             "|---|---|---|---|---|---|---|---|"]
    for cfg, runs in rows.items():
        for rt in ("openvino", "onnxruntime"):
            st = [r for r in runs if f"student:{rt}" in r]
            if not st:
                continue

            def med(key: str, field: str, st: list[dict[str, Any]] = st) -> float:
                return statistics.median(r[key][field] for r in st)

            ratio_ms = statistics.median(r[f"student:{rt}"]["ms"] / r[f"fp:{rt}"]["ms"] for r in st)
            ratio_sz = statistics.median(r[f"student:{rt}"]["size_bytes"] / r[f"fp:{rt}"]["size_bytes"] for r in st)
            name = rt if rt != "onnxruntime" else "onnxruntime (QDQ, BatchNorm folded)"
            lines.append(
                f"| {cfg} | {name} | {med(f'fp:{rt}', 'size_bytes') / 1024:.1f} KiB | "
                f"{med(f'student:{rt}', 'size_bytes') / 1024:.1f} KiB ({ratio_sz:.2f}×) | {med(f'fp:{rt}', 'ms'):.2f} | "
                f"{med(f'student:{rt}', 'ms'):.2f} ({ratio_ms:.2f}×) | {100 * med(f'fp:{rt}', 'accuracy'):.1f} | "
                f"{100 * med(f'student:{rt}', 'accuracy'):.1f} |")
            un = [r for r in st if f"student-unfolded:{rt}" in r]
            if un:
                ratio = statistics.median(r[f"student-unfolded:{rt}"]["ms"] / r[f"fp:{rt}"]["ms"] for r in un)
                ratio_sz = statistics.median(r[f"student-unfolded:{rt}"]["size_bytes"] / r[f"fp:{rt}"]["size_bytes"] for r in un)
                lines.append(
                    f"| {cfg} | onnxruntime (NNCF's QDQ export as is, no fold) | {med(f'fp:{rt}', 'size_bytes') / 1024:.1f} KiB | "
                    f"{med(f'student-unfolded:{rt}', 'size_bytes', un) / 1024:.1f} KiB ({ratio_sz:.2f}×) | "
                    f"{med(f'fp:{rt}', 'ms'):.2f} | {med(f'student-unfolded:{rt}', 'ms', un):.2f} ({ratio:.2f}×) | "
                    f"{100 * med(f'fp:{rt}', 'accuracy'):.1f} | {100 * med(f'student-unfolded:{rt}', 'accuracy', un):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="the --out directory of benchmarks/backend_table.py --backend nncf")
    ap.add_argument("--arm", default="daqakd", help="which arm's exports to measure (default daqakd)")
    ap.add_argument("--repeats", type=int, default=60, help="interleaved rounds per trial (default 60)")
    ap.add_argument("--trials", type=int, default=3, help="interleaved measurements per run; the median is kept (default 3)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.runs)
    rows: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(root.glob(f"W*A*/seed*/{args.arm}")):
        if not (run / "report.json").exists():
            continue
        cfg = run.parts[-3]
        res = measure_run(run, args.repeats, args.trials)
        rows.setdefault(cfg, []).append(res)
        print(cfg, run.parts[-2], {k: (round(v["ms"], 3), v["size_bytes"], round(v["accuracy"], 4)) for k, v in res.items()},
              flush=True)
    text = ("NNCF students vs the FP teacher in the same runtime (batch 64, one thread, static shapes, f32 "
            f"precision; per run the median of {args.trials} interleaved trials of {args.repeats} rounds; medians over "
            "seeds; accuracy in % on the digits test split):\n\n" + table(rows) + "\n")
    (root / "runtime_table.md").write_text(text)
    (root / "runtime_table.json").write_text(json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
