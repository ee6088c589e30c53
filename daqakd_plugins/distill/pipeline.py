"""The reference DA-QAKD loop behind ``daqakd distill`` (METRIC.md section 5).

teacher (frozen) → rank candidate augmentations (or take one by name) → quantized student through the
backend hook, calibrated (its accuracy now is the PTQ baseline) → KD training with the chosen DA →
clean-test evaluation → export and side-by-side measurement → report.json / report.md / student.pt.

A checkpoint is written atomically after every epoch; ``resume`` continues from it and ends with the
same weights as an uninterrupted run (bitwise on CPU): the loader order of epoch *e* depends only on
``(seed, e)`` and every RNG state is restored.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checks import check_output_dir, new_dirs, remove_empty_dirs
from ..errors import CheckpointError, ConfigError, DaqakdError, NonFiniteError, RunDirError
from ..streams import Normalizer, eval_loader, resolve_workers
from ..train import evaluate_counts, evaluate_loader
from .checkpoint import CHECKPOINT_NAME, FORMAT, atomic_save, capture_rng, load_checkpoint, restore_rng
from .config import _TRAJECTORY, LEGACY_DEFAULTS, DistillConfig
from .distiller import Distiller, as_tensor
from .report import pick_summary, ranking_rows, render_markdown
from .student_file import STUDENT_NAME, save_student_file

__all__ = ["run_distill", "evaluate_student", "evaluate_loader"]


def _bar(iterable: Any, *, desc: str, enabled: bool, **kw: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=None if enabled else True, dynamic_ncols=True, leave=False, **kw)


def evaluate_student(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512,
                     device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy on clean data (eval mode, no grad, QuantTensor outputs unwrapped): train.evaluate."""
    from ..train import evaluate

    return evaluate(model, x, y, batch_size=batch_size, device=device)


#: at most this many test images are read into memory to check an exported model against torch
EXPORT_CHECK_IMAGES = 2000


def _calibration(cfg: DistillConfig, bundle: Any, norm: Normalizer,
                 workers: int) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Calibration batches (normalised, as the models see them) from a class-stratified, seeded sample of
    the training images — a bounded sample, read through the data pipeline — and what the report says
    about it (per-class counts)."""
    from ..data import calibration_sample
    from ..streams import dataset_tensors

    labels = bundle.train_labels
    idx = calibration_sample(labels, cfg.calib_batches * cfg.batch_size, seed=cfg.seed)
    xs, _ = dataset_tensors(bundle.train, num_classes=bundle.num_classes, index=idx, workers=workers,
                            batch_size=cfg.batch_size, desc="calibration images")
    xs = norm(xs)
    classes = list(bundle.classes)
    counts = torch.bincount(labels[idx], minlength=len(classes)).tolist()
    info = {"images": int(len(idx)), "batches": int(math.ceil(len(idx) / cfg.batch_size)), "seed": cfg.seed,
            "sampling": "class-stratified, seeded, shuffled", "per_class": dict(zip(classes, counts))}
    return [xs[i : i + cfg.batch_size] for i in range(0, len(xs), cfg.batch_size)], info


def _build_student(cfg: DistillConfig, teacher: nn.Module, example: torch.Tensor,
                   calib: list[torch.Tensor]) -> nn.Module:
    from .. import backends

    qcfg = cfg.quant_config()
    example = example.to(cfg.device)
    fp = copy.deepcopy(teacher)
    for p in fp.parameters():
        p.requires_grad_(True)
    student = backends.quantize(fp, cfg.backend, qcfg, example_input=example)
    # Calibrated on clean batches of a class-stratified, seeded sample: deterministic, and the accuracy
    # right after it is the post-training-quantization baseline the report calls "student_before".
    student = backends.calibrate(student, cfg.backend, calib, num_batches=cfg.calib_batches)
    student.to(cfg.device)
    for p in student.parameters():
        p.requires_grad_(True)
    return student


def _make_optimizer(cfg: DistillConfig, params: list[nn.Parameter], steps: int) -> tuple[torch.optim.Optimizer, Any]:
    opt: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Cosine over all steps; its state_dict is plain numbers (weights_only-safe, unlike lambdas).
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    return opt, sched


def _rank(cfg: DistillConfig, teacher: nn.Module, bundle: Any, norm: Normalizer,
          workers: int) -> tuple[str, dict[str, Any] | None]:
    """Resolve ``augment``: ``auto`` ranks the candidates with the teacher and picks the best."""
    if cfg.augment != "auto":
        from ..augment import resolve_augmentation

        return resolve_augmentation(cfg.augment).name, None
    from ..ranking import rank_augmentations

    ranking = rank_augmentations(
        teacher, bundle, cfg.candidates, cfg.metric, seed=cfg.seed, repeats=cfg.rank_repeats,
        per_class=cfg.rank_per_class, device=cfg.device, num_classes=bundle.num_classes, progress=cfg.progress,
        workers=workers, normalize=norm, base_augment=cfg.base_augment,
    )
    return str(ranking.best), json.loads(json.dumps(ranking.to_dict(), default=str))


def _teacher(cfg: DistillConfig, bundle: Any, out: Path) -> tuple[nn.Module, dict[str, Any], str]:
    from ..models import load_model
    from ..train import get_or_train_teacher, teacher_arch

    spec = teacher_arch(bundle, cfg.arch, num_classes=cfg.num_classes, small_input=cfg.small_input)
    if cfg.teacher is not None:
        # a daqakd model file names its architecture; a plain state_dict needs --arch
        model, meta = load_model(cfg.teacher, arch=spec if cfg.arch is not None else None)
        return model, meta, str(cfg.teacher)
    path = out / "teacher.pt"
    norm = (cfg.mean, cfg.std) if cfg.mean is not None else None
    model, meta = get_or_train_teacher(bundle, path, epochs=cfg.teacher_epochs, seed=cfg.seed, progress=cfg.progress,
                                       arch=spec, workers=cfg.workers, normalize=norm, base_augment=cfg.base_augment)
    return model, meta, str(path)


def _load_data(cfg: DistillConfig) -> Any:
    """The data bundle (digits in memory, a folder read lazily), restricted to ``train_per_class``."""
    from ..data import load_data, stratified_subset

    bundle = load_data(cfg.data, seed=0, image_size=cfg.image_size)
    if cfg.train_crop == "random":
        bundle.training_set("random")  # refuses in-memory data and folders without --image-size, before any work
    if cfg.train_per_class is not None:
        idx = stratified_subset(bundle.train_labels, cfg.train_per_class, seed=0)  # same subset for every seed and arm
        bundle = bundle.subset(idx)
    return bundle


def _normalizer(cfg: DistillConfig, tmeta: dict[str, Any], channels: int) -> Normalizer:
    """``--mean/--std``, else the teacher file's ``normalize`` record, else none ([0, 1] images)."""
    if cfg.mean is not None:
        norm = Normalizer(cfg.mean, cfg.std)
    else:
        rec = tmeta.get("normalize") or {}
        norm = Normalizer(rec.get("mean"), rec.get("std")) if rec.get("mean") is not None else Normalizer()
    norm.check_channels(channels)
    return norm


def _export_sample(bundle: Any, norm: Normalizer, workers: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Test images for the exported-model check: all of a small test split, else an evenly spaced
    subset of :data:`EXPORT_CHECK_IMAGES` (bounded memory); normalised as the models see them."""
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


#: the files a run writes into its directory; --fresh deletes exactly these
RUN_FILES = (CHECKPOINT_NAME, STUDENT_NAME, "report.json", "report.md", "report.png", "teacher.pt", "export",
             "generator.pt")  # the last: a data-free run's generator


def _claim_run_dir(cfg: DistillConfig, out: Path) -> None:
    """A new run may not write over an earlier one: refuse (naming ``--resume`` and ``--fresh``), or with
    ``fresh`` delete the earlier run's files first, so nothing of it is left next to the new report."""
    found = [n for n in RUN_FILES if (out / n).exists()]
    if not found:
        return
    if not cfg.fresh:
        state = "an unfinished run (checkpoint.pt)" if (out / CHECKPOINT_NAME).exists() and not (out / "report.json").exists() \
            else "a daqakd run"
        raise RunDirError(
            f"{out} already holds {state} ({', '.join(found)}). Continue it with `daqakd distill --resume {out}`, "
            f"or start over with --fresh (deletes {', '.join(found)} there), or pass another --out."
        )
    import shutil

    keep = Path(cfg.teacher).resolve() if cfg.teacher else None
    for n in found:
        p = out / n
        if keep is not None and p.resolve() == keep:
            continue  # the teacher the user passed is input, not output
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _check_resume(cfg: DistillConfig, ck: dict[str, Any]) -> None:
    old = {**LEGACY_DEFAULTS, **json.loads(ck["config"])}
    new = cfg.to_dict()
    diff = [f"{k}: checkpoint {old.get(k)!r} vs now {new.get(k)!r}" for k in _TRAJECTORY if old.get(k) != new.get(k)]
    if cfg.teacher != old.get("teacher") and not (cfg.teacher is None and old.get("teacher") is None):
        diff.append(f"teacher: checkpoint {old.get('teacher')!r} vs now {cfg.teacher!r}")
    if diff:
        raise CheckpointError(
            "cannot resume: the run's settings differ from the checkpoint's (" + "; ".join(diff) + "). "
            "Resume with the original settings (omit them: `daqakd distill --resume DIR` reads them from "
            "the checkpoint) or start a new run in another --out directory."
        )


def _export(cfg: DistillConfig, student: nn.Module, teacher: nn.Module, example: torch.Tensor,
            bundle: Any, out: Path, norm: Normalizer, workers: int) -> dict[str, Any]:
    try:
        from ..runtime import export_and_measure
    except ImportError as exc:
        return {"skipped": f"daqakd_plugins.runtime is not available here ({exc})"}
    try:
        test_x, test_y, what = _export_sample(bundle, norm, workers)
        res = export_and_measure(student, teacher, cfg.backend, example, test_x, test_y, out / "export")
    except DaqakdError as exc:
        return {"error": str(exc)}
    res["test_images"] = what
    return json.loads(json.dumps(res, default=str))


# ------------------------------------------------------------------------------------------------
def run_distill(config: DistillConfig) -> dict[str, Any]:
    """Run (or resume) DA-QAKD end to end and return the report (also written to ``out/report.json``).

    A run that fails (refused input, Ctrl-C, a crash) removes the directories it created and left
    empty, so a refused run leaves no empty ``out`` behind (a checkpoint or teacher.pt keeps them)."""
    from .. import distributed

    d = distributed.setup(config.device)  # torchrun: join the process group (a no-op in one process)
    if d.active:
        config = dataclasses.replace(config, device=str(d.device(config.device)))  # cuda -> cuda:LOCAL_RANK
    made = new_dirs(config.out_dir) if d.is_main else []
    try:
        if config.data_free:
            if d.active:
                raise ConfigError("--data-free runs in one process; start it without torchrun.")
            from ..datafree import run_datafree

            return run_datafree(config)
        return _run_distill(config)
    except BaseException:
        remove_empty_dirs(made)
        raise


def _run_distill(config: DistillConfig) -> dict[str, Any]:
    from .. import distributed
    from ..train import seed_everything

    cfg = config
    dist_ = distributed.current()
    t_start = time.perf_counter()
    out = check_output_dir(cfg.out_dir)  # before any work: a file, a read-only place
    ck: dict[str, Any] | None = None
    if cfg.resume is not None:
        ck = load_checkpoint(cfg.resume)
        _check_resume(cfg, ck)
    else:
        with distributed.main_first() as first:
            if first:
                _claim_run_dir(cfg, out)

    seed_everything(cfg.seed)
    bundle = _load_data(cfg)
    workers = resolve_workers(cfg.workers)
    out.mkdir(parents=True, exist_ok=True)  # only now: a run refused above leaves no empty directory
    if ck is not None and cfg.teacher is None and Path(ck["teacher_path"]).exists():
        from ..models import load_model

        teacher, tmeta = load_model(ck["teacher_path"], trust_factory=cfg.arch or False)  # the run's own --arch
        teacher_path = ck["teacher_path"]
    else:
        with distributed.main_first():  # rank 0 trains and saves the default teacher, the others load it
            teacher, tmeta, teacher_path = _teacher(cfg, bundle, out)
    teacher.to(cfg.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    from ..checks import check_model_fits_data

    check_model_fits_data(teacher, bundle.image_shape, bundle.num_classes, what="the teacher",
                          fix=f"Pass a --teacher trained on this data ({teacher_path} is not), or leave --teacher out "
                              "to train one.")
    norm = _normalizer(cfg, tmeta, bundle.image_shape[0])
    n_test = len(bundle.test_labels)
    test_loader = eval_loader(bundle.test, num_classes=bundle.num_classes, batch_size=max(256, cfg.batch_size),
                              workers=workers, pin_memory=torch.device(cfg.device).type == "cuda", persistent=True,
                              index=range(dist_.rank, n_test, dist_.world_size))  # each rank its share

    def evaluate(model: nn.Module) -> float:
        hits, n = evaluate_counts(model, test_loader, device=cfg.device, normalize=norm)
        tot = distributed.all_reduce_sum(torch.tensor([hits, n], dtype=torch.float64))
        return float(tot[0]) / max(1.0, float(tot[1]))

    calib, calibration = _calibration(cfg, bundle, norm, workers)
    from ..streams import dataset_tensors

    # the first training images (as the student's example input for tracing / shapes), normalised
    example = norm(dataset_tensors(bundle.train, num_classes=bundle.num_classes, desc="example batch",
                                   index=range(min(cfg.batch_size, len(bundle.train_labels))))[0])
    width = _out_width(teacher, example[:1].to(cfg.device))
    if bundle.num_classes != width:
        raise ConfigError(
            f"the teacher predicts {width} classes but the data has {bundle.num_classes}; pass a teacher trained "
            "on this data."
        )
    teacher_fp = evaluate(teacher)

    if ck is not None:
        augmentation, ranking = ck["augmentation"], json.loads(ck["ranking"])
    else:
        augmentation, ranking = _rank(cfg, teacher, bundle, norm, workers)

    seed_everything(cfg.seed)  # what follows must not depend on whether ranking ran
    from .. import backends

    if ck is None:
        student = _build_student(cfg, teacher, example, calib)
        student_before = evaluate(student)
    else:
        # The adapter rebuilds the student from a fresh FP copy (Brevitas keeps shared quantizers
        # shared, NNCF reloads its config, ...); before the optimizer exists, which must hold the
        # parameters the restored model uses.
        fp = copy.deepcopy(teacher)
        for p in fp.parameters():
            p.requires_grad_(True)
        student = backends.restore_student(fp, cfg.backend, cfg.quant_config(), ck["student"],
                                           example_input=example.to(cfg.device))
        student.to(cfg.device)
        for p in student.parameters():
            p.requires_grad_(True)
        student_before = float(ck["student_before"])
    trained = _ddp(student, cfg) if dist_.active else student  # DDP averages the ranks' gradients
    from ..augment import resolve_base

    base = resolve_base(cfg.base_augment, bundle.image_shape)  # every candidate, `none` too, runs after it
    base_name = base.name if base is not None else "none"
    kd = Distiller(teacher, trained, loss=cfg.loss, augment=augmentation, num_classes=bundle.num_classes,
                   device=cfg.device, normalize=norm, base_augment=base)
    train_set = bundle.training_set(cfg.train_crop)
    loader = kd.loader(train_set, batch_size=cfg.batch_size, workers=workers, seed=cfg.seed)  # sharded under torchrun
    n_train = len(bundle.train_labels)
    steps_per_epoch = len(loader)
    opt, sched = _make_optimizer(cfg, [*student.parameters(), *kd.parameters()], cfg.epochs * steps_per_epoch)

    history: list[dict[str, Any]] = []
    start_epoch, prior_seconds = 0, 0.0
    if ck is not None:
        kd.load_state_dict(ck["distiller"])
        opt.load_state_dict(ck["optimizer"])
        if int(ck.get("world_size", 1)) == dist_.world_size:
            sched.load_state_dict(ck["scheduler"])
        else:  # resumed with another number of processes: the same cosine, at this run's steps per epoch
            _fast_forward(sched, int(ck["epoch"]) * steps_per_epoch)
        restore_rng(ck["rng"])
        start_epoch, history = int(ck["epoch"]), json.loads(ck["history"])
        prior_seconds = float(ck["seconds"])

    ck_path = out / CHECKPOINT_NAME
    t_train = time.perf_counter()
    epochs_bar = _bar(range(start_epoch, cfg.epochs), desc="distill", enabled=cfg.progress, unit="epoch",
                      initial=start_epoch, total=cfg.epochs)
    for epoch in epochs_bar:
        student.train()
        tot, n = 0.0, 0
        loader.set_epoch(epoch)  # the order and every draw of epoch e depend only on (seed, e)
        batches = _bar(loader, desc=f"epoch {epoch + 1}", enabled=cfg.progress, unit="batch", total=len(loader))
        for xb, yb in batches:
            try:
                loss = kd.loss(xb, yb)
            except NonFiniteError as exc:
                last = f"{ck_path} (after epoch {epoch})" if ck_path.exists() and epoch > 0 else "none (first epoch)"
                raise NonFiniteError(f"{exc} Training stopped in epoch {epoch + 1}; last good checkpoint: {last}.") from None
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(yb)
            n += len(yb)
            batches.set_postfix(loss=f"{tot / n:.4f}")
        acc = evaluate(student)
        if dist_.active:  # the epoch's mean loss over every rank's samples
            red = distributed.all_reduce_sum(torch.tensor([tot, n], dtype=torch.float64))
            tot, n = float(red[0]), int(red[1])
        history.append({"epoch": epoch + 1, "loss": tot / max(1, n), "test_accuracy": acc,
                        "lr": float(opt.param_groups[0]["lr"]), "terms": kd.last_terms})
        epochs_bar.set_postfix(loss=f"{tot / max(1, n):.4f}", acc=f"{acc:.4f}")
        seconds = prior_seconds + (time.perf_counter() - t_train)
        if dist_.is_main:
            atomic_save(
                {
                    "format": FORMAT,
                    "epoch": epoch + 1,
                    "student": backends.save_student(student, cfg.backend, cfg.quant_config()),
                    "distiller": kd.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "rng": capture_rng(),
                    "augmentation": augmentation,
                    "ranking": json.dumps(ranking),
                    "history": json.dumps(history),
                    "config": json.dumps(cfg.to_dict()),
                    "teacher_path": teacher_path,
                    "student_before": student_before,
                    "seconds": seconds,
                    "world_size": dist_.world_size,
                },
                ck_path,
            )
        distributed.barrier()  # nobody runs ahead of the checkpoint rank 0 is writing
    train_seconds = prior_seconds + (time.perf_counter() - t_train)

    student.eval()
    student_after = evaluate(student)
    example = example.to(cfg.device)
    rank_samples = distributed.all_gather_object(len(loader.inner.order()))  # each rank's samples per epoch
    sigs = distributed.all_gather_object(_signature(student))  # DDP keeps the replicas equal: check it
    in_sync = all(abs(s - sigs[0]) <= 1e-9 * max(1.0, abs(sigs[0])) for s in sigs)
    if not in_sync:
        import warnings

        warnings.warn(f"the ranks' students differ after training (state signatures {sigs}); the backend's student "
                      "has state DDP does not synchronise. Report this with the backend name.", stacklevel=2)
    if not dist_.is_main:  # rank 0 writes the student, the export and the report; the others get the report
        kd.remove_hooks()
        return dict(distributed.broadcast_object(None))
    student_path = save_student_file(
        out / STUDENT_NAME, student, backend=cfg.backend, config=cfg.quant_config(), arch=tmeta.get("arch"),
        input_shape=list(bundle.image_shape),
        meta={"accuracy": student_after, "augmentation": augmentation, "loss": cfg.loss, "seed": cfg.seed},
    )
    export = _export(cfg, student, teacher, example, bundle, out, norm, workers) if cfg.export \
        else {"skipped": "--no-export"}
    kd.remove_hooks()
    pick = pick_summary(ranking)
    report: dict[str, Any] = {
        "backend": cfg.backend,
        "bits": cfg.bits,
        "act_bits": cfg.weight_act_bits,
        "augmentation": augmentation,
        "base_augment": base_name,
        "loss": cfg.loss,
        "loss_terms": [{"component": t.component, "weight": t.weight, "params": dict(t.params), "key": t.key}
                       for t in kd.terms],
        "ranking": ranking_rows(ranking),
        "pick": pick,
        "ranking_detail": {**ranking, "pick": pick} if ranking and pick is not None else ranking,
        "accuracy": {"teacher_fp": teacher_fp, "student_before": student_before, "student_after": student_after},
        "epochs": cfg.epochs,
        "seconds": round(train_seconds, 3),
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "seed": cfg.seed,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "optimizer": cfg.optimizer,
        "data": {**bundle.describe(), "train_used": n_train},
        "pipeline": _pipeline_summary(cfg, loader, workers, norm),
        "teacher": teacher_path,
        "num_quantizers": backends.count_quantizers(student),
        "calibration": calibration,
        "history": history,
        "resumed_from_epoch": int(ck["epoch"]) if ck is not None else None,
        "export": export,
        "files": {"checkpoint": str(ck_path), "student": str(student_path), "report_md": str(out / "report.md")},
        "environment": {"torch": torch.__version__, "python": platform.python_version()},
        "config": cfg.to_dict(),
        "world_size": dist_.world_size,
        "distributed": {"backend": dist_.backend or None, "rank_samples_per_epoch": rank_samples,
                        "student": "DistributedDataParallel" if dist_.active else None,
                        "replicas_in_sync": in_sync,
                        "batch_size": "per rank" if dist_.active else "per step"},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(render_markdown(report))
    if dist_.active:
        distributed.broadcast_object(json.loads(json.dumps(report, default=str)))
    return report


def _ddp(student: nn.Module, cfg: DistillConfig) -> nn.Module:
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


def _signature(model: nn.Module) -> float:
    """One number that differs when two replicas' floating-point state differs (sum and sum of squares)."""
    tot = 0.0
    for t in model.state_dict().values():
        if isinstance(t, torch.Tensor) and torch.is_floating_point(t):
            d = t.detach().double()
            tot += float(d.sum()) + float((d * d).sum())
    return tot


def _fast_forward(sched: Any, steps: int) -> None:
    """Put a fresh step-based scheduler ``steps`` steps in (resuming with another world size changes the
    steps per epoch, so the saved step count no longer matches)."""
    for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
        group["lr"] = base
    sched.last_epoch = steps
    for group, lr in zip(sched.optimizer.param_groups, sched._get_closed_form_lr()):
        group["lr"] = lr


def _out_width(model: nn.Module, x: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(as_tensor(model(x)).shape[1])


def _pipeline_summary(cfg: DistillConfig, loader: Any, workers: int, norm: Normalizer) -> dict[str, Any]:
    """Where the augmentation ran and how the data was read (report.json's ``pipeline``)."""
    prog = loader.inner.programs[0]
    dev = loader.device_piece if loader.worker_stages else loader.kd.augment
    return {
        "workers": workers,
        "image_size": cfg.image_size,
        "train_crop": cfg.train_crop,
        "normalize": norm.to_dict(),
        "augmentation_stages": {
            "workers_per_image": [a.name for a in prog.sample],
            "collate_batch": [a.name for a in prog.batch],
            "step_on_device": [p.name for p in (dev.parts or (dev,))] if dev is not None else [],
        },
        "seeds": "per sample from (seed, epoch, index); per batch from (seed, epoch, batch number)",
    }
