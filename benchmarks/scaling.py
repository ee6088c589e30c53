"""Ranking and distillation with torchrun: 2 processes vs 1, side by side in one run (issue 15).

Each configuration runs as the user would run it — ``daqakd ...`` for one process, ``torchrun
--nproc_per_node 2 -m daqakd_plugins ...`` for two — on the same samples and settings, in rotating order
over ``--rounds`` rounds (median). Reported: the ranking's own time (``seconds`` in its JSON: data checks
to result, without interpreter start-up), the command's wall time, and for distillation the training
time per epoch and per optimizer step (from report.json). One process is timed with 1 and with
``--threads`` intra-op threads, two processes with 1 thread each (the cores are shared). The ranking
scores of 1 and 2 processes are checked equal (1e-9 relative).

    python benchmarks/scaling.py --data digits --rounds 3
    python benchmarks/scaling.py --data /tmp/stream/cifar10k --per-class 100 --teacher T.pt --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env(threads: int) -> dict[str, str]:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _run(procs: int, threads: int, args: list[str], cwd: Path) -> float:
    base = [sys.executable, "-m", "daqakd_plugins"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m",
        "daqakd_plugins"]
    t0 = time.perf_counter()
    r = subprocess.run([*base, *args], cwd=cwd, env=_env(threads), capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--teacher", type=Path, default=None, help="default: trained once into the work directory")
    p.add_argument("--per-class", type=int, default=None, help="ranking subset per class")
    p.add_argument("--candidates", default="paper")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-per-class", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="daqakd-scaling-"))
    teacher = a.teacher
    if teacher is None:
        teacher = work / "teacher.pt"
        _run(1, a.threads, ["teacher", "--data", a.data, "--out", str(teacher)], work)
    configs = [(1, 1), (1, a.threads), (2, 1)]
    rank_args = ["rank", "--data", a.data, "--teacher", str(teacher), "--candidates", a.candidates,
                 "--workers", str(a.workers)] + (["--per-class", str(a.per_class)] if a.per_class else [])
    dist_args = ["distill", "--data", a.data, "--teacher", str(teacher), "--backend", "brevitas", "--bits", "4",
                 "--epochs", str(a.epochs), "--augment", "randaugment+cutmix", "--batch-size", str(a.batch_size),
                 "--workers", str(a.workers), "--no-export", "--fresh"] + (
                     ["--train-per-class", str(a.train_per_class)] if a.train_per_class else [])
    rows: dict[str, dict[str, list[float]]] = {}
    scores: dict[str, list[float]] = {}
    for r in range(a.rounds):
        order = configs[r % 3:] + configs[: r % 3]
        for procs, threads in order:
            key = f"{procs}p x {threads}t"
            row = rows.setdefault(key, {"rank_s": [], "rank_wall_s": [], "epoch_s": [], "step_ms": [],
                                        "distill_wall_s": []})
            js = work / f"rank-{procs}-{threads}.json"
            row["rank_wall_s"].append(_run(procs, threads, [*rank_args, "--json", str(js)], work))
            rk = json.loads(js.read_text())
            row["rank_s"].append(float(rk["seconds"]))
            scores[key] = [c["score"] for c in sorted(rk["candidates"], key=lambda c: c["name"])]
            out = work / f"distill-{procs}-{threads}"
            row["distill_wall_s"].append(_run(procs, threads, [*dist_args, "--out", str(out)], work))
            rep = json.loads((out / "report.json").read_text())
            steps = -(-rep["distributed"]["rank_samples_per_epoch"][0] // a.batch_size)
            row["epoch_s"].append(rep["seconds"] / a.epochs)
            row["step_ms"].append(rep["seconds"] / (a.epochs * steps) * 1e3)
            print(f"round {r + 1} {key}: rank {row['rank_s'][-1]:.2f} s (wall {row['rank_wall_s'][-1]:.1f} s), "
                  f"distill epoch {row['epoch_s'][-1]:.2f} s, step {row['step_ms'][-1]:.1f} ms", flush=True)
    med = {k: {m: statistics.median(v) for m, v in row.items()} for k, row in rows.items()}
    ref = scores["1p x 1t"]
    equal = all(abs(x - y) <= 1e-9 * abs(x) for x, y in zip(ref, scores["2p x 1t"]))
    print(f"\n{a.data}: ranking {a.candidates} ({'all' if not a.per_class else f'{a.per_class}/class'}), "
          f"distillation W4A4 brevitas, batch {a.batch_size} per process, {a.workers} loader workers, "
          f"{os.cpu_count()} cores")
    print(f"{'config':<10} {'rank s':>8} {'rank wall':>10} {'epoch s':>8} {'step ms':>8} {'distill wall':>13}")
    for k, m in med.items():
        print(f"{k:<10} {m['rank_s']:>8.2f} {m['rank_wall_s']:>10.1f} {m['epoch_s']:>8.2f} {m['step_ms']:>8.1f} "
              f"{m['distill_wall_s']:>13.1f}")
    one1, one_t, two = med["1p x 1t"], med[f"1p x {a.threads}t"], med["2p x 1t"]
    summary = {
        "rank_2p_vs_1p1t": two["rank_s"] / one1["rank_s"], "rank_2p_vs_1pNt": two["rank_s"] / one_t["rank_s"],
        "epoch_2p_vs_1p1t": two["epoch_s"] / one1["epoch_s"], "epoch_2p_vs_1pNt": two["epoch_s"] / one_t["epoch_s"],
        "step_2p_vs_1p1t": two["step_ms"] / one1["step_ms"], "ranking_scores_equal": equal,
    }
    print("2 processes / 1 process (1 thread): ranking {rank_2p_vs_1p1t:.3f}, epoch {epoch_2p_vs_1p1t:.3f}, "
          "step {step_2p_vs_1p1t:.3f};  vs 1 process with {t} threads: ranking {rank_2p_vs_1pNt:.3f}, epoch "
          "{epoch_2p_vs_1pNt:.3f};  ranking scores equal: {ranking_scores_equal}".format(t=a.threads, **summary))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"median": med, "summary": summary, "args": {k: str(v) for k, v in vars(a).items()},
                                      "python": platform.python_version(), "cores": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
