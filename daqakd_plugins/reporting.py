"""The PNG figure of a distill report: ranking scores, accuracy before/after/exported, training curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["draw_report_figure", "report_figure"]


def _exported_accuracies(export: dict[str, Any]) -> list[tuple[str, float]]:
    out = []
    for e in export.get("student", []) if isinstance(export, dict) else []:
        if isinstance(e, dict) and isinstance(e.get("accuracy"), (int, float)):
            out.append((f"{e.get('format', '?')}\n({e.get('runtime', '?')})", float(e["accuracy"])))
    return out


def _plan_panel(ax: Any, plan: dict[str, Any]) -> None:
    """Planned weight bits per layer (bars, forward order) and, for a budgeted plan, each layer's sensitivity
    at the lowest width (line, log axis)."""
    bits = plan["layer_bits"]
    names = list(bits)
    ax.bar(range(len(names)), [bits[n]["weight"] for n in names], color="tab:blue", label="weight bits")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=5)
    ax.set_ylabel("weight bits")
    title = f"bit plan: {plan.get('avg_weight_bits')} bits on average"
    sens = plan.get("sensitivity") or {}
    if sens.get("layers"):
        low = str(min(sens["widths"]))
        kl = {row["layer"]: row["kl"].get(low, 0.0) for row in sens["layers"]}
        ax2 = ax.twinx()
        ax2.plot(range(len(names)), [max(kl.get(n, 0.0), 1e-6) for n in names], "o-", color="tab:red",
                 label=f"KL at W{low}")
        ax2.set_yscale("log")
        ax2.set_ylabel(f"sensitivity: KL to the teacher at W{low}")
        title += f" (budget {plan.get('budget')})"
    ax.set_title(title, fontsize=9)


def draw_report_figure(report: dict[str, Any], path: str | Path) -> Path:
    """Draw ``report`` (as written by ``run_distill``) into a PNG at ``path``."""
    from . import progress

    progress.doing(f"drawing {Path(path).name}")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = report_figure(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report_figure(report: dict[str, Any]) -> Any:
    """The figure of ``report``: ranking scores (when ranked), accuracies, and the training curve (test
    accuracy and loss per epoch, with a legend, whole-epoch ticks and an accuracy axis up to 100 %)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranking = [e for e in report.get("ranking") or [] if isinstance(e, dict) and "score" in e]
    samples = (report.get("files") or {}).get("generated_images")  # data-free: what the student was taught with
    samples = samples if samples and Path(samples).exists() else None
    plan = report.get("bit_plan") or {}
    planned = bool(plan.get("sensitivity")) or len({e["weight"] for e in (plan.get("layer_bits") or {}).values()}) > 1
    panels = (3 if ranking else 2) + (1 if samples else 0) + (1 if planned else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    if planned:
        _plan_panel(axes[-1], plan)
        axes = axes[:-1]
    if samples:
        axes[-1].imshow(plt.imread(samples), cmap="gray")
        axes[-1].set_axis_off()
        axes[-1].set_title(f"generated images ({(report.get('generator') or {}).get('name', 'generator')})")
        axes = axes[:-1]
    ax = axes[0]
    if ranking:
        names = [e["name"] for e in ranking][::-1]
        scores = [e["score"] for e in ranking][::-1]
        errs = [e.get("score_std") or 0.0 for e in ranking][::-1]
        colors = ["tab:green" if n == report.get("augmentation") else "tab:blue" for n in names]
        ax.barh(names, scores, xerr=errs, color=colors)
        ax.set_xlabel("score (lower = better)")
        ax.set_title("augmentation ranking (chosen in green)")
        ax.tick_params(axis="y", labelsize=7)
        ax = axes[1]
    acc = report["accuracy"]
    bars = [("teacher\n(FP)", acc["teacher_fp"]), ("student\nPTQ", acc["student_before"]),
            ("student\nafter KD", acc["student_after"]), *_exported_accuracies(report.get("export") or {})]
    ax.bar([b[0] for b in bars], [100 * b[1] for b in bars], color=["grey", "tab:orange", "tab:green"] + ["tab:purple"] * (len(bars) - 3))
    for i, (_, v) in enumerate(bars):
        ax.text(i, 100 * v + 0.5, f"{100 * v:.1f}", ha="center", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("clean test accuracy %")
    ax.set_title(f"{report['backend']} W{report['bits']}A{report['act_bits']}, loss {report['loss']}")
    ax.tick_params(axis="x", labelsize=7, labelrotation=25)
    ax = axes[-1]
    hist = report.get("history") or []
    if hist:
        from matplotlib.ticker import MaxNLocator

        epochs = [h["epoch"] for h in hist]
        accs = [100 * h["test_accuracy"] for h in hist]
        acc_line = ax.plot(epochs, accs, "o-", label="test accuracy %")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy %")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylim(max(0.0, min(accs) - 5), 100)  # an accuracy axis never passes 100 %
        ax2 = ax.twinx()
        loss_line = ax2.plot(epochs, [h["loss"] for h in hist], "s--", color="tab:red", label="train loss")
        ax2.set_ylabel("train loss")
        lines = acc_line + loss_line
        ax.legend(lines, [ln.get_label() for ln in lines], loc="lower left", fontsize=8)
        ax.set_title(f"training, augmentation: {report.get('augmentation')}")
    fig.tight_layout()
    return fig
