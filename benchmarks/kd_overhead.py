"""What the plugin path costs per training step, measured side by side in one run.

(a) ``Distiller.loss`` (augmentation hook, frozen teacher under inference_mode, LossContext, the
    ``daqakd_compute_loss`` hook chain, the NaN check) versus a hand-written step doing the same
    maths (teacher under no_grad, CE + 2·τ²·KL with τ = 4). Goal: ratio ≤ 1.03.
(b) A DA-QAKD step (ranked augmentation + teacher + KD) versus the plain QAT step the user had
    (CE only, no teacher, no augmentation), same backend student. This is the real price of DA-QAKD.
(d) ``--loader`` (issue 14): the same steps fed by DataLoaders with ``--workers`` worker processes, as a
    training script runs them: plain QAT and KD-without-DA read a loader without augmentation; DA-QAKD
    reads ``Distiller.loader``, whose workers run the augmentation's per-image pieces and CutMix/MixUp.
    Each round runs ``--loader-steps`` consecutive steps of each variant (more than the loader's
    prefetch depth, so the steady state is measured), including the wait for data. Goal: DA-QAKD/QAT ≤
    KD(no DA)/QAT + 0.05, i.e. the augmentation no longer sits in the step's critical path.
(c) ``--backend modelopt`` only: ``Distiller.loss`` versus Model Optimizer's own KD on the same student
    (``mtd.convert(student, mode=[("kd_loss", daqakd_modelopt.kd.kd_loss_config(teacher, "paper"))])``,
    one forward of the wrapper, ``compute_kd_loss(student_loss=CE)``): the same loss, two engines.

Every variant trains its own copy of the same quantized student with its own optimizer on the same
fixed batch. Timing is interleaved: each round runs ``--steps`` steps of every variant in turn
(rotating the order), so background load on a shared machine hits all variants alike; the reported
figure is the median of per-round means, and the ratios are of those medians.

    python benchmarks/kd_overhead.py                       # digits-size and CIFAR-size models
    python benchmarks/kd_overhead.py --shapes cifar --augment autoaugment-cifar10 --rounds 40
    python benchmarks/kd_overhead.py --backend modelopt --bits 8 --act-bits 8   # adds (c)
    python benchmarks/kd_overhead.py --loader --workers 1                        # (d) only
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

SHAPES = {
    # name: (in_channels, size, SmallResNet kwargs)
    "digits": (1, 8, {"width": 32, "stages": 1}),
    "cifar": (3, 32, {"width": 16, "stages": 3}),
}


def _student(teacher: torch.nn.Module, backend: str, bits: int, act_bits: int, x: torch.Tensor) -> torch.nn.Module:
    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig

    s = backends.quantize(copy.deepcopy(teacher), backend, QuantConfig(weight_bits=bits, act_bits=act_bits), example_input=x)
    s = backends.calibrate(s, backend, [x], num_batches=1)
    s.train()
    return s


def _make_variants(teacher: torch.nn.Module, base: torch.nn.Module, augment: str, lr: float,
                   backend: str = "") -> dict[str, Callable[[torch.Tensor, torch.Tensor], None]]:
    from daqakd_plugins.distill import Distiller, as_tensor

    variants: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {}

    def optim(model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=lr)

    # (a1) hand-written KD step, the same maths as loss="paper"
    s_hand = copy.deepcopy(base)
    o_hand = optim(s_hand)

    def hand(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            zt = teacher(x)
        zs = as_tensor(s_hand(x))
        tau = 4.0
        kl = F.kl_div(F.log_softmax(zs / tau, 1), F.log_softmax(zt / tau, 1), reduction="batchmean", log_target=True)
        loss = F.cross_entropy(zs, y) + 2.0 * kl * tau * tau
        o_hand.zero_grad(set_to_none=True)
        loss.backward()
        o_hand.step()

    variants["hand_kd"] = hand

    # (a2) the plugin path: Distiller.loss through the hook chain
    s_plug = copy.deepcopy(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kd_plain = Distiller(teacher, s_plug, loss="paper", augment=None)
    o_plug = optim(s_plug)

    def plugin(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = kd_plain.loss(x, y)
        o_plug.zero_grad(set_to_none=True)
        loss.backward()
        o_plug.step()

    variants["plugin_kd"] = plugin

    # (b1) the user's plain QAT step: CE only, no teacher, no augmentation
    s_qat = copy.deepcopy(base)
    o_qat = optim(s_qat)

    def plain_qat(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(as_tensor(s_qat(x)), y)
        o_qat.zero_grad(set_to_none=True)
        loss.backward()
        o_qat.step()

    variants["plain_qat"] = plain_qat

    # (b2) DA-QAKD: ranked augmentation + teacher + KD through the plugin path
    s_da = copy.deepcopy(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kd_da = Distiller(teacher, s_da, loss="paper", augment=augment)
    o_da = optim(s_da)

    def da_qakd(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = kd_da.loss(x, y)
        o_da.zero_grad(set_to_none=True)
        loss.backward()
        o_da.step()

    variants["da_qakd"] = da_qakd

    if backend == "modelopt":
        # (c) Model Optimizer's own KD engine with the same recipe (paper loss, no augmentation)
        import modelopt.torch.distill as mtd
        from daqakd_modelopt.kd import kd_loss_config

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s_mo = mtd.convert(copy.deepcopy(base), mode=[("kd_loss", kd_loss_config(copy.deepcopy(teacher), "paper"))])
        o_mo = torch.optim.Adam([p for p in s_mo.parameters() if p.requires_grad], lr=lr)

        def modelopt_kd(x: torch.Tensor, y: torch.Tensor) -> None:
            out = s_mo(x)
            loss = s_mo.compute_kd_loss(student_loss=F.cross_entropy(out, y))
            o_mo.zero_grad(set_to_none=True)
            loss.backward()
            o_mo.step()

        variants["modelopt_kd"] = modelopt_kd
    return variants


def _measure(variants: dict[str, Callable[[torch.Tensor, torch.Tensor], None]], x: torch.Tensor, y: torch.Tensor,
             rounds: int, steps: int, warmup: int) -> dict[str, list[float]]:
    names = list(variants)
    for n in names:  # warm-up: allocator, brevitas caches, first-call costs
        for _ in range(warmup):
            variants[n](x, y)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    from tqdm.auto import trange

    for r in trange(rounds, desc="rounds", leave=False, disable=None):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            for _ in range(steps):
                variants[n](x, y)
            per_round[n].append((time.perf_counter() - t0) / steps * 1e3)
    return per_round


def run_shape(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    from daqakd_plugins.models import SmallResNet

    c, size, kw = SHAPES[shape]
    torch.manual_seed(0)
    teacher = SmallResNet(c, 10, **kw).eval()
    teacher.requires_grad_(False)
    x = torch.rand(args.batch_size, c, size, size)
    y = torch.randint(0, 10, (args.batch_size,))
    base = _student(teacher, args.backend, args.bits, args.act_bits, x)
    variants = _make_variants(teacher, base, args.augment, args.lr, args.backend)
    per_round = _measure(variants, x, y, args.rounds, args.steps, args.warmup)
    med = {n: statistics.median(v) for n, v in per_round.items()}
    # Per-round ratios as well: both variants of a pair ran back to back in the same round.
    def paired(a: str, b: str) -> float:
        return statistics.median(pa / pb for pa, pb in zip(per_round[a], per_round[b]))

    extra = {}
    if "modelopt_kd" in med:
        extra = {"ratio_distiller_vs_modelopt_kd": med["plugin_kd"] / med["modelopt_kd"],
                 "ratio_distiller_vs_modelopt_kd_paired": paired("plugin_kd", "modelopt_kd"),
                 "ratio_modelopt_kd_vs_hand": med["modelopt_kd"] / med["hand_kd"]}
    return {
        **extra,
        "shape": shape,
        "input": [args.batch_size, c, size, size],
        "median_ms_per_step": med,
        "ratio_plugin_vs_hand": med["plugin_kd"] / med["hand_kd"],
        "ratio_plugin_vs_hand_paired": paired("plugin_kd", "hand_kd"),
        "ratio_daqakd_vs_plain_qat": med["da_qakd"] / med["plain_qat"],
        "ratio_daqakd_vs_plain_qat_paired": paired("da_qakd", "plain_qat"),
        "ratio_kd_no_aug_vs_plain_qat": med["plugin_kd"] / med["plain_qat"],
        "rounds": args.rounds,
        "steps_per_round": args.steps,
    }


def _loader_dataset(shape: str, n: int) -> torch.utils.data.Dataset[Any]:
    from daqakd_plugins.data import load_digits

    if shape == "digits":
        return load_digits().train
    c, size, _ = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.rand(n, c, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))


def run_loader_shape(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """(d): steps fed by DataLoaders with workers; the augmentation runs in DA-QAKD's loader workers."""
    from daqakd_plugins.distill import Distiller, as_tensor
    from daqakd_plugins.models import SmallResNet
    from daqakd_plugins.streams import train_loader

    c, size, kw = SHAPES[shape]
    torch.manual_seed(0)
    teacher = SmallResNet(c, 10, **kw).eval()
    teacher.requires_grad_(False)
    ds = _loader_dataset(shape, 2048)
    x0 = torch.rand(args.batch_size, c, size, size)
    base = _student(teacher, args.backend, args.bits, args.act_bits, x0)
    opts: dict[str, Any] = {}
    steps: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {}
    loaders: dict[str, Any] = {}

    s_qat = copy.deepcopy(base)
    opts["plain_qat"] = torch.optim.Adam(s_qat.parameters(), lr=args.lr)

    def plain_qat(x: torch.Tensor, t: torch.Tensor) -> None:
        loss = F.cross_entropy(as_tensor(s_qat(x)), t)
        opts["plain_qat"].zero_grad(set_to_none=True)
        loss.backward()
        opts["plain_qat"].step()

    steps["plain_qat"] = plain_qat
    loaders["plain_qat"] = train_loader(ds, None, num_classes=10, batch_size=args.batch_size, seed=0, workers=args.workers)
    for name, aug in (("kd_no_da", None), ("da_qakd", args.augment)):
        student = copy.deepcopy(base)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kd = Distiller(teacher, student, loss="paper", augment=aug, num_classes=10)
        opt = torch.optim.Adam(student.parameters(), lr=args.lr)
        loaders[name] = kd.loader(ds, batch_size=args.batch_size, workers=args.workers, seed=0)

        def step(x: torch.Tensor, t: torch.Tensor, kd: Distiller = kd, opt: torch.optim.Optimizer = opt) -> None:
            loss = kd.loss(x, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[name] = step

    def batches(name: str) -> Any:
        epoch = 0
        while True:
            loaders[name].set_epoch(epoch)
            for b in loaders[name]:
                yield (b.images, b.targets) if hasattr(b, "images") else b
            epoch += 1

    its = {n: batches(n) for n in steps}
    # each variant reads its own next batch (the fixed batch _measure passes is not used); +4 warm-up steps
    # start the loader workers
    fed = {n: (lambda _x, _y, n=n: steps[n](*next(its[n]))) for n in steps}
    per_round = _measure(fed, x0, x0, args.loader_rounds, args.loader_steps, args.warmup + 4)
    med = {n: statistics.median(v) for n, v in per_round.items()}
    kd_q, da_q = med["kd_no_da"] / med["plain_qat"], med["da_qakd"] / med["plain_qat"]
    return {
        "shape": shape, "input": [args.batch_size, c, size, size], "workers": args.workers, "augment": args.augment,
        "median_ms_per_step": med, "ratio_kd_no_da_vs_plain_qat": kd_q, "ratio_daqakd_vs_plain_qat": da_q,
        "teacher_share": kd_q - 1.0, "bound": kd_q + 0.05, "within_bound": da_q <= kd_q + 0.05,
        "rounds": args.loader_rounds, "steps_per_round": args.loader_steps,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="brevitas")
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--act-bits", type=int, default=4)
    p.add_argument("--augment", default="autoaugment-cifar10", help="the DA used in variant (b); e.g. the ranked best")
    p.add_argument("--shapes", default="digits,cifar")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=80)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/kd_overhead.json"))
    p.add_argument("--loader", action="store_true", help="measure (d) only: steps fed by DataLoaders with workers")
    p.add_argument("--workers", type=int, default=1, help="(d) DataLoader worker processes per loader")
    p.add_argument("--loader-rounds", type=int, default=6)
    p.add_argument("--loader-steps", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.loader:
        res = [run_loader_shape(s.strip(), args) for s in args.shapes.split(",") if s.strip()]
        print(f"\nbackend {args.backend} W{args.bits}A{args.act_bits}, batch {args.batch_size}, DA = {args.augment} in "
              f"{args.workers} loader worker(s), {args.threads} main thread(s), {args.loader_rounds} rounds x "
              f"{args.loader_steps} steps")
        print(f"{'shape':<8} {'plain QAT':>10} {'KD no DA':>9} {'DA-QAKD':>9}   {'KD/QAT':>7} {'DA-QAKD/QAT':>12} "
              f"{'bound (KD/QAT+0.05)':>20}")
        for r in res:
            m = r["median_ms_per_step"]
            print(f"{r['shape']:<8} {m['plain_qat']:>8.2f}ms {m['kd_no_da']:>7.2f}ms {m['da_qakd']:>7.2f}ms   "
                  f"{r['ratio_kd_no_da_vs_plain_qat']:>7.3f} {r['ratio_daqakd_vs_plain_qat']:>12.3f} {r['bound']:>20.3f}"
                  f"  {'within' if r['within_bound'] else 'ABOVE'}")
        return _write(args, "loader_results", res)
    results = [run_shape(s.strip(), args) for s in args.shapes.split(",") if s.strip()]
    print(f"\nbackend {args.backend} W{args.bits}A{args.act_bits}, batch {args.batch_size}, DA = {args.augment}, "
          f"{args.threads} thread(s), {args.rounds} interleaved rounds x {args.steps} steps")
    print(f"{'shape':<8} {'hand KD':>9} {'plugin KD':>10} {'plain QAT':>10} {'DA-QAKD':>9}   "
          f"{'plugin/hand':>11} {'DA-QAKD/QAT':>12} {'KD(no DA)/QAT':>14}")
    for r in results:
        m = r["median_ms_per_step"]
        print(f"{r['shape']:<8} {m['hand_kd']:>8.2f}ms {m['plugin_kd']:>8.2f}ms {m['plain_qat']:>8.2f}ms "
              f"{m['da_qakd']:>7.2f}ms   {r['ratio_plugin_vs_hand']:>11.3f} {r['ratio_daqakd_vs_plain_qat']:>12.3f} "
              f"{r['ratio_kd_no_aug_vs_plain_qat']:>14.3f}")
        print(f"{'':<8} paired per-round medians: plugin/hand {r['ratio_plugin_vs_hand_paired']:.3f}, "
              f"DA-QAKD/QAT {r['ratio_daqakd_vs_plain_qat_paired']:.3f}")
        if "modelopt_kd" in m:
            print(f"{'':<8} Model Optimizer's own KD (mtd.convert + compute_kd_loss) {m['modelopt_kd']:.2f}ms: "
                  f"Distiller/modelopt {r['ratio_distiller_vs_modelopt_kd']:.3f} (paired "
                  f"{r['ratio_distiller_vs_modelopt_kd_paired']:.3f}), modelopt/hand {r['ratio_modelopt_kd_vs_hand']:.3f}")
    return _write(args, "results", results)


def _write(args: argparse.Namespace, key: str, results: list[dict[str, Any]]) -> int:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()}, key: results,
                                    "torch": torch.__version__, "python": platform.python_version()}, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
