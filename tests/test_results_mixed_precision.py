"""docs/models.md's mixed-precision table (issue 25) against its data: the block is exactly what
benchmarks/mixed_precision_cifar.py's ``table`` writes for the committed docs/evidence/mixed-precision-cifar.jsonl,
every accuracy in it is recomputed here from the rows on its own, and the rows are the comparison the section
claims: the same schedule and seeds in every arm, and the plan no larger than the uniform W3A4 student."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "models.md"
DATA = ROOT / "docs" / "evidence" / "mixed-precision-cifar.jsonl"
NUM = re.compile(r"[+\-−]?\d+(?:\.\d+)?")


def _rows() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def _block() -> str:
    m = re.search(r"<!-- mixed-precision:begin[^>]*-->\n(.*?)<!-- mixed-precision:end -->", DOC.read_text(), re.S)
    assert m, "docs/models.md lost its mixed-precision markers"
    return m.group(1)


def test_the_block_is_what_the_committed_rows_give() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from mixed_precision_cifar import table
    finally:
        sys.path.pop(0)
    assert _block().strip() == table(_rows()).strip(), (
        "regenerate: python benchmarks/mixed_precision_cifar.py --data x --table-only, pasted between the markers")


def test_every_accuracy_in_the_table_is_recomputed_from_the_rows() -> None:
    rows = _rows()
    lines = [ln for ln in _block().splitlines() if ln.startswith("| `")]
    assert len(lines) == 3, lines
    plan = {r["seed"]: r["student_after"] for r in rows if r["arm"] == "plan-w3a4"}
    for ln in lines:
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        arm = cells[0].strip("`")
        mine = [r for r in rows if r["arm"] == arm]
        for cell, key in ((cells[2], "ptq"), (cells[3], "student_after")):
            mean, std = (float(x) for x in NUM.findall(cell)[:2])
            vals = [100 * r[key] for r in mine]
            assert abs(mean - statistics.mean(vals)) <= 0.005 + 1e-9 and abs(std - statistics.stdev(vals)) <= 0.005 + 1e-9
        if arm != "plan-w3a4":
            gap = [100 * (plan[r["seed"]] - r["student_after"]) for r in mine]
            assert abs(float(NUM.findall(cells[4])[0].replace("−", "-")) - statistics.mean(gap)) <= 0.005 + 1e-9
            assert f"({sum(g > 0 for g in gap)}/{len(gap)} seeds)" in cells[4], cells[4]


def test_the_rows_are_the_stated_comparison() -> None:
    rows = _rows()
    arms = {r["arm"] for r in rows}
    assert arms == {"uniform-w3a4", "plan-w3a4", "uniform-w4a4"}
    seeds = {a: {r["seed"] for r in rows if r["arm"] == a} for a in arms}
    assert len(seeds["plan-w3a4"]) >= 3 and len({frozenset(s) for s in seeds.values()}) == 1, seeds
    schedule = {(r["epochs"], r["train_used"], r["batch_size"], r["lr"], r["backend"]) for r in rows}
    assert len(schedule) == 1, schedule
    assert {round(r["teacher_fp"], 4) for r in rows} == {0.8475}  # the paper-recipe teacher
    uniform = {r["avg_weight_bits"] for r in rows if r["arm"] == "uniform-w3a4"}
    assert len(uniform) == 1
    for r in rows:
        if r["arm"] == "plan-w3a4":  # equal size: never more weight bits than the uniform W3A4 student
            assert r["avg_weight_bits"] <= min(uniform) + 1e-4 and abs(r["budget"] - min(uniform)) < 1e-3
            assert r["layer_bits"]["stem.0"] == 8 and r["layer_bits"]["fc"] == 8  # pinned by the convention
            assert len(set(r["layer_bits"].values())) > 2  # the plan mixes inner widths
        else:
            inner = {b for n, b in r["layer_bits"].items() if n not in ("stem.0", "fc")}
            assert inner == {r["bits"]}, r["arm"]
