"""What a finished ``daqakd distill`` run says: the pick's separation and the Markdown report."""

from __future__ import annotations

from typing import Any

__all__ = ["render_markdown", "ranking_rows", "pick_summary"]


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
