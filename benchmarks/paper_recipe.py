"""The paper's recipe on CIFAR-10 (issue 22): does the ranked augmentation beat no augmentation, and which
teacher-only score finds it?

Every candidate — ``none`` included — runs after the base transform of the authors' code (random crop with
4-pixel zero padding + horizontal flip, ``--base-augment crop-flip``); students are CIFAR ResNet-20s
initialised from the full-precision teacher and distilled with the paper's loss (γ = 1 CE + α = 2 KL).

Long-running compute in resumable phases; each phase resumes with the same command (finished units are
lines of the JSONL ``--out``; an interrupted unit restarts from its last per-epoch checkpoint):

    mkdir -p /tmp/cifar50k && tar -xf ../shared/data/cifar10-jpeg-train50k.tar -C /tmp/cifar50k
    python benchmarks/paper_recipe.py all       --data /tmp/cifar50k --out runs/paper/results.jsonl  # or one by one:
    python benchmarks/paper_recipe.py teacher   --data /tmp/cifar50k --out runs/paper/results.jsonl
    python benchmarks/paper_recipe.py rank      --data /tmp/cifar50k --out runs/paper/results.jsonl
    python benchmarks/paper_recipe.py crossover --data /tmp/cifar50k --out runs/paper/results.jsonl
    python benchmarks/paper_recipe.py ranking   --data /tmp/cifar50k --out runs/paper/results.jsonl
    python benchmarks/paper_recipe.py cost      --data /tmp/cifar50k --out runs/paper/results.jsonl
    python benchmarks/paper_recipe.py search    --data /tmp/cifar50k --out runs/paper/results.jsonl
    daqakd report runs/paper/results.jsonl

Phases:
  teacher    CIFAR ResNet-20 on all 50,000 images with the base transform (SGD, Nesterov momentum 0.9, lr
             0.1, weight decay 5e-4, batch 128, one warm-up epoch then cosine); a checkpoint per epoch.
  rank       every candidate scored by every metric (``cmi`` and its components D, I, CE, CE − I;
             ``tstddev``) over ``--rank-passes`` stratified samples, each candidate after the base.
  crossover  ``none`` against strong candidates at W4A4 (``--configs``) over ``--regimes`` (images per class ×
             epochs; default 100x5, 100x15, 100x50: the same 1,000 images seen 5 to 50 times, 10× in images
             seen), ``--seeds`` seeds: where does augmentation start to help? A student that sees its images
             more often overfits more, which is where augmentation can pay off.
  ranking    8 candidates × 5 seeds at W4A4: does a score find the best? At 100x5, the regime a single core
             affords for 40 students (~2 h; 100x50 would take ~12 h), reusing the crossover's 100x5 students.
  cost       ranking all candidates vs one student training epoch, side by side in one process.
  search     issue 24: 100 policies of the ``taw2`` space scored by each of ``teacher-ce`` and ``cmi`` on the
             ranking sample (resumable through runs/paper/search/*.jsonl); each metric's top 5 combined, trained
             as W4A4 students at the ranking test's regime and seeds, next to its ``none`` and best fixed candidate.

Students are trained by ``run_distill`` — the code behind ``daqakd distill`` — so the evidence measures the
product. The backend is Brevitas (learned scales, the default backend and the earlier evidence's).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_figure1 import Results, ranking_rows  # noqa: E402  (one append-only JSONL writer for every evidence script)

CROSSOVER_CANDIDATES = ("none", "autoaugment-cifar10", "trivialaugmentwide", "none+cutmix")
RANKING_CANDIDATES = (
    "none", "autoaugment-cifar10", "autoaugment-imagenet", "randaugment", "trivialaugmentwide", "augmix",
    "randomerasing", "none+cutmix", "autoaugment-cifar10+cutmix", "trivialaugmentwide+cutmix",
)
#: the ranking test's students: the crossover's four and four more spanning the scores' range
STUDENT_RANKING_CANDIDATES = (
    "none", "autoaugment-cifar10", "trivialaugmentwide", "none+cutmix", "randaugment", "augmix", "randomerasing",
    "trivialaugmentwide+cutmix",
)


# ------------------------------------------------------------------------------------------------ data
def load_cifar(root: Path, cache: Path) -> dict[str, torch.Tensor]:
    """The ImageFolder read once through daqakd's loader, kept as uint8 in ``cache`` (150 MB for 52k images)."""
    if cache.exists():
        z = np.load(cache)
        return {k: torch.from_numpy(z[k]) for k in z.files}
    from daqakd_plugins.data import load_data

    t0 = time.perf_counter()
    bundle = load_data(str(root)).to_memory(progress=True)
    out = {
        "train_x": bundle.train_x.mul(255).round().to(torch.uint8), "train_y": bundle.train_y,
        "test_x": bundle.test_x.mul(255).round().to(torch.uint8), "test_y": bundle.test_y,
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: v.numpy() for k, v in out.items()})
    tmp.replace(cache)
    print(f"decoded {len(out['train_y'])} + {len(out['test_y'])} images in {time.perf_counter() - t0:.0f}s "
          f"(classes {bundle.classes})", flush=True)
    return out


def batch_seed(seed: int, epoch: int, step: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + step) % (2**63)


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 500) -> float:
    from daqakd_plugins.models import as_tensor

    model.eval()
    dev = next(model.parameters()).device  # the batches go where the model is (--device)
    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            z = as_tensor(model(x[i:i + bs].to(dev).float().div(255))).argmax(1).cpu()
            hits += int((z == y[i:i + bs]).sum())
    return hits / len(x)


# --------------------------------------------------------------------------------------------- teacher
def phase_teacher(a: argparse.Namespace, data: dict[str, torch.Tensor], res: Results) -> None:
    from daqakd_plugins.augment import resolve_base
    from daqakd_plugins.models import arch_spec, build_model, save_model

    if "teacher" in res.done:
        return
    out_dir = a.out.parent
    ck_path = out_dir / "teacher.ckpt"
    arch = arch_spec(a.arch, num_classes=10, in_channels=3)
    model = build_model(arch).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=a.teacher_lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    n = len(data["train_y"])
    steps = math.ceil(n / a.batch_size)
    total = a.teacher_epochs * steps

    def lr_at(i: int) -> float:  # one linear warm-up epoch, then cosine to 0
        return (i + 1) / steps if i < steps else 0.5 * (1 + math.cos(math.pi * (i - steps) / max(1, total - steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    start, seconds, history = 0, 0.0, []
    if ck_path.exists():
        ck = torch.load(ck_path, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        start, seconds, history = int(ck["epoch"]), float(ck["seconds"]), list(ck["history"])
        print(f"teacher: resumed after epoch {start}", flush=True)
    base = resolve_base(a.base_augment, (3, 32, 32))
    g = torch.Generator().manual_seed(0)
    for epoch in range(start, a.teacher_epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=g.manual_seed(batch_seed(0, epoch, 0)))
        tot = 0.0
        for s in range(steps):
            idx = perm[s * a.batch_size:(s + 1) * a.batch_size]
            xb = data["train_x"][idx].float().div_(255)
            torch.default_generator.manual_seed(batch_seed(0, epoch, s + 1))
            if base is not None:
                xb, _ = base(xb, torch.empty(0))
            xb = xb.contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(xb), data["train_y"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        acc = evaluate(model, data["test_x"], data["test_y"])
        seconds += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": tot / n, "test_accuracy": acc})
        print(f"teacher epoch {epoch + 1}/{a.teacher_epochs}: loss {tot / n:.4f} test {acc:.4f} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
        tmp = ck_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch + 1, "seconds": seconds, "history": history}, tmp)
        tmp.replace(ck_path)
    model = model.to(memory_format=torch.contiguous_format)
    acc = evaluate(model, data["test_x"], data["test_y"])
    meta = {"test_accuracy": acc, "epochs": a.teacher_epochs, "seconds": seconds, "base_augment": a.base_augment,
            "train_images": n, "history": history}
    save_model(out_dir / "teacher.pt", model, arch, meta)
    res.add({"kind": "teacher", "key": "teacher", "arch": a.arch, "accuracy": acc, "epochs": a.teacher_epochs,
             "augment": a.base_augment, "train_images": n, "seconds": seconds, "threads": torch.get_num_threads()})
    print(f"teacher: test accuracy {acc:.4f} ({seconds:.0f}s)", flush=True)


# ------------------------------------------------------------------------------------------------- rank
def load_teacher(out_dir: Path) -> torch.nn.Module:
    from daqakd_plugins.models import load_model

    path = out_dir / "teacher.pt"
    if not path.exists():
        raise SystemExit(f"no teacher at {path}: run the 'teacher' phase first")
    teacher, _ = load_model(path)
    for q in teacher.parameters():
        q.requires_grad_(False)
    return teacher.eval()


def phase_rank(a: argparse.Namespace, data: dict[str, torch.Tensor], res: Results, cands: list[str]) -> None:
    """Every candidate after the base, scored by ``cmi`` (components D, I, CE, CE − I) and ``tstddev``,
    over ``--rank-passes`` class-stratified samples of ``--rank-per-class`` images per class."""
    from daqakd_plugins.data import stratified_subset

    teacher = load_teacher(a.out.parent)
    for ps in range(a.rank_passes):
        todo = [c for c in cands if f"rank/{c}/{ps}" not in res.done]
        if not todo:
            continue
        idx = stratified_subset(data["train_y"], a.rank_per_class, seed=1000 + ps)
        xy = (data["train_x"][idx].float().div(255), data["train_y"][idx])
        bs = max(1, min(64, len(idx) // 10))  # tstddev groups 5 batches and needs two groups
        t0 = time.perf_counter()
        rows = ranking_rows(teacher, xy, ps, candidates=todo, seed=ps, batch_size=bs, progress=False, workers=0,
                            base_augment=a.base_augment)
        for row in rows:
            n, secs = row.pop("n"), row.pop("seconds")
            res.add({**row, "n": n, "base_augment": a.base_augment, "seconds": secs})  # the committed rows' key order
        print(f"ranking pass {ps} ({time.perf_counter() - t0:.0f}s): " + ", ".join(r["candidate"] for r in rows), flush=True)


# ---------------------------------------------------------------------------------------------- students
def parse_regimes(text: str) -> list[tuple[int, int]]:
    """``"100x8,100x25,100x80"`` → [(images per class, epochs), ...]."""
    out = []
    for part in text.split(","):
        per_class, epochs = part.strip().lower().split("x")
        out.append((int(per_class), int(epochs)))
    return out


def train_student(a: argparse.Namespace, data: dict[str, torch.Tensor], teacher: torch.nn.Module, cand: str,
                  wb: int, ab: int, seed: int, per_class: int, epochs: int, ck_path: Path,
                  weights_path: Path) -> dict[str, Any]:
    """One DA-QAKD student: the teacher quantized by the backend, calibrated on clean images, distilled with
    the paper's loss on ``base ∘ cand`` (Adam, lr ``--lr``, cosine over all steps, batch ``--student-batch-size``);
    test accuracy after the last epoch. A checkpoint after every epoch; an interrupted run resumes there."""
    import copy

    from daqakd_plugins import backends
    from daqakd_plugins.augment import resolve_augmentation
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.data import stratified_subset
    from daqakd_plugins.distill import Distiller

    idx = stratified_subset(data["train_y"], per_class, seed=7)  # the same images for every candidate and seed
    x_all, y_all = data["train_x"][idx], data["train_y"][idx]
    n = len(idx)
    steps = math.ceil(n / a.student_batch_size)
    cfg = QuantConfig(weight_bits=wb, act_bits=ab, first_last=None)  # uniform, as the evidence was measured
    calib = [x_all[i:i + 128].float().div(255) for i in range(0, min(n, 1024), 128)]
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    setup = {"candidate": cand, "weight_bits": wb, "act_bits": ab, "seed": seed, "per_class": per_class,
             "epochs": epochs, "lr": a.lr, "student_batch_size": a.student_batch_size, "backend": a.backend,
             "base_augment": a.base_augment}
    if ck_path.exists():
        ck = torch.load(ck_path, weights_only=True, map_location="cpu")
        check_setup(ck_path, ck.get("setup"), setup)
        student = backends.restore_student(copy.deepcopy(teacher), a.backend, cfg, ck["student"],
                                           example_input=calib[0][:2])
        before, start, seconds, resumed = float(ck["before"]), int(ck["epoch"]), float(ck["seconds"]), True
    else:
        student = backends.quantize(copy.deepcopy(teacher), a.backend, cfg, example_input=calib[0][:2], calib_data=calib)
        backends.calibrate(student, a.backend, calib)
        before, start, seconds, resumed = evaluate(student.to(a.device), data["test_x"], data["test_y"]), 0, 0.0, False
        ck = None
    for q in student.parameters():
        q.requires_grad_(True)
    # on --device cuda the Distiller moves teacher and student there and augments each batch there
    kd = Distiller(teacher, student, loss="paper", augment=resolve_augmentation(cand), base_augment=a.base_augment,
                   device=a.device)
    opt = torch.optim.Adam([*student.parameters(), *kd.parameters()], lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    if ck is not None:
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        kd.load_state_dict(ck["kd"])
    g = torch.Generator()
    for epoch in range(start, epochs):
        e0 = time.perf_counter()
        student.train()
        perm = torch.randperm(n, generator=g.manual_seed(batch_seed(seed, epoch, 0)))
        for s in range(steps):
            b = perm[s * a.student_batch_size:(s + 1) * a.student_batch_size]
            loss = kd.loss(x_all[b].float().div_(255), y_all[b], seed=batch_seed(seed, epoch, s + 1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        seconds += time.perf_counter() - e0
        tmp = ck_path.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"student": backends.save_student(student, a.backend, cfg), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "kd": kd.state_dict(), "epoch": epoch + 1, "before": before,
                    "seconds": seconds, "setup": setup}, tmp)
        tmp.replace(ck_path)
        if a.stop_after_epoch is not None and epoch + 1 == a.stop_after_epoch:
            print(f"stopped after epoch {epoch + 1} (--stop-after-epoch); the same command without it resumes", flush=True)
            raise SystemExit(3)
    kd.remove_hooks()
    acc = evaluate(student, data["test_x"], data["test_y"])
    train_acc = evaluate(student, x_all[:2000], y_all[:2000])
    student.cpu()
    teacher.cpu()  # the next student is quantized from it on the CPU
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    packed = compact_student(student)
    save_compact(packed, weights_path)  # integer weights, xz-compressed: re-scored later on other images
    from daqakd_plugins.models import as_tensor

    probe = data["test_x"][:256].float().div(255)
    with torch.no_grad():
        again = restore_compact(teacher, packed, a.backend, wb, ab).eval()
        diff = float((as_tensor(student.eval()(probe)) - as_tensor(again(probe))).abs().max())
    ck_path.unlink(missing_ok=True)
    return {"accuracy": acc, "train_accuracy": train_acc, "ptq_accuracy": before, "seconds": seconds,
            "wall_seconds": time.perf_counter() - t0, "resumed": resumed, "compact_max_logit_diff": diff}


def check_setup(path: Path, saved: dict[str, Any] | None, now: dict[str, Any]) -> None:
    """A student checkpoint resumes only the run that wrote it: a checkpoint of another setup (say, another
    ``--lr``) would continue with its own optimizer state and schedule. (It happened once: a unit killed at lr
    1e-3 was resumed at lr 1e-4 and scored 18.9 % where a fresh run scores 78.9 %.)"""
    if saved is None:
        raise SystemExit(f"{path} has no record of the setup it was trained with (written before setups were "
                         f"recorded), so it cannot be resumed safely: delete it to train this student again.")
    diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if diff:
        said = ", ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in diff.items())
        raise SystemExit(f"{path} was written by another setup ({said}): delete it to train this student again "
                         f"with this setup, or run with the setup it was written with.")


def compact_student(student: torch.nn.Module) -> dict[str, Any]:
    """The student's state with each quantized weight as its integer codes (int8) and per-channel scale:
    what its forward uses, ~8x smaller and far more compressible than the float latent weights. Brevitas
    derives a weight's scale from its largest magnitude per channel, so loading ``codes × scale`` as the
    weight gives back the same scale and the same codes (checked by :func:`restore_compact`'s caller)."""
    codes: dict[str, torch.Tensor] = {}
    scales: dict[str, torch.Tensor] = {}
    for name, m in student.named_modules():
        if hasattr(m, "quant_weight") and isinstance(getattr(m, "weight", None), torch.Tensor):
            qw = m.quant_weight()
            codes[f"{name}.weight"] = qw.int().to(torch.int8)
            scales[f"{name}.weight"] = qw.scale.detach().float()
    state = {k: v for k, v in student.state_dict().items() if k not in codes}
    return {"format": 1, "state": state, "codes": codes, "scales": scales}


def save_compact(packed: dict[str, Any], path: Path) -> None:
    """``packed`` as an xz-compressed torch file (W2 codes take ~1.5 bits a weight): ~50-100 kB a student."""
    import io
    import lzma

    buf = io.BytesIO()
    torch.save(packed, buf)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(lzma.compress(buf.getvalue(), preset=9))
    tmp.replace(path)


def load_compact(path: Path) -> dict[str, Any]:
    import io
    import lzma

    return torch.load(io.BytesIO(lzma.decompress(path.read_bytes())), weights_only=True)


def restore_compact(teacher: torch.nn.Module, packed: dict[str, Any], backend: str, wb: int, ab: int) -> torch.nn.Module:
    """A student rebuilt from :func:`compact_student`'s record through the backend's restore."""
    import copy

    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig

    state = dict(packed["state"])
    for k, c in packed["codes"].items():
        state[k] = c.float() * packed["scales"][k]
    cfg = QuantConfig(weight_bits=wb, act_bits=ab, first_last=None)  # uniform, as the evidence was measured
    return backends.restore_student(copy.deepcopy(teacher), backend, cfg, {"state_dict": state},
                                    example_input=torch.rand(2, 3, 32, 32))


def run_students(a: argparse.Namespace, data: dict[str, torch.Tensor], res: Results, phase: str,
                 cands: list[str], regimes: list[tuple[int, int]], seeds: int, kind: str = "student") -> None:
    """Regime-major, then seed-major order: a partial phase has every candidate of a regime at some seeds.
    ``kind``: the rows' kind (``search_student`` keeps the searched policies out of the ranking test's table)."""
    teacher = load_teacher(a.out.parent)
    configs = [(c.strip().upper(), *(int(v) for v in c.strip().upper().lstrip("W").split("A"))) for c in a.configs.split(",")]
    shard, nshards = (int(v) for v in a.shard.split("/"))
    job = -1
    for per_class, epochs in regimes:
        for seed in range(seeds):
            for cfg, wb, ab in configs:
                for cand in cands:
                    job += 1
                    regime = f"{per_class}x{epochs}"
                    key = f"{kind}/{regime}/{cfg}/{cand}/{seed}"
                    if key in res.done or job % nshards != shard:
                        continue
                    slug = key.replace("/", "_").replace("+", "-").replace(":", "-")  # no ":" (Windows checkouts)
                    r = train_student(a, data, teacher, cand, wb, ab, seed, per_class, epochs,
                                      a.out.parent / "ckpt" / f"{slug}.pt", a.out.parent / "students" / f"{slug}.pt.xz")
                    row = {"kind": kind, "key": key, "phase": phase, "candidate": cand, "seed": seed,
                           "config": cfg, "regime": regime, "per_class": per_class, "epochs": epochs,
                           "train_samples": per_class * 10, "images_seen": per_class * 10 * epochs,
                           "backend": a.backend, "base_augment": a.base_augment, "lr": a.lr, **r}
                    if a.device != "cpu":  # rows without it ran on one CPU core
                        row.update(device=a.device, student_batch_size=a.student_batch_size)
                    res.add(row)
                    print(f"{key}: acc {r['accuracy']:.4f} (train {r['train_accuracy']:.4f}, PTQ {r['ptq_accuracy']:.4f}) "
                          f"{r['seconds']:.0f}s", flush=True)


def phase_search(a: argparse.Namespace, data: dict[str, torch.Tensor], res: Results) -> None:
    """Issue 24: search ``--search-n`` policies of ``--space`` with the teacher on the ranking sample (``--rank-per-class``
    images per class, the ranking phase's pass-0 images), once per metric of ``--search-metrics``; then the top
    ``--top-k`` combined, trained as students at the ranking test's regime, bit widths and seeds (default W4A4,
    100x5, 5 seeds), so each stands next to the ranking test's ``none`` and best fixed candidate on the same seeds."""
    from daqakd_plugins.data import stratified_subset
    from daqakd_plugins.ranking import search_augmentations

    teacher = load_teacher(a.out.parent)
    idx = stratified_subset(data["train_y"], a.rank_per_class, seed=1000)
    xy = (data["train_x"][idx].float().div(255), data["train_y"][idx])
    for metric in (m.strip() for m in a.search_metrics.split(",")):
        key = f"search/{a.space}/{metric}/{a.search_n}"
        if key not in res.done:
            r = search_augmentations(teacher, xy, a.space, a.search_n, top_k=a.top_k, metric=metric, batch_size=64,
                                     workers=0, progress=False, base_augment=a.base_augment,
                                     resume=a.out.parent / "search" / f"{a.space}-{metric}-{a.search_n}.jsonl")
            top = [r.ranking[n] for n in r.top]
            res.add({"kind": "search", "key": key, "space": a.space, "metric": metric, "n": a.search_n,
                     "top_k": a.top_k, "images": len(idx), "base_augment": a.base_augment, "top": r.top,
                     "top_scores": [e.score for e in top], "top_descriptions": [e.description for e in top],
                     "combined": r.combined, "combined_score": r.combined_entry.score if r.combined_entry else None,
                     "none_score": r.reference.score if r.reference else None,
                     "worst_score": r.ranking.entries[-1].score, "seconds": r.seconds, "scored_this_run": r.scored,
                     "policies_per_minute": r.policies_per_minute, "threads": torch.get_num_threads()})
            ppm = r.policies_per_minute
            print(f"{key}: combined {r.combined} ({r.seconds:.0f}s" + (f", {ppm:.1f} policies/min)" if ppm else ")"),
                  flush=True)
        row = next(x for x in res.rows if x.get("key") == key)
        a.configs = a.configs or "W4A4"
        run_students(a, data, res, "search", [row["combined"]], parse_regimes(a.regimes or "100x5"), a.seeds or 5,
                     kind="search_student")


def phase_cost(a: argparse.Namespace, data: dict[str, torch.Tensor], res: Results, cands: list[str]) -> None:
    """Ranking every candidate (one ``cmi`` pass on --rank-per-class images per class) vs one student epoch
    on the same number of images, side by side in this process."""
    if "cost" in res.done:
        return
    from daqakd_plugins.data import stratified_subset
    from daqakd_plugins.ranking import rank_augmentations

    teacher = load_teacher(a.out.parent)
    idx = stratified_subset(data["train_y"], a.rank_per_class, seed=1000)
    xy = (data["train_x"][idx].float().div(255), data["train_y"][idx])
    t0 = time.perf_counter()
    rank_augmentations(teacher, xy, cands, "cmi", batch_size=64, progress=False, workers=0, base_augment=a.base_augment)
    rank_s = time.perf_counter() - t0
    ck = a.out.parent / "ckpt" / "cost.pt"
    ck.unlink(missing_ok=True)
    wb, ab = (int(v) for v in a.configs.split(",")[0].strip().upper().lstrip("W").split("A"))
    r = train_student(a, data, teacher, cands[-1], wb, ab, 0, a.rank_per_class, 1, ck,
                      a.out.parent / "ckpt" / "cost-student.pt.xz")
    res.add({"kind": "cost", "key": "cost", "candidates": len(cands), "images": len(idx), "rank_seconds": rank_s,
             "student_epoch_seconds": r["seconds"], "ratio": rank_s / r["seconds"], "threads": torch.get_num_threads()})
    print(f"ranking {len(cands)} candidates: {rank_s:.0f}s; one student epoch on the same images: {r['seconds']:.0f}s",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("all", "teacher", "rank", "crossover", "ranking", "cost", "search"),
                   help="one phase, or all of them in order (teacher, rank, cost, crossover, ranking, search)")
    p.add_argument("--data", type=Path, required=True, help="the CIFAR-10 ImageFolder root (train/, test/)")
    p.add_argument("--out", type=Path, default=Path("runs/paper/results.jsonl"))
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "daqakd" / "paper-recipe-cifar-uint8.npz",
                   help="the decoded images (uint8, ~150 MB), so a resumed phase does not decode 52,000 JPEGs again")
    p.add_argument("--arch", default="cifar_resnet20")
    p.add_argument("--base-augment", default="crop-flip")
    p.add_argument("--teacher-epochs", type=int, default=15)
    p.add_argument("--teacher-lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=128, help="teacher batch size")
    p.add_argument("--student-batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="brevitas")
    p.add_argument("--device", default="cpu", help="where students train (cuda: benchmarks/paper_recipe_device.py)")
    p.add_argument("--lr", type=float, default=1e-4, help="student learning rate (Adam, cosine). 1e-4: at 1e-3 "
                   "the W4A4 ResNet-20 student fell from 66 %% (PTQ) to 23 %% in 80 steps (lr_probe rows)")
    p.add_argument("--configs", default=None, help="student bit widths (default W4A4; W2A4 ResNet-20 students "
                   "start at chance after PTQ and reach 22 %% in 5 epochs at lr 1e-4: the lr_probe rows)")
    p.add_argument("--candidates", default=None, help="default: 4 for crossover, 10 for rank, 8 for ranking")
    p.add_argument("--regimes", default=None, help="images per class x epochs, comma-separated (crossover default "
                   "100x5,100x15,100x50: 5k to 50k images seen; ranking default: 100x5)")
    p.add_argument("--seeds", type=int, default=None, help="default 3 (crossover), 5 (ranking)")
    p.add_argument("--rank-passes", type=int, default=3)
    p.add_argument("--rank-per-class", type=int, default=100)
    p.add_argument("--space", default="taw2", help="search phase: the policy search space (default taw2)")
    p.add_argument("--search-n", type=int, default=100, help="search phase: policies to score (default 100)")
    p.add_argument("--top-k", type=int, default=5, help="search phase: how many of the best to combine (default 5)")
    p.add_argument("--search-metrics", default="teacher-ce,cmi",
                   help="search phase: one search per metric, each combination trained (default teacher-ce,cmi)")
    p.add_argument("--stop-after-epoch", type=int, default=None, help=argparse.SUPPRESS)  # tests: a kill mid-student
    p.add_argument("--shard", default="0/1", help="I/N: only every N-th student run, from I (N processes share a phase)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = Results(a.out)
    data = load_cifar(a.data, a.cache)
    if a.phase == "all":
        given = dict(vars(a))
        for phase in ("teacher", "rank", "cost", "crossover", "ranking", "search"):
            b = argparse.Namespace(**{**given, "phase": phase})
            run_phase(b, data, res)
        return 0
    run_phase(a, data, res)
    return 0


def run_phase(a: argparse.Namespace, data: dict[str, torch.Tensor], res: Results) -> None:
    from daqakd_plugins.augment import resolve_augmentation

    default = {"crossover": CROSSOVER_CANDIDATES, "ranking": STUDENT_RANKING_CANDIDATES}.get(a.phase, RANKING_CANDIDATES)
    cands = [c.strip() for c in a.candidates.split(",")] if a.candidates else list(default)
    for c in cands:
        resolve_augmentation(c)  # fail now, with the list of names, not after an hour
    if a.phase == "teacher":
        phase_teacher(a, data, res)
    elif a.phase == "rank":
        phase_rank(a, data, res, cands)
    elif a.phase == "crossover":
        a.configs = a.configs or "W4A4"
        run_students(a, data, res, "crossover", cands, parse_regimes(a.regimes or "100x5,100x15,100x50"), a.seeds or 3)
    elif a.phase == "ranking":
        a.configs = a.configs or "W4A4"
        run_students(a, data, res, "ranking", cands, parse_regimes(a.regimes or "100x5"), a.seeds or 5)
    elif a.phase == "search":
        phase_search(a, data, res)
    else:
        a.configs = a.configs or "W2A4"
        phase_cost(a, data, res, cands)
    print(f"phase {a.phase} done; rows in {a.out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
