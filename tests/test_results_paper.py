"""docs/results.md's "paper's recipe" section against its data: the generated block between the
``paper-recipe`` markers is exactly what ``daqakd report`` writes for docs/evidence/paper-recipe/results.jsonl
(every table number recomputed from the committed rows; 1,000 bootstrap resamples, seed 0)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
DATA = ROOT / "docs" / "evidence" / "paper-recipe" / "results.jsonl"


def _block() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- paper-recipe:begin[^>]*-->\n(.*?)<!-- paper-recipe:end -->", text, re.S)
    assert m, "docs/results.md lost its paper-recipe markers"
    return m.group(1)


def test_the_generated_block_is_what_the_committed_rows_give(tmp_path: Path) -> None:
    from daqakd_plugins.evidence import write_report

    paths = write_report(DATA, tmp_path, n_boot=1000)
    assert _block().strip() == paths["md"].read_text().strip(), (
        "regenerate the block: daqakd report docs/evidence/paper-recipe/results.jsonl --out /tmp/pr and paste "
        "/tmp/pr/analysis.md between the markers")


def test_the_rows_are_the_recipe_the_section_describes() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    teacher = [r for r in rows if r["kind"] == "teacher"]
    assert len(teacher) == 1 and teacher[0]["arch"] == "cifar_resnet20" and teacher[0]["train_images"] == 50_000
    assert teacher[0]["augment"] == "crop-flip" and teacher[0]["epochs"] == 15
    assert all(r["base_augment"] == "crop-flip" for r in rows if r["kind"] in ("ranking", "student"))
    students = [r for r in rows if r["kind"] in ("student", "search_student")]
    assert all(r["backend"] == "brevitas" and r["compact_max_logit_diff"] == 0.0 for r in students)
    assert all(r["base_augment"] == "crop-flip" for r in students)
    assert {r["regime"] for r in students} <= {"100x5", "100x15", "100x50"}
    # the GPU machine's students (benchmarks/paper_recipe_device.py): the W2A4 50-epoch cell only, trained on
    # the pixels one CPU decode gives (the checksum the device run compared), the student batch of the CPU rows
    gpu = [r for r in students if r.get("device", "cpu") != "cpu"]
    assert {(r["config"], r["regime"]) for r in gpu} == {("W2A4", "100x50")}
    assert all(r["student_batch_size"] == 64 and r["device"] == "cuda" for r in gpu)
    runs = [r for r in rows if r["kind"] == "device_run"]
    assert runs and all(r["pixels_match"] for r in runs) and sum(r["procs"] for r in runs) == 18
    # every student at the learning rate the section states for its bit widths; the probe rows show why
    assert all(r["lr"] == {"W4A4": 1e-4, "W2A4": 3e-4}[r["config"]] for r in students)
    probes = {(r["config"], r["lr"]): r["accuracy"] for r in rows if r["kind"] == "lr_probe"}
    assert probes[("W4A4", 1e-3)] < 0.5 < probes[("W4A4", 1e-4)]
    assert probes[("W2A4", 3e-4)] == max(v for (c, _), v in probes.items() if c == "W2A4")
    # the searched combinations trained on the ranking test's regime and seeds, one search per metric
    searches = [r for r in rows if r["kind"] == "search"]
    assert {r["metric"] for r in searches} <= {"teacher-ce", "cmi"} and all(r["n"] == 100 for r in searches)
    for srch in searches:
        mine = [r for r in students if r["candidate"] == srch["combined"]]
        assert sorted(r["seed"] for r in mine) == list(range(5)) and {r["regime"] for r in mine} == {"100x5"}
