"""Augmentation policy search (issue 24): policies named search:<space>:<seed> re-created from the name, a
search that does not depend on the worker count, resumes without scoring a policy twice, refuses a resume
file of other settings, takes a third-party space through the CLI, and runs inside `distill`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from daqakd_plugins.augment import parse_search_name, resolve_augmentation, resolve_candidates
from daqakd_plugins.errors import ConfigError, UnknownNameError
from daqakd_plugins.ranking import rank_augmentations, search_augmentations

REPO = Path(__file__).resolve().parents[1]


def _apply(name: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return resolve_augmentation(name)(x, torch.eye(10)[: x.shape[0]])[0]


def test_a_policy_is_recreated_from_its_name_alone(fresh_plugins) -> None:
    from daqakd_plugins import plugins
    from daqakd_plugins.builtin.search_spaces import draw_ops

    x = torch.rand(8, 3, 32, 32)
    first = resolve_augmentation("search:taw2:83")
    a = _apply("search:taw2:83", x, 5)
    plugins.reset_plugins()  # a new plugin manager, as in another process: the name alone rebuilds it
    again = resolve_augmentation("search:taw2:83")
    assert again.name == first.name == "search:taw2:83" and again.description == first.description
    assert torch.equal(a, _apply("search:taw2:83", x, 5))
    assert not torch.equal(a, x)  # it does something
    # the draw is PCG64(seed) alone: pinned here, so a change to the space renames every stored policy loudly
    assert draw_ops(83, 2) == (("ShearY", 2), ("Rotate", 1))
    assert len({draw_ops(s, 2) for s in range(50)}) == 50  # distinct policies
    # a combination is a random choice among its policies, per image, reproducible from the name
    combo = resolve_augmentation("search:taw2:4-6-9")
    assert combo.stage == "sample" and combo.description.count("[") == 3
    assert torch.equal(_apply("search:taw2:4-6-9", x, 1), _apply("search:taw2:4-6-9", x, 1))
    # composed with a mix and listed with other candidates, as any name
    assert [c.name for c in resolve_candidates("none,search:taw3:2,search:taw2:1+cutmix")] == [
        "none", "search:taw3:2", "search:taw2:1+cutmix"]


def test_search_names_are_checked_with_the_fix() -> None:
    assert parse_search_name("search:taw2:83-12") == ("taw2", (83, 12))
    assert parse_search_name("search:taw2") == ("taw2", None)
    with pytest.raises(ConfigError, match="names a search space, not a policy.*daqakd search --space taw2"):
        resolve_augmentation("search:taw2")
    with pytest.raises(UnknownNameError, match="registered search spaces: taw2, taw3"):
        resolve_augmentation("search:nope:1")
    for bad in ("search:taw2:x", "search:taw2:3-3", "search:taw2:-1", "search::1"):
        with pytest.raises(ConfigError, match="search:<space>:<seed>"):
            resolve_augmentation(bad)


def _search(teacher, data, **kw):
    args = dict(space="taw2", n=6, top_k=2, per_class=10, batch_size=32, progress=False, workers=0, chunk=2)
    args.update(kw)
    return search_augmentations(teacher, data, **args)


def test_search_scores_equal_ranking_them_and_do_not_depend_on_workers(digits, digits_teacher) -> None:
    teacher = digits_teacher[0]
    one = _search(teacher, digits, repeats=2)
    two = _search(teacher, digits, repeats=2, workers=2, chunk=4)
    assert one.ranking.names == two.ranking.names
    for a, b in zip(one.ranking, two.ranking):
        assert a.scores == b.scores, a.name
    names = [f"search:taw2:{s}" for s in range(6)]
    assert sorted(one.ranking.names) == sorted(names)
    # the top k (best first) and their combination, scored on the same sample with `none`
    assert one.top == one.ranking.names[:2]
    seeds = [parse_search_name(n)[1][0] for n in one.top]
    assert one.combined == f"search:taw2:{seeds[0]}-{seeds[1]}"
    assert one.combined_entry is not None and one.reference is not None and one.reference.name == "none"
    # chunking changes nothing: a search's scores are the ranking's of the same policies on the same tensors
    x, y = one_sample(digits, 10)
    direct = rank_augmentations(teacher, (x, y), names, repeats=2, batch_size=32, workers=0, progress=False,
                                base_augment="auto")
    for e in direct:
        assert e.scores == one.ranking[e.name].scores
    b = one.boundary()
    assert b["separated"] in (True, False) and b["kth"] == one.top[-1] and b["gap"] >= 0
    assert "Policy search: 6 policies of `taw2`" in one.to_markdown()


def one_sample(data, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    from daqakd_plugins.data import stratified_subset

    idx = stratified_subset(data.train_labels, per_class, seed=0)
    return data.train_x[idx], data.train_y[idx]


def test_search_resumes_without_scoring_a_policy_twice(digits, digits_teacher, tmp_path: Path) -> None:
    teacher = digits_teacher[0]
    path = tmp_path / "s.jsonl"
    first = _search(teacher, digits, n=4, resume=path)
    assert first.scored == 4
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "search-settings" and len(lines) == 1 + 4 + 2  # + none, combination
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # a kill mid-line
    more = _search(teacher, digits, n=6, resume=path)
    assert more.scored == 2 and more.resumed_from == str(path)  # policies 4 and 5 only
    fresh = _search(teacher, digits, n=6)
    assert more.ranking.names == fresh.ranking.names
    for a, b in zip(more.ranking, fresh.ranking):
        assert a.scores == b.scores
    assert more.combined == fresh.combined
    again = _search(teacher, digits, n=6, resume=path)
    assert again.scored == 0
    with pytest.raises(ConfigError, match=r"other settings \(seed: 0 there, 1 now\).*delete it"):
        _search(teacher, digits, n=6, resume=path, seed=1)


_SPACE_PLUGIN = """
    import torch
    from daqakd_plugins import hookimpl
    from daqakd_plugins.contracts import Augmentation, SearchSpace

    class Shift:
        def __init__(self, k):
            self.k = k
        def __call__(self, images):
            return torch.roll(images, shifts=self.k, dims=-1)

    def policy(seed):
        return Augmentation(name=f"shift{seed}", fn=Shift(seed % 4), description=f"roll by {seed % 4} px")

    @hookimpl
    def daqakd_register_search_spaces(register):
        register(SearchSpace(name="rolls", policy=policy, description="horizontal rolls"))
"""


def test_a_third_party_search_space_works_through_the_cli(digits_teacher, tmp_path: Path) -> None:
    from daqakd_plugins.models import save_model

    (tmp_path / "my_rolls.py").write_text(textwrap.dedent(_SPACE_PLUGIN))
    model, meta = digits_teacher
    save_model(tmp_path / "teacher.pt", model, meta["arch"], meta)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "DAQAKD_PLUGINS": "my_rolls",
           "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "daqakd_plugins", "search", "--space", "rolls", "--n", "4", "--top-k", "2",
           "--teacher", "teacher.pt", "--per-class", "10", "--workers", "0", "--json", "out/rolls.json"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((tmp_path / "out" / "rolls.json").read_text())
    assert out["space"] == "rolls" and out["space_description"] == "horizontal rolls"
    assert sorted(c["name"] for c in out["ranking"]["candidates"]) == [f"search:rolls:{s}" for s in range(4)]
    assert out["ranking"]["best"] == "search:rolls:0"  # rolling by 0 px is the identity: the teacher's best
    assert out["combined"].startswith("search:rolls:0-") and "combined: search:rolls:0-" in r.stdout
    assert (tmp_path / "out" / "rolls.jsonl").exists()
    listed = subprocess.run([sys.executable, "-m", "daqakd_plugins", "plugins", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    info = json.loads(listed.stdout)
    assert "rolls" in info["search_spaces"] and info["registered_by"]["search_spaces"]["rolls"] == "my_rolls"


def test_distill_searches_inside_the_run(digits_teacher, tmp_path: Path) -> None:
    from daqakd_plugins.distill import DistillConfig, run_distill
    from daqakd_plugins.models import save_model

    model, meta = digits_teacher
    save_model(tmp_path / "teacher.pt", model, meta["arch"], meta)
    cfg = DistillConfig(teacher=str(tmp_path / "teacher.pt"), out=str(tmp_path / "run"), epochs=1, bits=8,
                        augment="search:taw2", search_n=5, search_top_k=2, rank_per_class=10, export=False,
                        train_per_class=20, workers=0)
    report = run_distill(cfg)
    search = report["ranking_detail"]["search"]
    assert search["policies"]["n"] == 5 and search["top_k"] == 2
    assert report["augmentation"] == search["combined"] and report["augmentation"].count("-") == 1
    names = [e["name"] for e in report["ranking"]]
    assert set(names) == set(search["top"]) | {search["combined"], "none"}
    assert "Searched 5 policies of `taw2`" in (tmp_path / "run" / "report.md").read_text()
    assert len((tmp_path / "run" / "search.jsonl").read_text().splitlines()) == 1 + 5 + 2
