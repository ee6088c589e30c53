"""Built-in KD loss components and presets (METRIC.md section 3).

They are registered through ``daqakd_register_losses`` exactly like a third-party plugin's, and the
built-in ``daqakd_compute_loss`` is ``trylast`` so that ``wrapper=True`` implementations from other
plugins stack around it (add, drop or re-weight terms) without any change here.

Every component is *unweighted*: ``fn(ctx, **params) -> scalar``; the recipe's :class:`LossTerm`
carries the weight. Temperature scaling (τ²) is part of the KD components because it is part of
Hinton's definition (it keeps soft-target gradients on the same scale for any τ).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..contracts import LossComponent, LossContext, LossPreset, LossResult, LossTerm
from ..errors import ConfigError, ModelError, UnknownNameError
from ..hookspecs import hookimpl
from ..projections import make_projection, projection_key

__all__ = [
    "ce",
    "kd",
    "hard_kd",
    "feature",
    "rkd_distance",
    "rkd_angle",
    "multi_teacher",
    "dual_view",
    "make_projection",
    "projection_key",
    "COMPONENTS",
    "PRESETS",
]


def _tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise ConfigError(f"the KD temperature tau must be a positive number (the paper uses 4), got {tau!r}")
    return float(tau)


def _need_teacher(ctx: LossContext, name: str) -> torch.Tensor:
    if ctx.teacher_logits is None:
        raise ModelError(
            f"loss term {name!r} needs teacher logits but this step has none; use a Distiller with a "
            "teacher, or a label-only loss such as loss='ce'."
        )
    return ctx.teacher_logits


def _kl_teacher_student(z_s: torch.Tensor, z_t: torch.Tensor, tau: float) -> torch.Tensor:
    """τ²·KL(softmax(z_T/τ) ‖ softmax(z_S/τ)), batch mean; log-space on both sides for stability."""
    log_ps = F.log_softmax(z_s / tau, dim=1)
    log_pt = F.log_softmax(z_t.to(log_ps.dtype) / tau, dim=1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * (tau * tau)


# --------------------------------------------------------------------------------------------------
# logit losses
# --------------------------------------------------------------------------------------------------
def ce(ctx: LossContext) -> torch.Tensor:
    """Cross-entropy with the (possibly soft, after CutMix/MixUp) label distributions.

    When the batch still has its hard labels (no label-mixing augmentation) the index form is used:
    same value, slightly cheaper.
    """
    if ctx.labels is not None:
        return F.cross_entropy(ctx.student_logits, ctx.labels)
    return F.cross_entropy(ctx.student_logits, ctx.targets.to(ctx.student_logits.dtype))


def kd(ctx: LossContext, tau: float = 4.0) -> torch.Tensor:
    """Hinton / SQAKD soft-target term: τ²·KL(p_T^τ ‖ p_S^τ), batchmean (τ = 4 by default)."""
    return _kl_teacher_student(ctx.student_logits, _need_teacher(ctx, "kd"), _tau(tau))


def hard_kd(ctx: LossContext) -> torch.Tensor:
    """Hard-target KD: cross-entropy against the teacher's arg-max (no labels needed)."""
    return F.cross_entropy(ctx.student_logits, _need_teacher(ctx, "hard_kd").argmax(dim=1))


def multi_teacher(
    ctx: LossContext, tau: float = 4.0, weights: Sequence[float] | None = None, mode: str = "average"
) -> torch.Tensor:
    """Several teachers: ``average`` = τ²·KL(Σ_k w_k p_k^τ ‖ p_S^τ); ``sum`` = Σ_k w_k τ²·KL(p_k^τ ‖ p_S^τ).

    The teachers are the Distiller's ``teacher`` followed by its ``teachers=[...]``; ``weights``
    (one per teacher, normalised to sum 1) default to uniform.
    """
    tau = _tau(tau)
    logits = [_need_teacher(ctx, "multi_teacher"), *ctx.extra_teacher_logits]
    if weights is None:
        w = [1.0 / len(logits)] * len(logits)
    else:
        if len(weights) != len(logits):
            raise ConfigError(
                f"multi_teacher got {len(weights)} weights for {len(logits)} teachers (the main teacher plus "
                f"teachers=[...]); pass one weight per teacher."
            )
        if any(float(x) < 0 for x in weights) or sum(float(x) for x in weights) <= 0:
            raise ConfigError(f"multi_teacher weights must be non-negative and not all zero, got {list(weights)}")
        s = sum(float(x) for x in weights)
        w = [float(x) / s for x in weights]
    if mode == "sum":
        out = w[0] * _kl_teacher_student(ctx.student_logits, logits[0], tau)
        for wk, zk in zip(w[1:], logits[1:]):
            out = out + wk * _kl_teacher_student(ctx.student_logits, zk, tau)
        return out
    if mode != "average":
        raise ConfigError(f"multi_teacher mode must be 'average' or 'sum', got {mode!r}")
    log_ps = F.log_softmax(ctx.student_logits / tau, dim=1)
    p_mix = sum(wk * F.softmax(zk.to(log_ps.dtype) / tau, dim=1) for wk, zk in zip(w, logits))
    assert isinstance(p_mix, torch.Tensor)
    log_pmix = torch.log(p_mix.clamp_min(1e-12))
    return F.kl_div(log_ps, log_pmix, reduction="batchmean", log_target=True) * (tau * tau)


def dual_view(ctx: LossContext, tau: float = 1.0) -> torch.Tensor:
    """Consistency between views: τ²·KL(p_T(a₁x) ‖ p_S(a₂x)).

    The maths is the KD term; what differs is the data: its component is registered with
    ``two_views=True``, so a Distiller whose recipe contains it feeds the teacher and the student two
    independent augmented views (``ctx.teacher_inputs`` and ``ctx.inputs``). The CE of the recipe uses
    the student's view.
    """
    return _kl_teacher_student(ctx.student_logits, _need_teacher(ctx, "dual_view"), _tau(tau))


# --------------------------------------------------------------------------------------------------
# feature and relation losses
# --------------------------------------------------------------------------------------------------
def _feature_pairs(ctx: LossContext, layers: Sequence[str] | None) -> list[tuple[str, str]]:
    pairs: Mapping[str, str] = ctx.feature_pairs
    if not pairs:
        pairs = {k: k for k in ctx.student_features if k in ctx.teacher_features}
    if not pairs:
        raise ConfigError(
            "the 'feature' loss needs named layers: Distiller(..., features={'student.layer': 'teacher.layer'}) "
            "or features=['layer'] when the names match."
        )
    sel = list(pairs) if layers is None else list(layers)
    missing = [s for s in sel if s not in pairs]
    if missing:
        raise ConfigError(f"feature layers {missing} are not among the Distiller's features {list(pairs)}")
    return [(s, pairs[s]) for s in sel]


def feature(ctx: LossContext, layers: Sequence[str] | None = None) -> torch.Tensor:
    """Hint loss: mean over layer pairs of MSE(proj(f_S), f_T); ``proj`` is learned when shapes differ.

    Projections live in ``ctx.projections`` (the Distiller's ModuleDict, whose parameters
    ``Distiller.parameters()`` hands to the optimizer). Created on first use if missing.
    """
    projs: nn.ModuleDict | None = ctx.projections
    total: torch.Tensor | None = None
    pairs = _feature_pairs(ctx, layers)
    for s_name, t_name in pairs:
        try:
            fs, ft = ctx.student_features[s_name], ctx.teacher_features[t_name]
        except KeyError as exc:
            raise ModelError(
                f"feature {exc.args[0]!r} was not captured this step; the layer did not run in forward()."
            ) from None
        key = projection_key(s_name, t_name)
        if projs is not None and key in projs:
            fs = projs[key](fs)
        elif fs.shape[1:] != ft.shape[1:]:
            proj = make_projection(fs, ft)
            if projs is None:
                raise ConfigError(
                    f"student layer {s_name!r} {tuple(fs.shape)} and teacher layer {t_name!r} {tuple(ft.shape)} "
                    "differ and no projection store was given; use a Distiller (it owns the projections)."
                )
            assert proj is not None
            projs[key] = proj
            fs = proj(fs)
        term = F.mse_loss(fs, ft.to(fs.dtype))
        total = term if total is None else total + term
    assert total is not None
    return total / len(pairs)


def _embeddings(ctx: LossContext, layer: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    if layer is None:
        return ctx.student_logits, _need_teacher(ctx, "rkd")
    (s_name, t_name), = _feature_pairs(ctx, [layer])
    return ctx.student_features[s_name], ctx.teacher_features[t_name]


def _pdist(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.t()).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def rkd_distance(ctx: LossContext, layer: str | None = None) -> torch.Tensor:
    """RKD distance-wise loss (Park et al. 2019): smooth-L1 between the batch's pairwise-distance
    matrices, each normalised by its mean off-diagonal distance. Embeddings: logits, or a named
    feature pair (``layer``); student and teacher widths may differ."""
    s, t = _embeddings(ctx, layer)
    s, t = s.flatten(1), t.flatten(1).to(s.dtype)
    if len(s) < 2:
        return s.sum() * 0
    with torch.no_grad():
        td = _pdist(t)
        td = td / td[td > 0].mean().clamp_min(1e-12)
    sd = _pdist(s)
    sd = sd / sd[sd > 0].mean().clamp_min(1e-12)
    return F.smooth_l1_loss(sd, td)


def rkd_angle(ctx: LossContext, layer: str | None = None) -> torch.Tensor:
    """RKD angle-wise loss: smooth-L1 between cosines of the angles formed by every triplet."""
    s, t = _embeddings(ctx, layer)
    s, t = s.flatten(1), t.flatten(1).to(s.dtype)
    if len(s) < 3:
        return s.sum() * 0
    with torch.no_grad():
        td = F.normalize(t.unsqueeze(0) - t.unsqueeze(1), p=2, dim=2)
        ta = torch.bmm(td, td.transpose(1, 2)).flatten()
    sd = F.normalize(s.unsqueeze(0) - s.unsqueeze(1), p=2, dim=2)
    sa = torch.bmm(sd, sd.transpose(1, 2)).flatten()
    return F.smooth_l1_loss(sa, ta)


# --------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------
COMPONENTS: tuple[LossComponent, ...] = (
    LossComponent(name="ce", fn=ce, needs_teacher=False, description="cross-entropy with the (soft) labels"),
    LossComponent(name="kd", fn=kd, description="Hinton soft targets: tau^2 KL(p_T || p_S), tau=4"),
    LossComponent(name="hard_kd", fn=hard_kd, description="cross-entropy against the teacher's arg-max"),
    LossComponent(name="feature", fn=feature, description="hint MSE on named layers (learned 1x1 projection)",
                  needs_features=True),
    LossComponent(name="rkd_distance", fn=rkd_distance, description="relational KD, distance-wise",
                  feature_param="layer"),
    LossComponent(name="rkd_angle", fn=rkd_angle, description="relational KD, angle-wise", feature_param="layer"),
    LossComponent(name="multi_teacher", fn=multi_teacher, description="weighted ensemble of teachers",
                  needs_teachers=True),
    LossComponent(name="dual_view", fn=dual_view, description="teacher and student see different views",
                  two_views=True),
)

PRESETS: tuple[LossPreset, ...] = (
    LossPreset(
        name="paper",
        terms=(LossTerm(component="ce", weight=1.0), LossTerm(component="kd", weight=2.0, params={"tau": 4.0})),
        description="the DA-QAKD paper's recipe: 1*CE + 2*tau^2*KL, tau=4",
    ),
    LossPreset(
        name="sqakd",
        terms=(LossTerm(component="kd", weight=1.0, params={"tau": 4.0}),),
        description="SQAKD: label-free, tau^2*KL only, tau=4",
    ),
    LossPreset(name="ce", terms=(LossTerm(component="ce"),), description="plain QAT: CE only, no teacher"),
    LossPreset(
        name="mixed",
        terms=(LossTerm(component="kd", weight=1.0, params={"tau": 4.0}), LossTerm(component="hard_kd", weight=1.0)),
        description="soft + hard teacher targets (label-free): tau^2*KL + CE(argmax teacher)",
    ),
    LossPreset(
        name="dual_view",
        terms=(LossTerm(component="ce"), LossTerm(component="dual_view", weight=1.0, params={"tau": 1.0})),
        description="CE on the student's view + KL(p_T(view 1) || p_S(view 2))",
    ),
)


@hookimpl
def daqakd_register_losses(register: Callable[[LossComponent | LossPreset], None]) -> None:
    for comp in COMPONENTS:
        register(comp)
    for preset in PRESETS:
        register(preset)


@hookimpl(trylast=True)
def daqakd_compute_loss(ctx: LossContext) -> LossResult:
    """Evaluate every term of the recipe; terms of weight 0 are skipped (they cost nothing).

    ``ctx.components`` (set by the Distiller) saves a registry look-up per step; without it the
    registry is consulted, so the hook also works when called directly.
    """
    comps: Mapping[str, LossComponent] | None = ctx.components
    if comps is None:
        from ..plugins import get_loss_components

        comps = get_loss_components()
    terms: dict[str, torch.Tensor] = {}
    for term in ctx.terms:
        if term.weight == 0:
            continue
        comp = comps.get(term.component)
        if comp is None:
            raise UnknownNameError("loss component", term.component, list(comps))
        if comp.needs_teacher and ctx.teacher_logits is None:
            raise ModelError(f"loss term {term.key!r} needs a teacher, but this step ran none.")
        value: Any = comp.fn(ctx, **dict(term.params))
        terms[term.key] = value if term.weight == 1 else term.weight * value
    return LossResult(terms=terms)
