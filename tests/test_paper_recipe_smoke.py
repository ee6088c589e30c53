"""benchmarks/paper_recipe.py end to end on a tiny generated 32x32 folder (a ResNet-8 teacher: the phases, not
the architecture, are under test): every phase, resumed mid-student with the same command, then `daqakd report`
with the crossover table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _cifar_like(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = np.clip(rng.normal(20 * c + 30, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                arr[: 3 + c, :, c % 3] = 255
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


@pytest.mark.slow
def test_paper_recipe_phases_resume_and_report(tmp_path: Path) -> None:
    data = _cifar_like(tmp_path / "data")
    out = tmp_path / "run" / "results.jsonl"
    base = [sys.executable, str(ROOT / "benchmarks" / "paper_recipe.py"), "all", "--data", str(data), "--out", str(out),
            "--cache", str(tmp_path / "cache.npz"), "--teacher-epochs", "1", "--batch-size", "16", "--student-batch-size", "16",
            "--rank-passes", "1", "--rank-per-class", "5", "--seeds", "2", "--configs", "W4A4",
            "--candidates", "none,none+cutmix", "--regimes", "3x2", "--arch", "small_resnet",
            "--search-n", "3", "--top-k", "2", "--search-metrics", "teacher-ce"]
    subprocess.run(base, check=True, capture_output=True, text=True, timeout=900)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["kind"] for r in rows]
    assert kinds.count("teacher") == 1 and kinds.count("ranking") == 2 and kinds.count("cost") == 1
    crossover = [r for r in rows if r.get("phase") == "crossover"]
    # the ranking phase's regime and candidates are the crossover's here: its students are those rows
    assert len(crossover) == 2 * 2 and kinds.count("student") == 2 * 2
    assert all(r["base_augment"] == "crop-flip" and r["images_seen"] == 60 and not r["resumed"] for r in crossover)
    assert all(r["compact_max_logit_diff"] == 0.0 for r in crossover)  # the archived student is the student
    assert all(r["scores"] and r["base_augment"] == "crop-flip" for r in rows if r["kind"] == "ranking")
    # the search phase: 3 policies scored, the top 2 combined and trained on the ranking regime's seeds
    (search,) = [r for r in rows if r["kind"] == "search"]
    assert search["n"] == 3 and len(search["top"]) == 2 and search["combined"].startswith("search:taw2:")
    searched = [r for r in rows if r["kind"] == "search_student"]
    assert sorted(r["seed"] for r in searched) == [0, 1] and {r["candidate"] for r in searched} == {search["combined"]}
    # the compact student (integer weights) gives back the student's recorded test accuracy
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import paper_recipe

    archived = out.parent / "students" / "student_3x2_W4A4_none-cutmix_1.pt.xz"
    assert archived.stat().st_size < 200_000
    packed = paper_recipe.load_compact(archived)
    assert packed["codes"] and all(c.dtype == torch.int8 and int(c.abs().max()) <= 7 for c in packed["codes"].values())
    teacher = paper_recipe.load_teacher(out.parent)
    student = paper_recipe.restore_compact(teacher, packed, "brevitas", 4, 4)
    cache = paper_recipe.load_cifar(data, tmp_path / "cache.npz")
    row = next(r for r in crossover if r["key"] == "student/3x2/W4A4/none+cutmix/1")
    assert paper_recipe.evaluate(student, cache["test_x"], cache["test_y"]) == row["accuracy"]

    # a kill after the first epoch of the last crossover student: drop its row, leave its epoch checkpoint
    last = crossover[-1]
    lines = out.read_text().splitlines()
    out.write_text("\n".join(line for line in lines if json.loads(line)["key"] != last["key"]) + "\n")
    phase = [*base[:2], "crossover", *base[3:]]
    stopped = subprocess.run([*phase, "--stop-after-epoch", "1"], capture_output=True, text=True, timeout=900)
    assert stopped.returncode == 3 and "stopped after epoch 1" in stopped.stdout
    # its checkpoint resumes only its own setup: another --lr is refused, naming both, and the checkpoint stays
    other = subprocess.run([*phase, "--lr", "1e-3"], capture_output=True, text=True, timeout=900)
    assert other.returncode != 0 and "lr 0.0001 there, 0.001 now" in other.stderr, other.stderr[-2000:]
    assert other.stdout.count(": acc ") == 0
    again = subprocess.run(phase, check=True, capture_output=True, text=True, timeout=900)
    assert again.stdout.count(": acc ") == 1  # only the missing student ran again, from its checkpoint
    rows2 = [json.loads(line) for line in out.read_text().splitlines()]
    redone = next(r for r in rows2 if r["key"] == last["key"])
    assert redone["resumed"] and redone["accuracy"] == last["accuracy"]  # the resumed student is the same

    rep = subprocess.run([sys.executable, "-m", "daqakd_plugins", "report", str(out), "--bootstrap", "20"],
                         check=True, capture_output=True, text=True)
    assert "Crossover" in rep.stdout and "| 3x2 | 60 | W4A4 | CPU | 2 |" in rep.stdout
    assert "## Policy search" in rep.stdout and f"`{search['combined']}`" in rep.stdout
    assert (out.parent / "crossover.png").stat().st_size > 10_000


def test_the_device_pack_unpacks_to_the_same_files_and_pixels(tmp_path: Path) -> None:
    """benchmarks/paper_recipe_device.py carries the JPEGs to the GPU machine in one file (tar's per-file padding
    would not fit its 64 MiB limit) with the checksum of the pixels they decode to here; the machine compares."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from paper_recipe import load_cifar
    from paper_recipe_device import main, pixels_sha256, unpack

    src = _cifar_like(tmp_path / "src")
    assert main(["pack", "--data", str(src), "--pack", str(tmp_path / "p.npz"), "--cache", str(tmp_path / "c1.npz")]) == 0
    want = unpack(tmp_path / "p.npz", tmp_path / "dst")
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "dst") for p in (tmp_path / "dst").rglob("*") if p.is_file())
    assert all((src / f).read_bytes() == (tmp_path / "dst" / f).read_bytes() for f in files)
    load_cifar(tmp_path / "dst", tmp_path / "c2.npz")
    assert pixels_sha256(tmp_path / "c2.npz") == want == pixels_sha256(tmp_path / "c1.npz")
    (tmp_path / "dst" / files[0]).write_bytes((tmp_path / "dst" / files[1]).read_bytes())  # one image swapped
    load_cifar(tmp_path / "dst", tmp_path / "c3.npz")
    assert pixels_sha256(tmp_path / "c3.npz") != want
