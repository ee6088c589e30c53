"""The paper's recipe on one GPU (issue 22): the crossover at schedule lengths one CPU core cannot afford.

The students are ``paper_recipe.py crossover`` students (the same code, ``--device cuda``), run as one
process per student on one GPU, each process single-threaded, so a dozen train at once. Two steps:

    # here (no GPU needed): the 52,000 JPEGs packed into one file without tar's per-file padding (48 MB),
    # with the checksum of the pixels they decode to, so the GPU machine is seen to train on the same images
    python benchmarks/paper_recipe_device.py pack --data /tmp/cifar50k --pack .devdata/cifar50k.npz

    # on the GPU machine: unpack, decode, check the checksum, then
    #   phase A  --first   (default W2A4 100x50, 4 candidates x 3 seeds: the CPU table's missing cell)
    #   phase B  --second  (default W4A4 100x150) and --third (W4A4 on all 50,000 images, 5000xE), E chosen
    #            from phase A's measured speed so that everything ends inside --budget seconds
    python benchmarks/paper_recipe_device.py run --pack .devdata/cifar50k.npz --out "$OUT/results.jsonl" --budget 480

Rows carry ``device`` (and the students' batch size); ``daqakd report`` and docs/results.md read them like
the CPU rows. A phase the budget cannot fit is skipped and said so in the ``device_run`` row: nothing half
done is written (a student that did not finish leaves no row).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def pixels_sha256(cache: Path) -> str:
    """The checksum of the decoded uint8 pixels and labels, in a fixed key order."""
    z = np.load(cache)
    h = hashlib.sha256()
    for k in ("train_x", "train_y", "test_x", "test_y"):
        h.update(np.ascontiguousarray(z[k]).tobytes())
    return h.hexdigest()


def pack(a: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE))
    from paper_recipe import load_cifar

    files = sorted(p for p in a.data.rglob("*") if p.is_file())
    blobs = [p.read_bytes() for p in files]
    offsets = np.cumsum([0, *(len(b) for b in blobs)]).astype(np.int64)
    load_cifar(a.data, a.cache)  # the local decode, whose checksum the GPU machine must match
    a.pack.parent.mkdir(parents=True, exist_ok=True)
    names = "\n".join(str(p.relative_to(a.data)) for p in files).encode()
    np.savez(a.pack, paths=np.frombuffer(names, dtype=np.uint8),
             blob=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
             sha256=np.array(pixels_sha256(a.cache)))
    print(f"packed {len(files)} files ({offsets[-1] / 1e6:.1f} MB) into {a.pack}", flush=True)
    return 0


def unpack(pack_path: Path, root: Path) -> str:
    z = np.load(pack_path)
    blob, offsets = z["blob"], z["offsets"]
    for i, rel in enumerate(z["paths"].tobytes().decode().split("\n")):
        p = root / str(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blob[offsets[i]:offsets[i + 1]].tobytes())
    return str(z["sha256"])


def launch(a: argparse.Namespace, root: Path, cache: Path, steps: list[list[str]], deadline: float) -> list[int]:
    """``a.procs`` processes, each running the ``steps`` (paper_recipe.py argument lists) one after the other
    on its shard; killed at ``deadline``. Returns the exit codes (None → killed: -9)."""
    procs = []
    for i in range(a.procs):
        cmds = [" ".join([sys.executable, str(HERE / "paper_recipe.py"), *s, "--data", str(root), "--cache", str(cache),
                          "--out", str(a.out), "--device", a.device, "--threads", "1", "--shard", f"{i}/{a.procs}"])
                for s in steps]
        log = open(a.out.parent / f"proc{i}.log", "a")  # noqa: SIM115 (closed with the process)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        # one step after another, the next also when one failed; a session of its own, so that a kill at the
        # deadline reaches the python processes, not only their shell
        procs.append((subprocess.Popen(["bash", "-c", " ; ".join(cmds)], stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True), log))
    codes = []
    for p, log in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            codes.append(-9)
        log.close()
    return codes


def rows(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def student_args(cfg: str, regime: str, a: argparse.Namespace, lr: str) -> list[str]:
    more = ["--candidates", a.candidates] if a.candidates else []
    return ["crossover", "--configs", cfg, "--regimes", regime, "--seeds", str(a.seeds), "--lr", lr,
            "--student-batch-size", str(a.batch), *more]


def run(a: argparse.Namespace) -> int:
    t0 = time.time()
    deadline = t0 + a.budget
    work = Path(a.work)
    root, cache = work / "cifar50k", work / "cifar-uint8.npz"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    want = unpack(a.pack, root)
    sys.path.insert(0, str(HERE))
    from paper_recipe import load_cifar

    load_cifar(root, cache)
    got = pixels_sha256(cache)
    meta: dict[str, Any] = {"kind": "device_run", "key": f"device_run/{int(t0)}", "pixels_match": got == want,
                            "decode_seconds": time.time() - t0, "procs": a.procs, "budget": a.budget}
    print(f"decoded in {meta['decode_seconds']:.0f}s; pixels {'match' if got == want else 'DIFFER from'} the CPU decode",
          flush=True)
    import torch

    meta.update(torch=torch.__version__, cpus=os.cpu_count(),
                gpu=torch.cuda.get_device_name(0) if a.device.startswith("cuda") else a.device)
    shutil.copy(REPO / "docs/evidence/paper-recipe/teacher.pt", a.out.parent / "teacher.pt")
    if a.resume_from:  # the rows of an earlier run: its students are skipped (more seeds of the same cell)
        shutil.copy(a.resume_from, a.out)
    cfg_a, reg_a, lr_a = a.first.split(":")
    ta = time.time()
    meta["codes_a"] = launch(a, root, cache, [student_args(cfg_a, reg_a, a, lr_a)], deadline - a.margin)
    meta["seconds_a"] = time.time() - ta
    done_a = [r for r in rows(a.out) if r.get("regime") == reg_a and r.get("config") == cfg_a]
    # each student's own speed while a.procs trained at once: images seen per second of training
    rate = float(np.median([r["images_seen"] / r["seconds"] for r in done_a])) if done_a else 0.0
    overhead = float(np.median([r["wall_seconds"] - r["seconds"] for r in done_a])) if done_a else 60.0
    jobs_per_proc = math.ceil(len(done_a) / a.procs) if done_a else 1
    left = deadline - a.margin - time.time()
    cfg_b, reg_b, lr_b = a.second.split(":")
    cfg_c, per_class_c, lr_c = a.third.split(":")
    pc_b, ep_b = (int(v) for v in reg_b.split("x"))
    cost_b = jobs_per_proc * (pc_b * 10 * ep_b / max(rate, 1e-9) + overhead)
    epochs_c = int((left - cost_b - jobs_per_proc * overhead) * rate / (int(per_class_c) * 10) / jobs_per_proc) if rate else 0
    epochs_c = max(0, min(epochs_c, a.max_epochs))
    meta.update(rate_a=rate, overhead_a=overhead, seconds_left_b=left, epochs_c=epochs_c)
    steps = []
    if cost_b < left and not a.first_only:
        steps.append(student_args(cfg_b, reg_b, a, lr_b))
    if epochs_c >= 2 and not a.first_only:
        steps.append(student_args(cfg_c, f"{per_class_c}x{epochs_c}", a, lr_c))
    meta["steps_b"] = [" ".join(s) for s in steps]
    print(f"phase A: {len(done_a)} students in {meta['seconds_a']:.0f}s, {rate:.0f} images/s each; "
          f"phase B: {meta['steps_b']} in the {left:.0f}s left", flush=True)
    if steps:
        tb = time.time()
        meta["codes_b"] = launch(a, root, cache, steps, deadline - a.margin / 3)
        meta["seconds_b"] = time.time() - tb
    meta["rows"] = len(rows(a.out))
    with open(a.out, "a") as f:
        f.write(json.dumps(meta) + "\n")
    students = a.out.parent / "students"
    if students.exists():  # one file back instead of one per student
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(students, arcname="students")
        (a.out.parent / "students.tar").write_bytes(buf.getvalue())
        shutil.rmtree(students)
    logs = sorted(a.out.parent.glob("proc*.log"))
    (a.out.parent / "procs.log").write_text("".join(f"==> {p.name}\n{p.read_text()[-4000:]}\n" for p in logs))
    for p in logs:
        p.unlink()
    shutil.rmtree(a.out.parent / "ckpt", ignore_errors=True)
    (a.out.parent / "teacher.pt").unlink()
    print(json.dumps(meta), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack")
    pk.add_argument("--data", type=Path, required=True)
    pk.add_argument("--pack", type=Path, required=True)
    pk.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "daqakd" / "paper-recipe-cifar-uint8.npz")
    r = sub.add_parser("run")
    r.add_argument("--pack", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--work", default="/tmp/daqakd-device")
    r.add_argument("--budget", type=float, default=480, help="seconds for everything, decoding included")
    r.add_argument("--margin", type=float, default=45, help="seconds kept for the last students' evaluation")
    r.add_argument("--procs", type=int, default=12)
    r.add_argument("--device", default="cuda", help="cpu: a dry run of the whole script on a machine without one")
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--batch", type=int, default=64)
    r.add_argument("--candidates", default=None, help="comma-separated (default: the crossover's four)")
    r.add_argument("--resume-from", type=Path, default=None, help="an earlier run's results.jsonl: its students are skipped")
    r.add_argument("--first-only", action="store_true", help="phase A only")
    r.add_argument("--max-epochs", type=int, default=200)
    r.add_argument("--first", default="W2A4:100x50:3e-4", help="config:regime:lr of phase A (all candidates)")
    r.add_argument("--second", default="W4A4:100x150:1e-4")
    r.add_argument("--third", default="W4A4:5000:1e-4", help="config:images per class:lr; epochs from the speed")
    a = p.parse_args(argv)
    return pack(a) if a.cmd == "pack" else run(a)


if __name__ == "__main__":
    sys.exit(main())
