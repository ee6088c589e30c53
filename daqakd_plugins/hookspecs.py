"""THE contract between daqakd's core and its plugins.

Every hook is prefixed ``daqakd_``, takes keyword arguments, and is documented here and in
docs/hooks.md (a test fails if one is missing there). Built-in features are plugins too: they
implement these same hooks in :mod:`daqakd_plugins.builtin`.

Registration hooks receive a ``register`` callback; the core rejects duplicate names with an error
naming both plugins. Backend hooks take one request object and are called on the plugin that
registered the backend, and on no other (docs/adapters.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .contracts import (
        Architecture,
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
        QuantizerInfo,
        RestoreRequest,
        SaveRequest,
        SearchSpace,
    )
    from .datafree.contracts import ImageGenerator

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
def daqakd_register_search_spaces(register: Callable[[SearchSpace], None]) -> None:
    """Register augmentation policy search spaces for ``daqakd search`` and ``--augment search:<space>``.

    :param register: call ``register(SearchSpace(name=..., policy=...))``; ``policy(seed)`` returns the
        :class:`Augmentation` numbered ``seed``, a pure function of the seed (a policy is stored by its name
        ``search:<space>:<seed>`` and re-created from it). Names must be unique across plugins.
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
# data-free distillation
# --------------------------------------------------------------------------------------------------
@hookspec
def daqakd_register_generators(register: Callable[[ImageGenerator], None]) -> None:
    """Register image generators for data-free distillation (``daqakd distill --data-free``).

    :param register: call ``register(ImageGenerator(name=..., build=...))``; ``build(GeneratorRequest)``
        returns a module mapping ``z [B, latent_dim]`` to images ``[B, C, H, W]`` in ``[0, 1]``. Names are
        chosen with ``--generator-option name=NAME`` and must be unique across plugins.
    """


# --------------------------------------------------------------------------------------------------
# architectures
# --------------------------------------------------------------------------------------------------
@hookspec
def daqakd_register_architectures(register: Callable[[Architecture], None]) -> None:
    """Register model architectures (or families, by a ``"prefix:"`` name) that daqakd can build from
    the architecture spec stored in teacher and student files.

    :param register: call ``register(Architecture(name=..., build=...))``; names must be unique. A
        spec naming ``package.module:factory`` needs no registration: the core imports the factory.
    """


# --------------------------------------------------------------------------------------------------
# quantization backends
# --------------------------------------------------------------------------------------------------
@hookspec
def daqakd_register_backends(register: Callable[[BackendInfo], None]) -> None:
    """Describe a quantization backend this plugin adapts (name, import name, install command, bit
    range, options dataclass).

    The plugin that registers a backend owns it: the core calls the backend hooks below on that
    plugin alone, so an adapter never checks ``request.backend``. Must not import the backend:
    ``daqakd plugins`` checks availability separately.
    """


@hookspec(firstresult=True)
def daqakd_quantize(request: QuantizeRequest) -> nn.Module | None:
    """Build a QAT student from a full-precision model (called on the backend's owner only).

    :param request: backend name, FP model (never modified in place), :class:`QuantConfig` whose bit
        widths the core has already checked against the registered range, the typed ``options``,
        an example input and optional calibration data.
    :return: the quantized student.
    """


@hookspec(firstresult=True)
def daqakd_calibrate(request: CalibrateRequest) -> nn.Module | None:
    """Set the student's quantizer ranges from ``request.data`` (batches of images; owner only).

    Calibrating twice on the same data must give the same ranges (re-estimated, not accumulated).

    :return: the calibrated model (usually the same object).
    """


@hookspec(firstresult=True)
def daqakd_export(request: ExportRequest) -> list[ExportedModel] | None:
    """Export a trained student to deployable files and return a runnable handle for each (owner only).

    ONNX files meant for onnxruntime must go through
    :func:`daqakd_plugins.onnx_qdq.prepare_for_onnxruntime`; the core refuses one that still pairs
    uint8 activations with full-range int8 weights (wrong on CPUs without VNNI).

    :return: one :class:`ExportedModel` per format written (each with ``predict``).
    """


@hookspec(firstresult=True)
def daqakd_save_student(request: SaveRequest) -> dict[str, Any] | None:
    """Turn a trained student into a ``weights_only``-safe payload (owner only).

    Optional: without it the core saves ``model.state_dict()`` and restores by quantizing a fresh FP
    model and loading that state. Implement it when that is not enough (NNCF's ``get_config``,
    Model Optimizer's ``mto`` state, quantizers that must stay shared).

    :return: a dict of tensors, numbers, strings, lists and dicts.
    """


@hookspec(firstresult=True)
def daqakd_restore_student(request: RestoreRequest) -> nn.Module | None:
    """Rebuild a student from a fresh FP model and a payload of :func:`daqakd_save_student` (owner only).

    The restored student must compute exactly what the saved one computed.

    :return: the restored student (in eval mode).
    """


@hookspec
def daqakd_describe_quantizers(model: nn.Module) -> list[QuantizerInfo] | None:
    """List the fake-quantizers this plugin's backend inserted into ``model`` (name, role, bits).

    Called on every plugin (a model does not say which backend made it). Implementations must not
    import their backend just to answer: return ``None`` when the backend module is not already in
    ``sys.modules``. The core counts the answers; zero means "plain KD, not QAT".
    """


@hookspec(firstresult=True)
def daqakd_unwrap_output(output: Any) -> torch.Tensor | None:
    """Turn a model output that is not a tensor into the logits tensor (e.g. Brevitas' ``QuantTensor``).

    Called only when a forward returned something other than a ``torch.Tensor`` (never on the hot
    path of plain tensors). Return ``None`` for outputs that are not this backend's.
    """
