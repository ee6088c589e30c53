"""Frozen, validated configuration objects. Invalid values fail in ``__post_init__`` with a message
that says which value to pass instead."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["QuantConfig"]


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
    ``options``: backend-specific extras (documented in docs/backends/<name>.md).
    """

    weight_bits: int = 4
    act_bits: int = 4
    per_channel: bool = True
    calib_batches: int = 8
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_bits("weight_bits", self.weight_bits)
        _check_bits("act_bits", self.act_bits)
        if isinstance(self.calib_batches, bool) or not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise ConfigError(f"calib_batches must be a positive integer, got {self.calib_batches!r}")

    @property
    def tag(self) -> str:
        return f"W{self.weight_bits}A{self.act_bits}"
