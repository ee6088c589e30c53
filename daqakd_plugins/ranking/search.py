"""``search_augmentations``: score hundreds of policies drawn from a search space with the teacher, keep the
top k, and combine them (docs/ranking.md, section 10).

Because the scores need only the teacher, a policy costs one teacher pass over the sample — far less than one
student. Policy ``s`` of space ``S`` is named ``search:S:s`` and re-created from that name alone
(:func:`daqakd_plugins.augment.search_policy`); the top k are combined as ``search:S:s1-s2-...`` (a random
choice among them, per image, after the base transform like every candidate).

How it runs: the class-stratified sample is decoded once into memory, then the policies are ranked in chunks
by :func:`rank_augmentations` on those tensors. A candidate's score does not depend on which other candidates
are ranked with it (ranking/core.py), so chunking changes nothing and a resumed search gives the same scores:
each chunk's entries are appended to a JSONL file (``resume=``) whose first line records the settings, and a
rerun scores only the policies that file lacks. Under torchrun every rank runs the same loop and each chunk's
batches are split over the ranks (the ranking's own split); rank 0 writes the file.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..augment import SEARCH_PREFIX, resolve_base
from ..config import DEFAULT_METRIC
from ..contracts import Augmentation, Metric
from ..errors import ConfigError, UnknownNameError
from ..streams import Normalizer, dataset_tensors
from .core import prepare_data, rank_augmentations, resolve_args, teacher_ready
from .result import RankEntry, Ranking

__all__ = ["search_augmentations", "SearchResult", "SEARCH_FILE_VERSION"]

#: the resume file's format (its first line says it)
SEARCH_FILE_VERSION = 1
#: settings that must match for a resume file to be continued
_SETTINGS = ("space", "metric", "metric_params", "seed", "repeats", "per_class", "batch_size", "base_augment",
             "data", "samples", "num_classes")


@dataclass
class SearchResult:
    """The outcome of :func:`search_augmentations`: every scored policy (``ranking``, best first), the top k and
    their combination, ``none`` (the base alone) and the combination scored on the same sample, whether the
    top k are separated from the rest, and what it cost."""

    space: str
    space_description: str
    ranking: Ranking
    top: list[str]
    combined: str
    reference: RankEntry | None = None  # `none`: the base transform alone
    combined_entry: RankEntry | None = None
    start: int = 0
    n: int = 0
    seconds: float = 0.0  # this call
    scored: int = 0  # policies scored in this call (the rest came from the resume file)
    decode_seconds: float = 0.0
    resumed_from: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def policies_per_minute(self) -> float | None:
        """Policies scored per minute in this call (decoding the sample included); ``None`` when all were resumed."""
        return self.scored / (self.seconds / 60.0) if self.scored and self.seconds > 0 else None

    def boundary(self) -> dict[str, Any]:
        """Whether the k-th best is separated from the (k+1)-th (the best policy left out), with the gap and its
        standard error over the repeats (``separated`` is ``None`` with one pass: no spread was measured)."""
        k = len(self.top)
        if k >= len(self.ranking):
            return {"separated": None, "reason": "every policy is in the top k"}
        last, first_out = self.ranking.entries[k - 1], self.ranking.entries[k]
        gap = abs(first_out.score - last.score)
        se = self.ranking.diff_se(last, first_out)
        sep = None if se is None else bool(gap > 2.0 * se)
        reason = ("one pass: rerun with --repeats 3 to measure the spread" if se is None else
                  f"gap {gap:.4g} {'>' if sep else '≤'} 2 × its standard error {se:.3g} over {self.ranking.repeats} repeats")
        return {"separated": sep, "kth": last.name, "first_out": first_out.name, "gap": gap, "se": se, "reason": reason}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "search",
            "space": self.space,
            "space_description": self.space_description,
            "policies": {"start": self.start, "n": self.n},
            "metric": self.ranking.metric,
            "top_k": len(self.top),
            "top": list(self.top),
            "combined": self.combined,
            "combined_score": None if self.combined_entry is None else self.combined_entry.score,
            "none_score": None if self.reference is None else self.reference.score,
            "boundary": self.boundary(),
            "seconds": round(self.seconds, 3),
            "decode_seconds": round(self.decode_seconds, 3),
            "scored_this_run": self.scored,
            "policies_per_minute": self.policies_per_minute,
            "resumed_from": self.resumed_from,
            "notes": list(self.notes),
            "reference": None if self.reference is None else self.reference.to_dict(),
            "combined_entry": None if self.combined_entry is None else self.combined_entry.to_dict(),
            "ranking": self.ranking.to_dict(),
        }

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        os.replace(tmp, path)
        return path

    def to_markdown(self, rows: int = 10) -> str:
        """The best ``rows`` policies, then ``none`` and the combination on the same sample, the boundary of the
        top k, and the cost."""
        r = self.ranking
        arrow = "lower is better" if r.lower_is_better else "higher is better"

        def fmt(e: RankEntry) -> str:
            return f"{e.score:.4f}" + (f" ± {e.score_std:.4f}" if r.repeats > 1 and math.isfinite(e.score_std) else "")

        lines = [
            f"### Policy search: {self.n} policies of `{self.space}` scored with `{r.metric}` ({arrow})",
            "",
            f"{self.space_description}. Sample: {r.num_samples} images of {r.data}"
            f"{f' ({r.per_class} per class)' if r.per_class else ''}, base `{r.base_augment}` before every policy, "
            f"{r.repeats} pass(es), seed {r.seed}.",
            "",
            "| rank | policy | score | what it does |",
            "|---:|---|---:|---|",
        ]
        for i, e in enumerate(r.entries[:rows], 1):
            mark = " (top k)" if e.name in self.top else ""
            lines.append(f"| {i} | `{e.name}`{mark} | {fmt(e)} | {e.description} |")
        lines.append("")
        if self.reference is not None:
            lines.append(f"- `none` (the base alone): {fmt(self.reference)}")
        if self.combined_entry is not None:
            lines.append(f"- the top {len(self.top)} combined, `{self.combined}`: {fmt(self.combined_entry)}")
        b = self.boundary()
        if b.get("separated") is True:
            lines.append(f"- the top {len(self.top)} are separated from the rest: {b['reason']}")
        elif b.get("separated") is False:
            lines.append(f"- the top {len(self.top)} are NOT separated from the rest ({b['first_out']} is as good as "
                         f"{b['kth']}): {b['reason']}")
        else:
            lines.append(f"- separation of the top {len(self.top)}: not judged ({b['reason']})")
        ppm = self.policies_per_minute
        lines.append(f"- cost: {self.seconds:.1f} s in this run ({self.scored} policies scored"
                     + (f", {ppm:.1f} per minute" if ppm else "")
                     + f"; decoding the sample {self.decode_seconds:.1f} s)"
                     + (f"; the other {self.n - self.scored} came from {self.resumed_from}" if self.resumed_from
                        and self.scored < self.n else ""))
        for n in self.notes:
            lines.append(f"- {n}")
        return "\n".join(lines) + "\n"


def _policy_names(space: str, start: int, n: int) -> list[str]:
    return [f"{SEARCH_PREFIX}{space}:{s}" for s in range(start, start + n)]


class _ResumeFile:
    """The JSONL of scored entries: a header line with the settings, then one line per scored entry."""

    def __init__(self, path: Path | None, settings: dict[str, Any], *, write: bool) -> None:
        self.path, self.write = path, write
        self.entries: dict[str, RankEntry] = {}
        if path is None:
            return
        text = path.read_text() if path.exists() else ""
        if text and not text.endswith("\n"):  # a line cut by a kill: drop it (that policy is scored again)
            text = text[: text.rfind("\n") + 1]
        rows = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        if rows:
            self._check(path, rows[0], settings)
            for row in rows[1:]:
                if row.get("kind") == "entry":
                    e = RankEntry.from_dict(row["entry"])
                    self.entries[e.name] = e
        if write and not rows:  # the settings line first (also after a kill while writing it)
            path.parent.mkdir(parents=True, exist_ok=True)
            head = json.dumps({"kind": "search-settings", "version": SEARCH_FILE_VERSION, **settings}, default=str)
            path.write_text(head + "\n")
        elif write and path.exists() and text != path.read_text():
            path.write_text(text)  # drop the cut line, so the next entry starts on a line of its own

    @staticmethod
    def _check(path: Path, head: dict[str, Any], settings: dict[str, Any]) -> None:
        """A resume file of another kind, version or settings is refused, naming the difference and the fix."""
        if head.get("kind") != "search-settings":
            raise ConfigError(f"{path} is not a daqakd search file (its first line has no search settings); "
                              "give another path, or delete it.")
        if int(head.get("version", 0)) != SEARCH_FILE_VERSION:
            raise ConfigError(f"{path} was written by search file version {head.get('version')}; this daqakd "
                              f"reads version {SEARCH_FILE_VERSION}. Delete it (its policies are scored again) "
                              "or give another path.")
        old = {k: head.get(k) for k in _SETTINGS}
        new = json.loads(json.dumps({k: settings.get(k) for k in _SETTINGS}, default=str))
        diff = [f"{k}: {old[k]!r} there, {new[k]!r} now" for k in _SETTINGS if old[k] != new[k]]
        if diff:
            raise ConfigError(f"{path} holds a search with other settings ({'; '.join(diff)}); its scores are not "
                              "comparable. Rerun with the same settings to resume it, or delete it / give "
                              "another path to start over.")

    def add(self, entries: Sequence[RankEntry]) -> None:
        for e in entries:
            self.entries[e.name] = e
        if self.path is not None and self.write:
            with self.path.open("a") as f:  # one line per entry: a kill loses at most the line being written
                for e in entries:
                    f.write(json.dumps({"kind": "entry", "entry": e.to_dict()}) + "\n")
                f.flush()
                os.fsync(f.fileno())


def search_augmentations(
    teacher: nn.Module,
    data: Any,
    space: str = "taw2",
    n: int = 100,
    *,
    top_k: int = 5,
    metric: str | Metric = DEFAULT_METRIC,
    metric_params: Mapping[str, Any] | None = None,
    start: int = 0,
    seed: int = 0,
    repeats: int = 1,
    per_class: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = "cpu",
    num_classes: int | None = None,
    progress: bool = True,
    workers: int | None = 0,
    normalize: Normalizer | tuple[Sequence[float], Sequence[float]] | None = None,
    base_augment: str | Augmentation | Callable[..., Any] | None = "auto",
    resume: str | Path | None = None,
    chunk: int = 16,
) -> SearchResult:
    """Score policies ``start .. start + n - 1`` of search space ``space`` with the teacher, keep the ``top_k``
    and combine them (see the module docstring; the arguments shared with :func:`rank_augmentations` mean the
    same there).

    :param space: a registered search space (``taw2``, ``taw3``, or a plugin's; ``daqakd plugins`` lists them).
    :param n: how many policies to draw and score (``search:<space>:<start>`` to ``search:<space>:<start+n-1>``).
    :param top_k: how many of the best are combined into ``search:<space>:<s1>-<s2>-...``.
    :param repeats: passes per policy; with ≥ 2 the report says whether the top k are separated from the rest.
    :param resume: a JSONL file of scored policies, continued by a rerun with the same settings (others: refused).
    :param chunk: policies per ranking call (and per resume-file write).
    """
    from .. import distributed

    description = check_search_args(space, n, top_k, start, chunk)
    args = resolve_args(teacher, "none", metric, metric_params, batch_size=batch_size, repeats=repeats,
                        device=device, workers=workers, normalize=normalize)
    names = _policy_names(space, start, n)
    t0 = time.perf_counter()
    notes: list[str] = []
    with teacher_ready(teacher, args.device, notes):
        rd = prepare_data(data, teacher, num_classes=num_classes, per_class=per_class, seed=seed, device=args.device,
                          normalize=args.normalize, workers=args.workers)
        sc = _Scorer(teacher, rd, args, base_augment, seed=seed, repeats=repeats, batch_size=batch_size)
        decode_s = time.perf_counter() - t0
        settings = {"space": space, "metric": args.metric.name, "metric_params": dict(args.params), "seed": seed,
                    "repeats": repeats, "per_class": per_class, "batch_size": batch_size,
                    "base_augment": sc.base_name, "data": rd.name, "samples": len(rd), "num_classes": rd.num_classes}
        store = _ResumeFile(Path(resume) if resume is not None else None, settings, write=distributed.current().is_main)
        resumed = sum(1 for nm in names if nm in store.entries)
        todo = [nm for nm in names if nm not in store.entries]
        bar = _bar(len(names), resumed, space, args.metric.name, progress and distributed.current().is_main)
        try:
            for i in range(0, len(todo), chunk):
                store.add(sc.score(todo[i:i + chunk]))
                bar(len(todo[i:i + chunk]))
        finally:
            bar(0, close=True)
        ranking = Ranking(metric=args.metric.name, entries=[store.entries[nm] for nm in names],
                          lower_is_better=args.metric.lower_is_better, seed=seed, repeats=repeats, per_class=per_class,
                          batch_size=batch_size, num_classes=rd.num_classes, num_samples=len(rd), data=rd.name,
                          device=str(args.device), metric_params=dict(args.params), notes=list(notes) + list(rd.notes),
                          workers=args.workers, base_augment=sc.base_name, world_size=distributed.current().world_size)
        top = ranking.names[:top_k]
        combined = top[0] if top_k == 1 else \
            f"{SEARCH_PREFIX}{space}:{'-'.join(nm.rsplit(':', 1)[1] for nm in top)}"  # single-seed names
        extra = [nm for nm in ("none", combined) if nm not in store.entries]
        if extra:
            store.add(sc.score(extra))
    ranking.seconds = seconds = time.perf_counter() - t0
    if len(rd) < 50 * rd.num_classes:
        notes.append(f"the sample has {len(rd)} images; scores on fewer than ~50 per class are noisy (raise --per-class)")
    return SearchResult(
        space=space, space_description=description, ranking=ranking, top=top, combined=combined,
        reference=store.entries.get("none"), combined_entry=store.entries.get(combined), start=start, n=n,
        seconds=seconds, scored=len(todo), decode_seconds=decode_s,
        resumed_from=str(resume) if resume is not None and resumed else None, notes=notes,
    )


def check_search_args(space: str, n: int, top_k: int, start: int, chunk: int) -> str:
    """Refuse a space that is not registered, counts that are not integers in range and a policy the space
    cannot make, before any image is read; returns the space's description."""
    from ..augment import search_policy
    from ..plugins import get_search_spaces

    spaces = get_search_spaces()
    if space not in spaces:
        raise UnknownNameError("search space", space, list(spaces), "Register one with the daqakd_register_search_spaces hook.")
    for label, v, least in (("n", n, 1), ("top_k", top_k, 1), ("start", start, 0), ("chunk", chunk, 1)):
        if not (isinstance(v, int) and v >= least):
            raise ConfigError(f"{label} must be an integer ≥ {least}, got {v!r}")
    if top_k > n:
        raise ConfigError(f"top_k ({top_k}) cannot exceed the number of policies n ({n}); lower --top-k or raise --n.")
    search_policy(f"{SEARCH_PREFIX}{space}:{start}")  # a broken space fails here
    return spaces[space].description or space


class _Scorer:
    """The sample decoded once into memory (``x``, ``y``) and the base resolved once; :meth:`score` ranks a chunk
    of names on them (the ranking's own seeding: a score does not depend on the chunk)."""

    def __init__(self, teacher: nn.Module, rd: Any, args: Any, base_augment: Any, *, seed: int, repeats: int,
                 batch_size: int) -> None:
        self.teacher, self.rd, self.args = teacher, rd, args
        self.seed, self.repeats, self.batch_size = seed, repeats, batch_size
        self.x, self.y = dataset_tensors(rd.dataset, num_classes=rd.num_classes, index=rd.index, workers=args.workers,
                                         batch_size=batch_size, desc="decode the sample")
        self.base = resolve_base(base_augment, rd.image_shape)
        self.base_name = self.base.name if self.base is not None else "none"

    def score(self, names: list[str]) -> list[RankEntry]:
        """Each name's entry, its description saying what the policy does (not only ``base ∘ name``)."""
        from ..augment import search_policy

        a = self.args
        rk = rank_augmentations(self.teacher, (self.x, self.y), names, a.metric, metric_params=a.params,
                                batch_size=self.batch_size, seed=self.seed, repeats=self.repeats, device=a.device,
                                num_classes=self.rd.num_classes, progress=False, workers=a.workers,
                                normalize=a.normalize, base_augment=self.base)
        got = [rk[nm] for nm in names]
        for e in got:
            if e.name.startswith(SEARCH_PREFIX):
                what = search_policy(e.name).description
                e.description = f"{self.base_name} ∘ {what}" if self.base is not None else what
        return got


def _bar(total: int, done: int, space: str, metric: str, show: bool) -> Callable[..., None]:
    """A progress bar over policies with an ETA (one line per chunk off a terminal)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=done, desc=f"search {space} ({metric})", unit="policy",
               disable=None if show else True, dynamic_ncols=True)
    lines = bool(show and bar.disable)
    state = {"done": done, "t0": time.perf_counter(), "start": done}

    def step(k: int, *, close: bool = False) -> None:
        if close:
            bar.close()
            return
        bar.update(k)
        state["done"] += k
        if lines:
            rate = (state["done"] - state["start"]) / max(1e-9, time.perf_counter() - state["t0"])
            eta = (total - state["done"]) / rate if rate > 0 else float("nan")
            print(f"daqakd: search {space}: {state['done']}/{total} policies scored ({rate * 60:.1f}/min, "
                  f"~{eta:.0f} s left)", file=sys.stderr, flush=True)

    return step
