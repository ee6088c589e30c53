"""Backend dispatch: the core's side of the quantize / calibrate / export hooks."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .config import QuantConfig
from .contracts import CalibrateRequest, ExportedModel, ExportRequest, QuantizeRequest
from .errors import BackendError, BackendUnavailableError, ConfigError, ExportError
from .plugins import backend_status, get_backend, get_plugin_manager

__all__ = ["quantize", "calibrate", "export", "count_quantizers", "require_backend", "count_modules_from"]


def require_backend(name: str) -> None:
    """Raise with the install command when ``name``'s package does not import here."""
    info = get_backend(name)
    st = backend_status(info)
    if not st["available"]:
        raise BackendUnavailableError(
            f"backend {name!r} needs the package {info.distribution!r}, which does not import here "
            f"({st['error']}). Install it with: {info.install}"
        )


def _check_bits(name: str, cfg: QuantConfig) -> None:
    info = get_backend(name)
    for what, val, (lo, hi) in (("weight", cfg.weight_bits, info.weight_bits), ("activation", cfg.act_bits, info.act_bits)):
        if not lo <= val <= hi:
            raise ConfigError(
                f"{what} bits {val} are outside what backend {name!r} supports ({lo}..{hi}); pass a value in that range."
            )


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
    require_backend(backend)
    _check_bits(backend, config)
    res = get_plugin_manager().hook.daqakd_quantize(
        request=QuantizeRequest(backend=backend, model=model, config=config, example_input=example_input, calib_data=calib_data)
    )
    if res is None:
        raise BackendError(f"no plugin implements quantization for backend {backend!r} yet; see `daqakd plugins`.")
    if count_quantizers(res) == 0:
        warnings.warn(f"backend {backend!r} returned a model with no quantizers: this is plain KD, not QAT", stacklevel=2)
    return res  # type: ignore[no-any-return]


def calibrate(model: nn.Module, backend: str, data: Iterable[torch.Tensor], num_batches: int = 8) -> nn.Module:
    """Set quantizer ranges of ``model`` from ``data`` (batches of images)."""
    res = get_plugin_manager().hook.daqakd_calibrate(
        request=CalibrateRequest(backend=backend, model=model, data=data, num_batches=num_batches)
    )
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = get_plugin_manager().hook.daqakd_export(
        request=ExportRequest(backend=backend, model=model, example_input=example_input, out_dir=out, formats=formats)
    )
    if res is None:
        raise BackendError(f"no plugin implements export for backend {backend!r}; see `daqakd plugins`.")
    exported = list(res)
    _check_onnxruntime_encoding(backend, exported)
    return exported


def _check_onnxruntime_encoding(backend: str, exported: list[ExportedModel]) -> None:
    """Refuse an onnxruntime artefact whose integer kernels would saturate on x86 CPUs without VNNI
    (uint8 activations x full-range int8 weights): right on the machine that made it, silently wrong
    on the next. A structural check, so it holds whatever CPU runs it."""
    import onnx

    from .onnx_qdq import u8s8_hazards

    for e in exported:
        if e.runtime != "onnxruntime" or Path(e.path).suffix != ".onnx":
            continue
        hazards = u8s8_hazards(onnx.load(str(e.path), load_external_data=False))
        if hazards:
            listed = "; ".join(str(h) for h in hazards[:3]) + (" ..." if len(hazards) > 3 else "")
            raise ExportError(
                f"backend {backend!r} wrote {Path(e.path).name} with the U8S8 pattern that onnxruntime computes "
                f"wrongly on x86 CPUs without VNNI ({listed}). This is an adapter bug: the adapter must call "
                "daqakd_plugins.onnx_qdq.prepare_for_onnxruntime(path) on its ONNX files (see docs/backends/brevitas.md)."
            )


def count_quantizers(model: nn.Module) -> int:
    """Fake-quantizers in ``model``, summed over every backend plugin's answer."""
    answers = get_plugin_manager().hook.daqakd_count_quantizers(model=model)
    return int(sum(a for a in answers if a))


def count_modules_from(model: nn.Module, module_prefix: str, name_contains: str = "Quant") -> int | None:
    """Count submodules whose class is defined under ``module_prefix`` and whose class name contains
    ``name_contains``; ``None`` when that backend was never imported (so counting never imports it)."""
    top = module_prefix.split(".")[0]
    if top not in sys.modules:
        return None
    n = 0
    for m in model.modules():
        cls = type(m)
        if cls.__module__.startswith(module_prefix) and name_contains in cls.__name__:
            n += 1
    return n
