"""How many policies per minute does ``daqakd search`` score, and how close is that to its limit? (issue 24)

On 1,000 CIFAR-10 training images (100 per class) with a ResNet-8 (``small_resnet``) and a CIFAR ResNet-20
teacher, side by side in one run, this times:

* **search**: ``search_augmentations`` over ``--n`` policies of ``taw2`` end to end (decoding the sample once,
  chunked ranking, the resume file), in one process (``--threads`` torch threads, no loader workers) and with the
  per-image augmentation in ``--workers`` loader worker processes next to the teacher;
* **limit**: one teacher forward over the same 1,000 images (batches of 64), no augmentation — the least any
  teacher-only score needs per policy; ``limit_ppm`` = policies per minute at that cost;
* **student epoch**: one W4A4 Brevitas student epoch of DA-QAKD on the same images (the search's cost is quoted
  against it: a policy costs one teacher pass, a student needs many epochs of forward + backward).

Rows go to ``--out`` (JSONL); ``docs/ranking.md`` quotes them.

    python benchmarks/search_speed.py --cache ~/.cache/daqakd/paper-recipe-cifar-uint8.npz \\
        --teacher20 docs/evidence/paper-recipe/teacher.pt --out docs/evidence/search-speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _sample(cache: Path, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    from daqakd_plugins.data import stratified_subset

    z = np.load(cache)
    x, y = torch.from_numpy(z["train_x"]), torch.from_numpy(z["train_y"])
    idx = stratified_subset(y, per_class, seed=1000)
    return x[idx].float().div(255), y[idx]


def _teachers(path20: Path | None) -> dict[str, torch.nn.Module]:
    from daqakd_plugins.models import arch_spec, build_model, load_model

    out: dict[str, torch.nn.Module] = {}
    out["resnet8"] = build_model(arch_spec("small_resnet", num_classes=10, in_channels=3))
    if path20 is not None and path20.exists():
        out["resnet20"] = load_model(path20)[0]  # the paper-recipe teacher (84.75 %)
    else:
        out["resnet20"] = build_model(arch_spec("cifar_resnet20", num_classes=10, in_channels=3))
    for m in out.values():
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return out


def _forward_seconds(teacher: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        teacher(x[:64])
        t0 = time.perf_counter()
        for i in range(0, len(x), 64):
            teacher(x[i:i + 64])
    return time.perf_counter() - t0


def _student_epoch_seconds(teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    import copy

    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.distill import Distiller

    cfg = QuantConfig(weight_bits=4, act_bits=4)
    calib = [x[:128]]
    student = backends.quantize(copy.deepcopy(teacher), "brevitas", cfg, example_input=x[:2], calib_data=calib)
    backends.calibrate(student, "brevitas", calib)
    for p in student.parameters():
        p.requires_grad_(True)
    kd = Distiller(teacher, student, loss="paper", augment="none", base_augment="crop-flip")
    opt = torch.optim.Adam([*student.parameters(), *kd.parameters()], lr=1e-4)
    student.train()
    t0 = time.perf_counter()
    for i in range(0, len(x), 64):
        loss = kd.loss(x[i:i + 64], y[i:i + 64], seed=i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    kd.remove_hooks()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "daqakd" / "paper-recipe-cifar-uint8.npz",
                   help="the decoded CIFAR-10 of benchmarks/paper_recipe.py (uint8 npz)")
    p.add_argument("--teacher20", type=Path, default=Path("docs/evidence/paper-recipe/teacher.pt"))
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--n", type=int, default=24, help="policies per timed search")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("docs/evidence/search-speed.jsonl"))
    a = p.parse_args(argv)
    from daqakd_plugins.ranking import search_augmentations

    torch.set_num_threads(a.threads)
    x, y = _sample(a.cache, a.per_class)
    rows = []
    for name, teacher in _teachers(a.teacher20).items():
        fwd = _forward_seconds(teacher, x)
        epoch = _student_epoch_seconds(teacher, x, y)
        for workers in (0, a.workers):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                r = search_augmentations(teacher, (x, y), "taw2", a.n, top_k=min(3, a.n), batch_size=64, workers=workers,
                                         progress=False, base_augment="crop-flip", resume=Path(tmp) / "s.jsonl")
                secs = time.perf_counter() - t0
            row = {"kind": "search_speed", "teacher": name, "images": len(x), "policies": a.n, "workers": workers,
                   "threads": a.threads, "seconds": secs, "policies_per_minute": 60 * a.n / secs,
                   "teacher_forward_seconds": fwd, "limit_ppm": 60 / fwd, "of_limit": (60 * a.n / secs) / (60 / fwd),
                   "student_epoch_seconds": epoch, "policies_per_student_epoch": epoch / (secs / a.n),
                   "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
            rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
            del r
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"appended {len(rows)} rows to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
