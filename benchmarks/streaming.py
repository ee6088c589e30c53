"""The streaming data pipeline (issue 14), measured side by side in one run.

``rss``: peak memory of ``daqakd rank`` and ``daqakd distill`` on ImageFolder directories of 10,000 and
50,000 training images (the 50,000 folder repeats the CIFAR-10 subset's JPEGs as symlinks under other
names, so the files are real JPEGs and the pixels are decoded for every one). Each command runs in its
own process; a sampler reads the RSS of the process and all its DataLoader workers every 50 ms. Two
figures: the main process's peak RSS (``ru_maxrss``-like, the number the issue quoted) and the peak of
the whole process tree's summed USS (memory the tree really owns, shared pages counted once). Goal:
50k / 10k ≤ 1.1 for both commands.

``rank``: ``rank_augmentations`` over the paper's 16 torchvision candidates with ``--workers 0`` and
``--workers 2``, interleaved over ``--rounds`` rounds (median), and the ranking time against 16 passes
of the ``none`` candidate (a teacher-only forward pass through the same pipeline) — the issue's
"ratio of ranking time to a teacher-only forward pass". Scores are checked equal across worker counts.

    python benchmarks/streaming.py rss --cifar ../shared/data/cifar10-jpeg-subset.tar --work /tmp/stream
    python benchmarks/streaming.py rank --data digits --rounds 3
    python benchmarks/streaming.py rank --data /tmp/stream/cifar10k --per-class 100 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import torch


# --------------------------------------------------------------------------------------------------
# folders
# --------------------------------------------------------------------------------------------------
def extract(tar: Path, work: Path) -> Path:
    """The CIFAR-10 subset (train/<class>/*.jpg: 10,000; test: 2,000) under ``work/cifar10k``."""
    root = work / "cifar10k"
    if not (root / "train").is_dir():
        work.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as t:
            t.extractall(work / "_x", filter="data")
        found = next(p for p in (work / "_x").rglob("train") if p.is_dir())
        root.mkdir(parents=True, exist_ok=True)
        found.rename(root / "train")
        (found.parent / "test").rename(root / "test")
    return root


def replicated(src: Path, work: Path, times: int) -> Path:
    """A folder whose train split holds every training JPEG of ``src`` ``times`` times (symlinks under
    distinct names); the test split is ``src``'s."""
    root = work / f"cifar{10 * times}k"
    if (root / "train").is_dir():
        return root
    for cls in sorted(p.name for p in (src / "train").iterdir()):
        d = root / "train" / cls
        d.mkdir(parents=True, exist_ok=True)
        for f in sorted((src / "train" / cls).iterdir()):
            for k in range(times):
                (d / f"{f.stem}_{k}{f.suffix}").symlink_to(f.resolve())
    (root / "test").symlink_to((src / "test").resolve())
    return root


# --------------------------------------------------------------------------------------------------
# memory of a command and its workers
# --------------------------------------------------------------------------------------------------
def run_measured(cmd: list[str], cwd: Path) -> dict[str, Any]:
    import psutil

    env = {**os.environ, "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"main_rss": 0, "tree_uss": 0, "tree_rss": 0, "procs": 0}
    done = threading.Event()

    def sample() -> None:
        try:
            p = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                procs = [p, *p.children(recursive=True)]
                main = p.memory_info().rss
                uss = rss = 0
                for q in procs:
                    try:
                        full = q.memory_full_info()
                        uss += full.uss
                        rss += full.rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
                peak["main_rss"] = max(peak["main_rss"], main)
                peak["tree_uss"] = max(peak["tree_uss"], uss)
                peak["tree_rss"] = max(peak["tree_rss"], rss)
                peak["procs"] = max(peak["procs"], len(procs))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {**{k: v for k, v in peak.items()}, "seconds": round(time.perf_counter() - t0, 1)}


def cmd_rss(args: argparse.Namespace) -> dict[str, Any]:
    work = args.work.resolve()
    src = extract(args.cifar.resolve(), work)
    big = replicated(src, work, 5)
    daqakd = [sys.executable, "-m", "daqakd_plugins"]
    teacher = work / "teacher-cifar10k.pt"
    if not teacher.exists():
        subprocess.run([*daqakd, "teacher", "--data", str(src), "--epochs", str(args.teacher_epochs), "--out",
                        str(teacher), "--workers", str(args.workers)], check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    rows = []
    commands = ("rank", "distill") if args.only is None else (args.only,)
    for what in commands:
        for name, root in (("10k", src), ("50k", big)):
            if what == "rank":
                cmd = [*daqakd, "rank", "--data", str(root), "--teacher", str(teacher), "--candidates", "none",
                       "--workers", str(args.workers)]
            else:
                out = work / f"distill-{name}"
                cmd = [*daqakd, "distill", "--data", str(root), "--teacher", str(teacher), "--backend", "brevitas",
                       "--bits", "4", "--epochs", "1", "--augment", "randaugment+cutmix", "--no-export", "--fresh",
                       "--workers", str(args.workers), "--out", str(out)]
            m = run_measured(cmd, work)
            rows.append({"command": what, "images": name, **m})
            print(f"{what:8s} {name:4s} main RSS {m['main_rss'] / 2**30:.3f} GiB | tree USS "
                  f"{m['tree_uss'] / 2**30:.3f} GiB | tree RSS {m['tree_rss'] / 2**30:.3f} GiB | {m['procs']} procs | "
                  f"{m['seconds']} s", flush=True)
    ratios = {}
    for what in commands:
        a = next(r for r in rows if r["command"] == what and r["images"] == "10k")
        b = next(r for r in rows if r["command"] == what and r["images"] == "50k")
        ratios[what] = {k: b[k] / a[k] for k in ("main_rss", "tree_uss", "tree_rss")}
        print(f"{what}: 50k/10k  main RSS {ratios[what]['main_rss']:.3f}  tree USS {ratios[what]['tree_uss']:.3f}  "
              f"tree RSS {ratios[what]['tree_rss']:.3f}  (goal ≤ 1.1)")
    return {"rows": rows, "ratios": ratios}


# --------------------------------------------------------------------------------------------------
# ranking time vs workers and vs a teacher-only pass
# --------------------------------------------------------------------------------------------------
def cmd_rank(args: argparse.Namespace) -> dict[str, Any]:
    from daqakd_plugins.data import load_data
    from daqakd_plugins.ranking import rank_augmentations
    from daqakd_plugins.train import get_or_train_teacher

    bundle = load_data(args.data)
    path = args.teacher or Path("runs") / f"teacher-{bundle.name}.pt"
    teacher, _ = get_or_train_teacher(bundle, path, progress=False)
    teacher.eval().requires_grad_(False)
    kw = {"per_class": args.per_class, "batch_size": args.batch_size, "progress": False, "seed": 0}
    times: dict[str, list[float]] = {"paper_w0": [], "paper_w2": [], "none_w0": [], "none_w2": []}
    scores: dict[str, list[list[float]]] = {"w0": [], "w2": []}
    from daqakd_plugins.augment import PAPER_CANDIDATES

    n_cands = len(PAPER_CANDIDATES)
    for r in range(args.rounds):
        order = [("paper", 0), ("paper", 2), ("none", 0), ("none", 2)]
        order = order[r % 4:] + order[: r % 4]
        for cands, w in order:
            t0 = time.perf_counter()
            res = rank_augmentations(teacher, bundle, cands, workers=w, **kw)
            times[f"{cands}_w{w}"].append(time.perf_counter() - t0)
            if cands == "paper":
                scores[f"w{w}"].append([e.score for e in sorted(res.entries, key=lambda e: e.name)])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "data": bundle.name, "samples": res.num_samples, "candidates": n_cands, "median_seconds": med,
        "workers2_vs_workers0": med["paper_w2"] / med["paper_w0"],
        "rank_vs_teacher_only_w0": med["paper_w0"] / (n_cands * med["none_w0"]),
        "rank_vs_teacher_only_w2": med["paper_w2"] / (n_cands * med["none_w2"]),
        "scores_equal_across_workers": scores["w0"] == scores["w2"],
        "cores": os.cpu_count(), "threads": torch.get_num_threads(),
    }
    print(f"{bundle.name}: {res.num_samples} samples, 16 candidates: workers 0 {med['paper_w0']:.2f} s, workers 2 "
          f"{med['paper_w2']:.2f} s (ratio {out['workers2_vs_workers0']:.3f}); 'none' pass {med['none_w0']:.3f} s / "
          f"{med['none_w2']:.3f} s; ranking / (16 x teacher-only pass) = {out['rank_vs_teacher_only_w0']:.2f} (w0), "
          f"{out['rank_vs_teacher_only_w2']:.2f} (w2); scores equal across workers: {out['scores_equal_across_workers']}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("rss")
    a.add_argument("--cifar", type=Path, default=Path("../shared/data/cifar10-jpeg-subset.tar"))
    a.add_argument("--work", type=Path, default=Path("/tmp/daqakd-stream"))
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--teacher-epochs", type=int, default=3)
    a.add_argument("--only", choices=["rank", "distill"], default=None, help="measure one command only")
    b = sub.add_parser("rank")
    b.add_argument("--data", default="digits")
    b.add_argument("--teacher", type=Path, default=None)
    b.add_argument("--per-class", type=int, default=None)
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--threads", type=int, default=1)
    for q in (a, b):
        q.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.what == "rank":
        torch.set_num_threads(args.threads)
    res = cmd_rss(args) if args.what == "rss" else cmd_rank(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"result": res, "args": {k: str(v) for k, v in vars(args).items()},
                                         "torch": torch.__version__, "python": platform.python_version()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
