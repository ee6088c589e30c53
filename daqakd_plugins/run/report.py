"""What a finished run says: the :class:`Report` record (``OUT/report.json``) and its one Markdown
renderer (``OUT/report.md``), for every batch source."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Report", "render_markdown", "ranking_rows", "pick_summary", "flag_export_bound", "export_bound_warnings",
           "training_warnings", "BELOW_PTQ_PP"]


def ranking_rows(ranking: dict[str, Any] | None) -> list[Any]:
    if not ranking:
        return []
    rows = ranking.get("candidates", ranking.get("entries", []))
    return list(rows) if isinstance(rows, list) else []


def pick_summary(ranking: dict[str, Any] | None) -> dict[str, Any] | None:
    """Is the ranked pick separated from the runner-up? :meth:`Ranking.separation` on the stored ranking
    (so a resumed run gets it too), its advice naming ``--rank-repeats``; ``None`` when nothing was ranked."""
    if not ranking or not isinstance(ranking.get("candidates"), list):
        return None
    from ..ranking import Ranking

    return Ranking.from_dict(ranking).separation(option="--rank-repeats").to_dict()


@dataclass
class Report:
    """One run's results. ``section`` holds what only its batch source reports (real data: how the data was
    read; a generator: its options, the data-free baselines' notes, the statement), merged into the JSON."""

    mode: str
    backend: str
    bits: int
    act_bits: int
    augmentation: str
    base_augment: str
    loss: str
    loss_terms: list[dict[str, Any]]
    ranking_detail: dict[str, Any] | None
    accuracy: dict[str, float]
    epochs: int
    seconds: float
    wall_seconds: float
    seed: int
    lr: float
    batch_size: int
    optimizer: str
    data: dict[str, Any]
    teacher: str
    normalize: dict[str, Any] | None
    num_quantizers: int
    calibration: dict[str, Any]
    history: list[dict[str, Any]]
    resumed_from_epoch: int | None
    export: dict[str, Any]
    files: dict[str, str]
    config: dict[str, Any]
    world_size: int
    distributed: dict[str, Any]
    section: dict[str, Any] = field(default_factory=dict)
    #: the student's bit plan (:func:`daqakd_plugins.run.plan.choose`): ``layer_bits`` for every quantized layer
    bit_plan: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        pick = pick_summary(self.ranking_detail)
        detail = {**self.ranking_detail, "pick": pick} if self.ranking_detail and pick is not None else self.ranking_detail
        common = {
            "mode": self.mode, "backend": self.backend, "bits": self.bits, "act_bits": self.act_bits,
            "augmentation": self.augmentation, "base_augment": self.base_augment, "loss": self.loss, "loss_terms": self.loss_terms,
            "ranking": ranking_rows(self.ranking_detail), "pick": pick, "ranking_detail": detail,
            "accuracy": self.accuracy, "epochs": self.epochs, "seconds": round(self.seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3), "seed": self.seed, "lr": self.lr,
            "batch_size": self.batch_size, "optimizer": self.optimizer, "data": self.data, "teacher": self.teacher,
            "normalize": self.normalize, "num_quantizers": self.num_quantizers, "calibration": self.calibration,
            "history": self.history, "resumed_from_epoch": self.resumed_from_epoch, "export": self.export,
            "files": self.files, "environment": {"torch": torch.__version__, "python": platform.python_version()},
            "config": self.config, "world_size": self.world_size, "distributed": self.distributed,
            "bit_plan": self.bit_plan, "layer_bits": (self.bit_plan or {}).get("layer_bits"),
        }
        out = {**common, **self.section}
        out["training_warnings"] = training_warnings(out)
        return out

    def markdown(self) -> str:
        return render_markdown(self.to_dict())


#: the accuracy table's rows, in order: report key -> label (a key the report lacks is left out)
ACCURACY_ROWS = (
    ("teacher_fp", "teacher (FP)"),
    ("quantized_uncalibrated", "quantized copy, no calibration"),
    ("ptq_noise", "PTQ calibrated on random noise"),
    ("ptq_generated", "PTQ calibrated on generated images"),
    ("student_before", "student after calibration (PTQ)"),
    ("student_after", "student after KD training"),
)


def render_markdown(r: dict[str, Any]) -> str:
    """The human summary of a report (any batch source; tolerant of a report without the optional keys)."""
    free = r.get("mode") == "data-free"
    acc = r["accuracy"]
    d = r["data"]
    lines = [f"# daqakd distill{' --data-free' if free else ''}: {r['backend']} W{r['bits']}A{r['act_bits']}", ""]
    if r.get("statement"):
        lines += [f"**{r['statement']}**", ""]
    how = ((" (searched, see below)" if (r.get("ranking_detail") or {}).get("search") else " (ranked, best first below)")
           if r["ranking"] else "")
    choice = r.get("augmentation_choice") or {}
    if choice.get("how") == "ranked":
        how = (f" (ranked with `{choice['metric']}` on {choice['samples']} generated images labelled by the "
               "teacher's prediction, best first below)")
    lines += [
        f"- data: {d['name']} ({d['train_used']} training images used, {d['test']} test)",
        f"- loss: `{r['loss']}` = " + " + ".join(f"{t['weight']:g}·{t['key']}" for t in r["loss_terms"]),
        f"- augmentation: `{r['augmentation']}`{how}",
        *_calibration(r.get("calibration") or {}),
        *[f"- {n}" for n in r.get("notes", [])],
        f"- epochs {r['epochs']}, lr {r['lr']}, batch {r['batch_size']}, {r['optimizer']}, seed {r['seed']}; "
        f"training {r['seconds']:.1f} s",
        "",
        "| model | clean test accuracy |",
        "|---|---|",
    ]
    for key, label in ACCURACY_ROWS:
        if key in acc and not (free and key == "student_before"):  # data-free: that is ptq_generated
            lines.append(f"| {label} | {acc[key]:.4f} |")
    warns = training_warnings(r)
    lines += [""] + [f"**WARNING:** {w}" for w in warns] + ([""] if warns else [])
    lines += _ranking(r) + _bit_plan(r.get("bit_plan")) + _epochs(r["history"]) + _export(r.get("export") or {})
    return "\n".join(lines) + "\n"


def _bit_plan(bp: dict[str, Any] | None) -> list[str]:
    """The bit plan: its summary and convention, and (a budgeted plan) the sensitivity table."""
    if not bp or not bp.get("layer_bits"):
        return []
    budget = f" under --bits-budget {bp['budget']:g}" if bp.get("budget") is not None else ""
    if bp.get("size_budget_kb") is not None:
        budget = f" under --size-budget-kb {bp['size_budget_kb']:g} ({bp['budget']:.3f} bits on average)"
    lines = ["## Bit plan", "", f"- {len(bp['layer_bits'])} quantized weight layers, {bp.get('avg_weight_bits')} weight "
             f"bits on average (weighted by their {bp.get('weight_params')} weights, {bp.get('weight_kb')} KiB){budget}: "
             f"{bp.get('summary')}",
             f"- {bp.get('convention')}", ""]
    if bp.get("sensitivity"):
        from ..sensitivity import sensitivity_markdown

        lines += sensitivity_markdown(bp["sensitivity"], bp["layer_bits"]) + [""]
    else:
        lines += ["| layer | weight bits | input-activation bits |", "|---|---:|---:|"]
        lines += [f"| `{n}` | {e['weight']} | {e['act']} |" for n, e in bp["layer_bits"].items()] + [""]
    return lines


def _calibration(cal: dict[str, Any]) -> list[str]:
    if not cal.get("size_from"):
        return []
    return [f"- calibration: {cal['images']} training images ({cal.get('sampling', 'class-stratified')}; "
            f"{cal['size_from']}), {cal['batches']} batch(es) of {cal.get('batch_size')}"]


def _ranking(r: dict[str, Any]) -> list[str]:
    if not r["ranking"]:
        return []
    lines = ["## Ranking", ""]
    search = (r.get("ranking_detail") or {}).get("search")
    if isinstance(search, dict):
        ppm = search.get("policies_per_minute")
        lines += [f"Searched {search['policies']['n']} policies of `{search['space']}` with `{search['metric']}`"
                  + (f" ({ppm:.1f} per minute)" if isinstance(ppm, (int, float)) else "")
                  + f"; trained with the top {search['top_k']} combined, `{search['combined']}`. Below: the top "
                  f"{search['top_k']}, their combination and `none` (the base alone). {search['space_description']}.", ""]
    lines += ["| rank | candidate | score |", "|---|---|---|"]
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
    return lines


def _epochs(history: list[dict[str, Any]]) -> list[str]:
    gen = any("generator_loss" in h for h in history)
    if gen:
        lines = ["## Epochs", "", "| epoch | student loss | generator loss | test accuracy |", "|---|---|---|---|"]
        def g(v: Any) -> str:
            return "frozen" if v is None else f"{v:.4f}"  # g_steps=0: the generator stopped after its warm-up

        return lines + [f"| {h['epoch']} | {h['loss']:.4f} | {g(h['generator_loss'])} | {h['test_accuracy']:.4f} |"
                        for h in history]
    lines = ["## Epochs", "", "| epoch | loss | test accuracy |", "|---|---|---|"]
    return lines + [f"| {h['epoch']} | {h['loss']:.4f} | {h['test_accuracy']:.4f} |" for h in history]


def _export(exp: dict[str, Any]) -> list[str]:
    lines = ["", "## Export", ""]
    if not exp.get("student"):
        return lines + [", ".join(f"{k}: {v}" for k, v in exp.items()) or "(none)"]
    warns = export_bound_warnings(exp)
    lines += [f"**WARNING:** {w}" for w in warns] + ([""] if warns else [])
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
    if isinstance(exp.get("bound_pp"), (int, float)):
        where = exp.get("test_images") or "the test images"
        lines += ["", f"Exported accuracy vs the torch student ({_f(exp.get('student_torch_accuracy'))}) on {where}: "
                      f"{'every format within' if not warns else f'{len(warns)} format(s) outside'} the bound of "
                      f"{exp['bound_pp']:g} pp."]
    return lines


def _f(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "–"


#: a distilled student that ends this many points below the calibrated (PTQ) student it started from is flagged
BELOW_PTQ_PP = 2.0


def training_warnings(r: dict[str, Any]) -> list[str]:
    """What the console and report.md say when training made the student worse than its start: a student
    that ends more than :data:`BELOW_PTQ_PP` points below its own PTQ accuracy (data-driven runs; a
    data-free student starts from generated-image PTQ and is judged in its own section). Too high a
    learning rate for a pretrained teacher is the usual cause: the paper-recipe evidence's CIFAR ResNet-20
    W4A4 student fell from 66 % (PTQ) to 23 % at Adam lr 1e-3 and reached 81 % at 1e-4 (docs/results.md)."""
    acc = r.get("accuracy") or {}
    before, after = acc.get("student_before"), acc.get("student_after")
    if r.get("mode") == "data-free" or not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
        return []
    if 100.0 * (before - after) <= BELOW_PTQ_PP:
        return []
    lr = r.get("lr")
    fix = f"--lr {lr / 10:g}" if isinstance(lr, (int, float)) else "a 10x smaller --lr"
    return [f"training made the student worse: it ends at {after:.4f}, {100 * (before - after):.1f} pp below the "
            f"calibrated (PTQ) student it started from ({before:.4f}). The learning rate ({lr}) is likely too high for "
            f"this pretrained teacher: run again with {fix} (docs/troubleshooting.md#the-student-ends-below-ptq)."]


def flag_export_bound(res: dict[str, Any], bound_pp: float) -> dict[str, Any]:
    """Mark every exported format whose accuracy differs from the torch student's (on the same test images)
    by more than ``bound_pp`` percentage points: ``within_bound`` on each format, ``bound_pp`` and the list
    ``outside_bound`` (format, both accuracies, the difference in pp) on the export record."""
    res["bound_pp"] = float(bound_pp)
    outside = []
    torch_acc = res.get("student_torch_accuracy")
    for e in res.get("student") or []:
        diff = e.get("accuracy_abs_diff")
        if not isinstance(diff, (int, float)):
            continue
        diff_pp = 100.0 * float(diff)
        e["within_bound"] = diff_pp <= bound_pp + 1e-9  # exact fractions of hits: no rounding noise past 1e-9
        if not e["within_bound"]:
            outside.append({"format": e.get("format"), "runtime": e.get("runtime"), "accuracy": e.get("accuracy"),
                            "torch_accuracy": torch_acc, "diff_pp": round(diff_pp, 4)})
    res["outside_bound"] = outside
    return res


def export_bound_warnings(res: dict[str, Any]) -> list[str]:
    """One sentence per exported format outside the bound (what the console and report.md say)."""
    bound = res.get("bound_pp")
    where = res.get("test_images") or "the test images"
    return [f"the {o['format']} export ({o['runtime']}) scores {o['accuracy']:.4f} where the torch student scores "
            f"{o['torch_accuracy']:.4f} on {where}: {o['diff_pp']:.2f} pp apart, more than the bound of {bound:g} pp "
            "(--export-bound-pp). The exported file does not compute what was trained (a backend exporter or runtime "
            "bug, or a bound too tight for the number of test images); see docs/troubleshooting.md#export-and-runtimes."
            for o in res.get("outside_bound") or []]
