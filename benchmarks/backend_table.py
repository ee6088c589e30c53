"""The backend tables of docs/backends/*.md: teacher FP, PTQ, QAT (no KD), QAT+KD (no DA) and
DA-QAKD (ranked DA) at several bit widths over several seeds, plus the DA-QAKD student's exported
accuracy in each format's own runtime (e.g. Brevitas: QCDQ in onnxruntime, QONNX in qonnx), file size
and latency next to the FP teacher in onnxruntime. ``--backend`` picks the adapter (default brevitas).

Every arm is one ``daqakd distill`` run (the Python API, ``run_distill``); the equivalent command is
printed for each. Per seed one teacher is trained and shared by every arm and bit width, so the arms
differ only in the student's loss and augmentation:

    QAT      --loss ce    --augment none    (plain QAT: cross-entropy on labels)
    QAT+KD   --loss paper --augment none    (1·CE + 2·τ²·KL, τ = 4)
    DA-QAKD  --loss paper --augment auto    (the same loss on the augmentation the CMI ranking picks)

PTQ is the student right after calibration (``accuracy.student_before``; identical for the three arms
of a seed). Resumable: a run whose report.json exists is read back, not re-run.

    python benchmarks/backend_table.py --out runs/brevitas_table            # 3 seeds, 8 epochs
    python benchmarks/backend_table.py --backend nncf --configs W8A8,W4A4 --out runs/nncf_table
    python benchmarks/backend_table.py --out /tmp/bt --seeds 0 --epochs 1 --configs W2A4   # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ARMS: dict[str, dict[str, Any]] = {
    "qat": {"loss": "ce", "augment": "none", "export": False},
    "qat_kd": {"loss": "paper", "augment": "none", "export": False},
    # ranked with cmi, the default when the committed table was measured (teacher-ce since; docs/ranking.md)
    "daqakd": {"loss": "paper", "augment": "auto", "metric": "cmi", "export": True},
}
ARM_TITLES = {"qat": "QAT (no KD)", "qat_kd": "QAT+KD (no DA)", "daqakd": "DA-QAKD (ranked DA)"}


def parse_config(tag: str) -> tuple[int, int]:
    t = tag.upper()
    if not (t.startswith("W") and "A" in t):
        raise SystemExit(f"config {tag!r} must look like W2A4")
    w, a = t[1:].split("A")
    return int(w), int(a)


BACKEND = "brevitas"  # set from --backend in main()


def cli_command(w: int, a: int, arm: str, seed: int, epochs: int, lr: float, teacher: Path, out: Path,
                per_class: int | None = None) -> str:
    spec = ARMS[arm]
    return (f"daqakd distill --backend {BACKEND} --bits {w} --act-bits {a} --data digits --epochs {epochs} "
            f"--lr {lr:g} --loss {spec['loss']} --augment {spec['augment']} --seed {seed} --teacher {teacher} "
            + (f"--train-per-class {per_class} " if per_class else "")
            + f"--out {out}" + ("" if spec["export"] else " --no-export"))


def run_one(w: int, a: int, arm: str, seed: int, epochs: int, lr: float, teacher: Path, out: Path,
            per_class: int | None = None) -> dict[str, Any]:
    from daqakd_plugins.distill import DistillConfig, run_distill

    rep = out / "report.json"
    if rep.exists():
        return json.loads(rep.read_text())
    spec = ARMS[arm]
    cfg = DistillConfig(backend=BACKEND, bits=w, act_bits=a, data="digits", teacher=str(teacher), epochs=epochs,
                        lr=lr, out=str(out), seed=seed, loss=spec["loss"], augment=spec["augment"],
                        metric=spec.get("metric", "cmi"),
                        export=spec["export"], train_per_class=per_class, progress=False)
    return run_distill(cfg)


def teacher_for(seed: int, root: Path, augment: str | None = None, epochs: int = 15) -> Path:
    """One FP teacher per seed, shared by every arm and bit width (the students start from its weights).
    ``augment``: train it on that registered augmentation, so augmented images are in its domain."""
    from daqakd_plugins.data import load_data
    from daqakd_plugins.train import get_or_train_teacher

    path = root / "teachers" / f"seed{seed}{'-' + augment if augment else ''}.pt"
    aug = None
    if augment:
        from daqakd_plugins.augment import resolve_augmentation

        aug = resolve_augmentation(augment)
    get_or_train_teacher(load_data("digits", seed=0), path, epochs=epochs, seed=seed, augment=aug, progress=False)
    return path


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    m = statistics.mean(values)
    if len(values) == 1:
        return f"{100 * m:.1f}"
    return f"{100 * m:.1f} ± {100 * statistics.stdev(values):.1f}"


def _export_entry(report: dict[str, Any], fmt: str) -> dict[str, Any] | None:
    ex = report.get("export") or {}
    for e in ex.get("student", []) if isinstance(ex, dict) else []:
        if e.get("format") == fmt:
            return e
    return None


def _formats(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(format, runtime) of every export the DA-QAKD runs wrote, in the order the backend wrote them."""
    seen: list[tuple[str, str]] = []
    for r in rows:
        ex = r["report"].get("export")
        for e in ex.get("student", []) if isinstance(ex, dict) else []:
            key = (e.get("format", "?"), e.get("runtime", "?"))
            if key not in seen:
                seen.append(key)
    return seen


def summarise(rows: list[dict[str, Any]], configs: list[tuple[int, int]]) -> tuple[str, str, dict[str, Any]]:
    """Markdown accuracy table, Markdown size/latency table, and the numbers behind them."""
    fmts = _formats([r for r in rows if r["arm"] == "daqakd"])
    acc_lines = [
        "| config | teacher FP | PTQ | QAT (no KD) | QAT+KD (no DA) | DA-QAKD (ranked DA) | DA-QAKD − QAT | "
        + "".join(f"exported {f} ({rt}) | " for f, rt in fmts) + "max abs(exported − torch) | picked DA |",
        "|---|---|---|---|---|---|---|" + "---|" * len(fmts) + "---|---|",
    ]
    size_lines = [
        "| config | FP ONNX size | " + "".join(f"{f} size (× FP) | " for f, _ in fmts) + "FP ms/batch (onnxruntime) | "
        + "".join(f"{f} ms/batch ({rt}, × FP) | " for f, rt in fmts).rstrip(" "),
        "|---|---|" + "---|" * len(fmts) + "---|" + "---|" * len(fmts),
    ]
    summary: dict[str, Any] = {}
    for w, a in configs:
        tag = f"W{w}A{a}"
        sel = {arm: [r for r in rows if r["config"] == tag and r["arm"] == arm] for arm in ARMS}
        acc = {arm: [r["report"]["accuracy"]["student_after"] for r in sel[arm]] for arm in ARMS}
        if not sel["daqakd"]:
            continue
        teacher = [r["report"]["accuracy"]["teacher_fp"] for r in sel["daqakd"]]
        ptq = [r["report"]["accuracy"]["student_before"] for r in sel["daqakd"]]
        gain = [d - q for d, q in zip(acc["daqakd"], acc["qat"])]
        entries = {f: [_export_entry(r["report"], f) for r in sel["daqakd"]] for f, _ in fmts}
        exp_acc = {f: [e["accuracy"] for e in es if e and "accuracy" in e] for f, es in entries.items()}
        diffs = [e["accuracy_abs_diff"] for es in entries.values() for e in es if e and "accuracy_abs_diff" in e]
        picked = sorted({r["report"].get("augmentation", "?") for r in sel["daqakd"]})
        gain_s = "–" if not gain else (f"{100 * statistics.mean(gain):+.1f}" + (
            f" ± {100 * statistics.stdev(gain):.1f}" if len(gain) > 1 else ""))
        diff_s = f"{100 * max(diffs):.2f} pp" if diffs else "–"
        acc_lines.append(
            f"| {tag} | {_ms(teacher)} | {_ms(ptq)} | {_ms(acc['qat'])} | {_ms(acc['qat_kd'])} | {_ms(acc['daqakd'])} | "
            f"{gain_s} | " + "".join(f"{_ms(exp_acc[f])} | " for f, _ in fmts) + f"{diff_s} | {', '.join(picked)} |"
        )
        exs = [r["report"]["export"] for r in sel["daqakd"] if isinstance(r["report"].get("export"), dict)
               and "teacher" in r["report"]["export"]]
        if exs:
            fp_size = statistics.mean(e["teacher"]["size_bytes"] for e in exs)
            fp_ms = statistics.median(e["teacher"]["latency_ms_per_batch"] for e in exs)
            sizes, times = [], []
            for f, _ in fmts:
                es = [e for e in entries[f] if e and "size_bytes" in e]
                if es:
                    sz = statistics.mean(e["size_bytes"] for e in es)
                    sizes.append(f"{sz / 1024:.1f} KiB ({sz / fp_size:.2f}×)")
                else:  # this backend wrote no such file at this bit width
                    sizes.append("–")
                ms = [e["latency_ms_per_batch"] for e in es if "latency_ms_per_batch" in e]
                ratio = [e["latency_ratio_vs_fp"] for e in es if "latency_ratio_vs_fp" in e]
                times.append(f"{statistics.median(ms):.2f} ({statistics.median(ratio):.2f}×)" if ms else "–")
            size_lines.append(f"| {tag} | {fp_size / 1024:.1f} KiB | " + "".join(f"{v} | " for v in sizes)
                              + f"{fp_ms:.2f} | " + " | ".join(times) + " |")
        summary[tag] = {
            "teacher_fp": teacher, "ptq": ptq, **{arm: acc[arm] for arm in ARMS}, "daqakd_minus_qat": gain,
            **{f"exported_{f}": exp_acc[f] for f, _ in fmts},
            "max_abs_export_diff": max(diffs) if diffs else None, "picked": picked,
        }
    return "\n".join(acc_lines), "\n".join(size_lines), summary


def _teacher_ce(report: dict[str, Any], name: str) -> float | None:
    """The teacher's cross-entropy on the training images under augmentation ``name`` (from the CMI
    ranking the DA-QAKD run did): how far its soft targets on augmented inputs are from the labels."""
    for c in (report.get("ranking_detail") or {}).get("candidates", []):
        if c.get("name") == name:
            return float(c["components"]["CE"])
    return None


def summarise_why(rows: list[dict[str, Any]], extra: list[str], configs: list[str]) -> str:
    """DA-QAKD with the ranked DA vs the same loss with fixed, milder augmentations, next to the
    teacher's CE on each augmentation: the evidence for why the ranked DA does or does not help."""
    lines = ["| config | arm | augmentation | student accuracy | teacher CE on the augmented train images (nats) |",
             "|---|---|---|---|---|"]
    for tag in configs:
        da = [r for r in rows if r["config"] == tag and r["arm"] == "daqakd"]
        if not da:
            continue
        def ce(name: str, da: list[dict[str, Any]] = da) -> str:
            return _ms_plain([v for v in (_teacher_ce(r["report"], name) for r in da) if v is not None])

        for arm in ("qat", "qat_kd"):
            sel = [r["report"]["accuracy"]["student_after"] for r in rows if r["config"] == tag and r["arm"] == arm]
            lines.append(f"| {tag} | {ARM_TITLES[arm]} | none | {_ms(sel)} | {ce('none')} |")
        picked = [r["report"].get("augmentation", "?") for r in da]
        lines.append(f"| {tag} | DA-QAKD (ranked) | {', '.join(sorted(set(picked)))} | "
                     f"{_ms([r['report']['accuracy']['student_after'] for r in da])} | "
                     f"{_ms_plain([v for v in (_teacher_ce(r['report'], p) for r, p in zip(da, picked)) if v is not None])} |")
        for aug in extra:
            sel = [r["report"]["accuracy"]["student_after"] for r in rows if r["config"] == tag and r["arm"] == f"kd+{aug}"]
            if sel:
                lines.append(f"| {tag} | paper loss, fixed DA | {aug} | {_ms(sel)} | {ce(aug)} |")
    return "\n".join(lines)


def _ms_plain(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(argv: list[str] | None = None) -> int:
    global BACKEND
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="brevitas", help="the adapter to tabulate (default brevitas)")
    ap.add_argument("--out", default="runs/brevitas_table", help="directory for runs, teachers and the table")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--epochs", type=int, default=8, help="QAT epochs per run (default 8)")
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3, cosine schedule)")
    ap.add_argument("--configs", default="W2A4,W4A4,W8A8", help="bit configs (default W2A4,W4A4,W8A8)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"arms to run (default {','.join(ARMS)})")
    ap.add_argument("--extra-augments", default="",
                    help="also run the paper loss with these fixed augmentations (comma-separated) on --extra-configs")
    ap.add_argument("--extra-configs", default="W2A4", help="configs for --extra-augments (default W2A4)")
    ap.add_argument("--teacher-augment", default=None,
                    help="train the FP teachers with this registered augmentation (default: none, as `daqakd teacher`)")
    ap.add_argument("--teacher-epochs", type=int, default=15, help="FP teacher epochs (default 15)")
    ap.add_argument("--train-per-class", type=int, default=None,
                    help="students train on this many images per class (the teacher always sees the full train split)")
    args = ap.parse_args(argv)
    BACKEND = args.backend
    torch.set_num_threads(1)  # the machine is shared; a run is small enough for one core

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    configs = [parse_config(t) for t in args.configs.split(",") if t.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    extra = [a.strip() for a in args.extra_augments.split(",") if a.strip()]
    extra_configs = [t.strip().upper() for t in args.extra_configs.split(",") if t.strip()]
    for aug in extra:
        ARMS[f"kd+{aug}"] = {"loss": "paper", "augment": aug, "export": False}
    rows: list[dict[str, Any]] = []
    commands: list[str] = []
    t0 = time.perf_counter()
    for seed in seeds:
        teacher = teacher_for(seed, root, args.teacher_augment, args.teacher_epochs)
        for w, a in configs:
            run_arms = arms + [f"kd+{aug}" for aug in extra if f"W{w}A{a}" in extra_configs]
            for arm in run_arms:
                out = root / f"W{w}A{a}" / f"seed{seed}" / arm
                cmd = cli_command(w, a, arm, seed, args.epochs, args.lr, teacher, out, args.train_per_class)
                commands.append(cmd)
                t1 = time.perf_counter()
                rep = run_one(w, a, arm, seed, args.epochs, args.lr, teacher, out, args.train_per_class)
                rows.append({"config": f"W{w}A{a}", "arm": arm, "seed": seed, "report": rep})
                print(f"[{time.perf_counter() - t0:6.0f}s] W{w}A{a} seed {seed} {arm:7s} "
                      f"after={rep['accuracy']['student_after']:.4f} before={rep['accuracy']['student_before']:.4f} "
                      f"aug={rep.get('augmentation')} ({time.perf_counter() - t1:.0f}s)", flush=True)
    acc_md, size_md, summary = summarise(rows, configs)
    why_md = summarise_why(rows, extra, [f"W{w}A{a}" for w, a in configs]) if extra else ""
    subset = (f"students train on {args.train_per_class} images per class" if args.train_per_class
              else "students train on the full train split")
    tdesc = (f"FP teachers trained {args.teacher_epochs} epochs with {args.teacher_augment}" if args.teacher_augment
             else f"FP teachers trained {args.teacher_epochs} epochs without augmentation")
    header = (f"{BACKEND} on digits, seeds {args.seeds}, {args.epochs} epochs, lr {args.lr:g} (Adam, cosine), "
              f"batch 64, {subset}, {tdesc}; accuracy in % on the digits test split (mean ± std over seeds).")
    text = f"{header}\n\n{acc_md}\n\nDA-QAKD student exports vs the FP teacher in ONNX (batch 64, single thread, " \
           f"median over interleaved repeats; medians over seeds):\n\n{size_md}\n"
    if why_md:
        text += f"\nWhy (same runs; teacher CE from the CMI ranking of the DA-QAKD runs):\n\n{why_md}\n"
    (root / "table.md").write_text(text)
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    (root / "commands.txt").write_text("\n".join(commands) + "\n")
    print()
    print(text)
    print(f"total {time.perf_counter() - t0:.0f}s; table in {root / 'table.md'}; commands in {root / 'commands.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
