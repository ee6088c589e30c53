"""A bit plan chosen by the teacher: per-layer sensitivity, then the plan that minimises it under a budget.

Sensitivity (:func:`layer_sensitivity`): for each weight layer and each candidate width, the teacher with
*only that layer's weights* fake-quantized (symmetric, narrow range, a max-|w| scale per output channel as
every backend here starts from; 1 bit: sign · mean |w|) is run on a calibration sample, and the KL divergence
from the full-precision teacher's outputs, ``KL(p_teacher || p_quantized)`` averaged over the images, is the
layer's cost at that width. Forward passes only: no gradients, no Hessian, no backend.

Plan (:func:`choose_plan`): one width per layer minimising the summed sensitivity subject to the average
weight bits, weighted by each layer's weight elements, being at most ``budget`` (``--bits-budget``; layers the
user or the first/last convention pinned count at their pinned widths). Solved exactly as a multiple-choice
knapsack over the integer bit cost, keeping the Pareto front of (cost, summed KL).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["fake_quant_weight", "layer_sensitivity", "choose_plan", "Sensitivity", "sensitivity_markdown"]


def fake_quant_weight(w: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """``w`` on the symmetric narrow-range ``bits``-bit grid (max-|w| scale per output channel, or per tensor)."""
    import torch

    dims = tuple(range(1, w.dim())) if per_channel and w.dim() > 1 else tuple(range(w.dim()))
    if bits == 1:
        return torch.sign(w) * w.abs().mean(dim=dims, keepdim=True)
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / qmax
    return torch.round(w / scale).clamp(-qmax, qmax) * scale


@dataclass
class Sensitivity:
    """What :func:`layer_sensitivity` measured: ``kl[layer][bits]``, each layer's weight elements, the layers
    in forward order, the images used and the seconds it took."""

    kl: dict[str, dict[int, float]]
    params: dict[str, int]
    layers: list[str]
    images: int
    seconds: float
    widths: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [{"layer": n, "params": self.params[n], "kl": {str(b): v for b, v in self.kl[n].items()}}
                           for n in self.layers],
                "widths": list(self.widths), "images": self.images, "seconds": round(self.seconds, 3),
                "method": "one layer's weights fake-quantized at a time; KL(teacher || that model) on the calibration "
                          "images"}


def _log_probs(model: nn.Module, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    import torch

    with torch.no_grad():
        return [torch.log_softmax(model(x).float(), dim=1) for x in batches]


def layer_sensitivity(teacher: nn.Module, images: Iterable[torch.Tensor], layers: Sequence[str],
                      widths: Sequence[int], *, per_channel: bool = True) -> Sensitivity:
    """KL to the teacher with one layer's weights at each width, the others full precision (the teacher's
    weights are restored after each pass; it is left as it was)."""
    import torch

    t0 = time.perf_counter()
    p = next(iter(teacher.parameters()), None)
    batches = [x.to(p.device) if p is not None else x for x in images]
    if not batches:
        raise ConfigError("the sensitivity pass needs calibration images; it got none.")
    mods = dict(teacher.named_modules())
    was = teacher.training
    teacher.eval()
    ref = _log_probs(teacher, batches)
    n = sum(len(x) for x in batches)
    kl: dict[str, dict[int, float]] = {}
    try:
        for name in layers:
            weight = getattr(mods[name], "weight")  # noqa: B009 - a Module attribute
            orig = weight.detach().clone()
            kl[name] = {}
            for b in widths:
                with torch.no_grad():
                    weight.copy_(fake_quant_weight(orig, b, per_channel))
                out = _log_probs(teacher, batches)
                total = sum(float((r.exp() * (r - o)).sum()) for r, o in zip(ref, out))
                kl[name][b] = max(0.0, total / n)
            with torch.no_grad():
                weight.copy_(orig)
    finally:
        teacher.train(was)
    params = {name: int(getattr(mods[name], "weight").numel()) for name in layers}  # noqa: B009
    return Sensitivity(kl=kl, params=params, layers=list(layers), images=n, seconds=time.perf_counter() - t0,
                       widths=sorted(widths))


def choose_plan(sens: Sensitivity, budget: float, *, pinned: Mapping[str, int] | None = None) -> dict[str, int]:
    """Weight bits per layer minimising the summed KL with the parameter-weighted average ≤ ``budget``.

    Exact: a dynamic programme over the integer bit cost (weight elements × bits) that keeps, layer by layer,
    only the Pareto front of (cost, summed KL). ``pinned`` layers keep their widths and count toward the
    average. A budget below what the lowest width gives is refused, naming the least average possible."""
    pinned = dict(pinned or {})
    widths = sorted(sens.widths)
    free = [n for n in sens.layers if n not in pinned]
    total = sum(sens.params[n] for n in sens.layers)
    fixed = sum(sens.params[n] * b for n, b in pinned.items() if n in sens.params)
    cap = math.floor(budget * total - fixed + 1e-6)  # weight bits the free layers may spend
    lowest = sum(sens.params[n] * widths[0] for n in free)
    if cap < lowest:
        least = (fixed + lowest) / total if total else 0.0
        raise ConfigError(f"the budget ({budget:.3f} weight bits on average; --bits-budget / --size-budget-kb) is below "
                          f"the least average this plan can reach ({least:.3f} "
                          f"bits: every free layer at {widths[0]} bits, pinned layers as pinned); raise it, or pin "
                          "fewer layers at 8 bits (--first-last-bits 0).")
    front: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]  # (cost, summed KL, widths so far)
    rest = lowest
    for n in free:
        rest -= sens.params[n] * widths[0]  # what the layers after this one need at least
        cand = [(c + sens.params[n] * b, k + sens.kl[n][b], (*ch, b)) for c, k, ch in front for b in widths
                if c + sens.params[n] * b + rest <= cap]
        cand.sort(key=lambda t: (t[0], t[1]))
        front = []
        for t in cand:  # keep a state only if it beats every cheaper one
            if not front or t[1] < front[-1][1]:
                front.append(t)
    best = min(front, key=lambda t: t[1])
    chosen = dict(zip(free, best[2]))
    return {n: pinned.get(n, chosen.get(n, widths[0])) for n in sens.layers}


def sensitivity_markdown(sens: Mapping[str, Any], plan: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The sensitivity table (KL ×10³ per width) with each layer's chosen bits, as report lines."""
    widths = [str(w) for w in sens.get("widths", [])]
    lines = [f"Sensitivity: {sens.get('method', '')} ({sens.get('images')} images, {sens.get('seconds', 0):.1f} s). "
             "KL × 1000 at each weight width:", "",
             "| layer | weights | " + " | ".join(f"W{w}" for w in widths) + " | planned |",
             "|---|---:|" + "---:|" * len(widths) + "---|"]
    for row in sens.get("layers", []):
        e = plan.get(row["layer"], {})
        vals = " | ".join(f"{1000 * row['kl'].get(w, float('nan')):.2f}" for w in widths)
        lines.append(f"| `{row['layer']}` | {row['params']} | {vals} | W{e.get('weight', '?')}A{e.get('act', '?')} |")
    return lines
