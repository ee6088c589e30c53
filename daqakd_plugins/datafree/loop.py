"""``daqakd distill --data-free``: DA-QAKD when the training data may not be used (METRIC.md section 4).

The generator batch source of the run engine (:mod:`daqakd_plugins.run`): a generator ``G(z)`` warmed up
on the teacher's BatchNorm statistics and class balance → the quantized student calibrated on generated
batches → alternating updates: the generator maximises ``KL(p_T ‖ p_S)`` (minus its regularisers), the
student minimises the KD loss chain on ``G(z)`` with the chosen augmentation on top. Everything else
(teacher, normalisation, the student, optimizer, checkpoints, DDP, export, report) is the engine's.

The training split is never read: the data bundle is asked for its test split (``bundle.test``, to report
accuracy), its classes, image shape and name, and nothing else (:class:`TestOnlyData`). The checkpoint
holds the generator and its optimizer beside the engine's state, so ``--resume`` continues the same
trajectory. Under torchrun each rank draws its own latent codes; the generator's gradients are averaged
over the ranks, so its replicas stay equal as DDP keeps the students equal.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..errors import ConfigError, ModelError, NonFiniteError
from ..run.engine import normalizer, quantized_copy
from ..run.rundir import GENERATOR_NAME
from ..run.source import AugmentationChoice, Finish, RunContext, SourceDefaults
from .losses import BNStatsLoss, generator_loss
from .options import GeneratorOptions, resolve_generator_options

__all__ = ["GeneratorSource", "TestOnlyData", "build_generator", "normalization", "NO_TRAINING_DATA"]

#: what every data-free report states (and the test looks for)
NO_TRAINING_DATA = ("No real training sample was used: the student was calibrated and trained on generated "
                    "images only; the test split was read only to report accuracy.")
OBJECTIVE = "minimise -adv_weight*KL(p_T||p_S) + bn_weight*L_BN + balance_weight*(-H(mean p_T))"


def build_generator(opts: GeneratorOptions, image_shape: tuple[int, int, int], num_classes: int,
                    device: str | torch.device = "cpu") -> nn.Module:
    """The registered generator ``opts.name``, built for this data, after checking one batch's shape and range."""
    from ..plugins import get_generators
    from .contracts import GeneratorRequest

    spec = get_generators()[opts.name]
    params = {"width": opts.width, "bank_size": opts.bank_size, "ce_weight": opts.ce_weight, "tv_weight": opts.tv_weight}
    gen = spec.build(GeneratorRequest(latent_dim=opts.latent_dim, image_shape=tuple(image_shape),  # type: ignore[arg-type]
                                      num_classes=num_classes, params=params))
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


Normalization = tuple[list[float], list[float]]


def normalization(cfg: Any, tmeta: dict[str, Any], channels: int) -> Normalization | None:
    """The run's normalisation as ``(mean, std)``, or ``None`` for ``[0, 1]`` images: the engine's one
    normaliser (:func:`daqakd_plugins.run.engine.normalizer`), which both modes use."""
    norm = normalizer(cfg, tmeta, channels)
    return None if norm.mean is None or norm.std is None else (norm.mean, norm.std)


@dataclass
class TestOnlyData:
    """What a data-free run may see of the data bundle: its name, classes, image shape and test split."""

    name: str
    classes: list[str]
    image_shape: tuple[int, int, int]
    test: Any
    test_labels: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def of(cls, bundle: Any) -> TestOnlyData:
        from torch.utils.data import DataLoader

        ys = [torch.as_tensor(yb) for _, yb in DataLoader(bundle.test, batch_size=512, shuffle=False)]
        if not ys:
            raise ConfigError(f"the evaluation split of {bundle.name!r} is empty; data-free mode still needs a test "
                              "split to report accuracy.")
        labels = torch.cat(ys)
        labels = labels.argmax(1) if labels.dim() == 2 else labels.long()  # class indices (of distributions)
        return cls(name=bundle.name, classes=list(bundle.classes), image_shape=tuple(int(v) for v in bundle.image_shape),  # type: ignore[arg-type]
                   test=bundle.test, test_labels=labels)


class _Normalize:
    """``(x - mean) / std`` per channel; the identity without a normalisation."""

    def __init__(self, norm: Normalization | None) -> None:
        from ..streams import Normalizer

        self.fn = Normalizer(*(norm or (None, None)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


# ------------------------------------------------------------------------------------------------ steps
class _Trainer:
    """The two alternating updates, each touching only its own model's gradients."""

    def __init__(self, teacher: nn.Module, student: nn.Module | None, gen: nn.Module, opts: GeneratorOptions,
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
        parameters; the student runs in eval mode, so not even its BN statistics move). Under torchrun the
        gradients are averaged over the ranks before the step."""
        from ..models import as_tensor

        self.gen.train()
        self.teacher.eval()
        student = self.student
        was = student.training if student is not None else False
        if student is not None:
            student.eval()
        try:
            raw = self.gen(self.z())
            x = self.norm(raw)  # what the models see
            if self.bn is not None:
                with self.bn:
                    z_t = as_tensor(self.teacher(x))
                bn_loss = self.bn.loss
                self.bn.clear()  # the terms hold this step's graph: drop them once summed
            else:
                z_t = as_tensor(self.teacher(x))
                bn_loss = torch.zeros((), device=x.device)
            z_s = as_tensor(student(x)) if adversarial and student is not None else None
        finally:
            if student is not None:
                student.train(was)
        o = self.opts
        terms = generator_loss(z_t, z_s, bn_loss, adv_weight=o.adv_weight, bn_weight=o.bn_weight,
                               balance_weight=o.balance_weight)
        prior = getattr(self.gen, "prior_loss", None)
        if callable(prior):  # the generator's own terms (the image bank's class CE and image prior)
            for k, v in prior(raw, z_t).items():
                terms[k] = v
                terms["total"] = terms["total"] + v
        total = terms["total"]
        if not bool(torch.isfinite(total.detach())):
            vals = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise NonFiniteError(f"the generator's loss is not finite ({vals}); lower --generator-option g_lr (now "
                                 f"{o.g_lr:g}) or adv_weight (now {o.adv_weight:g}).")
        params = [p for p in self.gen.parameters() if p.requires_grad]
        if total.requires_grad:
            grads = torch.autograd.grad(total, params, allow_unused=True)
            world = distributed.current().world_size
            for p, g in zip(params, grads):
                p.grad = g if g is None or world == 1 else distributed.all_reduce_sum(g) / world
            self.g_opt.step()
        self.g_opt.zero_grad(set_to_none=True)
        self.last = {k: float(v.detach()) for k, v in terms.items()}
        return self.last

    def student_step(self, kd: Any, opt: torch.optim.Optimizer, sched: Any) -> float:
        """One student update on a detached ``G(z)`` (as the engine's loop runs it on :meth:`sample`): the
        KD loss chain against the teacher's soft prediction on the clean generated image."""
        loss = kd.loss(*self.student_batch())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return float(loss.detach())

    def student_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A student step's batch: a detached ``G(z)`` (student in train mode) and the teacher's soft
        prediction on it as the target; the generator gets no gradient from the student's loss."""
        assert self.student is not None
        self.student.train()
        x = self.sample()
        return x, self.teacher_probs(x)

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


# ------------------------------------------------------------------------------------------------ the source
class GeneratorSource(SourceDefaults):
    """The data-free batch source (protocol: :mod:`daqakd_plugins.run.source`)."""

    mode = "data-free"
    ranks_before_student = False  # ranking reads generated images: the generator must be warmed up first
    trains_with_base = False  # generated images get no crop/flip base (--base-augment applies to real data)

    def __init__(self, cfg: Any) -> None:
        """Refuses, before any work, a config that is not data-free or has no teacher."""
        if not cfg.data_free:
            raise ConfigError("the generator source needs DistillConfig(data_free=True); the data-driven mode reads "
                              "the training data.")
        if cfg.teacher is None:
            raise ConfigError(
                "--data-free needs the teacher you already have: pass --teacher FILE. Training one here would read "
                "the training data, which data-free mode never does (to try the mode, train one first: `daqakd "
                "teacher --data digits --out runs/teacher.pt`, then --teacher runs/teacher.pt)."
            )
        self.cfg = cfg
        self.opts = resolve_generator_options(cfg.generator_options)
        self.tr: _Trainer | None = None
        self.gen: nn.Module | None = None
        self.noise: list[torch.Tensor] = []
        self.baselines: dict[str, float] = {}
        self.choice: dict[str, Any] = {}
        self.warm_seconds = self.rank_seconds = 0.0
        self.g_tot: float = 0.0
        self.g_terms: dict[str, float] = {}

    def open(self, cfg: Any) -> TestOnlyData:
        from .. import data

        return TestOnlyData.of(data.load_data(cfg.data, image_size=cfg.image_size))

    def example(self, ctx: RunContext) -> torch.Tensor:
        """Uniform noise images (seeded, its own generator): the example input and the ``ptq_noise`` baseline."""
        cfg = ctx.cfg
        g = torch.Generator().manual_seed(cfg.seed)
        shape = ctx.bundle.image_shape
        self.noise = [ctx.norm(torch.rand(cfg.batch_size, *shape, generator=g).to(cfg.device))
                      for _ in range(cfg.calib_batches)]
        return self.noise[0]

    def start(self, ctx: RunContext, *, fresh: bool) -> None:
        """The generator; on a fresh run also the baselines: the quantized copy as built (no calibration) and
        post-training quantization on noise. Every copy of the teacher is made before the BN-statistics
        hooks go onto it (a copy would carry them)."""
        from .. import backends

        cfg, b = ctx.cfg, ctx.bundle
        self.ctx = ctx
        self.gen = build_generator(self.opts, b.image_shape, b.num_classes, cfg.device)
        if not fresh:
            return
        example = self.noise[0]
        uncal = quantized_copy(cfg, ctx.teacher, example).to(cfg.device)
        self.baselines["quantized_uncalibrated"] = ctx.evaluate(uncal)
        noisy = backends.calibrate(quantized_copy(cfg, ctx.teacher, example), cfg.backend, self.noise,
                                   num_batches=cfg.calib_batches, config=cfg.quant_config())
        self.baselines["ptq_noise"] = ctx.evaluate(noisy.to(cfg.device))

    def _trainer(self) -> _Trainer:
        """Made once the student is quantized (its BN-statistics hooks go onto the teacher)."""
        if self.tr is None:
            assert self.gen is not None
            ctx = self.ctx
            norm = ctx.norm.to_dict()
            self.tr = _Trainer(ctx.teacher, None, self.gen, opts=self.opts, batch_size=ctx.cfg.batch_size,
                               device=ctx.cfg.device, normalize=(norm["mean"], norm["std"]) if norm else None)
        return self.tr

    def calibration_batches(self, ctx: RunContext) -> list[torch.Tensor]:
        """Warm-up (the generator learns the teacher's BN statistics and class balance, no adversarial term),
        then generated batches, normalised."""
        tr = self._trainer()
        t0 = time.perf_counter()
        for _ in _bar(range(self.opts.warmup_steps), desc="generator warm-up", enabled=ctx.cfg.progress, unit="step"):
            tr.generator_step(adversarial=False)
        self.warm_seconds = time.perf_counter() - t0
        return [ctx.norm(tr.sample()) for _ in range(ctx.cfg.calib_batches)]

    def attach(self, student: nn.Module) -> None:
        self._trainer().student = student

    def choose_augmentation(self, ctx: RunContext) -> AugmentationChoice:
        """``--augment NAME`` as chosen, or ``auto``: rank the candidates with the same metric on generated
        images labelled by the teacher's prediction."""
        cfg, tr = ctx.cfg, self._trainer()
        t0 = time.perf_counter()
        if cfg.augment != "auto":
            from ..augment import resolve_augmentation

            name = resolve_augmentation(cfg.augment).name
            self.choice = {"how": "chosen", "augmentation": name}
            return AugmentationChoice(name)
        from ..ranking import rank_augmentations

        n = self.opts.rank_samples
        xs = torch.cat([tr.sample() for _ in range(math.ceil(n / cfg.batch_size))])[:n]
        labels = tr.teacher_probs(xs).argmax(1).cpu()
        kw: dict[str, Any] = {"normalize": ctx.norm} if ctx.norm else {}  # candidates act on [0, 1] images
        ranking = rank_augmentations(
            tr.teacher, (xs.cpu(), labels), cfg.candidates, cfg.metric, seed=cfg.seed, repeats=cfg.rank_repeats,
            per_class=cfg.rank_per_class, device=cfg.device, num_classes=ctx.bundle.num_classes,
            progress=cfg.progress, **kw,
        )
        self.rank_seconds = time.perf_counter() - t0
        counts = torch.bincount(labels, minlength=ctx.bundle.num_classes).tolist()
        self.choice = {"how": "ranked", "augmentation": str(ranking.best), "metric": cfg.metric,
                       "samples": int(len(labels)), "labels": "the teacher's argmax on each generated image",
                       "per_class": counts, "after_warmup_steps": self.opts.warmup_steps}
        return AugmentationChoice(str(ranking.best), json.loads(json.dumps(ranking.to_dict(), default=str)))

    def batches_per_epoch(self) -> int:
        return self.opts.iterations * self.opts.s_steps

    def samples_per_epoch(self) -> int:
        return self.batches_per_epoch() * self.cfg.batch_size

    def state(self) -> dict[str, Any]:
        tr = self._trainer()
        return {"generator": tr.gen.state_dict(), "generator_optimizer": tr.g_opt.state_dict(),
                "augmentation_choice": json.dumps(self.choice), "baselines": json.dumps(self.baselines),
                "warmup_seconds": self.warm_seconds, "rank_seconds": self.rank_seconds}

    def load_state(self, state: dict[str, Any]) -> None:
        tr = self._trainer()
        tr.gen.load_state_dict(state["generator"])
        tr.g_opt.load_state_dict(state["generator_optimizer"])
        self.choice = json.loads(state["augmentation_choice"])
        self.baselines = {k: float(v) for k, v in json.loads(state["baselines"]).items()}
        self.warm_seconds, self.rank_seconds = float(state["warmup_seconds"]), float(state["rank_seconds"])

    def before_training(self, ctx: RunContext, *, resumed: bool) -> None:
        """A fresh run's training draws do not depend on how many draws the set-up made; each rank draws its
        own latent codes (rank 0 as in one process)."""
        if not resumed:
            from ..train import seed_everything

            seed_everything(ctx.cfg.seed + 1 + 1_000_003 * ctx.dist.rank)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``iterations`` times: ``g_steps`` generator updates, then ``s_steps`` student batches."""
        tr, o = self._trainer(), self.opts
        self.g_tot, self.g_terms = 0.0, {}
        for _ in range(o.iterations):
            for _ in range(o.g_steps):
                self.g_terms = tr.generator_step(adversarial=True)
                self.g_tot += self.g_terms["total"]
            for _ in range(o.s_steps):
                yield tr.student_batch()

    def epoch_summary(self) -> dict[str, Any]:
        o = self.opts
        if not o.g_steps:  # frozen after the warm-up: no generator step this epoch
            return {"generator_loss": None, "generator_terms": {}}
        return {"generator_loss": self.g_tot / (o.iterations * o.g_steps), "generator_terms": self.g_terms}

    def close(self) -> None:
        self._trainer().remove()

    def export_example(self, ctx: RunContext) -> torch.Tensor:
        return ctx.norm(self._trainer().sample())

    def finish(self, ctx: RunContext) -> Finish:
        cfg, b, o = ctx.cfg, ctx.bundle, self.opts
        path = ctx.out / GENERATOR_NAME
        torch.save(self._trainer().gen.state_dict(), path)
        grid = save_sample_grid(self._trainer(), ctx.out / SAMPLES_NAME, seed=cfg.seed)
        norm = ctx.norm.to_dict()
        own_terms = [k for k in self._trainer().last if k not in ("adv", "bn", "balance", "total")]  # prior_loss's
        section = {
            "no_real_training_sample_used": True, "statement": NO_TRAINING_DATA, "augmentation_choice": self.choice,
            "generator": {**o.to_dict(), "file": str(path), "objective": OBJECTIVE},
            "student_steps": cfg.epochs * o.iterations * o.s_steps,
            "generator_steps": cfg.epochs * o.iterations * o.g_steps + o.warmup_steps,
            "warmup_seconds": round(self.warm_seconds, 3), "rank_seconds": round(self.rank_seconds, 3),
            "notes": [
                f"generator: `{o.name}` (latent {o.latent_dim}, width {o.width}, lr {o.g_lr:g}); {o.warmup_steps} "
                f"warm-up steps, then per iteration {o.g_steps} generator : {o.s_steps} student steps, "
                f"{o.iterations} iterations per epoch" + (" (the generator frozen after its warm-up)" if not o.g_steps else ""),
                f"generator objective: minimise −{o.adv_weight:g}·KL(p_T‖p_S) + {o.bn_weight:g}·L_BN + "
                f"{o.balance_weight:g}·(−H(mean p_T))" + "".join(f" + {k}" for k in own_terms)
                + "; the student's target: the teacher's soft prediction",
                "normalisation: " + (f"mean {norm['mean']}, std {norm['std']} (after augmenting)" if norm
                                     else "none (the models see [0, 1] images)"),
            ],
        }
        calibration = {"data": "generated", "batches": cfg.calib_batches, "batch_size": cfg.batch_size,
                       "after_warmup_steps": o.warmup_steps,
                       "baselines": "quantized_uncalibrated: the backend's quantized copy as built, no calibration; "
                                    "ptq_noise: calibrated on uniform [0, 1] noise images; ptq_generated: calibrated "
                                    "on the warmed-up generator's images (the student training starts from)"}
        data = {"name": b.name, "test": int(len(b.test_labels)), "classes": b.num_classes,
                "image_shape": list(b.image_shape), "train_used": 0}
        return Finish(files={"generator": str(path), "generated_images": str(grid)}, data=data,
                      calibration=calibration, section=section,
                      student_meta={"data_free": True, "normalize": norm},
                      accuracy={**self.baselines, "ptq_generated": ctx.student_before})


#: the grid of generated images next to the report (and in its PNG): what the student was taught with
SAMPLES_NAME = "generated.png"


def save_sample_grid(tr: _Trainer, path: Any, *, seed: int, rows: int = 4, cols: int = 8) -> Any:
    """``rows × cols`` images of the final generator (drawn with their own seeded ``z``, so the run's random
    state is untouched) as a PNG, small images scaled up to ~32 px (nearest neighbour)."""
    from PIL import Image
    from torchvision.utils import make_grid

    with torch.no_grad():
        z = torch.randn(rows * cols, tr.opts.latent_dim, generator=torch.Generator().manual_seed(seed)).to(tr.device)
        x = tr.gen(z).detach().float().cpu().clamp(0, 1)
    if x.shape[1] not in (1, 3):
        x = x[:, :1]
    scale = max(1, 32 // max(1, x.shape[-1]))
    x = F.interpolate(x, scale_factor=scale, mode="nearest") if scale > 1 else x
    img = make_grid(x, nrow=cols, padding=2, pad_value=1.0).mul(255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(path)
    return path


def _bar(iterable: Any, *, desc: str, enabled: bool, **kw: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=None if enabled else True, dynamic_ncols=True, leave=False, **kw)
