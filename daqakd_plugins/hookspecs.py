"""THE contract between daqakd's core and its plugins.

Every hook is prefixed ``daqakd_``, takes keyword arguments, and is documented here and in
docs/hooks.md (a test fails if one is missing there). Built-in features are plugins too: they
implement these same hooks in :mod:`daqakd_plugins.builtin`.

Registration hooks receive a ``register`` callback; the core rejects duplicate names with an error
naming both plugins. Backend hooks take one request object and dispatch on ``request.backend``: an
adapter returns ``None`` for a backend that is not its own, and the first non-``None`` answer wins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from torch import nn

    from .contracts import (
        Augmentation,
        BackendInfo,
        CalibrateRequest,
        ExportedModel,
        ExportRequest,
        LossComponent,
        LossContext,
        LossPreset,
        LossResult,
        Metric,
        QuantizeRequest,
    )

PROJECT = "daqakd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------------
# augmentation ranking
# --------------------------------------------------------------------------------------------------
@hookspec
def daqakd_register_augmentations(register: Callable[[Augmentation], None]) -> None:
    """Register candidate data augmentations.

    :param register: call ``register(Augmentation(name=..., fn=...))`` once per candidate. Names are
        stable identifiers (used on the command line and in reports) and must be unique across plugins.

    Called once per plugin-manager load; the result is cached by :func:`daqakd_plugins.get_augmentations`.
    """


@hookspec
def daqakd_register_metrics(register: Callable[[Metric], None]) -> None:
    """Register augmentation-ranking metrics (e.g. the paper's ``cmi`` and the ``tstddev`` baseline).

    :param register: call ``register(Metric(name=..., create=...))``; ``create(num_classes, **params)``
        returns an accumulator with ``update(MetricBatch)`` and ``result() -> MetricResult``.
    """


# --------------------------------------------------------------------------------------------------
# knowledge-distillation losses
# --------------------------------------------------------------------------------------------------
@hookspec
def daqakd_register_losses(register: Callable[[LossComponent | LossPreset], None]) -> None:
    """Register KD loss components (``LossComponent``) and named recipes of them (``LossPreset``).

    :param register: call ``register(obj)`` with a component or a preset; names share one namespace
        per kind and must be unique.
    """


@hookspec(firstresult=True)
def daqakd_compute_loss(ctx: LossContext) -> LossResult | None:
    """Compute the per-step loss from ``ctx.terms``.

    The built-in implementation (``trylast``) evaluates every term of the recipe and returns a
    :class:`LossResult` of weighted terms. Plugins stack around it with ``@hookimpl(wrapper=True)``::

        @hookimpl(wrapper=True)
        def daqakd_compute_loss(ctx):
            result = yield
            result.terms["my_reg"] = 0.1 * my_reg(ctx.student)
            return result

    :param ctx: the step's logits, targets, models and the recipe's terms.
    :return: the weighted terms; stops at the first non-``None`` result.
    """


# --------------------------------------------------------------------------------------------------
# quantization backends
# --------------------------------------------------------------------------------------------------
@hookspec
def daqakd_register_backends(register: Callable[[BackendInfo], None]) -> None:
    """Describe a quantization backend this plugin adapts (name, import name, install command, bit range).

    Must not import the backend: ``daqakd plugins`` checks availability separately.
    """


@hookspec(firstresult=True)
def daqakd_quantize(request: QuantizeRequest) -> nn.Module | None:
    """Build a QAT student from a full-precision model for ``request.backend``.

    :param request: backend name, FP model (never modified in place), :class:`QuantConfig`, example
        input and optional calibration data.
    :return: the quantized student, or ``None`` when ``request.backend`` is not this plugin's.
        Stops at the first non-``None`` result.
    """


@hookspec(firstresult=True)
def daqakd_calibrate(request: CalibrateRequest) -> nn.Module | None:
    """Set the student's quantizer ranges from ``request.data`` (batches of images).

    :return: the calibrated model (usually the same object), or ``None`` when the backend is not
        this plugin's. Stops at the first non-``None`` result.
    """


@hookspec(firstresult=True)
def daqakd_export(request: ExportRequest) -> list[ExportedModel] | None:
    """Export a trained student to deployable files and return a runnable handle for each.

    :return: one :class:`ExportedModel` per format written (each with ``predict``), or ``None`` when
        the backend is not this plugin's. Stops at the first non-``None`` result.
    """


@hookspec
def daqakd_count_quantizers(model: nn.Module) -> int | None:
    """Count the fake-quantizers this plugin's backend inserted into ``model``.

    Implementations must not import their backend just to answer: return ``None`` when the backend
    module is not already in ``sys.modules``. The core sums all answers; zero means "plain KD, not QAT".
    """
