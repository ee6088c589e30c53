"""What each part of data-free DA-QAKD contributes (docs/datafree.md, "Ablation"): one data-free run per
variant (one generator option changed from the defaults, or the augmentation), plus a data-driven run with
as many student steps as the data-free default (the reference in results.md has far fewer).

    python benchmarks/datafree_ablation.py --teacher runs/datafree_digits/teacher.pt \
        --jsonl docs/evidence/datafree-ablation.jsonl

Appends one JSON line per variant; a variant already in the file is skipped (the run resumes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "no adversarial term (adv_weight=0)": {"generator_options": {"adv_weight": 0.0}},
    "no BN-statistics term (bn_weight=0)": {"generator_options": {"bn_weight": 0.0}},
    "no class-balance term (balance_weight=0)": {"generator_options": {"balance_weight": 0.0}},
    "no warm-up (warmup_steps=0)": {"generator_options": {"warmup_steps": 0}},
    "no augmentation (--augment none)": {"augment": "none"},
    "G:S 1:1 (s_steps=1)": {"generator_options": {"s_steps": 1}},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--out", default="runs/datafree_ablation")
    p.add_argument("--jsonl", default="docs/evidence/datafree-ablation.jsonl")
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--act-bits", type=int, default=4)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from daqakd_plugins.datafree import GeneratorOptions
    from daqakd_plugins.distill import DistillConfig, run_distill

    jsonl = Path(args.jsonl)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(x)["variant"] for x in jsonl.read_text().splitlines() if x.strip()} if jsonl.exists() else set()
    common = dict(backend="brevitas", bits=args.bits, act_bits=args.act_bits, data="digits", teacher=args.teacher,
                  seed=args.seed, export=False, fresh=True, progress=False,
                  first_last_bits=None,  # every layer at --bits, as when the committed table was measured
                  metric="cmi")  # --augment auto's score when the committed table was measured (teacher-ce since)
    d = GeneratorOptions()
    steps = args.epochs * d.iterations * d.s_steps
    train_n = 1347  # digits' training split; the data-driven run reads it, 64 per step
    dd_epochs = math.ceil(steps / math.ceil(train_n / 64))
    runs: list[tuple[str, dict[str, Any]]] = [(k, {**v, "data_free": True, "epochs": args.epochs}) for k, v in VARIANTS.items()]
    runs.append((f"data-driven, {dd_epochs} epochs (≈ the data-free default's {steps} student steps)",
                 {"epochs": dd_epochs}))
    for i, (name, kw) in enumerate(runs):
        if name in done:
            print(f"{name}: already in {jsonl}")
            continue
        kw = {"augment": "auto", **kw}
        t0 = time.perf_counter()
        rep = run_distill(DistillConfig(**common, **kw, out=f"{args.out}/v{i}"))  # type: ignore[arg-type]
        row = {"variant": name, "bits": args.bits, "act_bits": args.act_bits, "seed": args.seed,
               "data_free": bool(kw.get("data_free")), "epochs": kw["epochs"], "augmentation": rep["augmentation"],
               "student_after": rep["accuracy"]["student_after"], "student_before": rep["accuracy"]["student_before"],
               "student_steps": rep.get("student_steps"), "seconds": rep["seconds"],
               "wall_seconds": round(time.perf_counter() - t0, 3), "options": kw.get("generator_options", {})}
        with jsonl.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{name}: {row['student_after']:.4f} ({row['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
