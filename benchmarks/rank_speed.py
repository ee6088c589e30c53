"""How close is ``rank_augmentations`` to the floor, and how much faster than the authors' two passes?

On the same candidates, samples, batch order and seeds, in one run (rounds interleaved per candidate
with a rotating order, median over rounds), this times three procedures over the whole candidate set:

* **bare**: augment each batch and run the teacher on it — nothing else. Any ranking metric needs at
  least this, so it is the floor.
* **ours**: ``rank_augmentations(...)`` end to end (data checks, per-batch validation, float64 sufficient
  statistics, result objects).
* **two-pass**: the authors' procedure: pass 1 augments + runs the teacher to get the class centroids,
  pass 2 augments again with the same seed + runs the teacher again to get the KL of every sample to
  its centroid (vectorised per batch, so it is not slowed by Python loops).

It prints (a) ours / bare (goal ≤ 1.15) and (b) two-pass / ours (goal ≥ 1.8) and checks that the
two-pass components equal ours.

    /tmp/venv/bin/python benchmarks/rank_speed.py --data digits --rounds 5
    /tmp/venv/bin/python benchmarks/rank_speed.py --data /tmp/cifar/cifar10 --per-class 100 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from daqakd_plugins.augment import resolve_candidates
from daqakd_plugins.contracts import Augmentation
from daqakd_plugins.data import load_data, one_hot, stratified_subset
from daqakd_plugins.ranking import Ranking, rank_augmentations
from daqakd_plugins.ranking.metrics import Q_CLAMP
from daqakd_plugins.train import get_or_train_teacher, seed_everything


def batches(x: torch.Tensor, t: torch.Tensor, order: torch.Tensor, bs: int):  # noqa: ANN201
    for s in range(0, len(order), bs):
        idx = order[s : s + bs]
        yield x.index_select(0, idx), t.index_select(0, idx)


def bare_pass(teacher: nn.Module, cands: list[Augmentation], x: torch.Tensor, t: torch.Tensor, order: torch.Tensor,
              bs: int, seed: int) -> float:
    """Augment + teacher forward only (the floor)."""
    t0 = time.perf_counter()
    for aug in cands:
        seed_everything(seed)
        for xb, tb in batches(x, t, order, bs):
            with torch.inference_mode():
                xa, _ = aug(xb, tb)
                teacher(xa)
    return time.perf_counter() - t0


def two_pass(teacher: nn.Module, cands: list[Augmentation], x: torch.Tensor, t: torch.Tensor, order: torch.Tensor,
             bs: int, seed: int) -> tuple[float, dict[str, dict[str, float]]]:
    """The authors' procedure: centroids in pass 1, per-sample KL to them in pass 2 (same seed)."""
    t0 = time.perf_counter()
    out: dict[str, dict[str, float]] = {}
    c = t.shape[1]
    for aug in cands:
        # pass 1: class centroids
        seed_everything(seed)
        s = torch.zeros(c, c, dtype=torch.float64)
        n = torch.zeros(c, dtype=torch.float64)
        for xb, tb in batches(x, t, order, bs):
            with torch.inference_mode():
                xa, ta = aug(xb, tb)
                p = torch.softmax(teacher(xa).double(), 1)
            td = ta.double()
            s += td.T @ p
            n += td.sum(0)
        seen = n > 0
        q = torch.zeros_like(s)
        q[seen] = s[seen] / n[seen, None]
        logq = q.clamp_min(Q_CLAMP).log()
        # pass 2: augment again with the same seed, KL(p_i || Q_k) weighted by t_i[k]
        seed_everything(seed)
        kl_sum, ce_sum, total = 0.0, 0.0, 0
        for xb, tb in batches(x, t, order, bs):
            with torch.inference_mode():
                xa, ta = aug(xb, tb)
                logp = torch.log_softmax(teacher(xa).double(), 1)
            p = logp.exp()
            td = ta.double()
            kl = (p * logp).sum(1, keepdim=True) - p @ logq.T  # [B, C]: KL(p_i || Q_k) for every k
            kl_sum += float((td * kl).sum())
            ce_sum += float(-(td * logp).sum())
            total += len(xb)
        idx = seen.nonzero().flatten()
        d = float(-logq[idx, idx].mean())
        out[aug.name] = {"D": d, "I": kl_sum / total, "CE": ce_sum / total}
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--candidates", default="paper")
    ap.add_argument("--per-class", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher", type=Path, default=None, help="default runs/teacher-<data>.pt (trained if missing)")
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    bundle = load_data(args.data).to_memory()  # the floor is measured on in-memory tensors
    tpath = args.teacher or Path("runs") / f"teacher-{bundle.name}.pt"
    teacher, meta = get_or_train_teacher(bundle, tpath, epochs=args.teacher_epochs, progress=False)
    teacher.eval()
    x, y = bundle.train_x, bundle.train_y
    if args.per_class:
        idx = stratified_subset(y, args.per_class, seed=args.seed)
        x, y = x[idx], y[idx]
    t = one_hot(y, bundle.num_classes)
    cands = resolve_candidates(args.candidates)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed))  # ranking's order for seed
    print(f"data {bundle.name}: {len(y)} samples {tuple(x.shape[1:])}, {len(cands)} candidates, batch {args.batch_size}, "
          f"{args.threads} thread(s), teacher {tpath} (acc {meta.get('test_accuracy', float('nan')):.4f})")

    def ours(aug: Augmentation) -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = rank_augmentations(teacher, (x, y), [aug], batch_size=args.batch_size, seed=args.seed, progress=False)
        return time.perf_counter() - t0, r

    # warm-up (lazy imports, first-call allocations) outside the timed rounds
    bare_pass(teacher, cands, x[:64], t[:64], torch.arange(64), args.batch_size, args.seed)
    # Interleave per candidate (rotating which procedure goes first) so that load changes on a shared
    # machine hit all three procedures alike; a round's time is the sum over candidates.
    times: dict[str, list[float]] = {"bare": [], "ours": [], "two-pass": []}
    per_cand: dict[str, dict[str, list[float]]] = {c.name: {k: [] for k in times} for c in cands}
    ranking_entries: dict[str, Any] = {}
    two: dict[str, dict[str, float]] = {}
    for rnd in range(args.rounds):
        tot = dict.fromkeys(times, 0.0)
        for ci, aug in enumerate(cands):
            procs = ["bare", "ours", "two-pass"]
            k = (rnd + ci) % 3
            for p in procs[k:] + procs[:k]:
                if p == "bare":
                    secs = bare_pass(teacher, [aug], x, t, order, args.batch_size, args.seed)
                elif p == "ours":
                    secs, r = ours(aug)
                    ranking_entries[aug.name] = r[aug.name]
                else:
                    secs, res = two_pass(teacher, [aug], x, t, order, args.batch_size, args.seed)
                    two.update(res)
                tot[p] += secs
                per_cand[aug.name][p].append(secs)
        for key in times:
            times[key].append(tot[key])
        print(f"round {rnd}: " + ", ".join(f"{key} {v[-1]:.3f}s" for key, v in times.items()))
    ranking = Ranking(metric="cmi", entries=list(ranking_entries.values()))
    assert ranking is not None and two is not None
    worst = max(abs(ranking[n].components[k] - two[n][k]) / max(abs(two[n][k]), 1e-300)
                for n in two for k in ("D", "I", "CE"))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio_a = med["ours"] / med["bare"]
    ratio_b = med["two-pass"] / med["ours"]
    per_round_a = [o / b for o, b in zip(times["ours"], times["bare"])]
    per_round_b = [tp / o for tp, o in zip(times["two-pass"], times["ours"])]
    print("per candidate, median seconds over rounds (bare / ours / two-pass):")
    for name, d in per_cand.items():
        m3 = [statistics.median(d[k]) for k in ("bare", "ours", "two-pass")]
        print(f"  {name:30s} {m3[0]:7.3f} {m3[1]:7.3f} {m3[2]:7.3f}   ours/bare {m3[1] / m3[0]:.2f}")
    print(f"median seconds: bare {med['bare']:.3f}, ours {med['ours']:.3f}, two-pass {med['two-pass']:.3f}")
    print(f"(a) ranking / bare augment+teacher pass = {ratio_a:.3f}  (goal ≤ 1.15; per round "
          f"{', '.join(f'{r:.3f}' for r in per_round_a)})")
    print(f"(b) speed-up over the two-pass procedure = {ratio_b:.2f}x  (goal ≥ 1.8; per round "
          f"{', '.join(f'{r:.2f}' for r in per_round_b)})")
    print(f"two-pass vs one-pass components: max relative difference {worst:.2e}")
    print(f"best candidate: {ranking.best}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "data": bundle.name, "samples": len(y), "candidates": [c.name for c in cands], "threads": args.threads,
            "batch_size": args.batch_size, "rounds": args.rounds, "times": times, "median": med,
            "ratio_ours_over_bare": ratio_a, "per_candidate": per_cand, "speedup_over_two_pass": ratio_b,
            "max_rel_diff": worst if math.isfinite(worst) else None,
        }, indent=2))


if __name__ == "__main__":
    main()
