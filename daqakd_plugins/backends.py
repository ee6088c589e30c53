"""Backend dispatch: the core's side of the adapter seam.

Each backend operation (quantize, calibrate, export, save, restore) is sent to the plugin that
registered the backend and to no other (:func:`daqakd_plugins.plugins.backend_hook`). Before an
adapter is called, the core checks what it can check once for every backend: the package imports,
the bit widths are in the registered range, and the options convert to the backend's options
dataclass. docs/adapters.md describes the contract each hook must honour.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import QuantConfig
from .contracts import (
    CalibrateRequest,
    ExportedModel,
    ExportRequest,
    QuantizeRequest,
    QuantizerInfo,
    RestoreRequest,
    SaveRequest,
)
from .errors import BackendError, BackendUnavailableError, ConfigError, ExportError
from .plugins import backend_hook, backend_status, get_backend, get_plugin_manager

__all__ = [
    "quantize", "calibrate", "export", "save_student", "restore_student", "describe_quantizers",
    "count_quantizers", "unwrap_output", "resolve_options", "check_bits", "require_backend", "resolve_plan", "check_plan",
    "plan_config",
]


def require_backend(name: str, *, flag: str | None = None, quantizes: bool = False) -> None:
    """Raise with the install command when ``name``'s package does not import here; with ``quantizes``
    also when its adapter only reports availability and cannot quantize (the CLI checks both, naming
    ``flag``, before any data, teacher or ranking work)."""
    info = get_backend(name)  # UnknownNameError listing the registered backends
    st = backend_status(info)
    who = f"{flag} {name}" if flag else f"backend {name!r}"
    if not st["available"]:
        raise BackendUnavailableError(
            f"{who} needs the package {info.distribution!r}, which does not import here "
            f"({st['error']}). Install it with: {info.install}"
        )
    if quantizes and not info.implemented:
        from .plugins import get_backends

        ready = sorted(b.name for b in get_backends().values() if b.implemented and b.name != name)
        raise BackendError(
            f"{who}: the {name} adapter installed here only reports availability; it cannot quantize "
            f"yet. Use {', '.join(ready) or 'another backend'} (see `daqakd plugins`), or update the adapter."
        )


def check_bits(name: str, cfg: QuantConfig) -> None:
    """The one bit-range check: the registered range, with the adapter's reason for it."""
    info = get_backend(name)
    for what, val, (lo, hi) in (("weight", cfg.weight_bits, info.weight_bits), ("activation", cfg.act_bits, info.act_bits)):
        if not lo <= val <= hi:
            note = f" {info.bits_note}" if info.bits_note else ""
            raise ConfigError(
                f"{what} bits {val} are outside what backend {name!r} supports ({lo}..{hi}).{note} "
                f"Pass a value from {lo} to {hi} (CLI: --bits / --act-bits)."
            )
    if info.bit_pairs and (cfg.weight_bits, cfg.act_bits) not in info.bit_pairs:
        note = f" {info.bits_note}" if info.bits_note else ""
        listed = ", ".join(f"W{w}A{a}" for w, a in info.bit_pairs)
        raise ConfigError(
            f"W{cfg.weight_bits}A{cfg.act_bits} is not a bit combination backend {name!r} supports ({listed}).{note} "
            "Pass one of them (CLI: --bits W --act-bits A)."
        )


def resolve_options(name: str, options: Any) -> Any:
    """``QuantConfig.options`` as the backend's options dataclass (``None`` if it takes none).

    A dict is converted field by field; an unknown key names the known ones; the dataclass's own
    ``__post_init__`` checks the values and its message passes through unchanged."""
    info = get_backend(name)
    typ = info.options_type
    if typ is None:
        if options:
            raise ConfigError(f"backend {name!r} takes no options, got {options!r}; drop QuantConfig(options=...).")
        return None
    if isinstance(options, typ):
        return options
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        raise ConfigError(
            f"options for backend {name!r} must be a {typ.__name__} (or a dict of its fields), got "
            f"{type(options).__name__}."
        )
    raw = dict(options or {}) if isinstance(options, Mapping) or options is None else None
    if raw is None:
        raise ConfigError(f"options for backend {name!r} must be a dict or a {typ.__name__}, got {options!r}.")
    known = {f.name for f in dataclasses.fields(typ)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown {name} option(s) {unknown}; known: {', '.join(sorted(known))} "
            f"(see docs/backends/{name}.md)."
        )
    return typ(**raw)


def _prepare(name: str, cfg: QuantConfig) -> Any:
    require_backend(name)
    check_bits(name, cfg)
    return resolve_options(name, cfg.options)


def plan_config(name: str, cfg: QuantConfig) -> QuantConfig:
    """``cfg`` as backend ``name`` applies it: an adapter that takes no bit plans gets no ``first_last``
    (the convention applies "where the backend can"); explicit ``layer_bits`` are refused there."""
    info = get_backend(name)
    if info.bit_plans:
        return cfg
    if cfg.layer_bits:
        raise ConfigError(
            f"backend {name!r} does not take per-layer bit widths (its adapter does not declare bit_plans); drop "
            f"layer_bits / --layer-bits {', '.join(cfg.layer_bits)} or use a backend that does (see `daqakd plugins`).")
    return dataclasses.replace(cfg, first_last=None) if cfg.first_last else cfg


def resolve_plan(model: nn.Module, backend: str, config: QuantConfig, *,
                 example_input: torch.Tensor | None = None) -> dict[str, dict[str, int]]:
    """The bit plan backend ``backend`` is asked to honour for ``model`` under ``config``
    (:func:`daqakd_plugins.bitplan.resolve_plan` with the backend's capabilities), checked against the widths
    the backend can set per layer; a layer it cannot do is refused, named, with the backend's limits."""
    from .bitplan import resolve_plan as _resolve

    info = get_backend(backend)
    cfg = plan_config(backend, config)
    plan = _resolve(model, cfg, example_input, layer_acts=info.layer_act_bits)
    check_plan(backend, plan, cfg)
    return plan


def check_plan(backend: str, plan: Mapping[str, Mapping[str, int]], cfg: QuantConfig) -> None:
    """Refuse the plan's layers backend ``backend`` cannot quantize at their widths, naming them."""
    info = get_backend(backend)
    lo, hi = info.weight_bits
    allowed = tuple(info.layer_weight_bits) or tuple(range(lo, hi + 1))
    note = f" {info.bits_note}" if info.bits_note else ""
    bad_w = [f"{n} (W{e['weight']})" for n, e in plan.items() if e["weight"] != cfg.weight_bits and e["weight"] not in allowed]
    if bad_w:
        raise ConfigError(
            f"backend {backend!r} sets a layer's weights to {', '.join(map(str, allowed))} bits, not: "
            f"{', '.join(bad_w[:8])}{' ...' if len(bad_w) > 8 else ''}.{note} Change those --layer-bits.")
    odd_a = [n for n, e in plan.items() if e["act"] != cfg.act_bits]
    if odd_a and not info.layer_act_bits:
        raise ConfigError(
            f"backend {backend!r} quantizes activations where they are produced, not per weight layer, so per-layer "
            f"activation bits cannot be honoured for: {', '.join(odd_a[:8])}{' ...' if len(odd_a) > 8 else ''}. "
            "Give weight bits only there (--layer-bits PATTERN=8 or W8), or use pytorch-quantization / modelopt, "
            "whose layers quantize their own inputs.")
    alo, ahi = info.act_bits
    bad_a = [f"{n} (A{e['act']})" for n, e in plan.items() if not alo <= e["act"] <= ahi]
    if bad_a:
        raise ConfigError(f"backend {backend!r} quantizes activations at {alo}..{ahi} bits, not: {', '.join(bad_a[:8])}.{note}")


def quantize(
    model: nn.Module,
    backend: str,
    config: QuantConfig | None = None,
    *,
    example_input: torch.Tensor,
    calib_data: Iterable[torch.Tensor] | None = None,
) -> nn.Module:
    """Build a QAT student of ``model`` with ``backend`` (the FP model is left untouched)."""
    config = config or QuantConfig()
    options = _prepare(backend, config)
    plan = resolve_plan(model, backend, config, example_input=example_input)
    res = backend_hook(backend, "daqakd_quantize")(request=QuantizeRequest(
        backend=backend, model=model, config=plan_config(backend, config), example_input=example_input,
        calib_data=calib_data, options=options, layer_bits=plan))
    if res is None:
        raise BackendError(f"no plugin implements quantization for backend {backend!r} yet; see `daqakd plugins`.")
    if count_quantizers(res) == 0:
        warnings.warn(f"backend {backend!r} returned a model with no quantizers: this is plain KD, not QAT", stacklevel=2)
    return res  # type: ignore[no-any-return]


def calibrate(model: nn.Module, backend: str, data: Iterable[torch.Tensor], num_batches: int = 8, *,
              config: QuantConfig | None = None) -> nn.Module:
    """Set quantizer ranges of ``model`` from ``data`` (batches of images).

    ``config``: the :class:`QuantConfig` the student was quantized with; the adapter gets it and its
    options (converted as for :func:`quantize`) in the request. Without it the adapter falls back to what
    the student's quantizers say, or to its default options."""
    require_backend(backend)
    options = resolve_options(backend, config.options) if config is not None else None
    res = backend_hook(backend, "daqakd_calibrate")(request=CalibrateRequest(
        backend=backend, model=model, data=data, num_batches=num_batches, config=config, options=options))
    if res is None:
        raise BackendError(f"no plugin implements calibration for backend {backend!r}; see `daqakd plugins`.")
    return res  # type: ignore[no-any-return]


def export(
    model: nn.Module,
    backend: str,
    *,
    example_input: torch.Tensor,
    out_dir: str | Path,
    formats: tuple[str, ...] | None = None,
) -> list[ExportedModel]:
    """Export ``model`` and return a runnable handle per written file."""
    from .checks import check_output_dir

    require_backend(backend)
    out = check_output_dir(out_dir, flag="out_dir")  # a named error, not FileNotFoundError, before exporting
    out.mkdir(parents=True, exist_ok=True)
    res = backend_hook(backend, "daqakd_export")(
        request=ExportRequest(backend=backend, model=model, example_input=example_input, out_dir=out, formats=formats))
    if res is None:
        raise BackendError(f"no plugin implements export for backend {backend!r}; see `daqakd plugins`.")
    exported = list(res)
    _check_onnxruntime_encoding(backend, exported)
    return exported


def save_student(model: nn.Module, backend: str, config: QuantConfig) -> dict[str, Any]:
    """The payload from which :func:`restore_student` rebuilds ``model`` (``weights_only``-safe).

    The adapter's ``daqakd_save_student`` when it has one, else ``{"state_dict": ...}``."""
    options = resolve_options(backend, config.options)
    res = backend_hook(backend, "daqakd_save_student")(
        request=SaveRequest(backend=backend, model=model, config=config, options=options))
    if res is None:
        res = {"state_dict": model.state_dict()}
    return dict(res)


def restore_student(model: nn.Module, backend: str, config: QuantConfig, payload: Mapping[str, Any], *,
                    example_input: torch.Tensor) -> nn.Module:
    """Rebuild a saved student from a fresh full-precision ``model`` (same architecture, any weights).

    The adapter's ``daqakd_restore_student`` when it has one, else quantize ``model`` and load the
    saved ``state_dict``."""
    options = _prepare(backend, config)
    plan = resolve_plan(model, backend, config, example_input=example_input)
    res = backend_hook(backend, "daqakd_restore_student")(request=RestoreRequest(
        backend=backend, model=model, config=plan_config(backend, config), payload=payload,
        example_input=example_input, options=options, layer_bits=plan))
    if res is None:
        if "state_dict" not in payload:
            raise BackendError(
                f"the saved {backend} student has no state_dict and the {backend} adapter does not restore "
                "students itself; save and restore with the same adapter version."
            )
        res = quantize(model, backend, config, example_input=example_input)
        res.load_state_dict(payload["state_dict"])
    res.eval()
    return res  # type: ignore[no-any-return]


def _check_onnxruntime_encoding(backend: str, exported: list[ExportedModel]) -> None:
    """Refuse an onnxruntime artefact whose integer kernels would saturate on x86 CPUs without VNNI
    (uint8 activations x full-range int8 weights): right on the machine that made it, silently wrong
    on the next. A structural check, so it holds whatever CPU runs it."""
    import onnx

    from .onnx_qdq import u8s8_hazards

    for e in exported:
        if not e.u8s8_guard:
            continue
        hazards = u8s8_hazards(onnx.load(str(e.path), load_external_data=False))
        if hazards:
            listed = "; ".join(str(h) for h in hazards[:3]) + (" ..." if len(hazards) > 3 else "")
            raise ExportError(
                f"backend {backend!r} wrote {Path(e.path).name} with the U8S8 pattern that onnxruntime computes "
                f"wrongly on x86 CPUs without VNNI ({listed}). This is an adapter bug: the adapter must call "
                "daqakd_plugins.onnx_qdq.prepare_for_onnxruntime(path) on its ONNX files (see docs/adapters.md)."
            )


def describe_quantizers(model: nn.Module) -> list[QuantizerInfo]:
    """Every fake-quantizer in ``model`` (name, role, bits), from whichever adapters recognise them."""
    answers = get_plugin_manager().hook.daqakd_describe_quantizers(model=model)
    return [q for a in answers if a for q in a]


def count_quantizers(model: nn.Module) -> int:
    """Fake-quantizers in ``model``, over every backend plugin's answer."""
    return len(describe_quantizers(model))


def unwrap_output(out: Any) -> torch.Tensor | None:
    """A non-tensor model output as logits, if an adapter recognises it (``None`` otherwise)."""
    res = get_plugin_manager().hook.daqakd_unwrap_output(output=out)
    return res if isinstance(res, torch.Tensor) else None
