"""The ranking metrics (METRIC.md sections 1 and 2) as accumulators over teacher batches.

``cmi`` — the paper's score. One pass over the augmented data accumulates float64 sufficient
statistics ``(S, n, H, E, N)``; centroids, contextual mutual information ``I``, label closeness ``D`` and
teacher cross-entropy ``CE`` follow exactly from them (the authors' code makes a second pass to get
the KL terms against the centroids; see docs/ranking.md for the algebra). Because every statistic is a
sum, :class:`CMIStats` merges and all-reduces exactly across processes.

``tstddev`` — the Good-DA-in-KD baseline: the spread, over groups of ``G`` batches, of the teacher's
mean probability vector on clean+augmented batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..contracts import MetricBatch, MetricResult
from ..errors import ConfigError, DataError, ModelError, NonFiniteError

__all__ = [
    "Q_CLAMP",
    "CMIStats",
    "CMIAccumulator",
    "TStdDevAccumulator",
    "create_cmi",
    "create_tstddev",
    "check_batch",
]

#: centroids are clamped at this value before the log (METRIC.md)
Q_CLAMP = 1e-12
#: tolerance on a label distribution summing to one (float32 mixing of one-hot rows)
_SUM_TOL = 1e-4


def check_batch(logits: torch.Tensor, targets: torch.Tensor, num_classes: int, *, candidate: str = "",
                batch_index: int = 0) -> None:
    """Raise a clear error for logits/targets a metric cannot use (wrong width, NaN/inf, bad labels)."""
    where = f" (candidate {candidate!r}, batch {batch_index})" if candidate else f" (batch {batch_index})"
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        raise ModelError(
            f"teacher output has shape {tuple(logits.shape)}{where} but the data has {num_classes} classes; "
            "the teacher's last layer must output one logit per class (pass num_classes= to match it, or a "
            "teacher trained on this data)."
        )
    if targets.shape != logits.shape:
        raise DataError(
            f"targets have shape {tuple(targets.shape)}{where}; expected [batch, {num_classes}] label "
            "distributions matching the logits (an augmentation must not drop or add samples)."
        )
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise NonFiniteError(
            f"teacher logits contain NaN/inf for {bad} sample(s){where}. Check that the candidate keeps images "
            "finite and in [0, 1] and that the teacher is numerically sound on such inputs."
        )
    if targets.numel():
        rows = targets.double().sum(dim=1)
        if float(targets.min()) < 0 or float((rows - 1).abs().max()) > _SUM_TOL:
            raise DataError(
                f"targets are not label distributions{where} (rows must be ≥ 0 and sum to 1; row sums range "
                f"{float(rows.min()):.4g}..{float(rows.max()):.4g}). A label-mixing candidate must mix "
                "targets with weights that sum to one."
            )


# --------------------------------------------------------------------------------------------------
# cmi
# --------------------------------------------------------------------------------------------------
@dataclass
class CMIStats:
    """Float64 sufficient statistics of the CMI metric (all sums, so :meth:`merge` is exact).

    ``S[k, c] = Σ_i t_i[k] p_i[c]``, ``n[k] = Σ_i t_i[k]``, ``H = Σ_i Σ_c p_i[c] log p_i[c]``,
    ``E = Σ_i Σ_k t_i[k] (−log p_i[k])``, ``N`` = number of samples. ``H`` and ``E`` are 0-d tensors on
    the statistics' device so accumulation never synchronises with a GPU.
    """

    num_classes: int
    S: torch.Tensor
    n: torch.Tensor
    H: torch.Tensor
    E: torch.Tensor
    N: int = 0

    @classmethod
    def zeros(cls, num_classes: int, device: str | torch.device = "cpu") -> CMIStats:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be ≥ 1, got {num_classes}")
        z = torch.zeros((), dtype=torch.float64, device=device)
        return cls(
            num_classes=num_classes,
            S=torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device),
            n=torch.zeros(num_classes, dtype=torch.float64, device=device),
            H=z.clone(),
            E=z.clone(),
            N=0,
        )

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch: ``logits [B, C]`` (any float dtype) and label distributions ``targets [B, C]``."""
        if logits.shape[0] == 0:
            return
        if self.S.device != logits.device:
            self.to(logits.device)
        logp = torch.log_softmax(logits.to(torch.float64), dim=1)
        p = logp.exp()
        t = targets.to(device=logits.device, dtype=torch.float64)
        self.S.addmm_(t.T, p)
        self.n.add_(t.sum(dim=0))
        self.H.add_((p * logp).sum())
        self.E.sub_((t * logp).sum())
        self.N += int(logits.shape[0])

    def to(self, device: str | torch.device) -> CMIStats:
        self.S, self.n = self.S.to(device), self.n.to(device)
        self.H, self.E = self.H.to(device), self.E.to(device)
        return self

    def merge(self, other: CMIStats) -> CMIStats:
        """The statistics of both sample sets (a new object; neither input changes)."""
        if other.num_classes != self.num_classes:
            raise ConfigError(f"cannot merge CMI statistics of {self.num_classes} and {other.num_classes} classes")
        o = other.to(self.S.device) if other.S.device != self.S.device else other
        return CMIStats(self.num_classes, self.S + o.S, self.n + o.n, self.H + o.H, self.E + o.E, self.N + o.N)

    __add__ = merge

    def to_vector(self) -> torch.Tensor:
        """Everything in one float64 vector ``[S.flatten(), n, H, E, N]`` (one all-reduce call)."""
        n_t = torch.tensor([float(self.N)], dtype=torch.float64, device=self.S.device)
        return torch.cat([self.S.flatten(), self.n, self.H.reshape(1), self.E.reshape(1), n_t])

    @classmethod
    def from_vector(cls, vec: torch.Tensor, num_classes: int) -> CMIStats:
        c = num_classes
        if vec.numel() != c * c + c + 3:
            raise ConfigError(f"a CMI statistics vector for {c} classes has {c * c + c + 3} entries, got {vec.numel()}")
        v = vec.to(torch.float64)
        return cls(c, v[: c * c].reshape(c, c).clone(), v[c * c : c * c + c].clone(), v[c * c + c].clone(),
                   v[c * c + c + 1].clone(), int(round(float(v[-1]))))

    def all_reduce(self, group: Any = None) -> CMIStats:
        """Sum the statistics over all processes of ``torch.distributed`` (in place; a no-op when not
        initialised). Exact, because every statistic is a sum over samples."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        vec = self.to_vector()
        dist.all_reduce(vec, op=dist.ReduceOp.SUM, group=group)
        red = CMIStats.from_vector(vec, self.num_classes)
        self.S, self.n, self.H, self.E, self.N = red.S, red.n, red.H, red.E, red.N
        return self

    def seen(self) -> torch.Tensor:
        """Boolean mask of the classes with ``Σ_i t_i[k] > 0``."""
        return self.n > 0

    def centroids(self) -> torch.Tensor:
        """``Q [C, C]``: row k is the mean teacher prediction of class k (zero rows for unseen classes)."""
        mask = self.seen()
        q = torch.zeros_like(self.S)
        q[mask] = self.S[mask] / self.n[mask, None]
        return q

    def components(self) -> dict[str, float]:
        """``D``, ``I`` and ``CE`` (METRIC.md section 1), exact from the sums."""
        if self.N == 0:
            raise DataError("no samples were accumulated; the data set (or the per-class subset) is empty.")
        mask = self.seen()
        idx = mask.nonzero().flatten()
        if idx.numel() == 0:
            raise DataError("no class has any label mass; check the targets (all-zero label distributions?).")
        q = self.S[idx] / self.n[idx, None]
        logq = q.clamp_min(Q_CLAMP).log()
        cross = (self.S[idx] * logq).sum()
        i_val = (self.H - cross) / self.N
        d_val = -logq[torch.arange(idx.numel(), device=idx.device), idx].mean()
        ce = self.E / self.N
        return {"D": float(d_val), "I": float(i_val), "CE": float(ce)}


_CMI_PARAMS = ("w_D", "w_I", "w_CE")


class CMIAccumulator:
    """The paper's score ``M = w_D·D − w_I·I + w_CE·CE`` (lower is better) in one pass."""

    def __init__(self, num_classes: int, *, w_D: float = 1.0, w_I: float = 1.0, w_CE: float = 0.0,
                 device: str | torch.device = "cpu") -> None:
        for k, v in (("w_D", w_D), ("w_I", w_I), ("w_CE", w_CE)):
            if not (isinstance(v, (int, float)) and math.isfinite(float(v))):
                raise ConfigError(f"cmi weight {k} must be a finite number, got {v!r}")
        self.num_classes = num_classes
        self.w_D, self.w_I, self.w_CE = float(w_D), float(w_I), float(w_CE)
        self.stats = CMIStats.zeros(num_classes, device)

    def update(self, batch: MetricBatch) -> None:
        check_batch(batch.logits, batch.targets, self.num_classes, candidate=batch.candidate,
                    batch_index=batch.batch_index)
        self.stats.update(batch.logits, batch.targets)

    def state_vector(self) -> torch.Tensor:
        """The float64 sufficient statistics as one vector (summed over ranks under torchrun)."""
        return self.stats.to_vector()

    def load_state_vector(self, vec: torch.Tensor) -> None:
        self.stats = CMIStats.from_vector(vec.to(self.stats.S.device), self.num_classes)

    def result(self) -> MetricResult:
        comp = self.stats.components()
        score = self.w_D * comp["D"] - self.w_I * comp["I"] + self.w_CE * comp["CE"]
        mask = self.stats.seen().cpu()
        notes: list[str] = []
        missing = (~mask).nonzero().flatten().tolist()
        if missing:
            notes.append(
                f"classes {missing} had no samples; excluded from D (averaged over {int(mask.sum())} of "
                f"{self.num_classes} classes)"
            )
        return MetricResult(score=score, components=comp, n=self.stats.N, classes_seen=int(mask.sum()), notes=notes)


def create_cmi(num_classes: int, **params: Any) -> CMIAccumulator:
    """Factory registered as the ``cmi`` metric; ``params``: ``w_D``, ``w_I``, ``w_CE`` (and ``device``)."""
    unknown = sorted(set(params) - set(_CMI_PARAMS) - {"device"})
    if unknown:
        raise ConfigError(f"unknown cmi parameter(s) {unknown}; cmi accepts {', '.join(_CMI_PARAMS)} (weights of D, I, CE).")
    return CMIAccumulator(num_classes, **params)


# --------------------------------------------------------------------------------------------------
# tstddev
# --------------------------------------------------------------------------------------------------
@dataclass
class _Group:
    total: torch.Tensor | None = None
    count: int = 0
    batches: int = 0


@dataclass
class TStdDevAccumulator:
    """Good-DA-in-KD's T.stddev: ``(1/C) Σ_c std_g(p̄_g[c])`` over groups of ``group`` consecutive batches,
    each batch = clean batch concatenated with its augmented copy. Lower is better."""

    num_classes: int
    group: int = 5
    temperature: float = 1.0
    means: list[torch.Tensor] = field(default_factory=list)
    _cur: _Group = field(default_factory=_Group)
    _n: int = 0
    _seen: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.group, int) and self.group >= 1):
            raise ConfigError(f"tstddev group must be an integer ≥ 1 (batches per group), got {self.group!r}")
        if not (self.temperature > 0):
            raise ConfigError(f"tstddev temperature must be > 0, got {self.temperature!r}")

    def check_plan(self, num_batches: int, batch_size: int, num_samples: int) -> None:
        """Fail before any work when the data cannot give two complete groups (no spread otherwise)."""
        if num_batches // self.group < 2:
            best = max(1, num_samples // (2 * self.group))
            raise ConfigError(
                f"tstddev needs at least 2 complete groups of {self.group} batches, but {num_samples} samples at "
                f"batch size {batch_size} give only {num_batches} batch(es). Use batch_size ≤ {best} "
                f"(--batch-size {best}), more samples, or a smaller group (metric_params={{'group': 2}})."
            )

    def update(self, batch: MetricBatch) -> None:
        if batch.clean_logits is None:
            raise ConfigError("tstddev needs teacher logits on the clean batch (MetricBatch.clean_logits); "
                              "rank with rank_augmentations, which provides them for metrics with needs_clean.")
        check_batch(batch.logits, batch.targets, self.num_classes, candidate=batch.candidate,
                    batch_index=batch.batch_index)
        check_batch(batch.clean_logits, batch.targets, self.num_classes, candidate=batch.candidate,
                    batch_index=batch.batch_index)
        both = torch.cat([batch.clean_logits, batch.logits]).to(torch.float64)
        probs = torch.softmax(both / self.temperature, dim=1)
        s = probs.sum(dim=0)
        self._cur.total = s if self._cur.total is None else self._cur.total + s
        self._cur.count += int(both.shape[0])
        self._cur.batches += 1
        self._n += int(batch.logits.shape[0])
        seen = batch.targets.sum(dim=0) > 0
        self._seen = seen if self._seen is None else (self._seen | seen.to(self._seen.device))
        if self._cur.batches == self.group:
            assert self._cur.total is not None
            self.means.append(self._cur.total / self._cur.count)
            self._cur = _Group()

    def result(self) -> MetricResult:
        notes: list[str] = []
        if self._cur.batches:
            notes.append(f"dropped the last {self._cur.batches} batch(es): not a complete group of {self.group}")
        g = len(self.means)
        seen = int(self._seen.sum()) if self._seen is not None else 0
        if g < 2:
            notes.append(f"only {g} complete group(s) of {self.group} batches; the spread needs ≥ 2 (use smaller batches)")
            return MetricResult(score=float("nan"), components={"tstddev": float("nan"), "groups": float(g)},
                                n=self._n, classes_seen=seen, notes=notes)
        m = torch.stack(self.means)
        val = float(m.std(dim=0, unbiased=True).mean())
        return MetricResult(score=val, components={"tstddev": val, "groups": float(g)}, n=self._n,
                            classes_seen=seen, notes=notes)


def create_tstddev(num_classes: int, **params: Any) -> TStdDevAccumulator:
    """Factory registered as the ``tstddev`` metric; ``params``: ``group`` (batches per group, default 5),
    ``temperature`` (default 1)."""
    params.pop("device", None)
    unknown = sorted(set(params) - {"group", "temperature"})
    if unknown:
        raise ConfigError(f"unknown tstddev parameter(s) {unknown}; tstddev accepts group, temperature.")
    return TStdDevAccumulator(num_classes, **params)
