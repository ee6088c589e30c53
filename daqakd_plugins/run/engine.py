"""The one run engine behind ``daqakd distill`` (real data) and ``daqakd distill --data-free``.

``run(RunConfig) -> Report``: run directory (lock, claim or resume) → teacher (frozen) → one normaliser →
sharded clean-test evaluation → the batch source's example and (real data) ranked augmentation → the
run's seed → the student, built (quantize, calibrate on the source's batches) or restored from the
checkpoint, trainable → DDP under torchrun → Distiller → optimizer + cosine → epochs (a versioned
:class:`~daqakd_plugins.run.checkpoint.Checkpoint` after each) → student file, export, :class:`Report`.

Each stage is written once; what differs between modes is the batch source
(:mod:`daqakd_plugins.run.source`). A checkpoint after every epoch resumes the same trajectory (bitwise
on CPU): the source's batches of epoch *e* depend only on the restored state, and every RNG is restored.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import backends, distributed, progress
from ..checks import check_output_dir, new_dirs, remove_empty_dirs
from ..distill import checkpoint as store
from ..distill.distiller import Distiller, as_tensor
from ..distill.student_file import STUDENT_NAME, save_student_file
from ..errors import ConfigError, DaqakdError, NonFiniteError
from ..streams import Normalizer, eval_loader, resolve_workers
from ..train import evaluate_counts, seed_everything
from . import plan as bit_plan
from .checkpoint import Checkpoint
from .report import Report, export_bound_warnings, flag_export_bound, training_warnings
from .rundir import RunLock, check_resume, claim_run_dir
from .source import BatchSource, RunContext

__all__ = ["RunConfig", "run", "normalizer", "make_optimizer", "quantized_copy", "EXPORT_CHECK_IMAGES"]

#: at most this many test images are read into memory to check an exported model against torch
EXPORT_CHECK_IMAGES = 2000


@dataclass(frozen=True)
class RunConfig:
    """A run: its settings (a :class:`~daqakd_plugins.distill.DistillConfig`) and its batch source."""

    settings: Any
    source: BatchSource


def say(cfg: Any, msg: str) -> None:
    """A line on stderr saying what the run does now (rank 0, when progress is on), on a terminal between
    the bars and in a log alike; while the phase a line announces (one ending in ``...``) stays silent, the
    heartbeat repeats it (:mod:`daqakd_plugins.progress`)."""
    progress.say(msg, enabled=bool(cfg.progress) and distributed.current().is_main)


def run(rc: RunConfig) -> Report:
    """Run (or resume) a distillation end to end; the report is also written to ``out/report.json``/``.md``.

    A run that fails (refused input, Ctrl-C, a crash) removes the directories it created and left empty,
    and releases the run directory's lock."""
    d = distributed.setup(rc.settings.device)  # torchrun: join the process group (a no-op in one process)
    cfg = rc.settings
    if d.active:
        cfg = dataclasses.replace(cfg, device=str(d.device(cfg.device)))  # cuda -> cuda:LOCAL_RANK
    made = new_dirs(cfg.out_dir) if d.is_main else []
    lock = RunLock(cfg.out_dir)
    try:
        with progress.heartbeat(bool(cfg.progress) and d.is_main):  # no phase silent for more than a few seconds
            return _run(cfg, rc.source, d, lock)
    except BaseException:
        lock.release()
        remove_empty_dirs(made)
        raise
    finally:
        lock.release()


def _open_run_dir(cfg: Any, source: BatchSource, lock: RunLock) -> tuple[Path, Checkpoint | None]:
    """Check ``out``, take its lock (rank 0), then resume its checkpoint or claim it for a new run."""
    out = check_output_dir(cfg.out_dir)  # before any work: a file, a read-only place
    ck: Checkpoint | None = None
    with distributed.main_first() as first:
        if first:
            lock.acquire(resuming=cfg.resume is not None)
        if cfg.resume is not None:
            from .checkpoint import load

            ck = load(cfg.resume)
            check_resume(cfg.to_dict(), ck.config)
            if ck.mode != source.mode:
                raise ConfigError(f"{cfg.resume} holds a {ck.mode} run's checkpoint, this is a {source.mode} run; "
                                  f"resume it {'with' if ck.mode == 'data-free' else 'without'} --data-free.")
        elif first:
            claim_run_dir(out, fresh=cfg.fresh, teacher=cfg.teacher)
    return out, ck


def _teacher(cfg: Any, bundle: Any, out: Path, ck: Checkpoint | None) -> tuple[nn.Module, dict[str, Any], str]:
    """The frozen teacher: ``--teacher``, else the checkpoint's, else trained into ``out/teacher.pt``."""
    from ..models import load_model
    from ..train import get_or_train_teacher, teacher_arch

    progress.doing("loading the teacher")
    if ck is not None and cfg.teacher is None and Path(ck.teacher_path).exists():
        model, meta = load_model(ck.teacher_path, trust_factory=cfg.arch or False)  # the run's own --arch
        path = ck.teacher_path
    elif cfg.teacher is not None:  # a daqakd model file names its architecture; a plain state_dict needs --arch
        spec = teacher_arch(bundle, cfg.arch, num_classes=cfg.num_classes, small_input=cfg.small_input) \
            if cfg.arch is not None else None
        model, meta = load_model(cfg.teacher, arch=spec)
        path = str(cfg.teacher)
    else:
        spec = teacher_arch(bundle, cfg.arch, num_classes=cfg.num_classes, small_input=cfg.small_input)
        path = str(out / "teacher.pt")
        if not Path(path).exists():
            progress.doing(f"training the default teacher ({cfg.teacher_epochs} epochs) into {path}")
        norm = (cfg.mean, cfg.std) if cfg.mean is not None else None
        with distributed.main_first():  # rank 0 trains and saves the default teacher, the others load it
            model, meta = get_or_train_teacher(bundle, path, epochs=cfg.teacher_epochs, seed=cfg.seed,
                                               progress=cfg.progress, arch=spec, workers=cfg.workers, normalize=norm,
                                               base_augment=cfg.base_augment)
    model.to(cfg.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta, path


def normalizer(cfg: Any, tmeta: dict[str, Any], channels: int) -> Normalizer:
    """What the models expect: ``--mean/--std``, else the teacher file's ``normalize`` record, else none
    (images in ``[0, 1]``). Augmentations and generators work on ``[0, 1]`` images; batches are normalised
    right before a model sees them."""
    if cfg.mean is not None:
        mean, std = cfg.mean, cfg.std
    else:
        rec = tmeta.get("normalize") or {}
        mean, std = rec.get("mean"), rec.get("std")
    if mean is None or std is None:
        return Normalizer()
    m, sd = [float(v) for v in mean], [float(v) for v in std]
    if len(m) != len(sd) or len(m) not in (1, channels) or any(v <= 0 for v in sd):
        raise ConfigError(f"the normalisation mean {m} / std {sd} does not fit {channels}-channel images; pass "
                          "--mean/--std with one value, or one per channel (std > 0).")
    return Normalizer(m, sd)


def _evaluator(cfg: Any, bundle: Any, norm: Normalizer, workers: int, d: Any) -> Any:
    """Clean test accuracy, each rank scoring its share of the test split, the counts summed."""
    n_test = len(bundle.test_labels)
    if n_test == 0:
        raise ConfigError(f"the evaluation split of {bundle.name!r} is empty; a run needs a test split to report "
                          "accuracy.")
    test_loader = eval_loader(bundle.test, num_classes=bundle.num_classes, batch_size=max(256, cfg.batch_size),
                              workers=workers, pin_memory=torch.device(cfg.device).type == "cuda", persistent=True,
                              index=range(d.rank, n_test, d.world_size))

    def evaluate(model: nn.Module) -> float:
        hits, n = evaluate_counts(model, test_loader, device=cfg.device, normalize=norm)
        tot = distributed.all_reduce_sum(torch.tensor([hits, n], dtype=torch.float64))
        return float(tot[0]) / max(1.0, float(tot[1]))

    return evaluate


def _check_width(teacher: nn.Module, bundle: Any, device: str, teacher_path: str) -> None:
    from ..models import check_model_fits_data

    check_model_fits_data(teacher, bundle.image_shape, bundle.num_classes, what="the teacher",
                          fix=f"Pass a --teacher trained on this data ({teacher_path} is not), or leave --teacher out "
                              "to train one.")
    with torch.inference_mode():
        width = int(as_tensor(teacher(torch.zeros(1, *bundle.image_shape, device=device))).shape[1])
    if bundle.num_classes != width:
        raise ConfigError(f"the teacher predicts {width} classes but the data has {bundle.num_classes}; pass a "
                          "teacher trained on this data.")


def _fp_copy(teacher: nn.Module) -> nn.Module:
    fp = copy.deepcopy(teacher)
    for p in fp.parameters():
        p.requires_grad_(True)
    return fp


def quantized_copy(cfg: Any, teacher: nn.Module, example: torch.Tensor) -> nn.Module:
    """The backend's quantized model of a trainable copy of the teacher (not calibrated)."""
    return backends.quantize(_fp_copy(teacher), cfg.backend, cfg.quant_config(), example_input=example)


def _trainable(student: nn.Module, device: str) -> nn.Module:
    student.to(device)
    for p in student.parameters():
        p.requires_grad_(True)
    return student


def _student(ctx: RunContext, source: BatchSource, ck: Checkpoint | None) -> tuple[nn.Module, float]:
    """Build (quantize a copy of the teacher, calibrate on the source's batches: the accuracy then is the
    PTQ baseline) or restore the student from the checkpoint; the engine owns ``requires_grad``. The
    adapter rebuilds a restored student from a fresh FP copy (Brevitas keeps shared quantizers shared,
    NNCF reloads its config, ...), before the optimizer exists, which must hold the parameters it uses."""
    cfg = ctx.cfg
    assert ctx.example is not None
    example = ctx.example.to(cfg.device)
    source.start(ctx, fresh=ck is None)
    if ck is not None:
        progress.doing(f"restoring the {cfg.backend} student from the checkpoint")
        ctx.quant, ctx.plan = bit_plan.from_record(cfg, ck.bit_plan), ck.bit_plan or None
        student = backends.restore_student(_fp_copy(ctx.teacher), cfg.backend, ctx.quant, ck.student,
                                           example_input=example)
        student = _trainable(student, cfg.device)
        source.attach(student)
        return student, ck.student_before
    t0 = time.perf_counter()
    budgeted = cfg.bits_budget is not None or cfg.size_budget_kb is not None
    calib = source.calibration_batches(ctx) if budgeted else None  # the sensitivity pass reads it
    choice = bit_plan.choose(cfg, ctx.teacher, example, calib, say=lambda m: say(cfg, m))
    ctx.quant, ctx.plan = choice.quant, choice.record
    say(cfg, f"quantizing a copy of the teacher with {cfg.backend} W{cfg.bits}A{cfg.weight_act_bits} (bit plan: "
             f"{choice.record['summary']}; {choice.record['avg_weight_bits']} weight bits on average) ...")
    student = backends.quantize(_fp_copy(ctx.teacher), cfg.backend, ctx.quant, example_input=example)
    calib = calib if calib is not None else source.calibration_batches(ctx)
    student = backends.calibrate(student, cfg.backend, calib, num_batches=len(calib), config=ctx.quant)
    student = _trainable(student, cfg.device)
    source.attach(student)
    say(cfg, f"quantized and calibrated in {time.perf_counter() - t0:.0f} s; evaluating the calibrated (PTQ) student "
             f"on {len(ctx.bundle.test_labels)} test images ...")
    acc = ctx.evaluate(student)
    say(cfg, f"PTQ student: test accuracy {acc:.4f}")
    return student, acc


def make_optimizer(cfg: Any, params: list[nn.Parameter], steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """``--optimizer`` (Adam, or SGD with Nesterov momentum) and a per-step cosine over ``steps``."""
    opt: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Cosine over all steps; its state_dict is plain numbers (weights_only-safe, unlike lambdas).
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    return opt, sched


def _ddp(student: nn.Module, cfg: Any) -> nn.Module:
    """The student wrapped in DistributedDataParallel (gradients averaged over the ranks every step)."""
    from torch.nn.parallel import DistributedDataParallel

    from ..plugins import get_backend

    info = get_backend(cfg.backend)
    if not info.ddp:
        raise ConfigError(f"backend {cfg.backend!r} cannot train under DistributedDataParallel here "
                          f"({info.ddp_note or 'see docs/scaling.md'}); run it in one process (without torchrun).")
    dev = torch.device(cfg.device)
    return DistributedDataParallel(student, device_ids=[dev.index] if dev.type == "cuda" else None,
                                   find_unused_parameters=info.ddp_find_unused)


def _fast_forward(sched: Any, steps: int) -> None:
    """Put a fresh step-based scheduler ``steps`` steps in (resuming with another world size changes the
    steps per epoch, so the saved step count no longer matches)."""
    for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
        group["lr"] = base
    sched.last_epoch = steps
    for group, lr in zip(sched.optimizer.param_groups, sched._get_closed_form_lr()):
        group["lr"] = lr


def _signature(model: nn.Module) -> dict[str, float]:
    """Per state entry, a number that differs when two replicas' floating-point state differs (sum and sum
    of squares)."""
    out: dict[str, float] = {}
    for name, t in model.state_dict().items():
        if isinstance(t, torch.Tensor) and torch.is_floating_point(t):
            v = t.detach().double()
            out[name] = float(v.sum()) + float((v * v).sum())
    return out


@dataclass
class _Training:
    """The pieces of the epoch loop."""

    student: nn.Module
    kd: Distiller
    opt: torch.optim.Optimizer
    sched: Any
    augmentation: str
    ranking: dict[str, Any] | None
    student_before: float
    history: list[dict[str, Any]]
    base_augment: str = "none"
    start_epoch: int = 0
    prior_seconds: float = 0.0


def _run(cfg: Any, source: BatchSource, d: Any, lock: RunLock) -> Report:
    t_start = time.perf_counter()
    out, ck = _open_run_dir(cfg, source, lock)
    seed_everything(cfg.seed)
    progress.doing("reading the data" if source.mode == "data" else "preparing the generator's run")
    bundle = source.open(cfg)
    workers = resolve_workers(cfg.workers)
    out.mkdir(parents=True, exist_ok=True)  # only now: a run refused above leaves no empty directory
    teacher, tmeta, teacher_path = _teacher(cfg, bundle, out, ck)
    norm = normalizer(cfg, tmeta, bundle.image_shape[0])
    ctx = RunContext(cfg=cfg, out=out, dist=d, bundle=bundle, teacher=teacher, teacher_meta=tmeta,
                     teacher_path=teacher_path, norm=norm, workers=workers, evaluate=_evaluator(cfg, bundle, norm, workers, d))
    _check_width(teacher, bundle, cfg.device, teacher_path)
    say(cfg, f"evaluating the teacher on {len(bundle.test_labels)} test images ...")
    teacher_fp = ctx.evaluate(teacher)
    say(cfg, f"teacher (FP): test accuracy {teacher_fp:.4f}")
    progress.doing("reading the example batch")
    ctx.example = source.example(ctx)
    tr = _setup_training(ctx, source, ck)
    train_seconds = _train(ctx, source, tr)
    source.close()
    student = tr.student
    student.eval()
    student_after = ctx.evaluate(student)
    rank_samples = distributed.all_gather_object(source.samples_per_epoch())  # each rank's samples per epoch
    in_sync = _replicas_in_sync(student)
    if not d.is_main:  # rank 0 writes the student, the export and the report; the others get the report
        tr.kd.remove_hooks()
        return distributed.broadcast_object(None)
    fin = source.finish(ctx)
    student_path = save_student_file(
        out / STUDENT_NAME, student, backend=cfg.backend, config=ctx.quant, arch=tmeta.get("arch"),
        input_shape=list(bundle.image_shape),
        meta={"accuracy": student_after, "augmentation": tr.augmentation, "loss": cfg.loss, "seed": cfg.seed,
              **fin.student_meta},
    )
    if cfg.export:  # a report before the export too: a run stopped during a slow export still leaves one
        fmts = ", ".join(cfg.export_formats) if cfg.export_formats else "the backend's formats"
        export: dict[str, Any] = {"status": "running", "formats": fmts,
                                  "note": "written before the export; a report that still says 'running' comes from "
                                          "a run stopped during the export (the student is saved; --export-formats "
                                          "skips a slow format)"}
    else:
        export = {"skipped": "--no-export"}
    report = Report(
        mode=source.mode, backend=cfg.backend, bits=cfg.bits, act_bits=cfg.weight_act_bits,
        augmentation=tr.augmentation, base_augment=tr.base_augment, loss=cfg.loss,
        loss_terms=[{"component": t.component, "weight": t.weight, "params": dict(t.params), "key": t.key}
                    for t in tr.kd.terms],
        ranking_detail=tr.ranking,
        accuracy={"teacher_fp": teacher_fp, "student_before": tr.student_before, "student_after": student_after,
                  **fin.accuracy},
        epochs=cfg.epochs, seconds=train_seconds, wall_seconds=time.perf_counter() - t_start, seed=cfg.seed,
        lr=cfg.lr, batch_size=cfg.batch_size, optimizer=cfg.optimizer, data=fin.data, teacher=teacher_path,
        normalize=norm.to_dict(), num_quantizers=backends.count_quantizers(student), calibration=fin.calibration,
        history=tr.history, resumed_from_epoch=ck.epoch if ck is not None else None, export=export,
        files={"checkpoint": str(out / store.CHECKPOINT_NAME), "student": str(student_path), **fin.files,
               "report_md": str(out / "report.md")},
        config=cfg.to_dict(), world_size=d.world_size,
        distributed={"backend": d.backend or None, "rank_samples_per_epoch": rank_samples,
                     "student": "DistributedDataParallel" if d.active else None, "replicas_in_sync": in_sync,
                     "batch_size": "per rank" if d.active else "per step"},
        section=fin.section, bit_plan=ctx.plan,
    )
    _write_report(out, report)
    for line in training_warnings(report.to_dict()):
        print(f"daqakd: WARNING: {line}", file=sys.stderr, flush=True)
    if cfg.export:
        say(cfg, f"exporting the student ({export['formats']}) and measuring each file next to the FP teacher's ONNX "
                 f"(report so far: {out / 'report.md'}) ...")
        report.export = _export(ctx, student, source.export_example(ctx))
        report.wall_seconds = time.perf_counter() - t_start
        _write_report(out, report)
    tr.kd.remove_hooks()
    if d.active:
        distributed.broadcast_object(report)
    return report


def _write_report(out: Path, report: Report) -> None:
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    (out / "report.md").write_text(report.markdown())


def _setup_training(ctx: RunContext, source: BatchSource, ck: Checkpoint | None) -> _Training:
    """The augmentation, the run's seed, the student, DDP, the Distiller, the optimizer; restored on resume."""
    cfg = ctx.cfg
    choice = None
    if ck is None and source.ranks_before_student:
        choice = source.choose_augmentation(ctx)
    seed_everything(cfg.seed)  # what follows must not depend on whether ranking ran
    student, student_before = _student(ctx, source, ck)
    ctx.student_before = student_before
    if ck is not None:
        augmentation, ranking = ck.augmentation, ck.ranking
    else:
        choice = choice or source.choose_augmentation(ctx)
        augmentation, ranking = choice.name, choice.ranking
    trained = _ddp(student, cfg) if ctx.dist.active else student  # DDP averages the ranks' gradients
    from ..augment import resolve_base

    # every candidate, `none` too, runs after the base (a generator's images: no base, as before)
    base = resolve_base(cfg.base_augment, ctx.bundle.image_shape) if source.trains_with_base else None
    kd = Distiller(ctx.teacher, trained, loss=cfg.loss, augment=augmentation, num_classes=ctx.bundle.num_classes,
                   device=cfg.device, normalize=ctx.norm, base_augment=base)
    progress.doing("preparing the training loader")
    source.prepare_training(ctx, kd)
    steps_per_epoch = source.batches_per_epoch()
    opt, sched = make_optimizer(cfg, [*student.parameters(), *kd.parameters()], cfg.epochs * steps_per_epoch)
    tr = _Training(student=student, kd=kd, opt=opt, sched=sched, augmentation=augmentation, ranking=ranking,
                   student_before=student_before, history=[], base_augment=base.name if base is not None else "none")
    if ck is not None:
        kd.load_state_dict(ck.distiller)
        source.load_state(ck.source)
        opt.load_state_dict(ck.optimizer)
        if ck.world_size == ctx.dist.world_size:
            sched.load_state_dict(ck.scheduler)
        else:  # resumed with another number of processes: the same cosine, at this run's steps per epoch
            _fast_forward(sched, ck.epoch * steps_per_epoch)
        store.restore_rng(ck.rng)
        tr.start_epoch, tr.history, tr.prior_seconds = ck.epoch, list(ck.history), ck.seconds
    source.before_training(ctx, resumed=ck is not None)
    return tr


def _train(ctx: RunContext, source: BatchSource, tr: _Training) -> float:
    """The epochs from ``tr.start_epoch``; a checkpoint (rank 0) after each. Returns the training seconds."""
    cfg, d = ctx.cfg, ctx.dist
    ck_path = ctx.out / store.CHECKPOINT_NAME
    t_train = time.perf_counter()
    desc = "data-free distill" if source.mode == "data-free" else "distill"
    epochs_bar = progress.bar(range(tr.start_epoch, cfg.epochs), desc=desc, enabled=cfg.progress, unit="epoch",
                              initial=tr.start_epoch, total=cfg.epochs)
    for epoch in epochs_bar:
        tr.student.train()
        tot, n = 0.0, 0
        total = source.batches_per_epoch()
        batches = progress.bar(source.epoch(epoch), desc=f"epoch {epoch + 1}", enabled=cfg.progress, unit="batch",
                               total=total)
        progress.doing(f"training epoch {epoch + 1}/{cfg.epochs}")
        for step, (xb, yb) in enumerate(batches, 1):
            try:
                loss = tr.kd.loss(xb, yb)
            except NonFiniteError as exc:
                last = f"{ck_path} (after epoch {epoch})" if ck_path.exists() and epoch > 0 else "none (first epoch)"
                raise NonFiniteError(f"{exc} Training stopped in epoch {epoch + 1}; last good checkpoint: {last}.") from None
            tr.opt.zero_grad(set_to_none=True)
            loss.backward()
            tr.opt.step()
            tr.sched.step()
            tot += float(loss.detach()) * len(yb)
            n += len(yb)
            batches.set_postfix(loss=f"{tot / n:.4f}")
            progress.doing(f"training epoch {epoch + 1}/{cfg.epochs}: {step}/{total} batches done, loss {tot / n:.4f}",
                           new_phase=False)
        if d.active:  # as DDP's next forward would: the last step's BatchNorm statistics are rank 0's on every rank
            distributed.broadcast_buffers(tr.student)
        say(cfg, f"epoch {epoch + 1}/{cfg.epochs}: evaluating on {len(ctx.bundle.test_labels)} test images ...")
        acc = ctx.evaluate(tr.student)
        if d.active:  # the epoch's mean loss over every rank's samples
            red = distributed.all_reduce_sum(torch.tensor([tot, n], dtype=torch.float64))
            tot, n = float(red[0]), int(red[1])
        say(cfg, f"epoch {epoch + 1}/{cfg.epochs}: loss {tot / max(1, n):.4f}, test accuracy {acc:.4f} "
                 f"({time.perf_counter() - t_train:.0f} s)")
        tr.history.append({"epoch": epoch + 1, "loss": tot / max(1, n), **source.epoch_summary(),
                           "test_accuracy": acc, "lr": float(tr.opt.param_groups[0]["lr"]), "terms": tr.kd.last_terms})
        epochs_bar.set_postfix(loss=f"{tot / max(1, n):.4f}", acc=f"{acc:.4f}")
        seconds = tr.prior_seconds + (time.perf_counter() - t_train)
        if d.is_main:
            Checkpoint(epoch=epoch + 1, mode=source.mode, config=cfg.to_dict(),
                       student=backends.save_student(tr.student, cfg.backend, ctx.quant),
                       distiller=tr.kd.state_dict(), optimizer=tr.opt.state_dict(), scheduler=tr.sched.state_dict(),
                       rng=store.capture_rng(), augmentation=tr.augmentation, ranking=tr.ranking,
                       history=tr.history, teacher_path=ctx.teacher_path,
                       student_before=tr.student_before, seconds=seconds, world_size=d.world_size,
                       bit_plan=ctx.plan or {}, source=source.state()).save(ck_path)
        distributed.barrier()  # nobody runs ahead of the checkpoint rank 0 is writing
    return tr.prior_seconds + (time.perf_counter() - t_train)


def _replicas_in_sync(student: nn.Module) -> bool:
    """DDP keeps the replicas equal: check it (a backend with state DDP does not synchronise gets a warning)."""
    sigs = distributed.all_gather_object(_signature(student))
    ref = sigs[0]
    differ = sorted({k for s in sigs[1:] for k in set(s) | set(ref)
                     if k not in s or k not in ref or abs(s[k] - ref[k]) > 1e-9 * max(1.0, abs(ref[k]))})
    if differ:
        import warnings

        shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        warnings.warn(f"the ranks' students differ after training in {len(differ)} state entr"
                      f"{'y' if len(differ) == 1 else 'ies'} ({shown}); the backend's student has state DDP does "
                      "not synchronise. Report this with the backend name.", stacklevel=2)
    return not differ


def _export_sample(bundle: Any, norm: Normalizer, workers: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Test images for the exported-model check: all of a small test split, else an evenly spaced subset of
    :data:`EXPORT_CHECK_IMAGES` (bounded memory); normalised as the models see them."""
    from ..streams import dataset_tensors

    n = len(bundle.test_labels)
    if n <= EXPORT_CHECK_IMAGES:
        idx = torch.arange(n)
        what = f"all {n} test images"
    else:
        idx = torch.linspace(0, n - 1, EXPORT_CHECK_IMAGES).round().long().unique()
        what = f"{len(idx)} of {n} test images, evenly spaced"
    x, y = dataset_tensors(bundle.test, num_classes=bundle.num_classes, index=idx, workers=workers,
                           desc="export check images")
    return norm(x), y, what


def _export(ctx: RunContext, student: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    try:
        from ..runtime import export_and_measure
    except ImportError as exc:
        return {"skipped": f"daqakd_plugins.runtime is not available here ({exc})"}
    try:
        test_x, test_y, what = _export_sample(ctx.bundle, ctx.norm, ctx.workers)
        res = export_and_measure(student, ctx.teacher, ctx.cfg.backend, example.to(ctx.cfg.device), test_x, test_y,
                                 ctx.out / "export", formats=ctx.cfg.export_formats)
    except DaqakdError as exc:
        return {"error": str(exc)}
    res["test_images"] = what
    res = json.loads(json.dumps(res, default=str))
    flag_export_bound(res, ctx.cfg.export_bound_pp)
    for line in export_bound_warnings(res):
        print(f"daqakd: WARNING: {line}", file=sys.stderr, flush=True)
    return res

