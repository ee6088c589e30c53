"""The result of a ranking: sorted entries, JSON round trip and a readable table."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnknownNameError

__all__ = ["RankEntry", "Ranking"]


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
        for e in self.entries:
            if e.name == name:
                return e
        raise UnknownNameError("candidate", name, self.names, "Use a name from Ranking.names.")

    def differs(self, a: str, b: str, k: float = 2.0) -> bool | None:
        """Whether ``a`` and ``b`` differ by more than ``k`` standard errors of their difference
        (from the repeats); ``None`` with fewer than two repeats."""
        ea, eb = self[a], self[b]
        if self.repeats < 2 or not (math.isfinite(ea.score_std) and math.isfinite(eb.score_std)):
            return None
        se = math.sqrt((ea.score_std**2 + eb.score_std**2) / self.repeats)
        return abs(ea.score - eb.score) > k * se

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "lower_is_better": self.lower_is_better,
            "best": self.best if self.entries else None,
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

    def to_markdown(self) -> str:
        """A table, best first: score (± std over repeats), every component, n, classes, seconds."""
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
        ]
        if show_std and len(self.entries) >= 2:
            a, b = self.entries[0].name, self.entries[1].name
            d = self.differs(a, b)
            if d is not None:
                foot.append(f"Best `{a}` vs runner-up `{b}`: {'different' if d else 'NOT distinguishable'} "
                            "at 2 standard errors over the repeats.")
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
