"""daqakd plugin: nncf (OpenVINO NNCF 3.x quantization-aware training, deployed with OpenVINO).

What it does (docs/backends/nncf.md):

* ``daqakd_quantize`` runs NNCF's own post-training quantization, ``nncf.quantize(model,
  nncf.Dataset(batches), ...)``, on a copy of the float model (a top-level ``nn.Sequential`` is wrapped
  first), with fast bias correction off (QAT learns the biases; it hurt PTQ here), NNCF's ignored scope
  and per-layer bit overrides from :class:`~daqakd_nncf.options.NNCFOptions`. 8 bits use NNCF's ``ANY``
  hardware configuration, 4 bits its ``NPU`` one (the only one that defines 4-bit quantizers). The
  result is what NNCF's own QAT recipe trains: the same model class with fake quantizers hooked in.
* ``daqakd_calibrate`` re-runs ``nncf.quantize`` on the student's current float weights and copies the
  resulting ranges into the student in place (re-estimated, never accumulated).
* ``daqakd_save_student`` / ``daqakd_restore_student``: ``nncf.torch.get_config`` (as JSON) + the state
  dict, and ``nncf.torch.load_from_config`` on a fresh float model: NNCF's documented way.
* ``daqakd_export`` writes OpenVINO IR (``ov.convert_model`` + ``ov.save_model``, run by
  ``openvino``; 8 and 4 bits) and standard QDQ ONNX (8 bits, run by onnxruntime).

NNCF and OpenVINO are imported lazily, inside the hooks that need them, never at import time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daqakd_plugins import kit
from daqakd_plugins.kit import (
    BackendError,
    BackendInfo,
    BackendUnavailableError,
    ConfigError,
    DataError,
    ExportedModel,
    ExportError,
    ModelError,
    QuantizerInfo,
    hookimpl,
    preparation_notes,
    prepare_for_onnxruntime,
)

from .options import SUPPORTED_BITS, NNCFOptions

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import torch
    from torch import nn

    from daqakd_plugins.kit import (
        CalibrateRequest,
        ExportRequest,
        LossComponent,
        LossPreset,
        QuantConfig,
        QuantizeRequest,
        RestoreRequest,
        SaveRequest,
    )

NAME = "nncf"
INSTALL = 'pip install "daqakd[nncf]"'
FORMATS = ("openvino", "onnx-qdq")
FORMAT_ALIASES = {"openvino": "openvino", "ov": "openvino", "ir": "openvino", "onnx-qdq": "onnx-qdq",
                  "onnx": "onnx-qdq", "qdq": "onnx-qdq"}
PAYLOAD_FORMAT = "daqakd-nncf/1"
BITS_NOTE = (
    "NNCF 3's hardware configurations define 8-bit quantizers for every target device and 4-bit ones only "
    "for target_device NPU (4-bit weights with 4- or 8-bit activations), so W8A8, W4A4 and W4A8 work; "
    "nncf.quantize refuses 5-7 bits and W8A4 ('incompatible with HW capabilities'), and no configuration "
    "defines activations below 4 bits."
)

log = logging.getLogger("daqakd.nncf")


class _DropCpuCudaHomeNotice(logging.Filter):
    """``import nncf`` imports torch.utils.cpp_extension, which logs "No CUDA runtime is found" on every
    CPU-only machine (the core imports nncf to report availability): drop only that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No CUDA runtime is found" not in record.getMessage()


logging.getLogger("torch.utils.cpp_extension").addFilter(_DropCpuCudaHomeNotice())


# --------------------------------------------------------------------------------------------------
# registration, losses, counting (must not import nncf)
# --------------------------------------------------------------------------------------------------
@hookimpl
def daqakd_register_backends(register: Callable[[BackendInfo], None]) -> None:
    register(
        BackendInfo(
            name=NAME,
            module="nncf",
            distribution="nncf",
            install=INSTALL,
            weight_bits=(4, 8),
            act_bits=(4, 8),
            bits_note=BITS_NOTE,
            bit_pairs=tuple(SUPPORTED_BITS),
            export_formats=FORMATS,
            options_type=NNCFOptions,
            description="OpenVINO NNCF 3.x quantization-aware training, deployed with OpenVINO",
            implemented=True,
            # a layer's weight quantizer and the activation quantizer on its input, at 4 or 8 bits each
            bit_plans=True,
            layer_weight_bits=(4, 8),
            layer_act_bits=True,
        )
    )


@hookimpl
def daqakd_register_losses(register: Callable[[LossComponent | LossPreset], None]) -> None:
    """NNCF 2.x's ``knowledge_distillation`` algorithm under its own names (see losses.py)."""
    from daqakd_plugins.kit import LossComponent, LossPreset, LossTerm

    from .losses import nncf2_mse, nncf2_softmax

    register(LossComponent(name="nncf2_softmax", fn=nncf2_softmax,
                           description="NNCF 2.x KD type softmax: soft-target cross-entropy, T=1"))
    register(LossComponent(name="nncf2_mse", fn=nncf2_mse, description="NNCF 2.x KD type mse: MSE between logits"))
    register(LossPreset(
        name="nncf2_kd_softmax",
        terms=(LossTerm(component="ce"), LossTerm(component="nncf2_softmax", params={"temperature": 1.0, "scale": 1.0})),
        description="NNCF 2.x knowledge_distillation, type softmax: CE + soft-target CE (T=1)",
    ))
    register(LossPreset(
        name="nncf2_kd_mse",
        terms=(LossTerm(component="ce"), LossTerm(component="nncf2_mse", params={"scale": 1.0})),
        description="NNCF 2.x knowledge_distillation, type mse: CE + MSE(logits)",
    ))


@hookimpl
def daqakd_describe_quantizers(model: nn.Module) -> list[QuantizerInfo] | None:
    """NNCF's fake quantizers (``SymmetricQuantizer`` / ``AsymmetricQuantizer`` in the model's hook
    storage) with role ``weight`` or ``activation`` and their bits."""
    if not kit.backend_imported("nncf"):
        return None
    layers = sys.modules.get("nncf.torch.quantization.layers")
    if layers is None:  # nncf imported, its torch quantizers never: no model can hold one
        return []
    out: list[QuantizerInfo] = []
    for name, m in model.named_modules():
        if isinstance(m, layers.BaseQuantizer):
            role = getattr(m, "_daqakd_role", None) or _role_from_hook_name(name)
            out.append(QuantizerInfo(name=name, role=role, bits=int(m.num_bits),
                                     layer=_layer_of_hook(name) if role == "weight" else ""))
    return out


def _layer_of_hook(name: str) -> str:
    """``__nncf_hooks.pre_hooks.layers/0/conv1/conv2d/0__1.0`` → ``layers.0.conv1`` (a weight quantizer's
    layer, as the float model names it: the Sequential wrapper's prefix dropped)."""
    from ._wrap import WRAPPED_PREFIX

    op = name.split("pre_hooks.", 1)[-1].rsplit("__", 1)[0]
    layer = _module_of(op)
    return layer.removeprefix(WRAPPED_PREFIX + ".") if layer != WRAPPED_PREFIX else ""


def _role_from_hook_name(name: str) -> str:
    """For quantizers of a model NNCF made outside daqakd (no recorded role): NNCF hooks weight quantizers
    onto an operation's weight port (``pre_hooks.<op>__1``), activation quantizers onto outputs."""
    parts = name.split(".")
    if len(parts) >= 3 and parts[-3] == "pre_hooks" and not parts[-2].endswith("__0"):
        return "weight"
    return "activation"


# --------------------------------------------------------------------------------------------------
# importing NNCF, its C++ extension, noise
# --------------------------------------------------------------------------------------------------
def _say(msg: str) -> None:
    print(f"daqakd[nncf]: {msg}", file=sys.stderr, flush=True)


def _compiler() -> str | None:
    """The C++ compiler torch's extension builder would use (``$CXX``, else ``c++``), if present."""
    return shutil.which(os.environ.get("CXX", "c++"))


#: what the adapter allows NNCF's first extension load (a compile) when NNCF_EXTENSION_LOAD_TIMEOUT is unset:
#: NNCF's own 60 s is less than the compile takes on a busy 2-core machine (measured: docs/troubleshooting.md)
EXTENSION_BUILD_TIMEOUT_S = 1800


def _lock_file_blocks() -> bool:
    """Whether torch's extension builder takes its build lock as a plain file whose mere existence makes
    every later build wait (``FileBaton``, older torch), so that a killed build's leftover lock blocks
    for ever. The torch pinned here (2.14) holds an OS-level lock instead, which dies with its process."""
    import torch.utils.cpp_extension as cpp

    return hasattr(cpp, "FileBaton")


def _extension_fix(build_dir: Path, var: str) -> str:
    """What to do when NNCF's extension does not load in time: the variable that sets NNCF's limit, the
    build folder (and, with a torch whose lock file blocks, the lock file a killed build leaves)."""
    lock = build_dir / "lock"
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    where = f"$TORCH_EXTENSIONS_DIR={root}" if root else "~/.cache/torch_extensions ($TORCH_EXTENSIONS_DIR moves it)"
    if _lock_file_blocks():
        first = (f"If no other process is compiling it, a killed or interrupted build left its lock file {lock}"
                 f"{' (present now)' if lock.exists() else ''}, which this torch waits for for ever: remove it (or the "
                 f"whole build folder {build_dir}; the cache is under {where}) and run again.")
    else:
        first = (f"The compile (into {build_dir}; the cache is under {where}) was still running, or another process "
                 "was compiling it and held the build lock. If an earlier build was killed half-way, remove that "
                 "build folder to start clean.")
    return (f"{first} On a slow or busy machine give the compile more time: {var}=3600 (seconds; 0 = no limit). "
            "`bash scripts/dev.sh` (or `python -m daqakd_nncf.prebuild`) builds it once during set-up.")


def ensure_extension() -> str:
    """Load NNCF's CPU extension (``quantized_functions_cpu``) now, saying so (once) when it has to be
    compiled (first use on a machine: about 40 s on an idle core, minutes on a busy one; needs a C++
    compiler) instead of stalling silently inside the first forward pass. Unless the user set
    ``NNCF_EXTENSION_LOAD_TIMEOUT``, NNCF's 60 s limit is raised to :data:`EXTENSION_BUILD_TIMEOUT_S` for
    this load. Returns ``"compiled"``, ``"cached"``, ``"loaded"`` or ``"reference"`` (no compiler: NNCF
    falls back to slower pure-torch quantizers, and a warning says how to fix it). A load that still
    times out raises a :class:`BackendError` naming the lock file to remove and the variable to set."""
    from nncf.torch.extensions import EXTENSION_LOAD_TIMEOUT_ENV_VAR, ExtensionLoaderTimeoutException
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPU, QuantizedFunctionsCPULoader
    from nncf.torch.quantization.reference import ReferenceQuantizedFunctions

    if QuantizedFunctionsCPU._loaded_namespace is not None:  # noqa: SLF001 - NNCF's lazy loader state
        return "reference" if QuantizedFunctionsCPU._loaded_namespace is ReferenceQuantizedFunctions else "loaded"  # noqa: SLF001
    build_dir = Path(QuantizedFunctionsCPULoader.get_build_dir())
    cached = any(build_dir.glob("*.so")) or any(build_dir.glob("*.pyd"))
    old = os.environ.get(EXTENSION_LOAD_TIMEOUT_ENV_VAR)
    limit = old if old is not None else str(EXTENSION_BUILD_TIMEOUT_S)
    if not cached:
        if _compiler() is None:
            _say("no C++ compiler found (${CXX} or c++ on PATH): NNCF cannot build its CPU extension "
                 "quantized_functions_cpu and falls back to slower pure-torch fake quantizers. Install one "
                 "(Debian/Ubuntu: apt-get install g++) for the compiled extension.")
        else:
            _say(f"compiling NNCF's CPU extension quantized_functions_cpu into {build_dir} (first use on this "
                 "machine only: about 40 s on an idle core, minutes on a busy one; needs a C++ compiler; "
                 f"{EXTENSION_LOAD_TIMEOUT_ENV_VAR}={limit} s{'' if old is not None else ' allowed'}) ...")
            if (build_dir / "lock").exists() and _lock_file_blocks():
                _say(f"{build_dir / 'lock'} exists: another process is compiling it now (waiting for it), or an "
                     "interrupted build left it behind (then stop and remove that file).")
    t0 = time.perf_counter()
    if old is None:  # NNCF's default 60 s is too short for a first compile on a busy machine
        os.environ[EXTENSION_LOAD_TIMEOUT_ENV_VAR] = str(EXTENSION_BUILD_TIMEOUT_S)
    try:
        with _quiet():
            QuantizedFunctionsCPU.get("Quantize_forward")
    except ExtensionLoaderTimeoutException as exc:
        raise BackendError(
            f"NNCF's CPU extension quantized_functions_cpu did not load within {limit} s "
            f"({EXTENSION_LOAD_TIMEOUT_ENV_VAR}). {_extension_fix(build_dir, EXTENSION_LOAD_TIMEOUT_ENV_VAR)}"
        ) from exc
    finally:
        if old is None:
            os.environ.pop(EXTENSION_LOAD_TIMEOUT_ENV_VAR, None)
    if QuantizedFunctionsCPU._loaded_namespace is ReferenceQuantizedFunctions:  # noqa: SLF001
        msg = ("NNCF could not build its C++ CPU extension (no working C++ compiler?): its fake quantizers run "
               "as slower pure-torch operations. Install a C++ compiler (Debian/Ubuntu: apt-get install g++) "
               f"and remove {build_dir} to build it.")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return "reference"
    if not cached:
        _say(f"NNCF's CPU extension is ready ({time.perf_counter() - t0:.0f} s; cached for later runs).")
        return "compiled"
    return "cached"


def import_nncf() -> Any:
    """``import nncf`` with NNCF's torch quantizers ready; a missing package names the install command
    (the core checks too; this covers direct calls)."""
    try:
        with _quiet():
            import nncf
            import nncf.torch  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(f"the NNCF backend needs nncf ({exc}). Install it with: {INSTALL}") from exc
    ensure_extension()
    return nncf


def _import_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError(
            f"exporting NNCF students to OpenVINO IR needs openvino ({exc}). Install it with: {INSTALL}"
        ) from exc
    return ov


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence NNCF's progress bars (rich, on stdout) and INFO lines, and the tracing warnings of
    torch.jit / torch.onnx / OpenVINO's converter, for the duration of an adapter call; NNCF's warnings
    still show."""
    nncf_log = logging.getLogger("nncf")
    old = nncf_log.level
    nncf_log.setLevel(max(old, logging.WARNING))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*(TracerWarning|Converting a tensor to a Python|traced function).*")
            warnings.filterwarnings("ignore", module=r"torch\.(jit|onnx).*")
            with contextlib.suppress(Exception):
                from torch.jit import TracerWarning

                warnings.filterwarnings("ignore", category=TracerWarning)
            yield
    finally:
        nncf_log.setLevel(old)


# --------------------------------------------------------------------------------------------------
# bits, tracing, scopes
# --------------------------------------------------------------------------------------------------
def _check_bits(cfg: QuantConfig, opts: NNCFOptions) -> None:
    pair = (cfg.weight_bits, cfg.act_bits)
    if pair not in SUPPORTED_BITS:
        listed = "; ".join(f"W{w}A{a} ({where})" for (w, a), where in SUPPORTED_BITS.items())
        raise ConfigError(
            f"NNCF cannot quantize W{pair[0]}A{pair[1]}: its hardware configurations define only {listed}. "
            f"{BITS_NOTE} Pass --bits 8 (W8A8), --bits 4 (W4A4) or --bits 4 --act-bits 8."
        )
    if 4 in pair and opts.target_device not in (None, "NPU"):
        raise ConfigError(
            f"4-bit quantizers need NNCF's NPU hardware configuration; options['target_device'] is "
            f"{opts.target_device!r}. Leave target_device unset (daqakd picks NPU) or pass 'NPU'."
        )
    if 4 in pair and opts.preset == "mixed":
        raise ConfigError("4-bit quantizers are symmetric in NNCF's NPU configuration; drop options['preset']='mixed' "
                          "(or use 8 bits).")


@contextlib.contextmanager
def _module_tracker(model: nn.Module) -> Iterator[list[str]]:
    """The stack of modules whose forward is running: after an exception its top is the module that
    failed (forward hooks of the modules that finished popped themselves)."""
    stack: list[str] = []
    handles = []
    for name, mod in model.named_modules():
        label = name or type(model).__name__

        def pre(_m: Any, _a: Any, label: str = label) -> None:
            stack.append(label)

        def post(_m: Any, _a: Any, _o: Any, label: str = label) -> None:
            if stack and stack[-1] == label:
                stack.pop()

        try:
            handles.append(mod.register_forward_pre_hook(pre))
            handles.append(mod.register_forward_hook(post))
        except RuntimeError:  # TorchScript modules take no hooks
            continue
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def _module_of(node_name: str) -> str:
    """``layers/0/conv1/conv2d/0`` → ``layers.0.conv1`` (the module an NNCF graph node ran in)."""
    parts = node_name.split("/")
    return ".".join(parts[:-2]) if len(parts) >= 3 else ""


def _is_weighted(node: Any, graph: Any) -> bool:
    from nncf.torch.model_graph_manager import get_const_node

    name = getattr(node.metatype, "__name__", "")
    if not any(k in name for k in ("Conv", "Linear", "MatMul", "Addmm", "Embedding")):
        return False
    return any(get_const_node(node, port, graph) is not None for port in (1, 2))


def _trace(fp: nn.Module, x: torch.Tensor) -> Any:
    """NNCF's graph of ``fp`` (traced on a copy in eval mode: BatchNorm statistics stay as they are).
    A forward that fails names the module it failed in; a forward whose tensors leave torch (``.tolist()``,
    ``.numpy()``, ``torch.tensor(...)`` of activations) so that NNCF loses the path to a conv/linear layer
    is refused, naming the module that breaks the graph and the layers NNCF would leave unquantized."""
    import torch
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    scripted = [n for n, mod in fp.named_modules() if isinstance(mod, torch.jit.ScriptModule)]
    if scripted:
        raise ModelError(
            f"NNCF cannot trace {type(fp).__name__}: module(s) {', '.join(repr(n or '(root)') for n in scripted)} "
            "are TorchScript (torch.jit.script/trace), whose operations NNCF's torch function hooks do not see. "
            "Quantize the plain nn.Module instead, and script the student afterwards if needed."
        )
    m = copy.deepcopy(fp).eval()
    with _module_tracker(m) as stack, _quiet(), torch.no_grad():
        try:
            graph = build_nncf_graph(m, x)
        except Exception as exc:  # noqa: BLE001 - any forward failure
            where = stack[-1] if stack else type(fp).__name__
            mod = m.get_submodule(where) if stack and where in dict(m.named_modules()) else m
            raise ModelError(
                f"NNCF could not trace {type(fp).__name__}: the forward pass on the example input "
                f"{tuple(x.shape)} failed in module {where!r} ({type(mod).__name__}): {type(exc).__name__}: {exc}. "
                "NNCF 3 traces by running forward() on the example input with torch function hooks, so every "
                "module must be a plain torch nn.Module running torch operations on that input (no TorchScript "
                "modules); pass an example batch the float model accepts."
            ) from exc
    reached: set[Any] = set()
    todo = list(graph.get_input_nodes())
    while todo:
        n = todo.pop()
        if n.node_id in reached:
            continue
        reached.add(n.node_id)
        todo.extend(graph.get_next_nodes(n))
    cut = [n.node_name for n in graph.get_all_nodes() if n.node_id not in reached and _is_weighted(n, graph)]
    if cut:
        unknown = [n.node_name for n in graph.get_all_nodes()
                   if n.node_id in reached and getattr(n.metatype, "__name__", "") == "UnknownMetatype"]
        breakers = sorted({_module_of(n) or type(fp).__name__ for n in unknown}) or ["(unknown)"]
        raise ModelError(
            f"NNCF cannot trace {type(fp).__name__} through module(s) {', '.join(repr(b) for b in breakers)}: "
            f"operation(s) {', '.join(unknown[:6]) or '(none recorded)'} take the activations out of torch "
            f"(e.g. .tolist(), .numpy(), torch.tensor(...)), so NNCF sees layer(s) "
            f"{', '.join(_module_of(c) or c for c in cut[:6])} as disconnected from the input and would leave them "
            "unquantized. Keep that computation in torch operations on the input tensor."
        )
    return graph


def _scope_prefix(path: str, wrapped: bool) -> str:
    from ._wrap import WRAPPED_PREFIX

    path = path.strip(".")
    if wrapped:
        path = f"{WRAPPED_PREFIX}.{path}" if path else WRAPPED_PREFIX
    return path.replace(".", "/")


def _ignored_scope(graph: Any, opts: NNCFOptions, wrapped: bool) -> dict[str, list[str]]:
    """``nncf.IgnoredScope`` fields from the options, every entry checked against the traced graph (an
    entry that matches nothing is an error listing what exists, not a silent no-op)."""
    nodes = [n.node_name for n in graph.get_all_nodes()]
    names: list[str] = []
    for entry in opts.ignored_scope:
        if entry in nodes:
            names.append(entry)
            continue
        prefix = _scope_prefix(entry, wrapped) + "/"
        hits = [n for n in nodes if n.startswith(prefix)]
        if not hits:
            layers = sorted({_module_of(n) for n in nodes if _is_weighted(graph.get_node_by_name(n), graph)})
            if wrapped:  # paths as in the user's Sequential
                layers = [k.split(".", 1)[1] if "." in k else k for k in layers]
            raise ConfigError(
                f"options['ignored_scope'] entry {entry!r} matches no module path or NNCF node of this model. "
                f"Layers with weights: {', '.join(layers)}; NNCF nodes: {', '.join(nodes[:12])}"
                f"{' ...' if len(nodes) > 12 else ''}."
            )
        names.extend(hits)
    for p in opts.ignored_patterns:
        if not any(re.search(p, n) for n in nodes):
            raise ConfigError(f"options['ignored_patterns'] entry {p!r} matches no NNCF node of this model; nodes: "
                              f"{', '.join(nodes[:12])}{' ...' if len(nodes) > 12 else ''}.")
    types = sorted({n.node_type for n in graph.get_all_nodes()})
    for t in opts.ignored_types:
        if t not in types:
            raise ConfigError(f"options['ignored_types'] entry {t!r} is not an operation type of this model; types: "
                              f"{', '.join(types)}.")
    return {"names": sorted(set(names)), "patterns": list(opts.ignored_patterns), "types": list(opts.ignored_types)}


# --------------------------------------------------------------------------------------------------
# quantization
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """What a student is quantized with; calibration redoes exactly that, from the ``CalibrateRequest``'s
    config and options (:func:`_plan_of`)."""

    weight_bits: int
    act_bits: int
    per_channel: bool
    options: NNCFOptions
    wrapped: bool
    #: per-layer ``{module path: (weight bits | None, input-activation bits | None)}``: the request's bit plan
    #: where it differs from the uniform widths, then ``options['layer_bits']`` (both widths)
    layer_bits: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)


_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        log.warning(msg)


def _calibration_images(batches: list[torch.Tensor], augment: str) -> list[torch.Tensor]:
    """The calibration batches, through ``augment`` (fixed seed, global RNG untouched) unless it is "none"."""
    if augment == "none":
        return batches
    import torch

    from daqakd_plugins.kit import resolve_augmentation

    aug = resolve_augmentation(augment)
    out = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for b in batches:
            out.append(aug(b, torch.ones(len(b), 1, dtype=b.dtype, device=b.device))[0])
    return out


def _nncf_quantize(fp: nn.Module, batches: list[torch.Tensor], plan: _Plan, x: torch.Tensor) -> nn.Module:
    """``nncf.quantize`` as the plan says, on a copy of ``fp`` (the plain float model, eval mode)."""
    import torch

    nncf = import_nncf()
    from nncf.common.quantization.structs import QuantizationScheme
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    opts = plan.options
    graph = _trace(fp, x)
    scope = _ignored_scope(graph, opts, plan.wrapped)
    four = 4 in (plan.weight_bits, plan.act_bits)
    device = opts.target_device or ("NPU" if four else "ANY")
    preset = nncf.QuantizationPreset.PERFORMANCE if (four or opts.preset == "performance") else (
        nncf.QuantizationPreset.MIXED if opts.preset == "mixed" else None)
    sym = QuantizationScheme.SYMMETRIC if four else None
    adv = AdvancedQuantizationParameters(
        disable_bias_correction=not opts.fast_bias_correction,
        weights_quantization_params=QuantizationParameters(num_bits=plan.weight_bits, mode=sym,
                                                           per_channel=plan.per_channel),
        activations_quantization_params=QuantizationParameters(num_bits=plan.act_bits, mode=sym, per_channel=False),
    )
    images = _calibration_images(batches, opts.calibration_augment)
    auto: list[str] = []
    for _ in range(64):
        model = copy.deepcopy(fp).eval()
        ignored = nncf.IgnoredScope(names=scope["names"] + auto, patterns=scope["patterns"], types=scope["types"],
                                    validate=False)
        try:
            with _quiet(), torch.no_grad():
                q = nncf.quantize(model, nncf.Dataset(images), subset_size=len(images),
                                  target_device=getattr(nncf.TargetDevice, device), preset=preset,
                                  fast_bias_correction=True, ignored_scope=ignored, advanced_parameters=adv)
        except ValueError as exc:
            m = re.search(r"First conflicting quantizer location:\s*(\S+)", str(exc))
            if m and m.group(1) not in auto:
                auto.append(m.group(1))  # an operation the hardware config has no such quantizer for
                continue
            raise BackendError(f"nncf.quantize failed for W{plan.weight_bits}A{plan.act_bits} on {device}: {exc}") from exc
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - NNCF errors come in many types
            raise BackendError(
                f"nncf.quantize failed on {type(fp).__name__} (W{plan.weight_bits}A{plan.act_bits}, target_device "
                f"{device}): {type(exc).__name__}: {exc}"
            ) from exc
        break
    else:  # pragma: no cover - a model with more than 64 unsupported operations
        raise BackendError(f"nncf.quantize kept refusing operations for W{plan.weight_bits}A{plan.act_bits}: {auto}")
    if auto:
        listed = "".join(f"\n  - {a}" for a in auto[:12]) + (f"\n  - ... and {len(auto) - 12} more" if len(auto) > 12 else "")
        _warn_once(
            f"NNCF's {device} configuration has no W{plan.weight_bits}A{plan.act_bits} quantizer for "
            f"{len(auto)} operation(s), left in float (a quantizer after each still feeds the next layer); name "
            f"them in options['ignored_scope'] to silence this:{listed}"
        )
    _apply_layer_bits(q, graph, plan.layer_bits, plan.wrapped)
    _finish(q, graph)
    return q


def _hooks(model: nn.Module) -> dict[str, nn.Module]:
    from nncf.torch.function_hook.wrapper import get_hook_storage

    return dict(get_hook_storage(model).named_hooks())


def _weight_hook(hook_name: str, graph: Any) -> bool:
    """Whether a quantizer hook quantizes a constant (a weight): pre-hook on a port fed by a constant,
    or a post-hook on a constant node."""
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.model_graph_manager import get_const_node

    hook_type, op_name, port = decode_hook_name(hook_name)
    try:
        node = graph.get_node_by_name(op_name)
    except Exception:  # noqa: BLE001 - a hook on a node this graph lacks
        return False
    if hook_type == "pre_hooks":
        import nncf

        try:
            return get_const_node(node, port, graph) is not None
        except nncf.InternalError:  # NNCF raises where the port is fed by no constant (ShuffleNet's split/cat)
            return False
    return "Const" in getattr(node.metatype, "__name__", "")


def _input_activation_hooks(node: Any, graph: Any, hooks: dict[str, nn.Module]) -> list[str]:
    """The activation quantizer(s) on the data input of ``node``: a pre-hook on its port 0, or walking up
    single-input operations (flatten, pooling, ...) to the first post-hook quantizer."""
    out = [h for h in hooks if h.startswith(f"pre_hooks.{node.node_name.replace('.', ':')}__0.")]
    if out:
        return out
    cur, port = node, 0
    for _ in range(16):
        prev = [(p, e) for p in graph.get_previous_nodes(cur) for e in graph.get_edges(p, cur) if e.input_port_id == port]
        if not prev:
            return []
        p, e = prev[0]
        key = f"post_hooks.{p.node_name.replace('.', ':')}__{e.output_port_id}."
        found = [h for h in hooks if h.startswith(key)]
        if found:
            return found
        if len(graph.get_previous_nodes(p)) != 1:
            return []
        cur, port = p, 0
    return []


def _layer_overrides(plan: Mapping[str, Mapping[str, int]], cfg: QuantConfig,
                     opts: NNCFOptions) -> dict[str, tuple[int | None, int | None]]:
    """The request's plan differences and ``options['layer_bits']`` as ``{path: (weight, act)}``."""
    w, a = kit.plan_differences(plan, cfg, "weight"), kit.plan_differences(plan, cfg, "act")
    out: dict[str, tuple[int | None, int | None]] = {n: (w.get(n), a.get(n)) for n in dict.fromkeys([*w, *a])}
    bad = [f"{n} (A{b})" for n, b in a.items() if b not in (4, 8)]
    if bad:
        raise ConfigError(f"NNCF quantizes a layer's input at 4 or 8 bits, not: {', '.join(bad[:8])}; change those "
                          "--layer-bits.")
    out.update({n: (b, b) for n, b in opts.layer_bits.items()})
    return out


def _apply_layer_bits(q: nn.Module, graph: Any, layer_bits: Mapping[str, tuple[int | None, int | None]],
                      wrapped: bool) -> None:
    """Per-layer overrides: the layer's weight quantizer and the activation quantizer on its input get the
    given bits (``None``: left as they are). NNCF's symmetric/asymmetric quantizers store ranges (not steps),
    so the calibrated range stays right when the number of levels changes."""
    if not layer_bits:
        return
    hooks = _hooks(q)
    weighted = {n.node_name: n for n in graph.get_all_nodes() if _is_weighted(n, graph)}
    for path, (wbits, abits) in layer_bits.items():
        target = _scope_prefix(path, wrapped).replace("/", ".")
        nodes = [n for name, n in weighted.items() if _module_of(name) == target]
        if not nodes:
            known = sorted({_module_of(n) for n in weighted})
            if wrapped:
                known = [k.split(".", 1)[1] if "." in k else k for k in known]
            raise ConfigError(f"options['layer_bits'] names {path!r}, which is no layer with weights of this model; "
                              f"layers with weights: {', '.join(known)}.")
        for node in nodes:
            key = node.node_name.replace(".", ":")
            wnames = [h for h in hooks if (h.startswith(f"pre_hooks.{key}__") and _weight_hook(h, graph))]
            anames = _input_activation_hooks(node, graph, hooks)
            if not wnames + anames:
                raise ConfigError(f"the bit plan names {path!r}, but NNCF put no quantizer on it (is it in "
                                  "the ignored scope?).")
            for names, bits in ((wnames, wbits), (anames, abits)):
                if bits is not None:
                    for h in names:
                        _set_bits(hooks[h], bits)


def _set_bits(mod: Any, bits: int) -> None:
    mod.num_bits = bits
    mod._qspec.num_bits = bits  # noqa: SLF001 - what nncf.torch.get_config saves


def _finish(q: nn.Module, graph: Any) -> None:
    """What every student gets, after quantize and after restore: integer bookkeeping tensors as buffers
    (NNCF keeps bit widths and signedness as integer ``nn.Parameter``s, which break anything that sets
    ``requires_grad`` on every parameter), every float parameter trainable, and each quantizer's role.

    The role is a backend-internal marker: set here on the quantizer modules of a student this adapter
    built (nncf.quantize, called by it), read only by this adapter's ``daqakd_describe_quantizers``. It is
    a fact about the module that only the traced graph tells (a pre-hook on a port no constant feeds is an
    activation quantizer, which the hook name alone gets wrong), not state handed from one hook to another:
    that travels in the requests."""
    for hook_name, mod in _hooks(q).items():
        for pname, p in list(mod._parameters.items()):  # noqa: SLF001
            if p is not None and not p.is_floating_point():
                del mod._parameters[pname]  # noqa: SLF001
                mod.register_buffer(pname, p.data)
        setattr(mod, "_daqakd_role", "weight" if _weight_hook(hook_name, graph) else "activation")  # noqa: B010
    for p in q.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)


def _plain(model: nn.Module) -> nn.Module:
    """A copy of an NNCF student without NNCF's hooks: the float model with the student's current weights."""
    from nncf.torch.function_hook.wrapper import ATR_HOOK_STORAGE

    m = copy.deepcopy(model)
    m._modules.pop(ATR_HOOK_STORAGE, None)  # noqa: SLF001
    for attr in ("forward", "_replicate_for_data_parallel"):
        m.__dict__.pop(attr, None)
    return m


def _prepare_fp(model: nn.Module) -> tuple[nn.Module, bool]:
    from torch import nn

    from ._wrap import SequentialWrapper

    fp = copy.deepcopy(model)
    wrapped = isinstance(fp, nn.Sequential)
    if isinstance(fp, nn.Sequential):
        fp = SequentialWrapper(fp)  # nncf.quantize cannot hook a top-level Sequential
    return fp.eval(), wrapped


def _is_nncf_model(model: nn.Module) -> bool:
    from nncf.torch.function_hook.wrapper import is_wrapped

    return is_wrapped(model) and bool(_hooks(model))


@hookimpl
def daqakd_quantize(request: QuantizeRequest) -> nn.Module | None:
    opts = request.options or NNCFOptions()
    cfg = request.config
    _check_bits(cfg, opts)
    import_nncf()
    x = request.example_input
    fp, wrapped = _prepare_fp(request.model)
    plan = _Plan(weight_bits=cfg.weight_bits, act_bits=cfg.act_bits, per_channel=cfg.per_channel, options=opts,
                 wrapped=wrapped, layer_bits=_layer_overrides(request.layer_bits, cfg, opts))
    if request.calib_data is not None:
        batches = list(kit.image_batches(request.calib_data, cfg.calib_batches))
        if not batches:
            raise DataError("calibration data yielded no batches; pass at least one [B, C, H, W] image batch.")
    else:
        batches = [x]  # ranges from the example batch; calibrate() re-estimates them on real data
    q = _nncf_quantize(fp, [b.to(kit.device_of(fp)) for b in batches], plan, x.to(kit.device_of(fp)))
    q.train(request.model.training)
    return q


# --------------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------------
def _is_wrapped(model: nn.Module) -> bool:
    """Whether the student wraps a top-level ``nn.Sequential`` (:class:`._wrap.SequentialWrapper`)."""
    from ._wrap import SequentialWrapper

    return isinstance(model, SequentialWrapper)


def _plan_of(model: nn.Module, cfg: QuantConfig | None = None, opts: NNCFOptions | None = None) -> _Plan:
    """The plan a student was made with: the request's config and options; without them (an NNCF model
    made outside daqakd, or a caller that does not pass its config) the bits read from its quantizers and
    the default options."""
    wrapped = _is_wrapped(model)
    if cfg is not None:
        return _Plan(weight_bits=cfg.weight_bits, act_bits=cfg.act_bits, per_channel=cfg.per_channel,
                     options=opts or NNCFOptions(), wrapped=wrapped)
    qs = daqakd_describe_quantizers(model) or []
    wb = max((q.bits for q in qs if q.role == "weight"), default=8)
    ab = max((q.bits for q in qs if q.role == "activation"), default=8)
    return _Plan(weight_bits=wb, act_bits=ab, per_channel=True, options=opts or NNCFOptions(), wrapped=wrapped)


def _calibrate(model: nn.Module, data: Any, num_batches: int, plan_cfg: QuantConfig | None = None,
               opts: NNCFOptions | None = None) -> nn.Module:
    import_nncf()
    if not _is_nncf_model(model):
        raise BackendError(
            f"{type(model).__name__} has no NNCF quantizers to calibrate; make the student with "
            "daqakd_plugins.backends.quantize(model, 'nncf', QuantConfig(...), example_input=x) or nncf.quantize."
        )
    dev = kit.device_of(model)
    batches = [b.to(dev) for b in kit.image_batches(data, num_batches)]
    if not batches:
        raise DataError("calibration data yielded no batches; pass at least one [B, C, H, W] image batch.")
    plan = _plan_of(model, plan_cfg, opts)
    fresh = _nncf_quantize(_plain(model).eval(), batches, plan, batches[0][:1])
    mine, theirs = _hooks(model), _hooks(fresh)
    if set(mine) != set(theirs):
        raise BackendError(
            "re-running nncf.quantize placed other quantizers than this student has "
            f"({sorted(set(mine) ^ set(theirs))[:4]}); it was not made by daqakd's NNCF adapter with these options. "
            "Calibrate by quantizing the float model again."
        )
    import torch

    for name, mod in mine.items():  # the student's own widths (its bit plan), not the uniform ones
        q: Any = mod  # an NNCF quantizer: attributes mypy cannot see through nn.Module
        fresh_q: Any = theirs[name]
        if int(fresh_q.num_bits) != int(q.num_bits):
            _set_bits(fresh_q, int(q.num_bits))
    with torch.no_grad():  # in place: an optimizer holding the student's parameters keeps working
        model.load_state_dict(fresh.state_dict())
    return model


@hookimpl
def daqakd_calibrate(request: CalibrateRequest) -> nn.Module | None:
    return _calibrate(request.model, request.data, request.num_batches, request.config, request.options)


# --------------------------------------------------------------------------------------------------
# save / restore
# --------------------------------------------------------------------------------------------------
def _json_default(v: Any) -> Any:
    if hasattr(v, "value"):  # NNCF's enums (QuantizationScheme, ...)
        return v.value
    raise TypeError(f"cannot store {type(v).__name__} in an NNCF config")


@hookimpl
def daqakd_save_student(request: SaveRequest) -> dict[str, Any] | None:
    """``nncf.torch.get_config`` (as a JSON string: weights_only-safe) and the state dict, NNCF's way."""
    nncf = import_nncf()
    model = request.model
    if not _is_nncf_model(model):
        raise BackendError(f"{type(model).__name__} is not an NNCF student (no NNCF hooks); nothing to save as one.")
    return {
        "format": PAYLOAD_FORMAT,
        "compression_config": json.dumps(nncf.torch.get_config(model), default=_json_default),
        "state_dict": model.state_dict(),
        "wrapped": _is_wrapped(model),
    }


@hookimpl
def daqakd_restore_student(request: RestoreRequest) -> nn.Module | None:
    """``nncf.torch.load_from_config`` on the fresh float model, then the saved state; no calibration."""
    nncf = import_nncf()
    payload = request.payload
    if payload.get("format") != PAYLOAD_FORMAT or "compression_config" not in payload:
        raise BackendError(
            f"this NNCF student was saved in another format ({payload.get('format')!r}, expected "
            f"{PAYLOAD_FORMAT!r}); re-run the distillation with this adapter version."
        )
    fp, wrapped = _prepare_fp(request.model)
    if wrapped != bool(payload.get("wrapped")):
        raise BackendError("the saved NNCF student and this float model differ in structure (nn.Sequential or not); "
                           "restore into the architecture it was distilled from.")
    x = request.example_input.to(kit.device_of(fp))
    graph = _trace(fp, x[:1])
    with _quiet():
        q = nncf.torch.load_from_config(copy.deepcopy(fp), json.loads(payload["compression_config"]))
    _finish(q, graph)
    try:
        q.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise BackendError(f"the saved NNCF student does not fit this float model: {exc}") from exc
    return q


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class OpenVINOModel(ExportedModel):
    """An OpenVINO IR: ``path`` is the ``.xml``; the weights are in the ``.bin`` next to it, so the size
    counts both files."""

    @property
    def size_bytes(self) -> int:
        p = Path(self.path)
        return p.stat().st_size + p.with_suffix(".bin").stat().st_size


def _formats(requested: tuple[str, ...] | None) -> tuple[str, ...]:
    if not requested:
        return FORMATS
    out: list[str] = []
    for f in requested:
        key = FORMAT_ALIASES.get(str(f).lower())
        if key is None:
            raise ExportError(f"NNCF students export to {', '.join(FORMATS)} (openvino: OpenVINO IR run by openvino; "
                              f"onnx-qdq: QuantizeLinear/DequantizeLinear ONNX run by onnxruntime), not {f!r}.")
        if key not in out:
            out.append(key)
    return tuple(out)


def ov_predict(xml: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Run the IR with OpenVINO's CPU plugin: one thread, f32 inference precision (on CPUs with bf16/AMX
    OpenVINO would otherwise run the float parts in bf16), compiled once per input shape (static shapes,
    as OpenVINO deploys them; NNCF's example compiles a fixed shape too)."""
    import numpy as np

    ov = _import_openvino()
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
    by_shape: dict[tuple[int, ...], Any] = {}

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        req = by_shape.get(x.shape)
        if req is None:
            m = core.read_model(str(xml))
            m.reshape(list(x.shape))
            req = by_shape[x.shape] = core.compile_model(m, "CPU", config).create_infer_request()
        req.infer([x])
        return np.array(req.get_output_tensor(0).data, copy=True)

    return predict


def export_openvino(model: nn.Module, example_input: torch.Tensor, path: str | Path) -> Path:
    """``ov.convert_model`` + ``ov.save_model(compress_to_fp16=False)``, NNCF's documented export: the
    quantizers become OpenVINO ``FakeQuantize`` (weights stored as 8-bit integers), which OpenVINO's CPU
    plugin runs as integer kernels. Works on the unstripped student (no ``nncf.strip`` needed)."""
    import torch

    ov = _import_openvino()
    path = Path(path)
    m = copy.deepcopy(model).cpu().eval()
    with _quiet(), torch.no_grad():
        ov_model = ov.convert_model(m, example_input=example_input[:1].detach().cpu().float())
        ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return path


def export_qdq(model: nn.Module, x: torch.Tensor, path: Path, *, fold: bool = True) -> dict[str, int]:
    """NNCF's standard QDQ export (``ONNX_QUANTIZE_DEQUANTIZE_PAIRS``; 8 bits), BatchNorm folded into the
    quantized convolutions so onnxruntime can run them as integer kernels (onnx_fold.py), then the
    kit's onnxruntime preparation (U8U8 where int8 weights would saturate on CPUs without VNNI)."""
    import onnx
    import torch
    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

    from .onnx_fold import fold_batchnorm

    m = copy.deepcopy(model).cpu().eval()
    for mod in m.modules():
        if isinstance(mod, BaseQuantizer):
            mod.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    with _quiet(), torch.no_grad():
        torch.onnx.export(m, (x,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13, dynamo=False)
    proto = onnx.load(str(path))
    folded = fold_batchnorm(proto) if fold else 0
    if folded:
        onnx.checker.check_model(proto)
        onnx.save(proto, str(path))
    return {"folded_batchnorms": folded, **prepare_for_onnxruntime(path)}


@hookimpl
def daqakd_export(request: ExportRequest) -> list[ExportedModel] | None:
    fmts = _formats(request.formats)
    import_nncf()
    model = request.model
    if not _is_nncf_model(model):
        raise ExportError(
            f"{type(model).__name__} has no NNCF quantizers, so there is nothing to export as a quantized model. "
            "Quantize it first: daqakd_plugins.backends.quantize(model, 'nncf', QuantConfig(...), example_input=x), "
            "or export the float model with ov.convert_model / torch.onnx.export."
        )
    bits = {q.bits for q in daqakd_describe_quantizers(model) or []}
    if "onnx-qdq" in fmts and bits - {8}:
        if request.formats:
            raise ExportError(
                f"this student has {sorted(bits - {8})}-bit quantizers; ONNX QuantizeLinear/DequantizeLinear hold "
                "8-bit integers (NNCF's QDQ export asserts 256 or 255 levels), so QDQ ONNX is 8-bit only. Export "
                "formats=('openvino',): OpenVINO IR keeps them as 16-level FakeQuantize."
            )
        fmts = tuple(f for f in fmts if f != "onnx-qdq")
        _warn_once("sub-8-bit NNCF student: exporting OpenVINO IR only (QDQ ONNX holds 8-bit integers only).")
    out_dir = Path(request.out_dir)
    x = request.example_input[:1].detach().cpu().float()
    out: list[ExportedModel] = []
    for fmt in fmts:
        try:
            if fmt == "openvino":
                xml = export_openvino(model, x, out_dir / "student.openvino.xml")
                out.append(OpenVINOModel(format=fmt, path=xml, runtime="openvino", predict=ov_predict(xml), u8s8_guard=False,
                                         notes="OpenVINO IR (xml + bin): FakeQuantize, weights stored as integers; "
                                               "openvino CPU plugin, 1 thread, f32 inference precision"))
            else:
                path = out_dir / "student.qdq.onnx"
                prep = export_qdq(model, x, path)
                notes = "QuantizeLinear/DequantizeLinear (opset 13), NNCF's ONNX_QUANTIZE_DEQUANTIZE_PAIRS export mode"
                if prep["folded_batchnorms"]:
                    notes += f"; {prep['folded_batchnorms']} BatchNorm(s) folded into the int8 convolutions"
                notes += preparation_notes(prep)
                out.append(ExportedModel(format=fmt, path=path, runtime="onnxruntime", predict=kit.ort_predict(path),
                                         notes=notes, u8s8_guard=True))
        except (ExportError, BackendUnavailableError):
            raise
        except Exception as exc:  # noqa: BLE001 - converter/exporter failures come in many types
            raise ExportError(
                f"NNCF student {type(model).__name__} could not be exported to {fmt}: {type(exc).__name__}: {exc}. "
                "The float model must be traceable by torch.jit.trace (OpenVINO's converter) / "
                "torch.onnx.export(dynamo=False)."
            ) from exc
    return out


# --------------------------------------------------------------------------------------------------
# deployment helper
# --------------------------------------------------------------------------------------------------
def strip(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """``nncf.strip(model, do_copy=True, example_input=...)``: NNCF's quantizers replaced by torch's own
    ``FakeQuantize`` modules (and weights pre-quantized) for deployment in PyTorch. Not needed for the
    OpenVINO/ONNX exports above. NNCF 3.4's strip imports ``torchao``, which nncf does not declare."""
    nncf = import_nncf()
    try:
        with _quiet():
            return nncf.strip(model, do_copy=True, example_input=example_input[:1])  # type: ignore[no-any-return]
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            f"nncf.strip needs the package {exc.name!r}, which nncf {nncf.__version__} does not declare. "
            f"Install it with: pip install {exc.name}"
        ) from exc


__all__ = ["NAME", "NNCFOptions", "OpenVINOModel", "ensure_extension", "export_openvino", "strip"]
