"""Frozen, validated configuration objects. Invalid values fail in ``__post_init__`` with a message
that says which value to pass instead."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["QuantConfig", "DEFAULT_METRIC"]

#: The score ``rank``, ``distill --augment auto`` and ``run`` use unless told otherwise: the teacher's
#: cross-entropy on the augmented data. Measured (docs/results.md, "The paper's recipe"): on CIFAR-10 it
#: orders 8 candidates as 40 W4A4 students come out (Spearman ρ = +0.88; the paper's ``cmi`` −0.24, its pick
#: 1.38 points below the best), and on digits ρ = +0.98. ``cmi`` stays available by name.
DEFAULT_METRIC = "teacher-ce"


def _check_bits(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer number of bits (e.g. 4), got {value!r}")
    if not 1 <= value <= 16:
        raise ConfigError(f"{name}={value} is out of range; use 1..16 (backends narrow this further, e.g. 2..8)")


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """How to quantize a student.

    ``weight_bits``/``act_bits``: integer bit widths (each backend checks its own range).
    ``per_channel``: per-output-channel weight scales (recommended below 4 bits).
    ``calib_batches``: batches used to set activation ranges before QAT.
    ``layer_bits``: per-layer overrides, module-path glob patterns to bits (``{"fc": 8, "layer1.*": "W2A4",
    "stem.0": {"weight": 8, "act": 8}}``); later patterns win (docs/models.md, "Bit plans").
    ``first_last``: the weight bits of the network's first and last weight layers (and, on backends that
    quantize each layer's input, their input activations), 8 by default as in low-bit recipes; ``None``
    quantizes them like every other layer. A student file or checkpoint written before the field existed
    reads back as ``None`` (what it was trained with).
    ``options``: backend-specific extras: an instance of the backend's options dataclass (e.g.
    ``daqakd_brevitas.BrevitasOptions(float_layers=("SiLU",))``) or a plain dict of its fields, which
    the core converts and checks (documented in docs/backends/<name>.md).
    """

    weight_bits: int = 4
    act_bits: int = 4
    per_channel: bool = True
    calib_batches: int = 8
    options: Any = field(default_factory=dict)
    layer_bits: Mapping[str, Any] = field(default_factory=dict)
    first_last: int | None = 8

    def __post_init__(self) -> None:
        _check_bits("weight_bits", self.weight_bits)
        _check_bits("act_bits", self.act_bits)
        if isinstance(self.calib_batches, bool) or not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise ConfigError(f"calib_batches must be a positive integer, got {self.calib_batches!r}")
        if self.first_last == 0:
            object.__setattr__(self, "first_last", None)  # 0 reads as "off", like None
        if self.first_last is not None:
            _check_bits("first_last", self.first_last)
        from .bitplan import normalize_layer_bits

        object.__setattr__(self, "layer_bits", normalize_layer_bits(self.layer_bits))
        opts = self.options
        if opts is not None and not isinstance(opts, Mapping) and not (
                dataclasses.is_dataclass(opts) and not isinstance(opts, type)):
            raise ConfigError(
                f"options must be a dict of backend options or the backend's options dataclass, got "
                f"{type(opts).__name__}; e.g. QuantConfig(options={{'float_layers': ['SiLU']}})."
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON- and ``weights_only``-safe form (options as a plain dict), for student files and reports."""
        opts = self.options
        if dataclasses.is_dataclass(opts) and not isinstance(opts, type):
            opts = dataclasses.asdict(opts)
        return {"weight_bits": self.weight_bits, "act_bits": self.act_bits, "per_channel": self.per_channel,
                "calib_batches": self.calib_batches, "options": _plain(dict(opts or {})),
                "layer_bits": _plain(dict(self.layer_bits)), "first_last": self.first_last}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuantConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw.setdefault("first_last", None)  # written before the convention: first and last were uniform
        return cls(**kw)

    @property
    def tag(self) -> str:
        return f"W{self.weight_bits}A{self.act_bits}"

    @property
    def uniform(self) -> bool:
        """No per-layer widths: neither overrides nor the first/last convention."""
        return not self.layer_bits and not self.first_last


def _plain(v: Any) -> Any:
    """Tuples to lists, recursively (``weights_only`` files and JSON hold lists)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
