"""docs/results.md's evidence section against its data: every number in its tables is recomputed from
the committed docs/evidence/cifar10-subset-cpu.jsonl with the project's analysis code
(daqakd_plugins.evidence.analyse, the code behind `daqakd report`), so the doc cannot drift from the file.

The tables are read, not copied: a number in the doc passes when it equals the recomputed value rounded to
the precision the doc prints it with.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import ttest_rel

from daqakd_plugins.evidence import analyse, read_results

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
DATA = ROOT / "docs" / "evidence" / "cifar10-subset-cpu.jsonl"

NUM = re.compile(r"[+\-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[+\-−]?\d+)?")
CODE = re.compile(r"`([^`]+)`")


# ------------------------------------------------------------------------------------------ parsing
def evidence_section(text: str) -> str:
    start = text.index("\n## Evidence")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table: (header cells, body rows of cells)."""
    out, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 2 and set("".join(block[1])) <= set("-: "):
            out.append((block[0], block[2:]))
        block = []
    return out


def table(section: str, *header_start: str) -> tuple[list[str], list[list[str]]]:
    found = [t for t in tables(section) if tuple(t[0][: len(header_start)]) == header_start]
    assert len(found) == 1, f"expected one table whose header starts {header_start}, found {len(found)}"
    header, rows = found[0]
    assert all(len(r) == len(header) for r in rows), f"ragged table {header}"
    return found[0]


def numbers(cell: str) -> list[str]:
    return NUM.findall(cell)


def to_float(s: str) -> float:
    return float(s.replace("−", "-").replace(",", ""))


def ulp(s: str) -> float:
    """One unit in the last printed digit of ``s`` ('0.27' → 0.01, '1.1e-8' → 1e-9, '1,170' → 1)."""
    mant, _, exp = s.replace("−", "-").replace(",", "").lower().partition("e")
    decimals = len(mant.partition(".")[2])
    return 10.0 ** ((int(exp) if exp else 0) - decimals)


def check(doc: str, value: float, what: str) -> None:
    got = to_float(doc)
    assert abs(got - value) <= 0.5 * ulp(doc) * (1 + 1e-9) + 1e-12, f"{what}: the doc says {doc}, the data gives {value:.6g}"


def check_cell(cell: str, values: list[float], what: str) -> None:
    nums = numbers(cell)
    assert len(nums) == len(values), f"{what}: expected {len(values)} numbers in {cell!r}"
    for n, v in zip(nums, values):
        check(n, v, what)


def code_name(cell: str) -> str:
    m = CODE.search(cell)
    assert m, f"no `name` in cell {cell!r}"
    return m.group(1)


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def section() -> str:
    return evidence_section(DOC.read_text())


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return read_results(DATA)


@pytest.fixture(scope="module")
def analysis(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return analyse(rows)  # the defaults of `daqakd report`: 1,000 bootstrap resamples, seed 0


@pytest.fixture(scope="module")
def cand_order(section: str) -> list[str]:
    """The candidate list `C=...` of the doc's commands (its order decides each student's shard)."""
    m = re.search(r"^C=(\S+)$", section, re.M)
    assert m, "the commands define no C=..."
    return m.group(1).split(",")


# ------------------------------------------------------------------------------------------ tests
def test_step1_table(section: str, analysis: dict[str, Any]) -> None:
    header, body = table(section, "config", "lowest candidate mean (%)")
    assert {r[0] for r in body} == set(analysis["configs"])
    for r in body:
        a = analysis["configs"][r[0]]
        means = [100 * a["accuracy"][c]["mean"] for c in a["candidates"]]
        check_cell(r[1], [min(means)], f"{r[0]} lowest mean")
        check_cell(r[2], [max(means)], f"{r[0]} highest mean")
        check_cell(r[3], [a["seed_half_rho"]], f"{r[0]} seed-half rho")
        check_cell(r[4], [a["anova_p"]], f"{r[0]} ANOVA p")


def test_per_candidate_table(section: str, analysis: dict[str, Any]) -> None:
    header, body = table(section, "candidate", "W2A4 accuracy %")
    assert {code_name(r[0]) for r in body} == set(analysis["configs"]["W2A4"]["candidates"])
    columns = {h: i for i, h in enumerate(header)}
    for r in body:
        cand = code_name(r[0])
        for cfg in ("W2A4", "W4A4"):
            a = analysis["configs"][cfg]
            acc = a["accuracy"][cand]
            check_cell(r[columns[f"{cfg} accuracy %"]], [100 * acc["mean"], 100 * acc["std"]], f"{cfg} {cand} accuracy")
            x, none = np.array(acc["per_seed"]), np.array(a["accuracy"]["none"]["per_seed"])
            delta, p = r[columns[f"{cfg} Δ vs none (pp)"]], r[columns[f"{cfg} paired p"]]
            below = r[columns[f"{cfg} seeds below none"]] if f"{cfg} seeds below none" in columns else None
            if cand == "none":
                assert not numbers(delta) and not numbers(p) and not (below and numbers(below)), f"{cfg} none vs none"
                continue
            check_cell(delta, [100 * float((x - none).mean())], f"{cfg} {cand} paired difference")
            check_cell(p, [float(ttest_rel(x, none).pvalue)], f"{cfg} {cand} paired p")
            if below is not None:
                check_cell(below, [int((x < none).sum()), len(x)], f"{cfg} {cand} seeds below none")


def test_score_table(section: str, analysis: dict[str, Any]) -> None:
    header, body = table(section, "key", "score (lower = better)")
    a = analysis["configs"]["W2A4"]
    assert {code_name(r[0]) for r in body} == set(a["scores"])
    for r in body:
        key = code_name(r[0])
        s = a["scores"][key]
        check_cell(r[2], [s["spearman"], *s["spearman_ci95"]], f"{key} Spearman")
        check_cell(r[3], [s["kendall"], *s["kendall_ci95"]], f"{key} Kendall")
        assert code_name(r[4]) == s["pick"]["candidate"], f"{key} pick"
        check_cell(r[5], [100 * s["pick"]["mean"], 100 * s["pick"]["std"]], f"{key} pick accuracy")
        check_cell(r[6], [100 * s["pick_minus_oracle"]], f"{key} pick - oracle")


def test_run_time_table(section: str, rows: list[dict[str, Any]], cand_order: list[str]) -> None:
    header, body = table(section, "JSONL rows (`key`)", "rows", "seconds")
    assert len(body) >= 5
    for r in body:
        pattern = code_name(r[0])
        shard = re.search(r"shard (\d+)/(\d+)", r[0])
        match = [x for x in rows if fnmatch.fnmatchcase(str(x.get("key")), pattern)]
        if shard:
            i, n = int(shard.group(1)), int(shard.group(2))
            match = [x for x in match if cand_order.index(x["candidate"]) % n == i]
        assert match, f"no rows match {r[0]}"
        check_cell(r[1], [len(match)], f"{r[0]} row count")
        if numbers(r[2]):
            assert all("seconds" in x for x in match), f"{r[0]}: not every row has seconds"
            check_cell(r[2], [sum(x["seconds"] for x in match)], f"{r[0]} seconds")
        else:
            assert "not recorded" in r[2] and not any("seconds" in x for x in match), f"{r[0]}: seconds"


def test_commands_match_the_rows(section: str, rows: list[dict[str, Any]], cand_order: list[str]) -> None:
    """The doc's commands (its fenced code blocks) name the settings recorded in the rows."""
    code = "\n".join(re.findall(r"^\s*```bash\n(.*?)^\s*```", section, re.S | re.M))
    assert "reproduce_figure1.py" in code
    students = [r for r in rows if r["kind"] == "student"]
    teacher = [r for r in rows if r["kind"] == "teacher"]
    assert set(cand_order) == {r["candidate"] for r in rows if r["kind"] in ("ranking", "student")}
    assert {r["config"] for r in students} == {"W2A4", "W4A4"}
    for flag, value in (("--teacher-epochs", teacher[0]["epochs"]), ("--epochs", students[0]["epochs"]),
                        ("--seeds", len({r["seed"] for r in students})),
                        ("--train-per-class", students[0]["train_samples"] // 10)):  # CIFAR-10: 10 classes
        used = set(re.findall(rf"{flag} (\d+)", code))
        assert used == {str(value)}, f"{flag}: the doc's commands use {used}, the rows record {value}"
    assert {r["epochs"] for r in students} == {students[0]["epochs"]}
    assert {r["train_samples"] for r in students} == {students[0]["train_samples"]}


def test_restored_rows_are_as_described(rows: list[dict[str, Any]]) -> None:
    """'the 40 W2A4 rows (rows 66–105) ... each carries restored_from, none has seconds'."""
    w2 = [i for i, r in enumerate(rows, 1) if r.get("config") == "W2A4"]
    assert w2 == list(range(66, 106))
    assert all("restored_from" in rows[i - 1] and "seconds" not in rows[i - 1] for i in w2)
    assert not any("restored_from" in r for r in rows if r.get("config") != "W2A4")


def test_replay_of_the_two_shards_gives_the_row_order(rows: list[dict[str, Any]], cand_order: list[str]) -> None:
    """Both W4A4 processes starting together, shard 0/2 running the three ranking passes first: replaying
    the rows' seconds gives the file's order of ranking passes and W4A4 students but for one adjacent pair."""
    clock = {0: 0.0, 1: 0.0}
    events = []
    for p in sorted({r["pass"] for r in rows if r["kind"] == "ranking"}):
        clock[0] += sum(r["seconds"] for r in rows if r["kind"] == "ranking" and r["pass"] == p)
        events.append((clock[0], f"rank pass {p}"))
    for r in rows:
        if r.get("config") == "W4A4":
            shard = cand_order.index(r["candidate"]) % 2
            clock[shard] += r["seconds"]
            events.append((clock[shard], r["key"]))
    replay = [k for _, k in sorted(events)]
    observed: list[str] = []
    for r in rows:
        if r["kind"] == "ranking" or r.get("config") == "W4A4":
            k = f"rank pass {r['pass']}" if r["kind"] == "ranking" else r["key"]
            if not observed or observed[-1] != k:
                observed.append(k)
    assert sorted(replay) == sorted(observed)
    differ = [i for i, (a, b) in enumerate(zip(replay, observed)) if a != b]
    assert len(differ) <= 2 and (not differ or differ[1] == differ[0] + 1), differ
    assert round(clock[0]) == 1201 and round(clock[1]) == 1170
