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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, DaqakdError, NonFiniteError, UnknownNameError
from .checkpoint import CHECKPOINT_NAME, FORMAT, atomic_save, capture_rng, load_checkpoint, restore_rng
from .distiller import Distiller, as_tensor, resolve_loss

__all__ = ["DistillConfig", "run_distill", "load_student", "evaluate_student", "load_state_keep_aliases", "STUDENT_NAME"]

STUDENT_NAME = "student.pt"
STUDENT_FORMAT = "daqakd-student/1"

# Fields that define the training trajectory: a resumed run must agree on all of them.
_TRAJECTORY = (
    "backend", "bits", "act_bits", "data", "epochs", "augment", "loss", "lr", "batch_size", "seed",
    "optimizer", "weight_decay", "candidates", "metric", "rank_per_class", "rank_repeats",
    "train_per_class", "teacher_epochs", "calib_batches", "per_channel",
)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """Everything ``daqakd distill`` needs; invalid values fail here, before any training.

    ``bits``/``act_bits``: weight / activation bits (``act_bits`` None = same as ``bits``), checked
    against the backend's range. ``augment``: a registered name, ``"none"``, or ``"auto"`` (rank
    ``candidates`` with ``metric`` and use the best). ``loss``: a preset/component name or ``a+b``.
    ``teacher``: a model file (``daqakd teacher``); None = train one into ``out/teacher.pt``.
    ``train_per_class``: a class-stratified training subset (for scaled runs). ``resume``: a run
    directory to continue (``out`` defaults to it).
    """

    backend: str = "brevitas"
    bits: int = 4
    act_bits: int | None = None
    data: str = "digits"
    teacher: str | None = None
    epochs: int = 8
    out: str | None = None
    augment: str = "auto"
    loss: str = "paper"
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    resume: str | None = None
    export: bool = True
    device: str = "cpu"
    optimizer: str = "adam"
    weight_decay: float = 0.0
    candidates: str | None = None
    metric: str = "cmi"
    rank_per_class: int | None = None
    rank_repeats: int = 1
    train_per_class: int | None = None
    teacher_epochs: int = 15
    calib_batches: int = 8
    per_channel: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        from ..plugins import get_backend

        if self.out is None and self.resume is None:
            raise ConfigError("pass out= (a run directory), or resume= an earlier run directory")
        for name in ("bits", "epochs", "batch_size", "seed", "rank_repeats", "teacher_epochs", "calib_batches"):
            v = getattr(self, name)
            lo = 0 if name == "seed" else 1
            if not _is_int(v) or v < lo:
                raise ConfigError(f"{name} must be an integer ≥ {lo}, got {v!r}")
        for name in ("act_bits", "rank_per_class", "train_per_class"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number (e.g. 1e-3), got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be ≥ 0, got {self.weight_decay!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        info = get_backend(self.backend)  # UnknownNameError listing the registered backends
        for what, val, (lo, hi) in (
            ("weight bits (--bits)", self.bits, info.weight_bits),
            ("activation bits (--act-bits)", self.weight_act_bits, info.act_bits),
        ):
            if not lo <= val <= hi:
                raise ConfigError(
                    f"{what} {val} are outside what backend {self.backend!r} supports ({lo}..{hi}); "
                    "pass a value in that range."
                )
        resolve_loss(self.loss)  # UnknownNameError listing presets and components
        if self.augment != "auto":
            from ..augment import resolve_augmentation

            resolve_augmentation(self.augment)  # UnknownNameError listing registered augmentations
        else:
            from ..plugins import get_metrics

            metrics = get_metrics()
            if metrics and self.metric not in metrics:
                raise UnknownNameError("metric", self.metric, list(metrics))

    @property
    def weight_act_bits(self) -> int:
        return self.bits if self.act_bits is None else self.act_bits

    @property
    def out_dir(self) -> Path:
        return Path(self.out if self.out is not None else self.resume)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> DistillConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw.update(overrides)
        return cls(**kw)


# ------------------------------------------------------------------------------------------------
def _bar(iterable: Any, *, desc: str, enabled: bool, **kw: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=None if enabled else True, dynamic_ncols=True, leave=False, **kw)


def evaluate_student(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512,
                     device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy on clean data (eval mode, no grad, QuantTensor outputs unwrapped): train.evaluate."""
    from ..train import evaluate

    return evaluate(model, x, y, batch_size=batch_size, device=device)


def _calib_batches(x: torch.Tensor, batch_size: int, n: int) -> Iterator[torch.Tensor]:
    """Deterministic calibration batches (the first ``n`` of an unshuffled pass)."""
    for i in range(n):
        lo = i * batch_size
        if lo >= len(x):
            return
        yield x[lo : lo + batch_size]


def _build_student(cfg: DistillConfig, teacher: nn.Module, train_x: torch.Tensor) -> nn.Module:
    from .. import backends
    from ..config import QuantConfig

    qcfg = QuantConfig(weight_bits=cfg.bits, act_bits=cfg.weight_act_bits, per_channel=cfg.per_channel,
                       calib_batches=cfg.calib_batches)
    example = train_x[: min(len(train_x), cfg.batch_size)].to(cfg.device)
    fp = copy.deepcopy(teacher)
    for p in fp.parameters():
        p.requires_grad_(True)
    student = backends.quantize(fp, cfg.backend, qcfg, example_input=example)
    # Calibrated on clean, unshuffled batches: deterministic, and the accuracy right after it is the
    # post-training-quantization baseline the report calls "student_before".
    student = backends.calibrate(student, cfg.backend, list(_calib_batches(train_x, cfg.batch_size, cfg.calib_batches)),
                                 num_batches=cfg.calib_batches)
    student.to(cfg.device)
    for p in student.parameters():
        p.requires_grad_(True)
    return student


def load_state_keep_aliases(model: nn.Module, state: dict[str, Any]) -> None:
    """``model.load_state_dict(state)`` that keeps shared submodules shared.

    Why: a submodule registered under two names (Brevitas graph mode gives both inputs of a residual
    add one activation quantizer, so their scales stay equal) must stay one object. Brevitas re-creates
    each quantizer proxy's ``tensor_quant`` while loading (``REINIT_ON_STATE_DICT_LOAD``), which splits
    the shared quantizer into two copies that then drift apart in training ("Scaling factors are
    different" at the add). Re-linking every alias group after the load restores the original graph;
    both copies were loaded from equal values, so which one is kept does not matter.
    """
    groups: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        groups.setdefault(id(mod), []).append(name)
    model.load_state_dict(state)
    for names in sorted((g for g in groups.values() if len(g) > 1), key=lambda g: min(n.count(".") for n in g)):
        names = sorted(names, key=lambda n: (n.count("."), n))
        keep = model.get_submodule(names[0])
        for other in names[1:]:
            if model.get_submodule(other) is not keep:
                model.set_submodule(other, keep)


def _make_optimizer(cfg: DistillConfig, params: list[nn.Parameter], steps: int) -> tuple[torch.optim.Optimizer, Any]:
    opt: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Cosine over all steps; its state_dict is plain numbers (weights_only-safe, unlike lambdas).
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    return opt, sched


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, epoch: int) -> Any:
    from ..data import make_loader

    # The order of epoch e depends only on (seed, e): a resumed run sees the same batches.
    return make_loader(x, y, batch_size, shuffle=True, seed=seed * 100_003 + epoch)


def _rank(cfg: DistillConfig, teacher: nn.Module, bundle: Any, train_x: torch.Tensor,
          train_y: torch.Tensor) -> tuple[str, dict[str, Any] | None]:
    """Resolve ``augment``: ``auto`` ranks the candidates with the teacher and picks the best."""
    if cfg.augment != "auto":
        from ..augment import resolve_augmentation

        return resolve_augmentation(cfg.augment).name, None
    from ..ranking import rank_augmentations

    ranking = rank_augmentations(
        teacher, (train_x, train_y), cfg.candidates, cfg.metric, seed=cfg.seed, repeats=cfg.rank_repeats,
        per_class=cfg.rank_per_class, device=cfg.device, num_classes=bundle.num_classes, progress=cfg.progress,
    )
    return str(ranking.best), json.loads(json.dumps(ranking.to_dict(), default=str))


def _ranking_rows(ranking: dict[str, Any] | None) -> list[Any]:
    if not ranking:
        return []
    rows = ranking.get("candidates", ranking.get("entries", []))
    return list(rows) if isinstance(rows, list) else []


def _pick(ranking: dict[str, Any] | None) -> dict[str, Any] | None:
    """Is the ranked pick separated from the runner-up? :meth:`Ranking.separation` on the stored ranking
    (so a resumed run gets it too), its advice naming ``--rank-repeats``; ``None`` when nothing was ranked."""
    if not ranking or not isinstance(ranking.get("candidates"), list):
        return None
    from ..ranking import Ranking

    return Ranking.from_dict(ranking).separation(option="--rank-repeats").to_dict()


def _teacher(cfg: DistillConfig, bundle: Any, out: Path) -> tuple[nn.Module, dict[str, Any], str]:
    from ..models import load_model
    from ..train import get_or_train_teacher

    if cfg.teacher is not None:
        model, meta = load_model(cfg.teacher)
        return model, meta, str(cfg.teacher)
    path = out / "teacher.pt"
    model, meta = get_or_train_teacher(bundle, path, epochs=cfg.teacher_epochs, seed=cfg.seed, progress=cfg.progress)
    return model, meta, str(path)


def _load_data(cfg: DistillConfig) -> tuple[Any, torch.Tensor, torch.Tensor]:
    from ..data import load_data, stratified_subset

    bundle = load_data(cfg.data, seed=0)
    tx, ty = bundle.train_x, bundle.train_y
    if cfg.train_per_class is not None:
        idx = stratified_subset(ty, cfg.train_per_class, seed=0)  # same subset for every seed and arm
        tx, ty = tx[idx], ty[idx]
    return bundle, tx, ty


def _check_resume(cfg: DistillConfig, ck: dict[str, Any]) -> None:
    old = json.loads(ck["config"])
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
            bundle: Any, out: Path) -> dict[str, Any]:
    try:
        from ..runtime import export_and_measure
    except ImportError as exc:
        return {"skipped": f"daqakd_plugins.runtime is not available here ({exc})"}
    try:
        res = export_and_measure(student, teacher, cfg.backend, example, bundle.test_x, bundle.test_y, out / "export")
    except DaqakdError as exc:
        return {"error": str(exc)}
    return json.loads(json.dumps(res, default=str))


def load_student(path: str | Path, *, example_input: torch.Tensor | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a student saved by ``daqakd distill`` (``weights_only=True``): the teacher architecture
    is re-quantized with the recorded backend and bits, then the trained state is loaded."""
    from .. import backends
    from ..config import QuantConfig
    from ..models import build_model

    path = Path(path)
    if path.is_dir():
        path = path / STUDENT_NAME
    if not path.exists():
        raise CheckpointError(f"no student file at {path}; `daqakd distill --out DIR` writes DIR/{STUDENT_NAME}")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != STUDENT_FORMAT:
        raise CheckpointError(f"{path} is not a daqakd student file ({STUDENT_FORMAT})")
    rec = ck["recipe"]
    fp = build_model(rec["arch"])
    if example_input is None:
        example_input = torch.zeros(1, *rec["input_shape"])
    qcfg = QuantConfig(weight_bits=rec["weight_bits"], act_bits=rec["act_bits"], per_channel=rec["per_channel"])
    student = backends.quantize(fp, rec["backend"], qcfg, example_input=example_input)
    load_state_keep_aliases(student, ck["state_dict"])
    student.eval()
    return student, dict(ck.get("meta", {}))


# ------------------------------------------------------------------------------------------------
def run_distill(config: DistillConfig) -> dict[str, Any]:
    """Run (or resume) DA-QAKD end to end and return the report (also written to ``out/report.json``)."""
    from ..train import seed_everything

    cfg = config
    t_start = time.perf_counter()
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    ck: dict[str, Any] | None = None
    if cfg.resume is not None:
        ck = load_checkpoint(cfg.resume)
        _check_resume(cfg, ck)

    seed_everything(cfg.seed)
    bundle, train_x, train_y = _load_data(cfg)
    if ck is not None and cfg.teacher is None and Path(ck["teacher_path"]).exists():
        from ..models import load_model

        teacher, tmeta = load_model(ck["teacher_path"])
        teacher_path = ck["teacher_path"]
    else:
        teacher, tmeta, teacher_path = _teacher(cfg, bundle, out)
    teacher.to(cfg.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if bundle.num_classes != _out_width(teacher, train_x[:1].to(cfg.device)):
        raise ConfigError(
            f"the teacher predicts {_out_width(teacher, train_x[:1].to(cfg.device))} classes but the data "
            f"has {bundle.num_classes}; pass a teacher trained on this data."
        )
    teacher_fp = evaluate_student(teacher, bundle.test_x, bundle.test_y, device=cfg.device)

    if ck is not None:
        augmentation, ranking = ck["augmentation"], json.loads(ck["ranking"])
    else:
        augmentation, ranking = _rank(cfg, teacher, bundle, train_x, train_y)

    seed_everything(cfg.seed)  # what follows must not depend on whether ranking ran
    student = _build_student(cfg, teacher, train_x)
    from ..backends import count_quantizers

    student_before = evaluate_student(student, bundle.test_x, bundle.test_y, device=cfg.device)
    if ck is not None:
        # Before the optimizer exists: loading may replace parameter objects (Brevitas re-creates its
        # quantizers on load), and the optimizer must hold the ones the model uses.
        load_state_keep_aliases(student, ck["student"])
    kd = Distiller(teacher, student, loss=cfg.loss, augment=augmentation, num_classes=bundle.num_classes,
                   device=cfg.device)
    steps_per_epoch = math.ceil(len(train_y) / cfg.batch_size)
    opt, sched = _make_optimizer(cfg, [*student.parameters(), *kd.parameters()], cfg.epochs * steps_per_epoch)

    history: list[dict[str, Any]] = []
    start_epoch, prior_seconds = 0, 0.0
    if ck is not None:
        kd.load_state_dict(ck["distiller"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        restore_rng(ck["rng"])
        start_epoch, history = int(ck["epoch"]), json.loads(ck["history"])
        student_before, prior_seconds = float(ck["student_before"]), float(ck["seconds"])

    ck_path = out / CHECKPOINT_NAME
    t_train = time.perf_counter()
    epochs_bar = _bar(range(start_epoch, cfg.epochs), desc="distill", enabled=cfg.progress, unit="epoch",
                      initial=start_epoch, total=cfg.epochs)
    for epoch in epochs_bar:
        student.train()
        tot, n = 0.0, 0
        batches = _bar(_loader(train_x, train_y, cfg.batch_size, cfg.seed, epoch), desc=f"epoch {epoch + 1}",
                       enabled=cfg.progress, unit="batch")
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
        acc = evaluate_student(student, bundle.test_x, bundle.test_y, device=cfg.device)
        history.append({"epoch": epoch + 1, "loss": tot / max(1, n), "test_accuracy": acc,
                        "lr": float(opt.param_groups[0]["lr"]), "terms": kd.last_terms})
        epochs_bar.set_postfix(loss=f"{tot / max(1, n):.4f}", acc=f"{acc:.4f}")
        seconds = prior_seconds + (time.perf_counter() - t_train)
        atomic_save(
            {
                "format": FORMAT,
                "epoch": epoch + 1,
                "student": student.state_dict(),
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
            },
            ck_path,
        )
    train_seconds = prior_seconds + (time.perf_counter() - t_train)

    student.eval()
    student_after = evaluate_student(student, bundle.test_x, bundle.test_y, device=cfg.device)
    example = train_x[: min(len(train_x), cfg.batch_size)].to(cfg.device)
    student_path = atomic_save(
        {
            "format": STUDENT_FORMAT,
            "state_dict": student.state_dict(),
            "recipe": {"arch": tmeta.get("arch"), "backend": cfg.backend, "weight_bits": cfg.bits,
                       "act_bits": cfg.weight_act_bits, "per_channel": cfg.per_channel,
                       "input_shape": list(train_x.shape[1:])},
            "meta": {"accuracy": student_after, "augmentation": augmentation, "loss": cfg.loss, "seed": cfg.seed},
        },
        out / STUDENT_NAME,
    )
    export = _export(cfg, student, teacher, example, bundle, out) if cfg.export else {"skipped": "--no-export"}
    kd.remove_hooks()
    pick = _pick(ranking)
    report: dict[str, Any] = {
        "backend": cfg.backend,
        "bits": cfg.bits,
        "act_bits": cfg.weight_act_bits,
        "augmentation": augmentation,
        "loss": cfg.loss,
        "loss_terms": [{"component": t.component, "weight": t.weight, "params": dict(t.params), "key": t.key}
                       for t in kd.terms],
        "ranking": _ranking_rows(ranking),
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
        "data": {**bundle.describe(), "train_used": int(len(train_y))},
        "teacher": teacher_path,
        "num_quantizers": count_quantizers(student),
        "history": history,
        "resumed_from_epoch": int(ck["epoch"]) if ck is not None else None,
        "export": export,
        "files": {"checkpoint": str(ck_path), "student": str(student_path), "report_md": str(out / "report.md")},
        "environment": {"torch": torch.__version__, "python": platform.python_version()},
        "config": cfg.to_dict(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(render_markdown(report))
    return report


def _out_width(model: nn.Module, x: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(as_tensor(model(x)).shape[1])


def render_markdown(r: dict[str, Any]) -> str:
    """A human summary of a report."""
    acc = r["accuracy"]
    lines = [
        f"# daqakd distill: {r['backend']} W{r['bits']}A{r['act_bits']}",
        "",
        f"- data: {r['data']['name']} ({r['data']['train_used']} training images used, {r['data']['test']} test)",
        f"- loss: `{r['loss']}` = " + " + ".join(f"{t['weight']:g}·{t['key']}" for t in r["loss_terms"]),
        f"- augmentation: `{r['augmentation']}`" + (" (ranked, best first below)" if r["ranking"] else ""),
        f"- epochs {r['epochs']}, lr {r['lr']}, batch {r['batch_size']}, {r['optimizer']}, seed {r['seed']}; "
        f"training {r['seconds']:.1f} s",
        "",
        "| model | clean test accuracy |",
        "|---|---|",
        f"| teacher (FP) | {acc['teacher_fp']:.4f} |",
        f"| student after calibration (PTQ) | {acc['student_before']:.4f} |",
        f"| student after KD training | {acc['student_after']:.4f} |",
        "",
    ]
    if r["ranking"]:
        lines += ["## Ranking", "", "| rank | candidate | score |", "|---|---|---|"]
        for i, e in enumerate(r["ranking"][:20], 1):
            if isinstance(e, dict):
                name = e.get("name", e.get("candidate", "?"))
                score = e.get("score", e.get("mean", ""))
                score = f"{score:.4f}" if isinstance(score, (int, float)) else str(score)
                std = e.get("score_std")
                if isinstance(std, (int, float)) and len(e.get("scores") or []) > 1:
                    score += f" ± {std:.4f}"
            else:
                name, score = str(e), ""
            lines.append(f"| {i} | {name} | {score} |")
        lines.append("")
        pick = r.get("pick")
        if isinstance(pick, dict) and pick.get("message"):
            lines += [f"**Is the pick separated?** {pick['message']}", ""]
    lines += ["## Epochs", "", "| epoch | loss | test accuracy |", "|---|---|---|"]
    lines += [f"| {h['epoch']} | {h['loss']:.4f} | {h['test_accuracy']:.4f} |" for h in r["history"]]
    exp = r.get("export") or {}
    lines += ["", "## Export", ""]
    if exp.get("student"):
        lines += [
            "| model | format | runtime | accuracy | size (KiB) | latency ms/batch | size / FP | latency / FP |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in exp["student"]:
            if "error" in e:
                lines.append(f"| student | {e.get('format')} | {e.get('runtime')} | error: {e['error']} | | | | |")
                continue
            lines.append(
                f"| student | {e['format']} | {e['runtime']} | {_f(e.get('accuracy'))} | {e['size_bytes'] / 1024:.1f} | "
                f"{_f(e.get('latency_ms_per_batch'), 3)} | {_f(e.get('size_ratio_vs_fp'), 3)} | "
                f"{_f(e.get('latency_ratio_vs_fp'), 3)} |"
            )
        t = exp.get("teacher") or {}
        if t:
            lines.append(f"| teacher | {t.get('format')} | {t.get('runtime')} | {_f(t.get('accuracy'))} | "
                         f"{t.get('size_bytes', 0) / 1024:.1f} | {_f(t.get('latency_ms_per_batch'), 3)} | 1 | 1 |")
        if exp.get("latency_method"):
            lines += ["", f"Latency: {exp['latency_method']}."]
    else:
        lines.append(", ".join(f"{k}: {v}" for k, v in exp.items()) or "(none)")
    return "\n".join(lines) + "\n"


def _f(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "–"
