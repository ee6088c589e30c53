"""The Markdown summary of a data-free run (``OUT/report.md``)."""

from __future__ import annotations

from typing import Any

__all__ = ["render_markdown"]


def render_markdown(r: dict[str, Any]) -> str:
    acc = r["accuracy"]
    g = r["generator"]
    choice = r["augmentation_choice"]
    if choice.get("how") == "ranked":
        how = (f"ranked with `{choice['metric']}` on {choice['samples']} generated images labelled by the teacher's "
               "prediction (best first below)")
    else:
        how = "chosen with --augment"
    lines = [
        f"# daqakd distill --data-free: {r['backend']} W{r['bits']}A{r['act_bits']}",
        "",
        f"**{r['statement']}**",
        "",
        f"- data: {r['data']['name']} (0 training images used, {r['data']['test']} test images for evaluation)",
        f"- generator: `{g['name']}` (latent {g['latent_dim']}, width {g['width']}, lr {g['g_lr']:g}); "
        f"{g['warmup_steps']} warm-up steps, then per iteration {g['g_steps']} generator : {g['s_steps']} student "
        f"steps, {g['iterations']} iterations per epoch",
        f"- generator objective: minimise −{g['adv_weight']:g}·KL(p_T‖p_S) + {g['bn_weight']:g}·L_BN + "
        f"{g['balance_weight']:g}·(−H(mean p_T))",
        f"- loss (student): `{r['loss']}` = " + " + ".join(f"{t['weight']:g}·{t['key']}" for t in r["loss_terms"])
        + ", the teacher's soft prediction on each generated image as the target",
        f"- augmentation on generated batches: `{r['augmentation']}` ({how})",
        "- normalisation: " + (f"mean {r['normalize']['mean']}, std {r['normalize']['std']} (after augmenting)"
                               if r.get("normalize") else "none (the models see [0, 1] images)"),
        f"- epochs {r['epochs']} ({r['student_steps']} student steps), lr {r['lr']}, batch {r['batch_size']}, "
        f"{r['optimizer']}, seed {r['seed']}; training {r['seconds']:.1f} s",
        "",
        "| model | clean test accuracy |",
        "|---|---|",
        f"| teacher (FP) | {acc['teacher_fp']:.4f} |",
        f"| quantized copy, no calibration | {acc['quantized_uncalibrated']:.4f} |",
        f"| PTQ calibrated on random noise | {acc['ptq_noise']:.4f} |",
        f"| PTQ calibrated on generated images | {acc['ptq_generated']:.4f} |",
        f"| data-free DA-QAKD student | {acc['student_after']:.4f} |",
        "",
    ]
    if r.get("ranking"):
        lines += ["## Ranking (on generated images)", "", "| rank | candidate | score |", "|---|---|---|"]
        for i, e in enumerate(r["ranking"][:20], 1):
            score = e.get("score") if isinstance(e, dict) else None
            name = e.get("name", "?") if isinstance(e, dict) else str(e)
            lines.append(f"| {i} | {name} | {score:.4f} |" if isinstance(score, (int, float)) else f"| {i} | {name} | |")
        lines.append("")
    lines += ["## Epochs", "", "| epoch | student loss | generator loss | test accuracy |", "|---|---|---|---|"]
    lines += [f"| {h['epoch']} | {h['loss']:.4f} | {h['generator_loss']:.4f} | {h['test_accuracy']:.4f} |"
              for h in r["history"]]
    exp = r.get("export") or {}
    lines += ["", "## Export", ""]
    if exp.get("student"):
        lines += ["| format | runtime | accuracy | size (KiB) |", "|---|---|---|---|"]
        for e in exp["student"]:
            a = e.get("accuracy")
            lines.append(f"| {e.get('format')} | {e.get('runtime')} | {a:.4f} | {e.get('size_bytes', 0) / 1024:.1f} |"
                         if isinstance(a, (int, float)) else f"| {e.get('format')} | {e.get('runtime')} | "
                         f"{e.get('error', '–')} | |")
    else:
        lines.append(", ".join(f"{k}: {v}" for k, v in exp.items()) or "(none)")
    return "\n".join(lines) + "\n"
