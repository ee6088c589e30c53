"""``NNCFOptions``: what ``QuantConfig.options`` may hold for the NNCF backend (docs/backends/nncf.md).

Checked here, without importing NNCF: the core converts a dict of these fields into the dataclass
before any work starts (``daqakd distill`` does it while checking its configuration).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daqakd_plugins.kit import ConfigError

__all__ = ["NNCFOptions", "TARGET_DEVICES", "PRESETS", "SUPPORTED_BITS"]

#: ``nncf.TargetDevice`` names (checked here as strings so that checking options never imports NNCF)
TARGET_DEVICES = ("ANY", "CPU", "GPU", "NPU", "CPU_SPR")
PRESETS = ("performance", "mixed")
#: (weight bits, activation bits) that NNCF 3's hardware configurations define, and where
SUPPORTED_BITS = {(8, 8): "every target device", (4, 4): "target_device NPU", (4, 8): "target_device NPU"}


def _names(value: Any, what: str, example: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"options['{what}'] must be a list of strings (e.g. {example}), got {value!r}.")
    return tuple(v.strip() for v in value)


@dataclass(frozen=True, kw_only=True)
class NNCFOptions:
    """``QuantConfig.options`` for NNCF (every field documented in docs/backends/nncf.md).

    ``ignored_scope``: layers left in float, by module path (``"fc"``, ``"layers.0"``: every operation
    inside) or NNCF node name (``"fc/linear/0"``); ``ignored_patterns``: regular expressions over NNCF
    node names; ``ignored_types``: NNCF operation types (``"adaptive_avg_pool2d"``). All three go to
    ``nncf.IgnoredScope``.
    ``layer_bits``: per-layer overrides ``{module path: bits}`` (4 or 8) for a layer's weight quantizer
    and the activation quantizer on its input, e.g. ``{"stem.0": 8, "fc": 8}`` keeps the first and
    last layers at 8 bits in a W4A4 student.
    ``target_device`` (``ANY``, ``CPU``, ``GPU``, ``NPU``, ``CPU_SPR``): NNCF's hardware configuration;
    ``None`` picks ``ANY`` at 8 bits and ``NPU`` with 4-bit quantizers (the only one defining them).
    ``preset``: ``"performance"`` (symmetric) or ``"mixed"`` (asymmetric activations, 8 bits only);
    ``None`` is NNCF's default for CNNs (performance).
    ``fast_bias_correction``: NNCF's post-training bias correction. Off by default: QAT learns the
    biases anyway, it can wreck PTQ (0.573 instead of 0.969 on one digits model), and with it on
    calibrating again would overwrite the biases training learned.
    ``calibration_augment``: a registered augmentation applied to the calibration images (fixed seed),
    e.g. the ranked one; ``"none"`` (default) calibrates on the clean data.
    """

    ignored_scope: tuple[str, ...] = ()
    ignored_patterns: tuple[str, ...] = ()
    ignored_types: tuple[str, ...] = ()
    layer_bits: Mapping[str, int] = field(default_factory=dict)
    target_device: str | None = None
    preset: str | None = None
    fast_bias_correction: bool = False
    calibration_augment: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignored_scope", _names(self.ignored_scope, "ignored_scope", "['fc', 'layers.0.conv1']"))
        object.__setattr__(self, "ignored_patterns",
                           _names(self.ignored_patterns, "ignored_patterns", "['.*conv2d.*']"))
        for p in self.ignored_patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ConfigError(f"options['ignored_patterns'] has an invalid regular expression {p!r}: {exc}.") from None
        object.__setattr__(self, "ignored_types", _names(self.ignored_types, "ignored_types", "['adaptive_avg_pool2d']"))
        lb = self.layer_bits
        if not isinstance(lb, Mapping) or not all(isinstance(k, str) and k for k in lb):
            raise ConfigError(
                f"options['layer_bits'] must map module paths to bits, e.g. {{'stem.0': 8, 'fc': 8}}, got {lb!r}.")
        for k, v in lb.items():
            if isinstance(v, bool) or v not in (4, 8):
                raise ConfigError(
                    f"options['layer_bits'][{k!r}] must be 4 or 8 (the widths NNCF's hardware configurations "
                    f"define), got {v!r}.")
        object.__setattr__(self, "layer_bits", dict(lb))
        td = self.target_device
        if td is not None:
            if not isinstance(td, str) or td.upper() not in TARGET_DEVICES:
                raise ConfigError(
                    f"options['target_device'] must be one of {', '.join(TARGET_DEVICES)} (nncf.TargetDevice) or "
                    f"None (ANY at 8 bits, NPU with 4-bit quantizers), got {td!r}.")
            object.__setattr__(self, "target_device", td.upper())
        pr = self.preset
        if pr is not None:
            if not isinstance(pr, str) or pr.lower() not in PRESETS:
                raise ConfigError(f"options['preset'] must be 'performance', 'mixed' or None, got {pr!r}.")
            object.__setattr__(self, "preset", pr.lower())
        if not isinstance(self.fast_bias_correction, bool):
            raise ConfigError(f"options['fast_bias_correction'] must be True or False, got {self.fast_bias_correction!r}.")
        if not isinstance(self.calibration_augment, str) or not self.calibration_augment:
            raise ConfigError(
                "options['calibration_augment'] must be a registered augmentation name (e.g. the ranked one, "
                f"rank_augmentations(...).best.name) or 'none', got {self.calibration_augment!r}.")
