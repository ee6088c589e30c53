"""The result of a ranking: sorted entries, JSON round trip and a readable table."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, UnknownNameError

__all__ = ["RankEntry", "Ranking", "Separation"]

#: Repeats suggested when a ranking had one pass (enough for a first estimate of the spread).
SUGGESTED_FIRST_REPEATS = 5

SeparationReason = Literal["separated", "not_separated", "one_pass", "one_candidate", "no_score"]


def _num(v: float) -> float | None:
    """JSON has no NaN/inf: write them as null."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _from_num(v: Any) -> float:
    return float("nan") if v is None else float(v)


@dataclass
class RankEntry:
    """One candidate's result. ``score``/``components`` are means over repeats, ``*_std`` the unbiased
    standard deviation over repeats (NaN with one repeat). ``n`` is the number of samples per repeat,
    ``seconds`` the wall time of all repeats of this candidate (augment + teacher + metric)."""

    name: str
    score: float
    score_std: float = float("nan")
    components: dict[str, float] = field(default_factory=dict)
    components_std: dict[str, float] = field(default_factory=dict)
    n: int = 0
    classes_seen: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # one per repeat
    family: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": _num(self.score),
            "score_std": _num(self.score_std),
            "components": {k: _num(v) for k, v in self.components.items()},
            "components_std": {k: _num(v) for k, v in self.components_std.items()},
            "n": self.n,
            "classes_seen": self.classes_seen,
            "seconds": round(self.seconds, 4),
            "notes": list(self.notes),
            "scores": [_num(s) for s in self.scores],
            "family": self.family,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankEntry:
        return cls(
            name=str(d["name"]),
            score=_from_num(d.get("score")),
            score_std=_from_num(d.get("score_std")),
            components={k: _from_num(v) for k, v in (d.get("components") or {}).items()},
            components_std={k: _from_num(v) for k, v in (d.get("components_std") or {}).items()},
            n=int(d.get("n", 0)),
            classes_seen=int(d.get("classes_seen", 0)),
            seconds=float(d.get("seconds", 0.0)),
            notes=list(d.get("notes") or []),
            scores=[_from_num(s) for s in (d.get("scores") or [])],
            family=str(d.get("family", "")),
            description=str(d.get("description", "")),
        )


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else "–"


@dataclass(frozen=True)
class Separation:
    """Is the best candidate ahead of the runner-up by more than the ranking's own noise?

    ``separated`` is ``True`` when the runner-up is more than ``k`` standard errors of the difference
    behind (over the repeats, :meth:`Ranking.differs`), ``False`` when it is not, and ``None`` when it
    cannot be judged: one pass (no spread measured), one candidate, or no finite score. ``gap`` is how
    far the runner-up is behind in the metric's units (≥ 0), ``se`` the standard error of that
    difference (NaN with one pass). ``tied`` lists the candidates not distinguishable from the best
    (the best first; empty when it cannot be judged). ``suggested_repeats`` is the ``repeats`` to rerun
    with (``None`` when more repeats would not help); ``message`` says all of it in one sentence, naming
    ``option`` (the command-line flag of the caller, e.g. ``--repeats`` or ``--rank-repeats``).
    """

    best: str | None
    runner_up: str | None
    separated: bool | None
    reason: SeparationReason
    gap: float
    se: float
    k: float
    repeats: int
    tied: tuple[str, ...]
    suggested_repeats: int | None
    option: str
    message: str

    @property
    def z(self) -> float:
        """The gap in standard errors (inf when the repeats had no spread, NaN with one pass)."""
        if not (math.isfinite(self.gap) and math.isfinite(self.se)):
            return float("nan")
        if self.se == 0:
            return float("inf") if self.gap > 0 else float("nan")
        return self.gap / self.se

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "runner_up": self.runner_up,
            "separated": self.separated,
            "reason": self.reason,
            "gap": _num(self.gap),
            "se": _num(self.se),
            "z": _num(self.z),
            "k": self.k,
            "repeats": self.repeats,
            "tied": list(self.tied),
            "suggested_repeats": self.suggested_repeats,
            "message": self.message,
        }


def _repeats_to_separate(repeats: int, gap: float, se: float, k: float) -> int | None:
    """Repeats at which ``gap`` would exceed ``k`` standard errors if the spread stays as measured (the
    standard error shrinks as 1/sqrt(repeats)); for equal means, four times the repeats (half the standard
    error); ``None`` when the repeats had no spread (more of them cannot change anything)."""
    if not (math.isfinite(se) and se > 0 and math.isfinite(gap)):
        return None
    if gap <= 0:
        return 4 * repeats
    return max(repeats + 1, math.floor(repeats * (k * se / gap) ** 2) + 1)


def _sort_key(lower_is_better: bool) -> Any:
    def key(e: RankEntry) -> tuple[int, float]:
        if not math.isfinite(e.score):
            return (1, 0.0)
        return (0, e.score if lower_is_better else -e.score)

    return key


@dataclass
class Ranking:
    """Candidates sorted best first under ``metric`` (ties keep the given candidate order)."""

    metric: str
    entries: list[RankEntry]
    lower_is_better: bool = True
    seed: int = 0
    repeats: int = 1
    per_class: int | None = None
    batch_size: int = 0
    num_classes: int = 0
    num_samples: int = 0
    data: str = ""
    device: str = "cpu"
    metric_params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0  # DataLoader worker processes (the scores do not depend on it)
    world_size: int = 1  # processes under torchrun
    rank_samples: list[int] = field(default_factory=list)  # samples each rank scored (all passes)
    base_augment: str = "none"  # the base transform every candidate ran after ("none": candidates alone)

    def __post_init__(self) -> None:
        self.entries = sorted(self.entries, key=_sort_key(self.lower_is_better))

    @property
    def best(self) -> str:
        """Name of the best candidate."""
        if not self.entries:
            raise ConfigError("the ranking has no candidates")
        return self.entries[0].name

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def __getitem__(self, name: str) -> RankEntry:
        """The entry of candidate ``name`` (``ranking["none"]``)."""
        if not isinstance(name, str):
            raise TypeError(
                f"Ranking is indexed by candidate name, got {type(name).__name__}; use ranking.entries[{name!r}] "
                "for the entry at a rank, or iterate the ranking (best first)."
            )
        for e in self.entries:
            if e.name == name:
                return e
        raise UnknownNameError("candidate", name, self.names, "Use a name from Ranking.names.")

    def __iter__(self) -> Iterator[RankEntry]:
        """The entries, best first."""
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, item: object) -> bool:
        """``"name" in ranking`` (a candidate name) or ``entry in ranking``."""
        if isinstance(item, str):
            return item in self.names
        return any(e is item or e == item for e in self.entries)

    def diff_se(self, ea: RankEntry, eb: RankEntry) -> float | None:
        """Standard error of ``ea.score - eb.score`` over the repeats; ``None`` without a measured spread."""
        if self.repeats < 2 or not (math.isfinite(ea.score_std) and math.isfinite(eb.score_std)):
            return None
        return math.sqrt((ea.score_std**2 + eb.score_std**2) / self.repeats)

    def differs(self, a: str, b: str, k: float = 2.0) -> bool | None:
        """Whether ``a`` and ``b`` differ by more than ``k`` standard errors of their difference
        (from the repeats); ``None`` with fewer than two repeats."""
        return self._differs(self[a], self[b], k)

    def _differs(self, ea: RankEntry, eb: RankEntry, k: float) -> bool | None:
        se = self.diff_se(ea, eb)
        if se is None:
            return None
        return abs(ea.score - eb.score) > k * se

    def separation(self, k: float = 2.0, *, option: str = "--repeats") -> Separation:
        """Whether the pick (:attr:`best`) is separated from the runner-up by more than ``k`` standard
        errors over the repeats (:meth:`differs`), with a one-sentence verdict that recommends rerunning
        with ``option`` (the caller's flag for repeats) when it is not, or when one pass cannot tell."""
        scored = [e for e in self.entries if math.isfinite(e.score)]  # sorted: finite scores come first
        nan = float("nan")

        def make(reason: SeparationReason, message: str, *, best: str | None = None, runner_up: str | None = None,
                 separated: bool | None = None, gap: float = nan, se: float = nan, tied: tuple[str, ...] = (),
                 suggested: int | None = None) -> Separation:
            return Separation(best=best, runner_up=runner_up, separated=separated, reason=reason, gap=gap, se=se,
                              k=k, repeats=self.repeats, tied=tied, suggested_repeats=suggested, option=option,
                              message=message)

        if not scored:
            return make("no_score", "No candidate has a finite score, so there is no pick.")
        b = scored[0]
        if len(scored) == 1:
            alone = "Only one candidate was ranked" if len(self.entries) == 1 else \
                f"`{b.name}` is the only candidate with a finite score"
            return make("one_candidate", f"{alone}; there is no runner-up to separate it from.", best=b.name)
        r = scored[1]
        gap = (r.score - b.score) if self.lower_is_better else (b.score - r.score)
        se = self.diff_se(b, r)
        if se is None:
            n = SUGGESTED_FIRST_REPEATS
            return make(
                "one_pass",
                f"One ranking pass: whether `{b.name}` is really ahead of runner-up `{r.name}` (by {_fmt(gap)}) "
                f"cannot be judged without a spread; rerun with {option} {n} to measure it.",
                best=b.name, runner_up=r.name, gap=gap, suggested=n,
            )
        tied = tuple([b.name] + [e.name for e in scored[1:] if self._differs(b, e, k) is False])
        if self._differs(b, r, k):
            by = (f"the {self.repeats} repeats have no spread" if se == 0 else
                  f"{gap / se:.1f} standard errors over {self.repeats} repeats; the rule is > {k:g}")
            return make(
                "separated",
                f"The pick is separated: `{b.name}` leads runner-up `{r.name}` by {_fmt(gap)} ({by}).",
                best=b.name, runner_up=r.name, separated=True, gap=gap, se=se, tied=tied,
            )
        need = _repeats_to_separate(self.repeats, gap, se, k)
        others = list(tied[2:])
        also = ""
        if others:
            who = ", ".join(f"`{n}`" for n in others)
            also = f" {who} {'is' if len(others) == 1 else 'are'} not distinguishable from `{b.name}` either."
        if need is None:
            advice = (f"They tie exactly with no spread over the repeats: treat them as equally good (more repeats, "
                      f"{option}, cannot separate them).")
        else:
            advice = (f"Treat them as equally good, or rerun with {option} {need} (estimated from this spread) "
                      "to try to separate them.")
        return make(
            "not_separated",
            f"The pick is NOT separated: `{b.name}` leads runner-up `{r.name}` by only {_fmt(gap)}, within "
            f"{k:g} standard errors over {self.repeats} repeats (standard error {_fmt(se)}).{also} {advice}",
            best=b.name, runner_up=r.name, separated=False, gap=gap, se=se, tied=tied, suggested=need,
        )

    def to_dict(self, *, option: str = "--repeats") -> dict[str, Any]:
        """Everything as JSON-ready values; ``pick`` is :meth:`separation` (its advice names ``option``)."""
        return {
            "metric": self.metric,
            "lower_is_better": self.lower_is_better,
            "best": self.best if self.entries else None,
            "pick": self.separation(option=option).to_dict(),
            "candidates": [e.to_dict() for e in self.entries],
            "seed": self.seed,
            "repeats": self.repeats,
            "per_class": self.per_class,
            "batch_size": self.batch_size,
            "num_classes": self.num_classes,
            "num_samples": self.num_samples,
            "data": self.data,
            "device": self.device,
            "metric_params": dict(self.metric_params),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 4),
            "workers": self.workers,
            "world_size": self.world_size,
            "rank_samples": list(self.rank_samples),
            "base_augment": self.base_augment,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ranking:
        if "metric" not in d or "candidates" not in d:
            raise ConfigError("a ranking dict needs 'metric' and 'candidates' (as written by Ranking.to_dict)")
        return cls(
            metric=str(d["metric"]),
            entries=[RankEntry.from_dict(c) for c in d["candidates"]],
            lower_is_better=bool(d.get("lower_is_better", True)),
            seed=int(d.get("seed", 0)),
            repeats=int(d.get("repeats", 1)),
            per_class=None if d.get("per_class") is None else int(d["per_class"]),
            batch_size=int(d.get("batch_size", 0)),
            num_classes=int(d.get("num_classes", 0)),
            num_samples=int(d.get("num_samples", 0)),
            data=str(d.get("data", "")),
            device=str(d.get("device", "cpu")),
            metric_params=dict(d.get("metric_params") or {}),
            notes=list(d.get("notes") or []),
            seconds=float(d.get("seconds", 0.0)),
            workers=int(d.get("workers", 0)),
            world_size=int(d.get("world_size", 1)),
            rank_samples=[int(v) for v in d.get("rank_samples") or []],
            base_augment=str(d.get("base_augment", "none")),
        )

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON atomically (no half-written file on failure)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> Ranking:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_markdown(self, *, option: str = "--repeats") -> str:
        """A table, best first: score (± std over repeats), every component, n, classes, seconds; then
        whether the pick is separated from the runner-up (:meth:`separation`, advice naming ``option``)."""
        comp_keys: list[str] = []
        for e in self.entries:
            for k in e.components:
                if k not in comp_keys:
                    comp_keys.append(k)
        show_std = self.repeats > 1

        def fmt(v: float, s: float | None = None) -> str:
            if not math.isfinite(v):
                return "–"
            txt = f"{v:.4f}"
            if show_std and s is not None and math.isfinite(s):
                txt += f" ± {s:.4f}"
            return txt

        arrow = "↓" if self.lower_is_better else "↑"
        head = ["#", "candidate", f"{self.metric} {arrow}", *comp_keys, "n", "classes", "seconds"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:", ":---"] + ["---:"] * (len(head) - 2)) + "|"]
        for i, e in enumerate(self.entries, 1):
            row = [str(i), f"`{e.name}`", fmt(e.score, e.score_std)]
            row += [fmt(e.components.get(k, float("nan")), e.components_std.get(k)) for k in comp_keys]
            row += [str(e.n), str(e.classes_seen), f"{e.seconds:.2f}"]
            lines.append("| " + " | ".join(row) + " |")
        sub = f"per-class subset of {self.per_class}" if self.per_class else "all samples"
        foot = [
            "",
            f"{self.metric} on {self.data or 'data'}: {self.num_samples} samples ({sub}), {self.num_classes} classes, "
            f"batch {self.batch_size}, seed {self.seed}, {self.repeats} repeat(s)"
            + (" (± = std over repeats)" if show_std else "") + ".",
            f"Every candidate ran after the base transform `{self.base_augment}` (so `none` = `{self.base_augment}` "
            "alone)." if self.base_augment != "none" else "No base transform: `none` is the identity.",
        ]
        if self.entries:
            foot.append(self.separation(option=option).message)
        notes = list(self.notes)
        by_note: dict[str, list[str]] = {}
        for e in self.entries:
            for n in e.notes:
                by_note.setdefault(n, []).append(e.name)
        for n, who in by_note.items():
            notes.append(n if len(who) == len(self.entries) > 1 else f"{n} ({', '.join(f'`{w}`' for w in who)})")
        if notes:
            foot.append("")
            foot += [f"- {n}" for n in dict.fromkeys(notes)]
        return "\n".join(lines + foot) + "\n"
