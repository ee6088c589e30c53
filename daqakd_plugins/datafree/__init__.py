"""Data-free DA-QAKD (METRIC.md section 4): a generator replaces the training data.

``daqakd distill --data-free --teacher T.pt`` (or ``run_distill(DistillConfig(data_free=True, ...))``) trains
a backend-quantized student on images a generator synthesises, optimised jointly with it; the training
split is never read. Generators are plugins (``daqakd_register_generators``); the built-in is ``dcgan``.
See docs/datafree.md.
"""

from __future__ import annotations

from typing import Any

from .contracts import GeneratorRequest, ImageGenerator
from .options import GeneratorOptions, resolve_generator_options

__all__ = ["GeneratorOptions", "GeneratorRequest", "ImageGenerator", "resolve_generator_options", "run_datafree"]


def run_datafree(cfg: Any) -> dict[str, Any]:
    """Run (or resume) a data-free distillation: :func:`~daqakd_plugins.distill.run_distill` with
    ``DistillConfig(data_free=True)`` (the run engine with the generator batch source)."""
    from ..distill.pipeline import run_distill
    from ..errors import ConfigError

    if not cfg.data_free:
        raise ConfigError("run_datafree needs DistillConfig(data_free=True); run_distill runs the data-driven mode.")
    return run_distill(cfg)
