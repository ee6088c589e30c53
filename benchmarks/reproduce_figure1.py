"""Does the ranking pick the augmentation that gives the best low-bit student? (the paper's Figure 1)

Resumable: every finished unit of work (teacher, one ranking pass of one candidate, one student run)
appends one JSON line to --out; a re-run skips what is there. Then `daqakd report OUT` analyses it.

    # CPU-scaled version on the CIFAR-10 subset (see docs/results.md for the exact command and numbers)
    tar -xf ../shared/data/cifar10-jpeg-subset.tar -C /tmp/cifar
    python benchmarks/reproduce_figure1.py --data /tmp/cifar/<folder> --out runs/fig1/results.jsonl
    daqakd report runs/fig1/results.jsonl

    # smoke version (CI): digits, 3 candidates, 2 seeds, 1 epoch
    python benchmarks/reproduce_figure1.py --smoke --out /tmp/fig1-smoke/results.jsonl

Steps: (1) a teacher trained *with* augmentation (random crop + flip) so augmented inputs are in its
domain; (2) every candidate ranked by the `cmi` metric (its components D, I, CE, and CE − I are
derived from the same pass) and by the `tstddev` baseline, over several ranking passes with different
seeds; (3) for each candidate and each student configuration (W2A4, W4A4), Brevitas students
initialised from the teacher and trained with KD (the paper's loss, τ = 4) on that augmentation,
over several seeds. Students train on a class-stratified subset and are evaluated on the clean test set.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_CANDIDATES = (
    "none", "autoaugment-cifar10", "autoaugment-imagenet", "autoaugment-svhn", "randaugment",
    "trivialaugmentwide", "augmix", "randomerasing", "none+cutmix", "autoaugment-cifar10+cutmix",
)


def crop_flip(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's base augmentation: random crop with 4-pixel (scaled) padding and horizontal flip."""
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    i = torch.randint(0, 2 * pad + 1, (b,))
    j = torch.randint(0, 2 * pad + 1, (b,))
    out = torch.stack([xp[k, :, i[k]:i[k] + h, j[k]:j[k] + w] for k in range(b)])
    flip = torch.rand(b) < 0.5
    out[flip] = out[flip].flip(-1)
    return out, t


class Results:
    """Append-only JSONL with the keys of finished work, so an interrupted run resumes.

    The file is never rewritten: several --shard processes append to it at once, and a rewrite by
    one would race with the others (it once truncated a finished grid). Each row is one O_APPEND
    write of a whole line; a line cut short by a kill is skipped when reading and its work redone.
    """

    def __init__(self, path: Path) -> None:
        from daqakd_plugins.evidence import read_results

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = read_results(path) if path.exists() else []
        self.done = {r.get("key") for r in self.rows}

    def add(self, row: dict[str, Any]) -> None:
        line = json.dumps(row) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and not self._ends_with_newline():
                line = "\n" + line  # a killed writer left a partial line: start a fresh one
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.rows.append(row)
        self.done.add(row.get("key"))

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"


def ranking_rows(teacher: torch.nn.Module, data: Any, ps: int, **kw: Any) -> list[dict[str, Any]]:
    """One ranking pass as result rows, best first by ``cmi``: every candidate's ``cmi`` score, its
    components D, I, CE, the authors' CE − I, and the ``tstddev`` baseline (``kw``: rank_augmentations')."""
    from daqakd_plugins.ranking import rank_augmentations

    cmi = rank_augmentations(teacher, data, metric="cmi", **kw)
    tsd = rank_augmentations(teacher, data, metric="tstddev", **kw)
    tsd_by = {e.name: e for e in tsd.entries}
    rows = []
    for e in cmi.entries:
        comp = e.components
        scores = {"cmi": e.score, "D": comp["D"], "I": comp["I"], "CE": comp["CE"], "CE-I": comp["CE"] - comp["I"],
                  "tstddev": tsd_by[e.name].score}
        rows.append({"kind": "ranking", "key": f"rank/{e.name}/{ps}", "candidate": e.name, "pass": ps, "scores": scores,
                     "n": e.n, "seconds": e.seconds + tsd_by[e.name].seconds})
    return rows


def train_student(teacher: torch.nn.Module, bundle: Any, idx: torch.Tensor, cand: str, wb: int, ab: int,
                  seed: int, epochs: int, lr: float, batch_size: int) -> float:
    """One DA-QAKD student run with the user-loop API: quantize, calibrate, Distiller, a plain loop."""
    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.data import make_loader
    from daqakd_plugins.distill import Distiller
    from daqakd_plugins.train import evaluate, seed_everything

    seed_everything(seed)
    x, y = bundle.train_x[idx], bundle.train_y[idx]
    calib = [x[i:i + 128] for i in range(0, min(len(x), 512), 128)]
    student = backends.quantize(copy.deepcopy(teacher), "brevitas", QuantConfig(weight_bits=wb, act_bits=ab),
                                example_input=x[:2], calib_data=calib)
    backends.calibrate(student, "brevitas", calib)
    kd = Distiller(teacher, student, loss="paper", augment=cand)
    params = list(student.parameters()) + list(kd.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    loader = make_loader(x, y, batch_size, shuffle=True, seed=seed)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(loader))
    for _ in range(epochs):
        student.train()
        for xb, yb in loader:
            loss = kd.loss(xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return evaluate(student, bundle.test_x, bundle.test_y)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--out", type=Path, default=Path("runs/fig1/results.jsonl"))
    p.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES))
    p.add_argument("--configs", default="W2A4,W4A4", help="student bit configurations, e.g. W2A4,W4A4")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rank-passes", type=int, default=3)
    p.add_argument("--rank-per-class", type=int, default=200, help="samples per class for each ranking pass")
    p.add_argument("--rank-batch-size", type=int, default=64, help="tstddev groups 5 batches: keep ≥ 10 batches per pass")
    p.add_argument("--train-per-class", type=int, default=350, help="student training samples per class")
    p.add_argument("--epochs", type=int, default=8, help="student epochs")
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiny run on digits for CI")
    p.add_argument("--teacher-only", action="store_true", help="stop after training the teacher")
    p.add_argument("--rank-only", action="store_true", help="stop after the ranking passes")
    p.add_argument("--shard", default="0/1", help="I/N: train only every N-th student run, starting at I, so N "
                   "processes can share the work (run the ranking first with --rank-only); all append to --out")
    a = p.parse_args(argv)
    if a.smoke:
        a.data, a.candidates, a.configs = "digits", "none,autoaugment-cifar10,none+cutmix", "W2A4"
        a.seeds, a.rank_passes, a.rank_per_class, a.train_per_class = 2, 2, 20, 30
        a.epochs, a.teacher_epochs, a.rank_batch_size = 1, 5, 16
    torch.set_num_threads(a.threads)

    from daqakd_plugins.augment import resolve_augmentation
    from daqakd_plugins.data import load_data, stratified_subset
    from daqakd_plugins.models import load_model, save_model
    from daqakd_plugins.train import train_teacher

    cands = [c.strip() for c in a.candidates.split(",") if c.strip()]
    for c in cands:
        resolve_augmentation(c)  # fail now, with the list of names, not after an hour
    configs = []
    for cfg in a.configs.split(","):
        wb, ab = cfg.strip().upper().lstrip("W").split("A")
        configs.append((cfg.strip().upper(), int(wb), int(ab)))
    res = Results(a.out)
    bundle = load_data(a.data).to_memory()  # this evidence script subsets tensors: small folders only
    t0 = time.perf_counter()

    teacher_path = a.out.parent / "teacher.pt"
    if teacher_path.exists():
        teacher, meta = load_model(teacher_path)
    else:
        teacher, meta = train_teacher(bundle, epochs=a.teacher_epochs, seed=0, augment=crop_flip)
        save_model(teacher_path, teacher, meta["arch"], meta)
    if "teacher" not in res.done:
        res.add({"kind": "teacher", "key": "teacher", "accuracy": meta["test_accuracy"], "epochs": meta["epochs"],
                 "augment": "crop+flip", "data": bundle.name, "seconds": meta["seconds"]})
        print(f"teacher: test accuracy {meta['test_accuracy']:.4f} ({meta['seconds']:.0f}s)", flush=True)
    if a.teacher_only:
        return 0
    teacher.eval()
    for q in teacher.parameters():
        q.requires_grad_(False)

    for ps in range(a.rank_passes):
        todo = [c for c in cands if f"rank/{c}/{ps}" not in res.done]
        if not todo:
            continue
        idx = stratified_subset(bundle.train_y, a.rank_per_class, seed=1000 + ps)
        data = (bundle.train_x[idx], bundle.train_y[idx])
        rows = ranking_rows(teacher, data, ps, candidates=todo, seed=ps, batch_size=a.rank_batch_size, progress=False)
        for row in rows:
            res.add(row)
        print(f"[{time.perf_counter() - t0:7.0f}s] ranking pass {ps}: " + ", ".join(r["candidate"] for r in rows), flush=True)

    if a.rank_only:
        return 0
    shard, nshards = (int(v) for v in a.shard.split("/"))
    train_idx = stratified_subset(bundle.train_y, a.train_per_class, seed=7)
    job = -1
    for seed in range(a.seeds):  # seed-major order: a partial run still has every candidate at some seeds
        for cfg, wb, ab in configs:
            for c in cands:
                job += 1
                key = f"student/{cfg}/{c}/{seed}"
                if key in res.done or job % nshards != shard:
                    continue
                s0 = time.perf_counter()
                acc = train_student(teacher, bundle, train_idx, c, wb, ab, seed, a.epochs, a.lr, a.batch_size)
                res.add({"kind": "student", "key": key, "candidate": c, "seed": seed, "config": cfg, "accuracy": acc,
                         "epochs": a.epochs, "train_samples": len(train_idx), "seconds": time.perf_counter() - s0})
                print(f"[{time.perf_counter() - t0:7.0f}s] {cfg} seed {seed} {c:<28} acc {acc:.4f}", flush=True)
    print(f"done in {time.perf_counter() - t0:.0f}s; analyse with: daqakd report {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
