"""`daqakd report`: the analysis of a ranking-vs-accuracy experiment and its figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from daqakd_plugins.cli import main
from daqakd_plugins.errors import DataError
from daqakd_plugins.evidence import analyse, read_results


def _rows(predictive: bool, seeds: int = 6, noise: float = 0.002):
    rng = np.random.default_rng(0)
    cands = ["none", "a", "b", "c", "d"]
    true_acc = {"none": 0.60, "a": 0.62, "b": 0.64, "c": 0.66, "d": 0.68}
    rows = [{"kind": "teacher", "accuracy": 0.8}]
    for i, c in enumerate(cands):
        for p in range(3):
            good = 1.0 - true_acc[c] + 0.001 * rng.standard_normal()
            rows.append({"kind": "ranking", "candidate": c, "pass": p,
                         "scores": {"cmi": good if predictive else -good, "tstddev": rng.random(), "I": 0.1 * i}})
        for s in range(seeds):
            rows.append({"kind": "student", "candidate": c, "seed": s, "config": "W2A4",
                         "accuracy": true_acc[c] + noise * rng.standard_normal()})
    return rows


def test_a_predictive_score_gets_rho_one_and_picks_the_oracle():
    a = analyse(_rows(True), n_boot=200)["configs"]["W2A4"]
    assert a["seed_half_rho"] == pytest.approx(1.0)
    assert a["anova_p"] < 1e-6
    cmi = a["scores"]["cmi"]
    assert cmi["spearman"] == pytest.approx(1.0) and cmi["kendall"] == pytest.approx(1.0)
    assert cmi["pick"]["candidate"] == a["oracle"]["candidate"] == "d" and cmi["pick_minus_oracle"] == 0
    assert cmi["spearman_ci95"][0] > 0.5
    # I grows with accuracy here, so the derived "-I" score (lower = better) predicts perfectly
    assert a["scores"]["-I"]["spearman"] == pytest.approx(1.0) and a["scores"]["-I"]["pick"]["candidate"] == "d"


def test_an_inverted_score_gets_rho_minus_one():
    a = analyse(_rows(False), n_boot=100)["configs"]["W2A4"]
    assert a["scores"]["cmi"]["spearman"] == pytest.approx(-1.0)
    assert a["scores"]["cmi"]["pick"]["candidate"] == "none"
    assert a["scores"]["cmi"]["pick_minus_oracle"] == pytest.approx(a["none"]["mean"] - a["oracle"]["mean"])


def test_report_command_writes_json_markdown_png(tmp_path, capsys):
    res = tmp_path / "results.jsonl"
    res.write_text("\n".join(json.dumps(r) for r in _rows(True)) + '\n{"kind": "stud')  # killed mid-line
    assert len(read_results(res)) == len(_rows(True))
    assert main(["report", str(res), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "Spearman" in out and "W2A4" in out
    png = tmp_path / "figure1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "analysis.json").read_text())["configs"]["W2A4"]["oracle"]["candidate"] == "d"


def test_report_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="reproduce_figure1.py"):
        read_results(tmp_path / "nope.jsonl")
    (tmp_path / "r.jsonl").write_text('{"kind": "teacher", "accuracy": 0.5}\n')
    with pytest.raises(DataError, match="≥ 2 candidates"):
        analyse(read_results(tmp_path / "r.jsonl"))


def test_the_score_analysis_waits_for_a_regime_with_two_seeds() -> None:
    """A regime still running its seeds (the paper recipe's 100x50) does not replace a finished one: its
    one-seed table had ρ = nan and no ANOVA. The ranking phase's regime, once it has two seeds, comes first."""
    from daqakd_plugins.evidence import ranking_regime

    def row(regime: str, seen: int, cand: str, seed: int) -> dict:
        return {"kind": "student", "regime": regime, "images_seen": seen, "candidate": cand, "seed": seed,
                "config": "W4A4", "accuracy": 0.5}

    rows = [row("100x15", 15000, c, s) for c in ("none", "aa") for s in (0, 1, 2)]
    rows += [row("100x50", 50000, c, 0) for c in ("none", "aa")]
    assert ranking_regime(rows) == "100x15"
    rows += [row("100x50", 50000, "none", 1)]
    assert ranking_regime(rows) == "100x15"  # one candidate with two seeds is not yet a comparison
    rows += [row("100x50", 50000, "aa", 1), row("100x50", 50000, "taw", 0)]
    assert ranking_regime(rows) == "100x15"  # every candidate needs its second seed (the analysis pairs seeds)
    rows += [row("100x50", 50000, "taw", 1)]
    assert ranking_regime(rows) == "100x50"
    assert ranking_regime([row("3x2", 60, c, 0) for c in ("none", "aa")]) == "3x2"  # one seed only: still a table
    # the ranking phase (more candidates, here at a shorter regime that reuses the crossover's students) takes
    # over once all its candidates have two seeds
    more = ("ra", "augmix", "re", "taw+cutmix")
    ranking = [{**row("100x5", 5000, c, s), "phase": "ranking"} for c in more for s in (0,)]
    ranking += [{**row("100x5", 5000, c, s), "phase": "crossover"} for c in ("none", "aa", "taw") for s in (0, 1, 2)]
    assert ranking_regime(rows + ranking) == "100x50"
    ranking += [{**row("100x5", 5000, c, 1), "phase": "ranking"} for c in more]
    assert ranking_regime(rows + ranking) == "100x5"
    assert ranking_regime(rows + [{**r, "phase": "crossover"} for r in ranking]) == "100x50"


def test_the_search_table_pairs_the_combination_with_none_and_the_best_fixed_candidate(tmp_path) -> None:
    """Issue 24: the searched combination's students against `none` and the best fixed candidate other than
    `none`, paired by the seeds all of them finished; the report prints the section."""
    from daqakd_plugins.evidence import search_table, write_report

    acc = {"none": [0.80, 0.81, 0.79], "augmix": [0.82, 0.80, 0.81], "cutmix": [0.70, 0.71, 0.69]}
    rows = [{"kind": "student", "candidate": c, "seed": s, "config": "W4A4", "regime": "100x5", "images_seen": 5000,
             "accuracy": v[s], "phase": "ranking"} for c, v in acc.items() for s in range(3)]
    rows += [{"kind": "ranking", "candidate": c, "pass": 0, "scores": {"cmi": 1.0 + i}} for i, c in enumerate(acc)]
    rows.append({"kind": "search", "metric": "teacher-ce", "space": "taw2", "n": 100, "top_k": 2, "seconds": 420.0,
                 "combined": "search:taw2:4-7", "top": ["search:taw2:4", "search:taw2:7"],
                 "top_descriptions": ["crop-flip ∘ Equalize → Identity", "crop-flip ∘ Rotate ±≤ 9°"]})
    mine = [0.83, 0.80, 0.82, 0.99]  # seed 3 has no `none` to pair with: left out
    rows += [{"kind": "search_student", "candidate": "search:taw2:4-7", "seed": s, "config": "W4A4", "regime": "100x5",
              "accuracy": a, "seconds": 100.0 + s} for s, a in enumerate(mine)]
    (t,) = search_table(rows)
    assert t["seeds"] == [0, 1, 2] and t["best_fixed"]["candidate"] == "augmix"
    assert t["none"]["diff"] == pytest.approx(np.mean([0.03, -0.01, 0.03])) and t["none"]["wins"] == 2
    assert t["best_fixed"]["diff"] == pytest.approx(np.mean([0.01, 0.0, 0.01])) and t["best_fixed"]["wins"] == 2
    assert t["search_seconds"] == 420.0 and t["student_seconds"] == pytest.approx(101.5)
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = write_report(path, tmp_path / "out", n_boot=10)["md"].read_text()
    assert "## Policy search" in md and "`search:taw2:4-7`" in md and "+1.67 (2/3)" in md
    assert "`search:taw2:4` (Equalize → Identity)" in md


def test_the_crossover_says_where_each_cell_trained() -> None:
    """A cell trained on the GPU machine (benchmarks/paper_recipe_device.py) is marked as such: its numbers
    are the same code on the same images, but not bit-for-bit what one CPU core gives."""
    from daqakd_plugins.evidence import _crossover_markdown, crossover

    def row(regime: str, cand: str, seed: int, acc: float, **kw: object) -> dict:
        return {"kind": "student", "phase": "crossover", "regime": regime, "images_seen": int(regime.split("x")[1]),
                "candidate": cand, "seed": seed, "config": "W2A4", "accuracy": acc, **kw}

    rows = [row("100x5", c, s, 0.3 - 0.01 * (c == "aa")) for c in ("none", "aa") for s in range(3)]
    rows += [row("100x50", c, s, 0.6 + 0.01 * (c == "aa"), device="cuda") for c in ("none", "aa") for s in range(3)]
    cells = {c["regime"]: c for c in crossover(rows)["cells"]}
    assert cells["100x5"]["trained_on"] == "CPU" and cells["100x50"]["trained_on"] == "GPU"
    assert cells["100x50"]["augmentation_helps"] and not cells["100x5"]["augmentation_helps"]
    md = _crossover_markdown(crossover(rows + [row("100x5", "aa", 3, 0.3, device="cuda"), row("100x5", "none", 3, 0.3)]))
    assert "| 100x5 | 5 | W2A4 | CPU + GPU | 4 |" in md and "| 100x50 | 50 | W2A4 | GPU | 3 |" in md


def test_a_crossover_cell_pairs_each_candidate_with_none_on_the_seeds_both_ran() -> None:
    """The W2A4 100x50 cell ran `none` and AutoAugment on 6 seeds and the others on 3: AutoAugment is compared on
    all 6 (its 3-seed lead was gone at 6), the others on their 3."""
    from daqakd_plugins.evidence import _crossover_markdown, crossover

    def row(cand: str, seed: int, acc: float) -> dict:
        return {"kind": "student", "phase": "crossover", "regime": "100x50", "images_seen": 50000, "candidate": cand,
                "seed": seed, "config": "W2A4", "accuracy": acc}

    rows = [row("none", s, 0.60) for s in range(6)] + [row("cutmix", s, 0.50) for s in range(3)]
    rows += [row("aa", s, 0.61 if s < 3 else 0.58) for s in range(6)]
    cell = crossover(rows)["cells"][0]
    aa, cm = cell["candidates"]["aa"], cell["candidates"]["cutmix"]
    assert aa["seeds"] == list(range(6)) and aa["wins"] == 3 and abs(aa["minus_none"] + 0.005) < 1e-9
    assert cm["seeds"] == [0, 1, 2] and cm["wins"] == 0 and cell["seeds"] == list(range(6))
    assert cell["best"] == "none" and not cell["augmentation_helps"]
    md = _crossover_markdown(crossover(rows))
    assert "-0.50 (3/6)" in md and "-10.00 (0/3)" in md
    rows = [r for r in rows if r["seed"] < 3]  # on the first 3 seeds alone AutoAugment won every seed
    assert crossover(rows)["cells"][0]["augmentation_helps"]
