"""The plugin manager: built-in plugins, entry-point discovery, registries, tracing.

Nothing is loaded at import time. :func:`load_plugins` is explicit and idempotent; every public
accessor calls it, so users rarely need to.

Environment:

``DAQAKD_DISABLE_PLUGINS=1``
    do not autoload entry points of group ``daqakd`` (built-ins still load);
``DAQAKD_PLUGINS=mod_a,mod_b``
    import and register these modules as plugins (also when autoloading is disabled);
``DAQAKD_TRACE=1``
    log every hook call at DEBUG level on the ``daqakd.hooks`` logger (``1/on/true/yes`` turn it on,
    ``0/off/false/no`` or unset leave it off, any case; another value warns and leaves it off).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

import pluggy

from . import hookspecs
from .contracts import Architecture, Augmentation, BackendInfo, LossComponent, LossPreset, Metric, SearchSpace
from .datafree.contracts import ImageGenerator
from .errors import PluginError, PluginLoadError, UnknownNameError

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginRecord",
    "get_plugin_manager",
    "load_plugins",
    "reset_plugins",
    "plugin_records",
    "register_plugin",
    "REGISTRIES",
    "registered_by",
    "get_augmentations",
    "get_architectures",
    "get_metrics",
    "get_loss_components",
    "get_loss_presets",
    "get_generators",
    "get_search_spaces",
    "get_backends",
    "get_backend",
    "backend_hook",
    "backend_owner",
    "backend_status",
]

ENTRY_POINT_GROUP = "daqakd"
DISABLE_ENV = "DAQAKD_DISABLE_PLUGINS"
PLUGINS_ENV = "DAQAKD_PLUGINS"
TRACE_ENV = "DAQAKD_TRACE"

# Built-in features, registered exactly like third-party plugins.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "daqakd_plugins.builtin.architectures",
    "daqakd_plugins.builtin.augmentations",
    "daqakd_plugins.builtin.metrics",
    "daqakd_plugins.builtin.losses",
    "daqakd_plugins.builtin.search_spaces",
    "daqakd_plugins.datafree.generators",
)

log = logging.getLogger("daqakd")
hook_log = logging.getLogger("daqakd.hooks")
T = TypeVar("T")


@dataclass
class PluginRecord:
    """One registered plugin: where it came from and what it implements."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_records: dict[str, PluginRecord] = {}
_loaded = False
_cache: dict[str, Any] = {}


#: Values of ``DAQAKD_TRACE`` (any case, surrounding spaces ignored); anything else warns and leaves tracing off.
TRACE_ON = ("1", "on", "true", "yes")
TRACE_OFF = ("", "0", "off", "false", "no")


def _trace_enabled(value: str | None) -> bool:
    """Whether ``DAQAKD_TRACE=value`` turns hook tracing on; an unknown value warns, naming the accepted ones."""
    v = (value or "").strip().lower()
    if v in TRACE_ON:
        return True
    if v not in TRACE_OFF:
        msg = (f"{TRACE_ENV}={value!r} is not understood, so hook tracing stays off; use one of "
               f"{', '.join(TRACE_ON)} to turn it on or {', '.join(x for x in TRACE_OFF if x)} (or unset it) for off.")
        warnings.warn(msg, UserWarning, stacklevel=2)
    return False


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if _trace_enabled(os.environ.get(TRACE_ENV)):
        pm.trace.root.setwriter(lambda msg: hook_log.debug(msg.rstrip()))
        pm.enable_tracing()
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with plugins loaded."""
    load_plugins()
    assert _pm is not None  # set by load_plugins
    return _pm


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def _hook_names(plugin: object) -> list[str]:
    names = []
    for attr in dir(plugin):
        if attr.startswith("daqakd_") and callable(getattr(plugin, attr, None)):
            names.append(attr)
    return sorted(names)


def _register(
    pm: pluggy.PluginManager,
    plugin: object,
    name: str,
    *,
    distribution: str | None,
    version: str | None,
    builtin: bool,
) -> None:
    if pm.has_plugin(name) or pm.is_registered(plugin):
        return
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(
            f"plugin {name!r} cannot be registered: {exc}. Fix the hook's signature to take only the "
            "arguments its spec in daqakd_plugins/hookspecs.py declares (see docs/hooks.md)."
        ) from exc
    # Unknown hook names (typos) only show up through check_pending.
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=name)
        bad = [h for h in _hook_names(plugin) if not hasattr(pm.hook, h) or _spec_missing(pm, h)]
        known = sorted(n for n in dir(hookspecs) if n.startswith("daqakd_"))
        raise PluginLoadError(
            f"plugin {name!r} implements unknown hook(s) {', '.join(bad) or str(exc)}; "
            f"known hooks: {', '.join(known)}. Check the spelling (docs/hooks.md)."
        ) from exc
    mod = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
    _records[name] = PluginRecord(
        name=name, module=mod, distribution=distribution, version=version, builtin=builtin,
        hooks=[h for h in _hook_names(plugin) if hasattr(hookspecs, h)],
    )
    _cache.clear()


def _spec_missing(pm: pluggy.PluginManager, hook_name: str) -> bool:
    caller = getattr(pm.hook, hook_name, None)
    return caller is None or caller.spec is None


def _import_plugin(module_name: str, *, source: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is a load error
        if source == PLUGINS_ENV:  # DAQAKD_DISABLE_PLUGINS does not skip these: say what does
            fix = (f"Remove {module_name!r} from {PLUGINS_ENV} (now {os.environ.get(PLUGINS_ENV, '')!r}), or make it "
                   "importable (is its directory on PYTHONPATH?).")
        elif source == "built-in":
            fix = "This is a daqakd bug or a broken install: reinstall daqakd."
        else:
            fix = f"Fix or uninstall it, or set {DISABLE_ENV}=1 to skip entry-point plugins."
        raise PluginLoadError(
            f"plugin module {module_name!r} ({source}) failed to import: {type(exc).__name__}: {exc}. {fix}"
        ) from exc


def _entry_points() -> Iterable[md.EntryPoint]:
    return md.entry_points(group=ENTRY_POINT_GROUP)


def load_plugins() -> pluggy.PluginManager:
    """Register built-ins, entry-point plugins and ``DAQAKD_PLUGINS`` modules, once.

    Idempotent: later calls return the same manager. Raises :class:`PluginLoadError` naming the
    plugin and hook when a plugin misspells a hook or takes an argument its spec lacks.
    """
    global _pm, _loaded
    with _lock:
        if _loaded and _pm is not None:
            return _pm
        pm = _pm or _new_manager()
        _pm = pm
        for mod_name in DEFAULT_PLUGINS:
            mod = _import_plugin(mod_name, source="built-in")
            _register(pm, mod, mod_name, distribution="daqakd", version=_version("daqakd"), builtin=True)
        if not _truthy(os.environ.get(DISABLE_ENV)):
            for ep in _entry_points():
                if pm.has_plugin(ep.name):
                    continue
                try:
                    obj = ep.load()
                except Exception as exc:  # noqa: BLE001
                    raise PluginLoadError(
                        f"entry point {ep.name!r} = {ep.value!r} failed to load: {type(exc).__name__}: {exc}. "
                        f"Fix or uninstall its distribution, or set {DISABLE_ENV}=1."
                    ) from exc
                dist = getattr(ep, "dist", None)
                _register(
                    pm, obj, ep.name,
                    distribution=getattr(dist, "name", None), version=getattr(dist, "version", None),
                    builtin=False,
                )
        for mod_name in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
            _register(pm, _import_plugin(mod_name, source=PLUGINS_ENV), mod_name,
                      distribution=None, version=None, builtin=False)
        _loaded = True
        return pm


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object or module at run time (tests, notebooks). Returns its name."""
    pm = load_plugins()
    with _lock:
        pname = name or getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin):x}"
        if pm.has_plugin(pname):
            raise PluginError(f"a plugin named {pname!r} is already registered; pass another name=")
        _register(pm, plugin, pname, distribution=None, version=None, builtin=False)
        return pname


def reset_plugins() -> None:
    """Forget every plugin (tests use this); the next accessor loads afresh."""
    global _pm, _loaded
    with _lock:
        _pm, _loaded = None, False
        _records.clear()
        _cache.clear()


def plugin_records() -> list[PluginRecord]:
    """Every registered plugin, built-ins first."""
    load_plugins()
    return sorted(_records.values(), key=lambda r: (not r.builtin, r.name))


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _collect(hook_name: str, kinds: tuple[type, ...],
             owners: dict[tuple[type, str], str] | None = None) -> dict[type, dict[str, Any]]:
    """Call a ``register`` hook and gather objects by kind, rejecting duplicate names; ``owners``
    (when given) receives ``(kind, name) -> plugin name`` of whoever registered each object."""
    pm = load_plugins()
    out: dict[type, dict[str, Any]] = {k: {} for k in kinds}
    owner: dict[tuple[type, str], str] = {}
    hook = getattr(pm.hook, hook_name)
    for impl in reversed(hook.get_hookimpls()):  # call each plugin separately to know who registered what
        pname = impl.plugin_name

        def register(obj: Any, _p: str = pname) -> None:
            kind = next((k for k in kinds if isinstance(obj, k)), None)
            if kind is None:
                raise PluginError(
                    f"plugin {_p!r} passed {type(obj).__name__} to register() in {hook_name}; "
                    f"expected {' or '.join(k.__name__ for k in kinds)}"
                )
            if not obj.name or not isinstance(obj.name, str):
                raise PluginError(f"plugin {_p!r} registered a {kind.__name__} without a name in {hook_name}")
            if obj.name in out[kind]:
                raise PluginError(
                    f"{kind.__name__} {obj.name!r} is registered twice: by {owner[(kind, obj.name)]!r} and "
                    f"by {_p!r}. Rename one of them."
                )
            out[kind][obj.name] = obj
            owner[(kind, obj.name)] = _p
            if owners is not None:
                owners[(kind, obj.name)] = _p

        _call_one(pm, hook_name, impl.plugin, register)
    return out


def _call_one(pm: pluggy.PluginManager, hook_name: str, plugin: object, register: Callable[[Any], None]) -> None:
    # subset_hook_caller keeps wrappers and tracing, unlike calling impl.function directly.
    others = [p for p in pm.get_plugins() if p is not plugin]
    pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)


def _cached(key: str, build: Callable[[], T]) -> T:
    with _lock:
        if key not in _cache:
            _cache[key] = build()
        return _cache[key]  # type: ignore[no-any-return]


def get_augmentations() -> dict[str, Augmentation]:
    """Every registered candidate augmentation, by name."""
    return _cached("aug", lambda: _collect("daqakd_register_augmentations", (Augmentation,))[Augmentation])


def get_architectures() -> dict[str, Architecture]:
    """Every registered architecture or family (``"torchvision:"``), by name."""
    return _cached("arch", lambda: _collect("daqakd_register_architectures", (Architecture,))[Architecture])


def get_metrics() -> dict[str, Metric]:
    """Every registered ranking metric, by name."""
    return _cached("metric", lambda: _collect("daqakd_register_metrics", (Metric,))[Metric])


def _losses() -> dict[type, dict[str, Any]]:
    return _cached("loss", lambda: _collect("daqakd_register_losses", (LossComponent, LossPreset)))


def get_loss_components() -> dict[str, LossComponent]:
    """Every registered KD loss component, by name."""
    return _losses()[LossComponent]


def get_loss_presets() -> dict[str, LossPreset]:
    """Every registered loss recipe, by name."""
    return _losses()[LossPreset]


def get_generators() -> dict[str, ImageGenerator]:
    """Every registered data-free image generator, by name."""
    return _cached("generator", lambda: _collect("daqakd_register_generators", (ImageGenerator,))[ImageGenerator])


def get_search_spaces() -> dict[str, SearchSpace]:
    """Every registered augmentation policy search space, by name."""
    return _cached("search", lambda: _collect("daqakd_register_search_spaces", (SearchSpace,))[SearchSpace])


#: every registry a plugin can add to: its label in ``daqakd plugins`` -> (register hook, object type)
REGISTRIES: dict[str, tuple[str, type]] = {
    "backends": ("daqakd_register_backends", BackendInfo),
    "augmentations": ("daqakd_register_augmentations", Augmentation),
    "metrics": ("daqakd_register_metrics", Metric),
    "loss_components": ("daqakd_register_losses", LossComponent),
    "loss_presets": ("daqakd_register_losses", LossPreset),
    "architectures": ("daqakd_register_architectures", Architecture),
    "generators": ("daqakd_register_generators", ImageGenerator),
    "search_spaces": ("daqakd_register_search_spaces", SearchSpace),
}


def registered_by() -> dict[str, dict[str, str]]:
    """For every registry in :data:`REGISTRIES`: each registered name -> the plugin that registered it."""
    out: dict[str, dict[str, str]] = {}
    for label, (hook, kind) in REGISTRIES.items():
        owners: dict[tuple[type, str], str] = {}
        kinds = tuple(k for h, k in REGISTRIES.values() if h == hook)
        got = _collect(hook, kinds, owners)[kind]
        out[label] = {name: owners[(kind, name)] for name in sorted(got)}
    return out


def _backends_and_owners() -> tuple[dict[str, BackendInfo], dict[str, str]]:
    def build() -> tuple[dict[str, BackendInfo], dict[str, str]]:
        owners: dict[tuple[type, str], str] = {}
        got = _collect("daqakd_register_backends", (BackendInfo,), owners)[BackendInfo]
        return got, {name: plugin for (_, name), plugin in owners.items()}

    return _cached("backend", build)


def get_backends() -> dict[str, BackendInfo]:
    """Every backend an adapter describes, by name."""
    return _backends_and_owners()[0]


def backend_hook(name: str, hook_name: str) -> Any:
    """A caller of ``hook_name`` that reaches only the plugin that registered backend ``name``.

    Why: every adapter answering every backend call (and returning ``None`` for the others) made each
    adapter re-check the backend name; pluggy's ``subset_hook_caller`` keeps tracing and the hook's
    spec while leaving the other plugins out."""
    info = get_backend(name)
    pm = load_plugins()
    owner = pm.get_plugin(_backends_and_owners()[1][info.name])
    others = [p for p in pm.get_plugins() if p is not owner]
    return pm.subset_hook_caller(hook_name, remove_plugins=others)


def backend_owner(name: str) -> str:
    """The name of the plugin that registered backend ``name``."""
    return _backends_and_owners()[1][get_backend(name).name]


def _more_backends_hint() -> str:
    if _truthy(os.environ.get(DISABLE_ENV)):
        return f"Entry-point plugins are disabled ({DISABLE_ENV} is set); unset it to load the adapters."
    return 'Install the adapters with: pip install "daqakd[all]"'


def get_backend(name: str) -> BackendInfo:
    """The backend called ``name``, or an error listing the known ones and how to get more."""
    backends = get_backends()
    name = name.replace("_", "-") if name.replace("_", "-") in backends else name
    if name not in backends:
        raise UnknownNameError("backend", name, list(backends), _more_backends_hint())
    return backends[name]


def default_backend() -> str:
    """The backend used when none is named: of the registered backends that can quantize, the one whose
    adapter declares the highest ``BackendInfo.default_priority`` (ties: the first by name). Chosen from
    what is registered, not from what imports: a default whose package is missing is refused where it is
    used, with its install command, as any named backend is."""
    ready = sorted((b for b in get_backends().values() if b.implemented), key=lambda b: (-b.default_priority, b.name))
    if not ready:
        raise UnknownNameError("backend", "(default)", list(get_backends()), _more_backends_hint())
    return ready[0].name


def backend_status(info: BackendInfo) -> dict[str, Any]:
    """Whether ``info``'s backend imports here, with its version, or the command that installs it."""
    if sys.modules.get(info.module) is not None:  # a None entry means "blocked": not importable
        ok, err = True, ""
    else:
        try:
            importlib.import_module(info.module)
            ok, err = True, ""
        except Exception as exc:  # noqa: BLE001 - report any import failure
            ok, err = False, f"{type(exc).__name__}: {exc}"
    return {
        "backend": info.name,
        "module": info.module,
        "available": ok,
        "version": _version(info.distribution) if ok else None,
        "install": None if ok else info.install,
        "error": err or None,
        "implemented": info.implemented,
        "weight_bits": list(info.weight_bits),
        "act_bits": list(info.act_bits),
        "export_formats": list(info.export_formats),
        "bit_plans": {"per_layer_weight_bits": list(info.layer_weight_bits or range(info.weight_bits[0], info.weight_bits[1] + 1)),
                      "per_layer_act_bits": info.layer_act_bits} if info.bit_plans else None,
    }
