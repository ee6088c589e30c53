"""Per-layer bit widths: a *bit plan* (``{module path: {"weight": w, "act": a}}`` for every quantized layer).

A :class:`~daqakd_plugins.config.QuantConfig` says the uniform widths (``weight_bits``/``act_bits``), the
convention for the network's first and last weight layers (``first_last``, 8 bits by default) and the
user's overrides (``layer_bits``: module-path glob patterns, e.g. ``{"fc": 8, "layer1.*": "W2A4"}``).
:func:`resolve_plan` turns that into one entry per weight layer (``nn.Conv*``, ``nn.ConvTranspose*``,
``nn.Linear``) of the float model, in the order a forward pass runs them; later patterns win over earlier
ones and every pattern wins over ``first_last``. The core hands the resolved plan to the adapter
(:class:`~daqakd_plugins.contracts.QuantizeRequest.layer_bits`), which honours it or refuses the layers it
cannot do, naming them.

A plan chosen by the teacher (``--bits-budget``) comes from :mod:`daqakd_plugins.sensitivity`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn


class QuantConfig(Protocol):
    """What a plan reads of :class:`daqakd_plugins.config.QuantConfig` (which imports this module)."""

    @property
    def weight_bits(self) -> int: ...
    @property
    def act_bits(self) -> int: ...
    @property
    def first_last(self) -> int | None: ...
    @property
    def layer_bits(self) -> Mapping[str, Any]: ...

__all__ = ["FIRST_LAST_BITS", "normalize_layer_bits", "parse_layer_bits", "weight_layers", "resolve_plan",
           "plan_param_bits", "layer_params", "plan_differences", "format_plan", "matching"]

#: the default width of the first and last weight layers (the low-bit literature's convention)
FIRST_LAST_BITS = 8

_SPEC = re.compile(r"^(?:w(?P<w>\d+))?(?:a(?P<a>\d+))?$", re.IGNORECASE)


def _bits_value(text: str, where: str) -> dict[str, int | None]:
    t = text.strip()
    if t.isdigit():
        return {"weight": int(t), "act": None}
    m = _SPEC.match(t)
    if not t or m is None or (m.group("w") is None and m.group("a") is None):
        raise ConfigError(f"{where}: bits {text!r} are not a width; write 8 (weights), W8A8 (weights and "
                          "activations), W8 or A8.")
    return {"weight": int(m.group("w")) if m.group("w") else None, "act": int(m.group("a")) if m.group("a") else None}


def _entry(pattern: str, value: Any) -> dict[str, int | None]:
    where = f"layer_bits[{pattern!r}]"
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be bits (e.g. 8, 'W8A8' or {{'weight': 8, 'act': 8}}), got {value!r}")
    if isinstance(value, int):
        out: dict[str, int | None] = {"weight": value, "act": None}
    elif isinstance(value, str):
        out = _bits_value(value, where)
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - {"weight", "act"})
        if unknown:
            raise ConfigError(f"{where} has unknown keys {unknown}; use 'weight' and/or 'act'.")
        out = {"weight": value.get("weight"), "act": value.get("act")}
    else:
        raise ConfigError(f"{where} must be bits (e.g. 8, 'W8A8' or {{'weight': 8, 'act': 8}}), got {value!r}")
    for k, v in out.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 16:
            raise ConfigError(f"{where}: {k} bits must be an integer 1..16, got {v!r}")
    if out["weight"] is None and out["act"] is None:
        raise ConfigError(f"{where} sets neither weight nor activation bits.")
    return out


def normalize_layer_bits(layer_bits: Any) -> dict[str, dict[str, int | None]]:
    """A user's ``layer_bits`` (a mapping of patterns to ``8`` / ``"W8A4"`` / ``{"weight": 8, "act": 4}``, or
    a sequence of ``"PATTERN=BITS"`` strings as the CLI's ``--layer-bits``) as ``{pattern: {"weight": w|None,
    "act": a|None}}`` in the given order (``None``: that width is not overridden)."""
    if layer_bits is None:
        return {}
    if isinstance(layer_bits, str):
        layer_bits = [layer_bits]
    if isinstance(layer_bits, Mapping):
        items = list(layer_bits.items())
    elif isinstance(layer_bits, Sequence):
        items = [parse_layer_bits(s) if isinstance(s, str) else tuple(s) for s in layer_bits]
    else:
        raise ConfigError(f"layer_bits must map module-path patterns to bits, e.g. {{'fc': 8}}, got {layer_bits!r}")
    out: dict[str, dict[str, int | None]] = {}
    for pattern, value in items:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ConfigError(f"layer_bits keys must be module-path patterns (e.g. 'fc', 'layer1.*'), got {pattern!r}")
        out.pop(pattern, None)  # a repeated pattern moves to where it was given last
        out[pattern.strip()] = _entry(pattern, value)
    return out


def parse_layer_bits(spec: str) -> tuple[str, dict[str, int | None]]:
    """One ``--layer-bits PATTERN=BITS`` (``fc=8``, ``'stem.*=W8A8'``, ``layer3.*=A8``)."""
    pattern, sep, bits = spec.rpartition("=")
    if not sep or not pattern.strip():
        raise ConfigError(f"--layer-bits {spec!r}: write PATTERN=BITS, e.g. --layer-bits fc=8 or "
                          "--layer-bits 'layer1.*=W2A4' (a module path or a glob over module paths).")
    return pattern.strip(), _bits_value(bits, f"--layer-bits {spec!r}")


def _weight_types() -> tuple[type, ...]:
    from torch import nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def weight_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> list[str]:
    """Module paths of the weight layers a plan covers, in the order a forward pass on ``example_input``
    runs them (layers it does not run follow in registration order; without an input: registration order)."""
    import torch

    types = _weight_types()
    names = [n for n, m in model.named_modules() if isinstance(m, types) and n]
    if example_input is None or not names:
        return names
    order: list[str] = []
    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_pre_hook(lambda _m, _i, n=n: order.append(n) if n not in order else None)
               for n in names]
    was = model.training
    p = next(iter(model.parameters()), None)
    try:
        model.eval()
        with torch.no_grad():
            model(example_input[:1].to(p.device) if p is not None else example_input[:1])
    except Exception:  # noqa: BLE001 - the model's own forward error is for the caller to report
        order = []
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return order + [n for n in names if n not in order]


def layer_params(model: nn.Module, layers: Sequence[str]) -> dict[str, int]:
    """Weight elements of each layer (what a bit budget weighs a layer's bits by)."""
    mods = dict(model.named_modules())
    return {n: int(getattr(mods[n], "weight").numel()) for n in layers}  # noqa: B009 - a Module attribute


def resolve_plan(model: nn.Module, cfg: QuantConfig, example_input: torch.Tensor | None = None, *,
                 layer_acts: bool = True) -> dict[str, dict[str, int]]:
    """Every weight layer's ``{"weight": w, "act": a}``: the uniform widths, ``first_last`` on the first and
    last layer the forward runs (their weights, and with ``layer_acts`` — a backend that quantizes each
    layer's input — their input activations too), then the ``layer_bits`` patterns in order. A pattern that
    matches no weight layer is refused, naming the layers there are."""
    layers = weight_layers(model, example_input)
    plan = {n: {"weight": cfg.weight_bits, "act": cfg.act_bits} for n in layers}
    if cfg.first_last and layers:
        for n in {layers[0], layers[-1]}:
            plan[n] = {"weight": cfg.first_last,
                       "act": max(cfg.act_bits, cfg.first_last) if layer_acts else cfg.act_bits}
    for pattern, entry in normalize_layer_bits(cfg.layer_bits).items():
        hit = matching(layers, pattern)
        if not hit:
            shown = ", ".join(layers[:12]) + (", ..." if len(layers) > 12 else "")
            raise ConfigError(f"layer_bits pattern {pattern!r} matches no weight layer of {type(model).__name__}; "
                              f"its weight layers are: {shown or 'none'} (globs like 'layer1.*' work).")
        for n in hit:
            plan[n] = {"weight": entry["weight"] if entry["weight"] is not None else plan[n]["weight"],
                       "act": entry["act"] if entry["act"] is not None else plan[n]["act"]}
    return plan


def matching(layers: Sequence[str], pattern: str) -> list[str]:
    """The layers a ``layer_bits`` pattern names: the module path itself, or a glob over module paths."""
    return [n for n in layers if n == pattern or fnmatch.fnmatchcase(n, pattern)]


def plan_param_bits(plan: Mapping[str, Mapping[str, int]], params: Mapping[str, int]) -> float:
    """Average weight bits over the plan's layers, weighted by their weight elements."""
    total = sum(params[n] for n in plan)
    return sum(params[n] * plan[n]["weight"] for n in plan) / total if total else 0.0


def plan_differences(plan: Mapping[str, Mapping[str, int]], cfg: QuantConfig, role: str) -> dict[str, int]:
    """The layers whose ``role`` ("weight" or "act") width differs from the uniform one: what an adapter must
    change after quantizing uniformly."""
    uniform = cfg.weight_bits if role == "weight" else cfg.act_bits
    return {n: int(e[role]) for n, e in plan.items() if int(e[role]) != uniform}


def format_plan(plan: Mapping[str, Mapping[str, int]]) -> str:
    """``W4A4 ×17, W8A8: conv1, fc`` — a plan in one line."""
    groups: dict[str, list[str]] = {}
    for n, e in plan.items():
        groups.setdefault(f"W{e['weight']}A{e['act']}", []).append(n)
    parts = []
    for tag, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        parts.append(f"{tag} ×{len(names)}" if len(names) > 3 else f"{tag}: {', '.join(names)}")
    return "; ".join(parts)
