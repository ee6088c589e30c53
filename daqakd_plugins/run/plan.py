"""The run's bit plan: resolved from the settings, or chosen by the teacher under ``--bits-budget``.

The engine calls :func:`choose` once for a fresh run (before quantizing) and keeps the result in the
checkpoint, so a resumed run quantizes with the plan it started with; the student file, the checkpoint's
student and the report all carry the explicit plan (one entry per quantized layer).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import backends
from ..bitplan import format_plan, layer_params, matching, plan_param_bits
from ..config import QuantConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PlanChoice", "choose", "from_record", "convention_note", "plan_widths"]


@dataclass
class PlanChoice:
    """The QuantConfig the student is built with (its ``layer_bits`` the explicit plan) and its record."""

    quant: QuantConfig
    record: dict[str, Any]


def convention_note(backend: str, first_last: int | None) -> str:
    info = backends.get_backend(backend)
    if not info.bit_plans:
        return f"{backend} takes no per-layer widths: every layer is quantized alike."
    if not first_last:
        return "first/last convention off (--first-last-bits 0): the first and last weight layers are quantized like the others."
    acts = " and their input activations" if info.layer_act_bits else ""
    return (f"first and last weight layers at {first_last} bits{acts} (the low-bit convention; --first-last-bits 0 "
            "turns it off)")


def plan_widths(backend: str) -> list[int]:
    """The widths a budgeted plan chooses from: what the backend sets per layer, from 2 to 8 bits."""
    info = backends.get_backend(backend)
    lo, hi = info.weight_bits
    allowed = info.layer_weight_bits or tuple(range(lo, hi + 1))
    return sorted(b for b in allowed if 2 <= b <= 8)


def _record(model: nn.Module, backend: str, cfg: QuantConfig, plan: dict[str, dict[str, int]],
            sens: dict[str, Any] | None, budget: float | None) -> dict[str, Any]:
    params = layer_params(model, list(plan))
    return {"layer_bits": plan, "first_last": cfg.first_last, "budget": budget,
            "avg_weight_bits": round(plan_param_bits(plan, params), 4) if plan else None,
            "weight_kb": round(sum(params[n] * e["weight"] for n, e in plan.items()) / 8192, 3),
            "weight_params": sum(params.values()), "summary": format_plan(plan),
            "convention": convention_note(backend, cfg.first_last), "sensitivity": sens}


def choose(cfg: Any, teacher: nn.Module, example: torch.Tensor, calib: list[torch.Tensor] | None,
           say: Any = None) -> PlanChoice:
    """The plan of a fresh run: ``cfg``'s patterns and convention, or (``cfg.bits_budget``) the teacher's
    sensitivity on ``calib`` and the least-sensitive plan within the budget, pinned layers kept."""
    from ..sensitivity import choose_plan, layer_sensitivity

    qcfg = backends.plan_config(cfg.backend, cfg.quant_config())
    plan = backends.resolve_plan(teacher, cfg.backend, qcfg, example_input=example)
    sens = None
    budget = cfg.bits_budget
    if cfg.size_budget_kb is not None:  # weight storage in KiB as an average over the planned layers' weights
        budget = float(cfg.size_budget_kb) * 8192 / max(1, sum(layer_params(teacher, list(plan)).values()))
    if budget is not None:
        assert calib is not None
        widths = plan_widths(cfg.backend)
        if say is not None:
            say(f"measuring each of {len(plan)} layers' sensitivity at {widths} bits on {sum(len(x) for x in calib)} "
                "calibration images (the teacher, one layer quantized at a time) ...")
        s = layer_sensitivity(teacher, calib, list(plan), widths, per_channel=qcfg.per_channel)
        pinned = _pinned(list(plan), qcfg)  # the plan's keys: the weight layers in forward order
        bits = choose_plan(s, float(budget), pinned={n: plan[n]["weight"] for n in pinned})
        plan = {n: {"weight": bits[n], "act": plan[n]["act"]} for n in plan}
        backends.check_plan(cfg.backend, plan, qcfg)
        sens = s.to_dict()
    # an adapter without plans gets the uniform config (its plan is uniform: recorded, never passed as overrides)
    quant = dataclasses.replace(qcfg, layer_bits=plan) if backends.get_backend(cfg.backend).bit_plans else qcfg
    record = _record(teacher, cfg.backend, qcfg, plan, sens, budget)
    record["size_budget_kb"] = cfg.size_budget_kb
    return PlanChoice(quant=quant, record=record)


def _pinned(layers: list[str], qcfg: QuantConfig) -> set[str]:
    """The layers a budgeted plan must not change: first/last (the convention) and those a ``--layer-bits``
    pattern gives weight bits."""
    out = {layers[0], layers[-1]} if qcfg.first_last and layers else set()
    for pattern, entry in qcfg.layer_bits.items():
        if entry.get("weight") is not None:
            out |= set(matching(layers, pattern))
    return out


def from_record(cfg: Any, record: dict[str, Any]) -> QuantConfig:
    """The QuantConfig a resumed run was built with (its checkpoint's plan); a checkpoint written before
    plans existed has none: the settings' config, as it was."""
    qcfg = backends.plan_config(cfg.backend, cfg.quant_config())
    plan = record.get("layer_bits") if record else None
    return dataclasses.replace(qcfg, layer_bits=plan) if plan and backends.get_backend(cfg.backend).bit_plans else qcfg
