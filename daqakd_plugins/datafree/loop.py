"""``daqakd distill --data-free``: DA-QAKD when the training data may not be used (METRIC.md section 4).

frozen teacher → generator ``G(z)`` warmed up on the teacher's BatchNorm statistics and class balance →
quantized student (any backend adapter) calibrated on generated batches → alternating updates: the
generator maximises ``KL(p_T ‖ p_S)`` (minus its regularisers), the student minimises the KD loss chain on
``G(z)`` with the chosen augmentation on top → clean-test evaluation → student file, export, report.

The training split is never read: the data bundle is asked for its test split (``bundle.test``, to report
accuracy), its classes, image shape and name, and nothing else. A checkpoint after every epoch holds the
student, the generator and both optimizers, so ``--resume`` continues the same trajectory.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError, NonFiniteError
from .losses import BNStatsLoss, generator_loss
from .options import GeneratorOptions, resolve_generator_options

__all__ = ["run_datafree", "build_generator", "NO_TRAINING_DATA"]

#: what every data-free report states (and the test looks for)
NO_TRAINING_DATA = ("No real training sample was used: the student was calibrated and trained on generated "
                    "images only; the test split was read only to report accuracy.")
CHECKPOINT_KIND = "daqakd-datafree/1"
GENERATOR_NAME = "generator.pt"


def _bar(iterable: Any, *, desc: str, enabled: bool, **kw: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=None if enabled else True, dynamic_ncols=True, leave=False, **kw)


def build_generator(opts: GeneratorOptions, image_shape: tuple[int, int, int], num_classes: int,
                    device: str | torch.device = "cpu") -> nn.Module:
    """The registered generator ``opts.name``, built for this data, after checking one batch's shape and range."""
    from ..plugins import get_generators
    from .contracts import GeneratorRequest

    spec = get_generators()[opts.name]
    gen = spec.build(GeneratorRequest(latent_dim=opts.latent_dim, image_shape=tuple(image_shape),  # type: ignore[arg-type]
                                      num_classes=num_classes, params={"width": opts.width}))
    if not isinstance(gen, nn.Module):
        raise ModelError(f"generator {opts.name!r} built a {type(gen).__name__}, not a torch.nn.Module; its "
                         "build(request) must return the module.")
    gen.to(device)
    with torch.no_grad():
        probe = gen(torch.zeros(2, opts.latent_dim, device=device).normal_(generator=torch.Generator(device).manual_seed(0)))
    if not isinstance(probe, torch.Tensor) or tuple(probe.shape) != (2, *image_shape):
        shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise ModelError(f"generator {opts.name!r} returned {shape} for z [2, {opts.latent_dim}]; it must return "
                         f"images [batch, {', '.join(map(str, image_shape))}] (the data's shape).")
    if float(probe.min()) < 0 or float(probe.max()) > 1 or not bool(torch.isfinite(probe).all()):
        raise ModelError(f"generator {opts.name!r} returned values in [{float(probe.min()):.3g}, "
                         f"{float(probe.max()):.3g}]; images must be in [0, 1] like the real data (end with a sigmoid).")
    return gen


# ------------------------------------------------------------------------------------------------ data
def _load_bundle(cfg: Any) -> Any:
    from .. import data

    return data.load_data(cfg.data, image_size=cfg.image_size)


def _test_tensors(bundle: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation split, read through ``bundle.test`` with a DataLoader (the only split read here)."""
    from torch.utils.data import DataLoader

    xs, ys = [], []
    for xb, yb in DataLoader(bundle.test, batch_size=512, shuffle=False):
        xs.append(torch.as_tensor(xb).float())
        ys.append(torch.as_tensor(yb).long())
    if not xs:
        raise ConfigError(f"the evaluation split of {bundle.name!r} is empty; data-free mode still needs a test split "
                          "to report accuracy.")
    return torch.cat(xs), torch.cat(ys)


def _teacher(cfg: Any, bundle: Any) -> tuple[nn.Module, dict[str, Any], str]:
    from ..models import load_model
    from ..train import teacher_arch

    spec = None
    if cfg.arch is not None:
        spec = teacher_arch(bundle, cfg.arch, num_classes=cfg.num_classes, small_input=cfg.small_input)
    model, meta = load_model(cfg.teacher, arch=spec)
    return model, meta, str(cfg.teacher)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    from ..train import evaluate

    return evaluate(model, x, y, device=device)


Normalization = tuple[list[float], list[float]]


def normalization(cfg: Any, tmeta: dict[str, Any], channels: int) -> Normalization | None:
    """What the models expect: ``--mean/--std``, else the teacher file's ``normalize`` record, else ``None``
    (images in ``[0, 1]``), as in the data-driven mode. The generator always makes ``[0, 1]`` images (the
    space the augmentations work in); they are normalised right before a model sees them."""
    if cfg.mean is not None:
        mean, std = cfg.mean, cfg.std
    else:
        rec = tmeta.get("normalize") or {}
        mean, std = rec.get("mean"), rec.get("std")
    if mean is None or std is None:
        return None
    m, sd = [float(v) for v in mean], [float(v) for v in std]
    if len(m) != len(sd) or len(m) not in (1, channels) or any(v <= 0 for v in sd):
        raise ConfigError(f"the normalisation mean {m} / std {sd} does not fit {channels}-channel images; pass "
                          "--mean/--std with one value, or one per channel (std > 0).")
    return m, sd


class _Normalize:
    """``(x - mean) / std`` per channel; the identity without a normalisation."""

    def __init__(self, norm: Normalization | None) -> None:
        self.norm = norm

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is None:
            return x
        m = torch.tensor(self.norm[0], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        sd = torch.tensor(self.norm[1], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - m) / sd


# ------------------------------------------------------------------------------------------------ steps
class _Trainer:
    """The two alternating updates, each touching only its own model's gradients."""

    def __init__(self, teacher: nn.Module, student: nn.Module, gen: nn.Module, opts: GeneratorOptions,
                 batch_size: int, device: str, normalize: Normalization | None = None) -> None:
        self.teacher, self.student, self.gen, self.opts = teacher, student, gen, opts
        self.norm = _Normalize(normalize)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.bn = BNStatsLoss(teacher) if opts.bn_weight > 0 else None
        self.g_opt = torch.optim.Adam(gen.parameters(), lr=opts.g_lr, betas=(0.5, 0.999))
        self.last: dict[str, float] = {}

    def z(self) -> torch.Tensor:
        return torch.randn(self.batch_size, self.opts.latent_dim, device=self.device)

    def generator_step(self, *, adversarial: bool = True) -> dict[str, float]:
        """One generator update: gradients reach the generator only (``torch.autograd.grad`` over its
        parameters; the student runs in eval mode, so not even its BN statistics move)."""
        from ..models import as_tensor

        self.gen.train()
        self.teacher.eval()
        was = self.student.training
        self.student.eval()
        try:
            x = self.norm(self.gen(self.z()))  # what the models see
            if self.bn is not None:
                with self.bn:
                    z_t = as_tensor(self.teacher(x))
                bn_loss = self.bn.loss
                self.bn.clear()  # the terms hold this step's graph: drop them once summed
            else:
                z_t = as_tensor(self.teacher(x))
                bn_loss = torch.zeros((), device=x.device)
            z_s = as_tensor(self.student(x)) if adversarial else None
        finally:
            self.student.train(was)
        o = self.opts
        terms = generator_loss(z_t, z_s, bn_loss, adv_weight=o.adv_weight, bn_weight=o.bn_weight,
                               balance_weight=o.balance_weight)
        total = terms["total"]
        if not bool(torch.isfinite(total.detach())):
            vals = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise NonFiniteError(f"the generator's loss is not finite ({vals}); lower --generator-option g_lr (now "
                                 f"{o.g_lr:g}) or adv_weight (now {o.adv_weight:g}).")
        params = [p for p in self.gen.parameters() if p.requires_grad]
        if total.requires_grad:
            grads = torch.autograd.grad(total, params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = g
            self.g_opt.step()
        self.g_opt.zero_grad(set_to_none=True)
        self.last = {k: float(v.detach()) for k, v in terms.items()}
        return self.last

    def student_step(self, kd: Any, opt: torch.optim.Optimizer, sched: Any) -> float:
        """One student update on a detached ``G(z)``: the KD loss chain (``kd``, a Distiller with the run's
        augmentation) against the teacher's soft prediction on the clean generated image. The generator
        gets no gradient: its output is detached before the student sees it."""
        self.student.train()
        x = self.sample()
        loss = kd.loss(x, self.teacher_probs(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return float(loss.detach())

    @torch.no_grad()
    def sample(self, n: int | None = None) -> torch.Tensor:
        """A detached batch ``G(z)`` in ``[0, 1]`` (generator in train mode, as in its own step)."""
        self.gen.train()
        n = n or self.batch_size
        return self.gen(torch.randn(n, self.opts.latent_dim, device=self.device)).detach()

    @torch.no_grad()
    def teacher_probs(self, x: torch.Tensor) -> torch.Tensor:
        from ..models import as_tensor

        with torch.inference_mode():
            p = F.softmax(as_tensor(self.teacher(self.norm(x))).float(), 1)
        return p.clone()  # outside inference mode: a normal tensor the loss may save for backward

    def remove(self) -> None:
        if self.bn is not None:
            self.bn.remove()


def _make_student_optimizer(cfg: Any, params: list[nn.Parameter], steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """The data-driven run's optimizer and cosine schedule (the same ``--optimizer``/``--lr`` meaning)."""
    from ..distill.pipeline import _make_optimizer

    return _make_optimizer(cfg, params, steps)


def _quantized_copy(cfg: Any, teacher: nn.Module, example: torch.Tensor) -> nn.Module:
    from .. import backends

    fp = copy.deepcopy(teacher)
    for p in fp.parameters():
        p.requires_grad_(True)
    return backends.quantize(fp, cfg.backend, cfg.quant_config(), example_input=example)


def _trainable(student: nn.Module, device: str) -> nn.Module:
    student.to(device)
    for p in student.parameters():
        p.requires_grad_(True)
    return student


# ------------------------------------------------------------------------------------------------ run
def run_datafree(cfg: Any) -> dict[str, Any]:
    """Run (or resume) data-free DA-QAKD and return the report (also ``out/report.json`` and ``report.md``).

    ``cfg`` is a :class:`~daqakd_plugins.distill.DistillConfig` with ``data_free=True``; its
    ``generator_options`` are :class:`GeneratorOptions` fields. ``cfg.teacher`` is required: data-free mode
    is for users who hold a trained teacher but not its data, and training the default teacher here would
    read the training split (train one first with ``daqakd teacher`` if you want to try the mode)."""
    from .. import backends
    from ..checks import check_output_dir
    from ..distill.checkpoint import (
        CHECKPOINT_NAME,
        FORMAT,
        atomic_save,
        capture_rng,
        load_checkpoint,
        restore_rng,
    )
    from ..distill.distiller import Distiller
    from ..distill.pipeline import _check_resume, _claim_run_dir
    from ..distill.student_file import STUDENT_NAME, save_student_file
    from ..train import seed_everything

    if not cfg.data_free:
        raise ConfigError("run_datafree needs DistillConfig(data_free=True); run_distill runs the data-driven mode.")
    opts = resolve_generator_options(cfg.generator_options)
    if cfg.teacher is None:
        raise ConfigError(
            "--data-free needs the teacher you already have: pass --teacher FILE. Training one here would read "
            "the training data, which data-free mode never does (to try the mode, train one first: `daqakd "
            "teacher --data digits --out runs/teacher.pt`, then --teacher runs/teacher.pt)."
        )
    t_start = time.perf_counter()
    out = check_output_dir(cfg.out_dir)
    ck: dict[str, Any] | None = None
    if cfg.resume is not None:
        ck = load_checkpoint(cfg.resume)
        _check_resume(cfg, ck)
        if ck.get("kind") != CHECKPOINT_KIND:
            raise ConfigError(f"{cfg.resume} holds a data-driven run's checkpoint; resume it without --data-free.")
    else:
        _claim_run_dir(cfg, out)  # generator.pt is one of the run files it refuses to overwrite / deletes

    seed_everything(cfg.seed)
    bundle = _load_bundle(cfg)
    classes = list(bundle.classes)
    nc = len(classes)
    image_shape = tuple(int(v) for v in bundle.image_shape)
    teacher, tmeta, teacher_path = _teacher(cfg, bundle)
    out.mkdir(parents=True, exist_ok=True)
    dev = cfg.device
    teacher.to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    from ..models import as_tensor

    with torch.inference_mode():
        width = int(as_tensor(teacher(torch.rand(2, *image_shape, device=dev))).shape[1])  # shape only
    if width != nc:
        raise ConfigError(f"the teacher predicts {width} classes but the data has {nc}; pass a teacher trained on "
                          "this data.")
    norm = normalization(cfg, tmeta, image_shape[0])
    nz = _Normalize(norm)
    test_x, test_y = _test_tensors(bundle)
    test_x = nz(test_x)  # as the models see them
    teacher_fp = _evaluate(teacher, test_x, test_y, dev)

    seed_everything(cfg.seed)
    gen = build_generator(opts, image_shape, nc, dev)  # type: ignore[arg-type]
    noise_g = torch.Generator().manual_seed(cfg.seed)
    noise = [nz(torch.rand(cfg.batch_size, *image_shape, generator=noise_g).to(dev)) for _ in range(cfg.calib_batches)]
    example = noise[0]

    # Every copy of the teacher is made before the BN-statistics hooks go onto it (a copy would carry them).
    baselines: dict[str, float] = {}
    warm_seconds = rank_seconds = 0.0
    if ck is None:
        # Baselines: the quantized copy as built (no calibration) and post-training quantization on noise.
        uncal = _quantized_copy(cfg, teacher, example).to(dev)
        baselines["quantized_uncalibrated"] = _evaluate(uncal, test_x, test_y, dev)
        noisy = backends.calibrate(_quantized_copy(cfg, teacher, example), cfg.backend, noise,
                                   num_batches=cfg.calib_batches)
        baselines["ptq_noise"] = _evaluate(noisy.to(dev), test_x, test_y, dev)
        del uncal, noisy
        student = _quantized_copy(cfg, teacher, example)  # calibrated on generated images after the warm-up
    else:
        fp = copy.deepcopy(teacher)
        for p in fp.parameters():
            p.requires_grad_(True)
        student = backends.restore_student(fp, cfg.backend, cfg.quant_config(), ck["student"], example_input=example)
        student = _trainable(student, dev)
        gen.load_state_dict(ck["generator"])
    tr = _Trainer(teacher, student, gen, opts=opts, batch_size=cfg.batch_size, device=dev, normalize=norm)
    if ck is None:
        # Warm-up: the generator learns the teacher's BN statistics and class balance (no adversarial term).
        t0 = time.perf_counter()
        for _ in _bar(range(opts.warmup_steps), desc="generator warm-up", enabled=cfg.progress, unit="step"):
            tr.generator_step(adversarial=False)
        warm_seconds = time.perf_counter() - t0
        calib = [nz(tr.sample()) for _ in range(cfg.calib_batches)]
        student = backends.calibrate(student, cfg.backend, calib, num_batches=cfg.calib_batches)
        student = _trainable(student, dev)
        tr.student = student
        baselines["ptq_generated"] = _evaluate(student, test_x, test_y, dev)
        t0 = time.perf_counter()
        augmentation, ranking, aug_choice = _augmentation(cfg, opts, tr, nc, norm)
        rank_seconds = time.perf_counter() - t0
    else:
        baselines = {k: float(v) for k, v in json.loads(ck["baselines"]).items()}
        augmentation, ranking, aug_choice = ck["augmentation"], json.loads(ck["ranking"]), json.loads(ck["augmentation_choice"])
        warm_seconds, rank_seconds = float(ck["warmup_seconds"]), float(ck["rank_seconds"])

    kd_kw: dict[str, Any] = {"normalize": norm} if norm is not None else {}  # after augmenting, as in Distiller
    kd = Distiller(teacher, student, loss=cfg.loss, augment=augmentation, num_classes=nc, device=dev, **kd_kw)
    s_total = cfg.epochs * opts.iterations * opts.s_steps
    s_opt, sched = _make_student_optimizer(cfg, [*student.parameters(), *kd.parameters()], s_total)
    history: list[dict[str, Any]] = []
    start_epoch, prior_seconds = 0, 0.0
    if ck is not None:
        kd.load_state_dict(ck["distiller"])
        tr.g_opt.load_state_dict(ck["generator_optimizer"])
        s_opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        restore_rng(ck["rng"])
        start_epoch, history = int(ck["epoch"]), json.loads(ck["history"])
        prior_seconds = float(ck["seconds"])
    else:
        seed_everything(cfg.seed + 1)  # training draws do not depend on how many draws the set-up made

    ck_path = out / CHECKPOINT_NAME
    t_train = time.perf_counter()
    epochs_bar = _bar(range(start_epoch, cfg.epochs), desc="data-free distill", enabled=cfg.progress, unit="epoch",
                      initial=start_epoch, total=cfg.epochs)
    for epoch in epochs_bar:
        s_tot = g_tot = 0.0
        g_terms: dict[str, float] = {}
        its = _bar(range(opts.iterations), desc=f"epoch {epoch + 1}", enabled=cfg.progress, unit="it")
        for it in its:
            for _ in range(opts.g_steps):
                g_terms = tr.generator_step(adversarial=True)
                g_tot += g_terms["total"]
            for _ in range(opts.s_steps):
                try:
                    s_tot += tr.student_step(kd, s_opt, sched)
                except NonFiniteError as exc:
                    last = f"{ck_path} (after epoch {epoch})" if ck_path.exists() and epoch > 0 else "none (first epoch)"
                    raise NonFiniteError(f"{exc} Training stopped in epoch {epoch + 1}; last good checkpoint: {last}.") from None
            its.set_postfix(s_loss=f"{s_tot / ((it + 1) * opts.s_steps):.4f}", g_loss=f"{g_tot / ((it + 1) * opts.g_steps):.4f}")
        acc = _evaluate(student, test_x, test_y, dev)
        history.append({"epoch": epoch + 1, "loss": s_tot / (opts.iterations * opts.s_steps),
                        "generator_loss": g_tot / (opts.iterations * opts.g_steps), "generator_terms": g_terms,
                        "test_accuracy": acc, "lr": float(s_opt.param_groups[0]["lr"]), "terms": kd.last_terms})
        epochs_bar.set_postfix(acc=f"{acc:.4f}")
        atomic_save(
            {
                "format": FORMAT,
                "kind": CHECKPOINT_KIND,
                "epoch": epoch + 1,
                "student": backends.save_student(student, cfg.backend, cfg.quant_config()),
                "generator": gen.state_dict(),
                "generator_optimizer": tr.g_opt.state_dict(),
                "distiller": kd.state_dict(),
                "optimizer": s_opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": capture_rng(),
                "augmentation": augmentation,
                "augmentation_choice": json.dumps(aug_choice),
                "ranking": json.dumps(ranking),
                "history": json.dumps(history),
                "baselines": json.dumps(baselines),
                "config": json.dumps(cfg.to_dict()),
                "teacher_path": teacher_path,
                "student_before": baselines["ptq_generated"],
                "seconds": prior_seconds + (time.perf_counter() - t_train),
                "warmup_seconds": warm_seconds,
                "rank_seconds": rank_seconds,
            },
            ck_path,
        )
    train_seconds = prior_seconds + (time.perf_counter() - t_train)
    tr.remove()
    kd.remove_hooks()

    student.eval()
    student_after = _evaluate(student, test_x, test_y, dev)
    torch.save(gen.state_dict(), out / GENERATOR_NAME)
    student_path = save_student_file(
        out / STUDENT_NAME, student, backend=cfg.backend, config=cfg.quant_config(), arch=tmeta.get("arch"),
        input_shape=list(image_shape),
        meta={"accuracy": student_after, "augmentation": augmentation, "loss": cfg.loss, "seed": cfg.seed,
              "data_free": True, "normalize": None if norm is None else {"mean": norm[0], "std": norm[1]}},
    )
    export = _export(cfg, student, teacher, nz(tr.sample()), test_x, test_y, out) if cfg.export else {"skipped": "--no-export"}
    report: dict[str, Any] = {
        "mode": "data-free",
        "no_real_training_sample_used": True,
        "statement": NO_TRAINING_DATA,
        "backend": cfg.backend,
        "bits": cfg.bits,
        "act_bits": cfg.weight_act_bits,
        "augmentation": augmentation,
        "augmentation_choice": aug_choice,
        "loss": cfg.loss,
        "loss_terms": [{"component": t.component, "weight": t.weight, "params": dict(t.params), "key": t.key}
                       for t in kd.terms],
        "ranking": ranking.get("candidates", []) if isinstance(ranking, dict) else [],
        "ranking_detail": ranking,
        "accuracy": {"teacher_fp": teacher_fp, "student_before": baselines["ptq_generated"],
                     "student_after": student_after, **baselines},
        "generator": {**opts.to_dict(), "file": str(out / GENERATOR_NAME),
                      "objective": "minimise -adv_weight*KL(p_T||p_S) + bn_weight*L_BN + balance_weight*(-H(mean p_T))"},
        "calibration": {"data": "generated", "batches": cfg.calib_batches, "batch_size": cfg.batch_size,
                        "after_warmup_steps": opts.warmup_steps,
                        "baselines": "quantized_uncalibrated: the backend's quantized copy as built, no calibration; "
                                     "ptq_noise: calibrated on uniform [0, 1] noise images; ptq_generated: calibrated "
                                     "on the warmed-up generator's images (the student training starts from)"},
        "epochs": cfg.epochs,
        "student_steps": cfg.epochs * opts.iterations * opts.s_steps,
        "generator_steps": cfg.epochs * opts.iterations * opts.g_steps + opts.warmup_steps,
        "seconds": round(train_seconds, 3),
        "warmup_seconds": round(warm_seconds, 3),
        "rank_seconds": round(rank_seconds, 3),
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "seed": cfg.seed,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "optimizer": cfg.optimizer,
        "data": {"name": bundle.name, "test": int(len(test_y)), "classes": nc, "image_shape": list(image_shape),
                 "train_used": 0},
        "teacher": teacher_path,
        "normalize": None if norm is None else {"mean": norm[0], "std": norm[1]},
        "num_quantizers": backends.count_quantizers(student),
        "history": history,
        "resumed_from_epoch": int(ck["epoch"]) if ck is not None else None,
        "export": export,
        "files": {"checkpoint": str(ck_path), "student": str(student_path), "generator": str(out / GENERATOR_NAME),
                  "report_md": str(out / "report.md")},
        "environment": {"torch": torch.__version__, "python": platform.python_version()},
        "config": cfg.to_dict(),
    }
    from .report import render_markdown

    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(render_markdown(report))
    return report


def _augmentation(cfg: Any, opts: GeneratorOptions, tr: _Trainer, nc: int,
                  norm: Normalization | None) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """``--augment NAME`` as chosen, or ``auto``: rank the candidates with the same metric on generated
    images labelled by the teacher's prediction."""
    if cfg.augment != "auto":
        from ..augment import resolve_augmentation

        name = resolve_augmentation(cfg.augment).name
        return name, None, {"how": "chosen", "augmentation": name}
    from ..ranking import rank_augmentations

    xs = torch.cat([tr.sample() for _ in range(math.ceil(opts.rank_samples / cfg.batch_size))])[: opts.rank_samples]
    labels = tr.teacher_probs(xs).argmax(1).cpu()
    kw: dict[str, Any] = {"normalize": norm} if norm is not None else {}  # candidates act on [0, 1] images
    ranking = rank_augmentations(
        tr.teacher, (xs.cpu(), labels), cfg.candidates, cfg.metric, seed=cfg.seed, repeats=cfg.rank_repeats,
        per_class=cfg.rank_per_class, device=cfg.device, num_classes=nc, progress=cfg.progress, **kw,
    )
    counts = torch.bincount(labels, minlength=nc).tolist()
    return str(ranking.best), json.loads(json.dumps(ranking.to_dict(), default=str)), {
        "how": "ranked", "augmentation": str(ranking.best), "metric": cfg.metric,
        "samples": int(len(labels)), "labels": "the teacher's argmax on each generated image",
        "per_class": counts, "after_warmup_steps": opts.warmup_steps}


def _export(cfg: Any, student: nn.Module, teacher: nn.Module, example: torch.Tensor, test_x: torch.Tensor,
            test_y: torch.Tensor, out: Path) -> dict[str, Any]:
    from ..errors import DaqakdError

    try:
        from ..runtime import export_and_measure
    except ImportError as exc:
        return {"skipped": f"daqakd_plugins.runtime is not available here ({exc})"}
    try:
        res = export_and_measure(student, teacher, cfg.backend, example.cpu(), test_x, test_y, out / "export")
    except DaqakdError as exc:
        return {"error": str(exc)}
    return json.loads(json.dumps(res, default=str))
