"""Does the ranking pick the augmentation that gives the best low-bit student? Analysis and figure.

Input is a JSONL file, one line per finished run (so an interrupted experiment resumes by skipping
lines already there):

``{"kind": "ranking", "candidate": str, "pass": int, "scores": {"cmi": M, "D": ..., "I": ..., "CE": ..., "CE-I": ..., "tstddev": ...}}``
``{"kind": "student", "candidate": str, "seed": int, "config": "W2A4", "accuracy": float, ...}``
``{"kind": "teacher", "accuracy": float, ...}`` (optional, reported as is)

The analysis goes in the order that makes a conclusion possible: first whether the candidates'
accuracy ordering is reproducible at all (seed-half agreement, one-way ANOVA), and only then how well
each score predicts it (Spearman ρ / Kendall τ with bootstrap confidence intervals; the accuracy of
each score's pick next to the oracle best and to no augmentation).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["read_results", "analyse", "crossover", "write_report"]

# Every score is read as "lower is better" (the metric's convention) and rho's sign is flipped so that
# + means "predicts". I alone is higher-is-better in the paper's score, so it is judged as "-I".
NOT_A_PREDICTOR = ("I",)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Parse the JSONL results; a line cut short by a killed writer is skipped (its work is redone)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"results file {path} does not exist; produce it with benchmarks/reproduce_figure1.py --out {path}")
    if path.is_dir():
        raise DataError(f"{path} is a directory; pass the JSONL file benchmarks/reproduce_figure1.py wrote.")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a text file ({exc.reason}); pass the JSONL results of "
                        "benchmarks/reproduce_figure1.py.") from exc
    rows = []
    broken = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            broken += 1  # a writer killed mid-line; that unit of work has no row and is redone
            continue
        if not isinstance(row, dict):
            raise DataError(f"{path} holds {type(row).__name__} lines; expected one JSON object per line.")
        rows.append(row)
    if broken and broken >= len(rows):  # a few cut lines happen; a file of mostly non-JSON is another file
        raise DataError(
            f"{path} is not a results file of benchmarks/reproduce_figure1.py: {broken} of "
            f"{broken + len(rows)} lines are not JSON (expected one JSON object per line)."
        )
    return rows


def _rank(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(_rank(x), _rank(y))[0, 1])


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import kendalltau

    if len(x) < 3:
        return float("nan")
    return float(kendalltau(x, y).statistic)


def _ci(values: list[float]) -> list[float]:
    v = np.array([x for x in values if math.isfinite(x)])
    if not len(v):
        return [float("nan"), float("nan")]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]


def _ranking_scores(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Each candidate's scores by name, one value per ranking pass (``-I`` added next to ``I``)."""
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    # One row per (candidate, pass), as for students one per (config, candidate, seed): two --shard
    # processes started together both run a missing ranking pass and both append it; counting it twice
    # leaves the mean as it is but shrinks the std and narrows the bootstrap over passes. The last row
    # wins, in the position of the first (so a file without repeats is read in file order).
    ranking: dict[Any, dict[str, Any]] = {}
    for i, r in enumerate(rows):
        if r.get("kind") == "ranking":
            ranking[(r.get("candidate"), r["pass"]) if r.get("pass") is not None else ("row", i)] = r
    for r in ranking.values():
        for k, v in r["scores"].items():
            scores[r["candidate"]][k].append(float(v))
        if "I" in r["scores"]:
            scores[r["candidate"]]["-I"].append(-float(r["scores"]["I"]))
    return scores


def _score_prediction(s_mat: list[np.ndarray], acc_mat: np.ndarray, cands: list[str], accuracy: dict[str, Any],
                      oracle: str, rng: np.random.Generator, n_boot: int) -> dict[str, Any]:
    """How well one score (``s_mat``: per candidate, its values over the passes) predicts the candidates' mean
    accuracy (``acc_mat``: candidates × seeds): Spearman ρ and Kendall τ, signed so + means "predicts", with
    bootstrap 95 % intervals over passes and seeds, and the accuracy of the score's pick."""
    mean_acc = acc_mat.mean(1)
    s_mean = np.array([m.mean() for m in s_mat])
    rho = -_spearman(s_mean, mean_acc)
    tau = -_kendall(s_mean, mean_acc)
    boots_r, boots_t = [], []
    n_seeds = acc_mat.shape[1]
    for _ in range(n_boot):
        sb = np.array([m[rng.integers(0, len(m), len(m))].mean() for m in s_mat])
        ab = acc_mat[:, rng.integers(0, n_seeds, n_seeds)].mean(1)
        boots_r.append(-_spearman(sb, ab))
        boots_t.append(-_kendall(sb, ab))
    pick = cands[int(np.argmin(s_mean))]
    return {
        "per_candidate": {c: {"mean": float(s_mean[i]), "std": float(s_mat[i].std(ddof=1)) if len(s_mat[i]) > 1 else 0.0}
                          for i, c in enumerate(cands)},
        "spearman": rho, "spearman_ci95": _ci(boots_r),
        "kendall": tau, "kendall_ci95": _ci(boots_t),
        "pick": {"candidate": pick, **accuracy[pick]},
        "pick_minus_oracle": accuracy[pick]["mean"] - accuracy[oracle]["mean"],
        "pick_minus_none": (accuracy[pick]["mean"] - accuracy["none"]["mean"] if "none" in cands else None),
    }


def _config_analysis(per_cand: dict[str, dict[int, float]], scores: dict[str, dict[str, list[float]]],
                     rng: np.random.Generator, n_boot: int) -> dict[str, Any] | None:
    """One student configuration (``per_cand``: candidate → seed → accuracy), over the seeds every candidate
    finished: is its accuracy ordering reproducible (seed halves, ANOVA), which candidate is best, and how
    well each score predicts the ordering. ``None`` with fewer than 2 candidates."""
    cands = sorted(c for c in per_cand if per_cand[c])
    if len(cands) < 2:
        return None
    seeds = sorted(set.intersection(*(set(per_cand[c]) for c in cands)))
    acc_mat = np.array([[per_cand[c][s] for s in seeds] for c in cands])  # candidates × seeds
    mean_acc = acc_mat.mean(1)
    res: dict[str, Any] = {
        "candidates": cands,
        "seeds": seeds,
        "accuracy": {c: {"mean": float(acc_mat[i].mean()), "std": float(acc_mat[i].std(ddof=1)) if len(seeds) > 1 else 0.0,
                         "per_seed": acc_mat[i].tolist()} for i, c in enumerate(cands)},
    }
    # 1. is there anything to predict? seed halves and ANOVA
    if len(seeds) >= 2:
        h = len(seeds) // 2
        res["seed_half_rho"] = _spearman(acc_mat[:, :h].mean(1), acc_mat[:, h:].mean(1))
    if len(seeds) >= 2:
        from scipy.stats import f_oneway

        res["anova_p"] = float(f_oneway(*acc_mat).pvalue)
    oracle = cands[int(np.argmax(mean_acc))]
    res["oracle"] = {"candidate": oracle, **res["accuracy"][oracle]}
    if "none" in cands:
        res["none"] = {"candidate": "none", **res["accuracy"]["none"]}
    # 2. how well does each score predict mean accuracy?
    res["scores"] = {}
    names = sorted({k for c in cands for k in scores.get(c, {})})
    for name in names:
        if name in NOT_A_PREDICTOR or not all(scores[c].get(name) for c in cands):
            continue
        res["scores"][name] = _score_prediction([np.array(scores[c][name]) for c in cands], acc_mat, cands,
                                                res["accuracy"], oracle, rng, n_boot)
    return res


def analyse(rows: Iterable[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The analysis per student configuration (e.g. W2A4), as a JSON-able dict."""
    rows = list(rows)
    rng = np.random.default_rng(seed)
    scores = _ranking_scores(rows)
    accs: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    regime = ranking_regime(rows)
    for r in rows:
        if r.get("kind") == "student" and r.get("regime") == regime:  # other regimes: crossover()
            accs[r["config"]][r["candidate"]][int(r["seed"])] = float(r["accuracy"])
    teacher = [r for r in rows if r.get("kind") == "teacher"]
    out: dict[str, Any] = {"teacher": teacher[-1] if teacher else None, "configs": {}, "regime": regime}
    for cfg, per_cand in sorted(accs.items()):
        res = _config_analysis(per_cand, scores, rng, n_boot)
        if res is not None:
            out["configs"][cfg] = res
    if not out["configs"] and not any(r.get("regime") for r in rows if r.get("kind") == "student"):
        raise DataError("no configuration has student results for ≥ 2 candidates yet; let the experiment run longer.")
    return out


def ranking_regime(rows: Iterable[dict[str, Any]]) -> str | None:
    """The regime the score analysis uses: of the student rows that carry a ``regime``
    (``benchmarks/paper_recipe.py``), a regime of the ranking phase (``phase == "ranking"``: the most
    candidates) if one has ≥ 2 candidates that all have ≥ 2 seeds, else the longest (most images seen) such
    regime of any phase (so that seed halves and an ANOVA exist: a regime still running its seeds does not
    replace a finished one), else the longest with ≥ 2 candidates; ``None`` for rows without regimes
    (``reproduce_figure1.py``: one regime)."""
    seeds: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    seen: dict[str, int] = {}
    ranked: set[str] = set()
    for r in rows:
        if r.get("kind") == "student" and r.get("regime") is not None:
            seeds[r["regime"]][r["candidate"]].add(int(r.get("seed", 0)))
            seen[r["regime"]] = int(r.get("images_seen", 0))
            if r.get("phase") == "ranking":
                ranked.add(r["regime"])
    for need, only in ((2, ranked), (2, None), (1, None)):
        ok = [g for g, per in seeds.items() if len(per) >= 2 and min(len(s) for s in per.values()) >= need
              and (only is None or g in only)]
        if ok:
            return max(ok, key=lambda g: (len(seeds[g]), seen[g]) if only else seen[g])
    return None


def crossover(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Where does augmentation start to beat ``none``? Per (regime, config): each candidate's accuracy and its
    difference to ``none``, both over the seeds that candidate and ``none`` have finished (paired by seed: a
    cell where two candidates ran more seeds compares those two on all of them).

    Student rows of ``benchmarks/paper_recipe.py`` carry ``regime`` (``"<images per class>x<epochs>"``) and
    ``images_seen``; the crossover candidates are those of ``phase == "crossover"`` rows (the ranking phase
    adds others at one regime). Cells are ordered by images seen: the table reads as a schedule getting
    longer. A cell says where its students trained (``device``: rows without one ran on a CPU)."""
    rows = list(rows)
    names = {r["candidate"] for r in rows if r.get("kind") == "student" and r.get("phase") == "crossover"}
    acc: dict[tuple[str, str], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    seen: dict[str, int] = {}
    devices: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        if r.get("kind") == "student" and r.get("regime") is not None and r["candidate"] in names:
            acc[(r["regime"], r["config"])][r["candidate"]][int(r["seed"])] = float(r["accuracy"])
            devices[(r["regime"], r["config"])].add("GPU" if str(r.get("device", "cpu")).startswith("cuda") else "CPU")
            seen[r["regime"]] = int(r.get("images_seen", 0))
    cells = []
    for (regime, cfg), per in sorted(acc.items(), key=lambda kv: (seen[kv[0][0]], kv[0][1])):
        if "none" not in per:
            continue
        cands = {}
        for c, v in per.items():
            seeds = sorted(set(v) & set(per["none"]))
            if not seeds:
                continue
            a = np.array([v[s] for s in seeds])
            d = a - np.array([per["none"][s] for s in seeds])
            cands[c] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "seeds": seeds,
                        "per_seed": a.tolist(), "minus_none": float(d.mean()), "minus_none_per_seed": d.tolist(),
                        "wins": int((d > 0).sum())}
        if len(cands) < 2:
            continue
        seeds = sorted(set(per["none"]))
        best = max(cands, key=lambda c: (cands[c]["minus_none"], c == "none"))  # none (0) wins a tie at 0
        top = cands[best]
        cells.append({"regime": regime, "config": cfg, "images_seen": seen[regime], "seeds": seeds,
                      "trained_on": " + ".join(sorted(devices[(regime, cfg)])), "candidates": cands, "best": best,
                      "augmentation_helps": (best != "none" and top["minus_none"] > 0 and top["wins"] == len(top["seeds"])
                                             and len(top["seeds"]) >= 3)})
    return {"cells": cells}


def score_table(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each ranked candidate's mean score over its ranking passes, per score (``-I`` added), before any
    student is trained: what a user sees from ``daqakd rank``."""
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    last: dict[Any, dict[str, Any]] = {}
    for i, r in enumerate(rows):
        if r.get("kind") == "ranking":
            last[(r.get("candidate"), r.get("pass", i))] = r
    for r in last.values():
        for k, v in r["scores"].items():
            per[r["candidate"]][k].append(float(v))
        if "I" in r["scores"]:
            per[r["candidate"]]["-I"].append(-float(r["scores"]["I"]))
    return {c: {k: float(np.mean(v)) for k, v in sc.items()} | {"passes": float(len(sc.get("cmi", [])))}
            for c, sc in per.items()}


def _scores_markdown(t: dict[str, dict[str, float]]) -> str:
    if not t:
        return ""
    keys = [k for k in ("cmi", "CE", "CE-I", "D", "-I", "tstddev") if all(k in v for v in t.values())]
    order = sorted(t, key=lambda c: t[c].get("cmi", 0.0))
    lines = ["## Teacher-only scores of every candidate (lower = predicted better; mean over ranking passes)", "",
             "| candidate | passes | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for c in order:
        lines.append(f"| `{c}` | {int(t[c]['passes'])} | " + " | ".join(f"{t[c][k]:.4f}" for k in keys) + " |")
    return "\n".join(lines + [""])


def _crossover_markdown(c: dict[str, Any]) -> str:
    if not c["cells"]:
        return ""
    names = sorted({n for cell in c["cells"] for n in cell["candidates"]}, key=lambda n: (n != "none", n))
    lines = ["## Crossover: when does augmentation beat `none` (= the base alone)?", "",
             "Accuracy % (mean ± std over seeds); below it the difference to `none` in points, paired by seed, "
             "and in how many of the seeds both ran the candidate won (`seeds`: `none`'s).", "",
             "| regime (images/class × epochs) | images seen | config | trained on | seeds | "
             + " | ".join(f"`{n}`" for n in names) + " | helps? |", "|---|---:|---|---|---:|" + "---|" * len(names) + "---|"]
    for cell in c["cells"]:
        row = []
        for n in names:
            v = cell["candidates"].get(n)
            if v is None:
                row.append("–")
            elif n == "none":
                row.append(f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f}")
            else:
                row.append(f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f}<br>{100 * v['minus_none']:+.2f} "
                           f"({v['wins']}/{len(v['seeds'])})")
        lines.append(f"| {cell['regime']} | {cell['images_seen']:,} | {cell['config']} | {cell['trained_on']} | "
                     f"{len(cell['seeds'])} | "
                     + " | ".join(row) + f" | {'yes: ' + cell['best'] if cell['augmentation_helps'] else 'no'} |")
    lines += ["", "helps? = the best candidate is not `none` and beat it in every seed (≥ 3 seeds). trained on: CPU = "
              "one core, one torch thread; GPU = one of several students at once on one GPU "
              "(`benchmarks/paper_recipe_device.py`), the same code and images.", ""]
    return "\n".join(lines)


def search_table(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 24: each ``kind: search`` row (a policy search with one metric) with the students of its top-k
    combination (``kind: search_student``) per (regime, config), paired by seed with the ranking phase's
    ``none`` and its best fixed candidate other than ``none`` (the highest mean over the shared seeds), and the
    search's cost next to one student's training time."""
    rows = list(rows)
    fixed: dict[tuple[str, str], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.get("kind") == "student" and r.get("regime") is not None:
            fixed[(r["regime"], r["config"])][r["candidate"]][int(r["seed"])] = float(r["accuracy"])
    out = []
    for srch in (r for r in rows if r.get("kind") == "search"):
        studs = [r for r in rows if r.get("kind") == "search_student" and r.get("candidate") == srch["combined"]]
        for regime, cfg in sorted({(r["regime"], r["config"]) for r in studs}):
            mine = {int(r["seed"]): float(r["accuracy"]) for r in studs if (r["regime"], r["config"]) == (regime, cfg)}
            per = fixed.get((regime, cfg), {})
            if "none" not in per:
                continue
            seeds = sorted(set(mine) & set(per["none"]))
            others = {c: v for c, v in per.items() if c != "none" and set(seeds) <= set(v)}
            if not seeds or not others:
                continue
            best = max(others, key=lambda c: float(np.mean([others[c][k] for k in seeds])))
            a = np.array([mine[k] for k in seeds])

            def vs(ref: dict[int, float], a: np.ndarray = a, seeds: list[int] = seeds) -> dict[str, Any]:
                d = a - np.array([ref[k] for k in seeds])
                return {"mean": float(np.mean([ref[k] for k in seeds])), "diff": float(d.mean()),
                        "wins": int((d > 0).sum())}

            secs = [float(r["seconds"]) for r in studs if (r["regime"], r["config"]) == (regime, cfg)]
            out.append({"metric": srch["metric"], "space": srch["space"], "n": int(srch["n"]), "top_k": int(srch["top_k"]),
                        "combined": srch["combined"], "regime": regime, "config": cfg, "seeds": seeds,
                        "accuracy": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
                        "none": vs(per["none"]), "best_fixed": {"candidate": best, **vs(others[best])},
                        "search_seconds": float(srch["seconds"]), "policies_per_minute": srch.get("policies_per_minute"),
                        "student_seconds": float(np.mean(secs)), "top": list(srch.get("top", [])),
                        "top_descriptions": list(srch.get("top_descriptions", []))})
    return out


def _search_markdown(t: list[dict[str, Any]]) -> str:
    if not t:
        return ""
    lines = ["## Policy search: the searched combination against `none` and the best fixed candidate", "",
             "Each search scored N policies of the space with one metric on the ranking sample; its top k combined "
             "(a random choice among them per image, after the base) trained as students on the ranking test's "
             "seeds. Differences in points, paired by seed (wins = seeds where the combination was better).", "",
             "| metric | policies | combination | regime | config | seeds | accuracy % | − `none` (pp) | best fixed "
             "| − best fixed (pp) | search s | one student s |",
             "|---|---:|---|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in t:
        n = len(r["seeds"])
        lines.append(f"| {r['metric']} | {r['n']} ({r['space']}) | `{r['combined']}` | {r['regime']} | {r['config']} | {n} | "
                     f"{100 * r['accuracy']:.2f} ± {100 * r['std']:.2f} | {100 * r['none']['diff']:+.2f} "
                     f"({r['none']['wins']}/{n}) | `{r['best_fixed']['candidate']}` {100 * r['best_fixed']['mean']:.2f} | "
                     f"{100 * r['best_fixed']['diff']:+.2f} ({r['best_fixed']['wins']}/{n}) | {r['search_seconds']:.0f} | "
                     f"{r['student_seconds']:.0f} |")
    lines.append("")
    for r in t:
        lines.append(f"- top {r['top_k']} by `{r['metric']}`: " + "; ".join(
            f"`{n}` ({d.split(' ∘ ', 1)[-1]})" for n, d in zip(r["top"], r["top_descriptions"])))
    return "\n".join(lines) + "\n"


def lr_probe_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``kind: lr_probe`` rows (one student per learning rate, before a phase commits to one), sorted
    by config, regime and learning rate."""
    probes = [r for r in rows if r.get("kind") == "lr_probe"]
    return sorted(probes, key=lambda r: (str(r.get("config")), str(r.get("regime")), float(r["lr"])))


def _lr_probe_markdown(probes: list[dict[str, Any]]) -> str:
    if not probes:
        return ""
    lines = ["## Learning-rate probe (why the students use the learning rate they do)", "",
             "One student per learning rate (`none`, seed 0), before the crossover committed to one. "
             "PTQ = the student before training; a rate that ends below it made the student worse.", "",
             "| config | regime | optimizer | lr | PTQ % | after training % | train % |", "|---|---|---|---:|---:|---:|---:|"]
    for r in probes:
        lines.append(f"| {r.get('config')} | {r.get('regime')} | {r.get('optimizer', '')} | {float(r['lr']):g} | "
                     f"{100 * r['ptq_accuracy']:.2f} | {100 * r['accuracy']:.2f} | {100 * r['train_accuracy']:.2f} |")
    return "\n".join(lines) + "\n"


def _crossover_figure(c: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfgs = sorted({cell["config"] for cell in c["cells"]})
    fig, axes = plt.subplots(1, len(cfgs), figsize=(6 * len(cfgs), 4.2), squeeze=False)
    for ax, cfg in zip(axes[0], cfgs):
        cells = [cell for cell in c["cells"] if cell["config"] == cfg]
        names = sorted({n for cell in cells for n in cell["candidates"] if n != "none"})
        for n in names:
            pts = [(cell["images_seen"], 100 * cell["candidates"][n]["minus_none"]) for cell in cells if n in cell["candidates"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=n)
        ax.axhline(0, color="grey", lw=0.8, ls="-.")
        ax.set_xscale("log")
        ax.set_xlabel("images seen by the student (images × epochs)")
        ax.set_ylabel("accuracy − none (points, mean over seeds)")
        ax.set_title(f"{cfg}: augmentation vs none (= base crop + flip)")
        if ax.get_legend_handles_labels()[0]:  # no candidate but none finished yet: nothing to label
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(a: dict[str, Any]) -> str:
    lines = ["# Does the ranking pick the best augmentation?", ""]
    if a.get("regime"):
        lines += [f"Students of regime {a['regime']} (images per class × epochs).", ""]
    if a.get("teacher"):
        lines += [f"Teacher test accuracy: {a['teacher'].get('accuracy', float('nan')):.4f}", ""]
    for cfg, r in a["configs"].items():
        lines += [f"## {cfg} ({len(r['seeds'])} seeds)", ""]
        lines += [f"- seed-half agreement of the candidate ordering: Spearman ρ = {r.get('seed_half_rho', float('nan')):+.2f}",
                  f"- one-way ANOVA across candidates: p = {r.get('anova_p', float('nan')):.3g}",
                  f"- oracle best: {r['oracle']['candidate']} {100 * r['oracle']['mean']:.2f} ± {100 * r['oracle']['std']:.2f} %"]
        if "none" in r:
            lines.append(f"- no augmentation: {100 * r['none']['mean']:.2f} ± {100 * r['none']['std']:.2f} %")
        lines += ["", "| candidate | accuracy % (mean ± std) | " + " | ".join(r["scores"]) + " |",
                  "|---|---|" + "---|" * len(r["scores"])]
        for c in r["candidates"]:
            acc = r["accuracy"][c]
            cells = [f"{r['scores'][s]['per_candidate'][c]['mean']:.4f} ± {r['scores'][s]['per_candidate'][c]['std']:.4f}" for s in r["scores"]]
            lines.append(f"| {c} | {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} | " + " | ".join(cells) + " |")
        lines += ["", "| score (lower = better) | Spearman ρ (+ = predicts) [95 % CI] | Kendall τ [95 % CI] | its pick | pick acc % | pick − oracle (pp) | pick − none (pp) |",
                  "|---|---|---|---|---|---|---|"]
        for s, v in r["scores"].items():
            vs_none = v.get("pick_minus_none")
            lines.append(
                f"| {s} | {v['spearman']:+.2f} [{v['spearman_ci95'][0]:+.2f}, {v['spearman_ci95'][1]:+.2f}] | "
                f"{v['kendall']:+.2f} [{v['kendall_ci95'][0]:+.2f}, {v['kendall_ci95'][1]:+.2f}] | {v['pick']['candidate']} | "
                f"{100 * v['pick']['mean']:.2f} ± {100 * v['pick']['std']:.2f} | {100 * v['pick_minus_oracle']:+.2f} | "
                + (f"{100 * vs_none:+.2f} |" if vs_none is not None else "– |")
            )
        lines.append("")
    return "\n".join(lines)


def _figure(a: dict[str, Any], path: Path, metric: str, baseline: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfgs = list(a["configs"])
    fig, axes = plt.subplots(1, len(cfgs), figsize=(6 * len(cfgs), 4.6), squeeze=False)
    for ax, cfg in zip(axes[0], cfgs):
        r = a["configs"][cfg]
        if metric not in r["scores"]:
            ax.set_title(f"{cfg}: no '{metric}' scores")
            continue
        sc = r["scores"][metric]
        xs = [sc["per_candidate"][c]["mean"] for c in r["candidates"]]
        xe = [sc["per_candidate"][c]["std"] for c in r["candidates"]]
        ys = [100 * r["accuracy"][c]["mean"] for c in r["candidates"]]
        ye = [100 * r["accuracy"][c]["std"] for c in r["candidates"]]
        ax.errorbar(xs, ys, xerr=xe, yerr=ye, fmt="o", capsize=3, color="tab:blue")
        for c, x, y in zip(r["candidates"], xs, ys):
            ax.annotate(c, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axhline(100 * sc["pick"]["mean"], color="tab:green", ls="--", label=f"{metric} pick: {sc['pick']['candidate']}")
        if baseline in r["scores"]:
            b = r["scores"][baseline]["pick"]
            ax.axhline(100 * b["mean"], color="tab:orange", ls=":", label=f"{baseline} pick: {b['candidate']}")
        if "none" in r:
            ax.axhline(100 * r["none"]["mean"], color="grey", ls="-.", lw=0.8, label="no augmentation")
        ax.set_xlabel(f"{metric} score (lower = predicted better)")
        ax.set_ylabel("student test accuracy % (mean ± std over seeds)")
        ax.set_title(f"{cfg}: Spearman ρ = {sc['spearman']:+.2f} (+ = predicts)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _check_report_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """A file to report on holds results (an empty file is fine to *resume*, not to report on)."""
    if not rows:
        raise DataError(f"{path} is empty (no result lines); the experiment has not written anything yet: run "
                        f"benchmarks/reproduce_figure1.py --out {path} (it appends as it goes).")
    kinds = {"teacher", "ranking", "student"}
    if not any(r.get("kind") in kinds for r in rows):
        found = sorted({str(r.get("kind")) for r in rows})[:5]
        raise DataError(f"{path} is not a results file of benchmarks/reproduce_figure1.py: none of its {len(rows)} "
                        f"line(s) has kind teacher, ranking or student (found kind {', '.join(found)}).")


def write_report(results: str | Path, out_dir: str | Path, metric: str = "cmi", baseline: str = "tstddev",
                 n_boot: int = 1000) -> dict[str, Path]:
    """Analyse ``results`` and write ``analysis.json``, ``analysis.md`` and ``figure1.png`` into ``out_dir``."""
    rows = read_results(results)
    _check_report_rows(rows, Path(results))
    try:
        a = analyse(rows, n_boot=n_boot)
    except DataError:  # no students yet: the teacher and the scores are still worth a report
        if not any(r.get("kind") == "ranking" for r in rows):
            raise
        teacher = [r for r in rows if r.get("kind") == "teacher"]
        a = {"teacher": teacher[-1] if teacher else None, "configs": {}, "regime": None}
    c = crossover(rows)
    scores_md = _scores_markdown(score_table(rows))
    probe_md = _lr_probe_markdown(lr_probe_table(rows))
    search = search_table(rows)
    search_md = _search_markdown(search)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "analysis.json", "md": out / "analysis.md"}
    extra = {**({"crossover": c} if c["cells"] else {}), **({"search": search} if search else {})}
    paths["json"].write_text(json.dumps({**a, **extra}, indent=2))
    paths["md"].write_text(_markdown(a) + ("\n" + scores_md if scores_md else "")
                           + ("\n" + _crossover_markdown(c) if c["cells"] else "")
                           + ("\n" + search_md if search_md else "")
                           + ("\n" + probe_md if probe_md else ""))
    if a["configs"]:
        paths["png"] = out / "figure1.png"
        _figure(a, paths["png"], metric, baseline)
    if c["cells"]:
        paths["crossover_png"] = out / "crossover.png"
        _crossover_figure(c, paths["crossover_png"])
    return paths
