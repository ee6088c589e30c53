"""``--generator-option KEY=VALUE``: the data-free run's settings, checked before any work.

Defaults were chosen on digits with the default teacher (docs/datafree.md, "Choosing the defaults");
every one of them can be changed from the command line or ``DistillConfig(generator_options={...})``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["GeneratorOptions", "resolve_generator_options"]


@dataclass(frozen=True, kw_only=True)
class GeneratorOptions:
    """The generator and the alternating schedule (METRIC.md section 4).

    One *iteration* is ``g_steps`` generator updates then ``s_steps`` student updates, each on a fresh
    batch ``G(z)``, ``z ~ N(0, I)``; an epoch is ``iterations`` of them. The generator minimises
    ``-adv_weight * KL(p_T || p_S) + bn_weight * L_BN + balance_weight * (-H(mean_batch p_T))``; the
    student minimises the run's KD loss chain (``--loss``) on the generated batch, the teacher's soft
    prediction as the target. ``warmup_steps`` generator updates without the adversarial term come
    first: the student is still the teacher's quantized copy, and calibrating it (and ranking the
    augmentations) on the generator's first, random output would calibrate on noise. ``g_steps=0``: the
    generator is frozen after the warm-up (a bank of images produced once, as ZeroQ/IntraQ do).

    ``bank_size``, ``ce_weight``, ``tv_weight``: the ``bnbank`` generator's (images in the bank; the weight of
    the teacher's cross-entropy to each image's assigned class; of the total-variation image prior).
    """

    name: str = "dcgan"
    latent_dim: int = 64
    width: int = 64
    g_lr: float = 1e-3
    g_steps: int = 1
    s_steps: int = 5
    iterations: int = 50
    adv_weight: float = 1.0
    bn_weight: float = 1.0
    balance_weight: float = 1.0
    warmup_steps: int = 200
    rank_samples: int = 1024
    bank_size: int = 512
    ce_weight: float = 1.0
    tv_weight: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int):
                lo = 0 if f.name in ("warmup_steps", "g_steps") else 1
                if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                    raise ConfigError(f"generator option {f.name} must be an integer ≥ {lo}, got {v!r} "
                                      f"(e.g. --generator-option {f.name}={f.default}).")
            elif f.type in ("float", float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise ConfigError(f"generator option {f.name} must be a finite number ≥ 0, got {v!r} "
                                      f"(e.g. --generator-option {f.name}={f.default}).")
                object.__setattr__(self, f.name, float(v))
        if self.g_lr <= 0:
            raise ConfigError(f"generator option g_lr must be > 0, got {self.g_lr!r} (default {1e-3}).")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"generator option name must be a registered generator's name, got {self.name!r}.")
        from ..plugins import get_generators

        gens = get_generators()
        if self.name not in gens:
            from ..errors import UnknownNameError

            raise UnknownNameError("generator", self.name, list(gens),
                                   "Pass --generator-option name=NAME; register more with the "
                                   "daqakd_register_generators hook (docs/hooks.md).")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def known_options() -> list[str]:
    return [f.name for f in dataclasses.fields(GeneratorOptions)]


def resolve_generator_options(options: Mapping[str, Any] | GeneratorOptions | None) -> GeneratorOptions:
    """``generator_options`` as :class:`GeneratorOptions`: unknown keys and bad values raise
    :class:`ConfigError` naming every known option (with its default)."""
    if isinstance(options, GeneratorOptions):
        return options
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"generator options must be a dict of KEY: VALUE, got {type(options).__name__}.")
    raw = dict(options or {})
    defaults = GeneratorOptions.__dataclass_fields__
    unknown = sorted(k for k in raw if k not in defaults)
    if unknown:
        listed = ", ".join(f"{f.name} (default {f.default!r})" for f in dataclasses.fields(GeneratorOptions))
        raise ConfigError(f"unknown generator option(s) {unknown}; known: {listed}. See docs/datafree.md.")
    from ..plugins import get_generators

    name = str(raw.get("name", GeneratorOptions.name))
    spec = get_generators().get(name)  # an unknown name is refused by GeneratorOptions, listing the known ones
    own = dict(spec.defaults) if spec is not None else {}
    bad = sorted(k for k in own if k not in defaults or k == "name")
    if bad:
        raise ConfigError(f"generator {name!r} declares defaults for unknown option(s) {bad}; known: {known_options()}.")
    return GeneratorOptions(**{**own, **raw})  # the user's options over the generator's own defaults
