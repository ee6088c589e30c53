"""The plugin machinery: discovery, validation, switches, import isolation, `daqakd plugins`."""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daqakd_plugins import plugins
from daqakd_plugins.errors import PluginError, PluginLoadError, UnknownNameError

ADAPTERS = {"nncf", "brevitas", "pytorch_quantization", "modelopt"}
BACKENDS = {"nncf", "brevitas", "pytorch-quantization", "modelopt"}
HEAVY = ("nncf", "brevitas", "pytorch_quantization", "modelopt")


def _install_fake_distribution(root: Path, module_source: str, *, dist: str = "daqakd-fake", ep: str = "fake") -> None:
    """A real installed distribution (dist-info with entry_points.txt) on sys.path, as pip would leave it."""
    (root / "daqakd_fake_plugin.py").write_text(textwrap.dedent(module_source))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[daqakd]\n{ep} = daqakd_fake_plugin\n")


GOOD_PLUGIN = """
from daqakd_plugins import hookimpl
from daqakd_plugins.contracts import Augmentation

@hookimpl
def daqakd_register_augmentations(register):
    register(Augmentation(name="fake-flip", fn=lambda x, t: (x.flip(-1), t), family="user"))
"""


def test_load_plugins_is_idempotent(fresh_plugins):
    pm1 = plugins.load_plugins()
    n = len(pm1.get_plugins())
    pm2 = plugins.load_plugins()
    assert pm1 is pm2 and len(pm2.get_plugins()) == n
    names = {r.name for r in plugins.plugin_records()}
    assert set(plugins.DEFAULT_PLUGINS) <= names
    assert ADAPTERS <= names


def test_builtins_are_registered_like_plugins(fresh_plugins):
    recs = {r.name: r for r in plugins.plugin_records()}
    for name in plugins.DEFAULT_PLUGINS:
        assert recs[name].builtin and recs[name].distribution == "daqakd"
    for name in ADAPTERS:
        assert not recs[name].builtin
        assert recs[name].distribution == "daqakd"
        assert "daqakd_register_backends" in recs[name].hooks


def test_entry_point_discovery(fresh_plugins, tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, GOOD_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert any(e.name == "fake" for e in md.entry_points(group="daqakd"))
    augs = plugins.get_augmentations()
    assert "fake-flip" in augs
    rec = {r.name: r for r in plugins.plugin_records()}["fake"]
    assert (rec.distribution, rec.version) == ("daqakd-fake", "1.2.3")
    assert rec.hooks == ["daqakd_register_augmentations"]
    sys.modules.pop("daqakd_fake_plugin", None)


def test_autoload_switch_disables_entry_points(fresh_plugins, tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, GOOD_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DAQAKD_DISABLE_PLUGINS", "1")
    names = {r.name for r in plugins.plugin_records()}
    assert "fake" not in names and not (ADAPTERS & names)
    assert set(plugins.DEFAULT_PLUGINS) <= names  # built-ins always load
    with pytest.raises(UnknownNameError, match="DAQAKD_DISABLE_PLUGINS"):
        plugins.get_backend("brevitas")
    # an explicit module list still loads with autoloading off
    plugins.reset_plugins()
    monkeypatch.setenv("DAQAKD_PLUGINS", "daqakd_fake_plugin")
    assert "fake-flip" in plugins.get_augmentations()
    sys.modules.pop("daqakd_fake_plugin", None)


def test_misspelled_hook_fails_at_load_naming_plugin_and_hook(fresh_plugins, tmp_path, monkeypatch):
    _install_fake_distribution(
        tmp_path,
        """
        from daqakd_plugins import hookimpl

        @hookimpl
        def daqakd_register_augmentation(register):  # missing "s"
            pass
        """,
        ep="typo",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError) as ei:
        plugins.load_plugins()
    msg = str(ei.value)
    assert "'typo'" in msg and "daqakd_register_augmentation" in msg and "daqakd_register_augmentations" in msg
    sys.modules.pop("daqakd_fake_plugin", None)


def test_argument_missing_from_spec_fails_at_load(fresh_plugins):
    class Bad:
        @plugins.hookspecs.hookimpl
        def daqakd_register_metrics(self, register, device):  # `device` is not in the spec
            pass

    plugins.load_plugins()
    with pytest.raises(PluginLoadError) as ei:
        plugins.register_plugin(Bad(), name="bad-args")
    assert "bad-args" in str(ei.value) and "daqakd_register_metrics" in str(ei.value) and "device" in str(ei.value)
    assert "bad-args" not in {r.name for r in plugins.plugin_records()}


def test_broken_plugin_import_is_a_load_error(fresh_plugins, monkeypatch):
    monkeypatch.setenv("DAQAKD_PLUGINS", "no_such_module_for_daqakd")
    with pytest.raises(PluginLoadError, match="no_such_module_for_daqakd"):
        plugins.load_plugins()


def test_duplicate_names_are_rejected_naming_both_plugins(fresh_plugins):
    from daqakd_plugins.contracts import Augmentation

    class Dup:
        @plugins.hookspecs.hookimpl
        def daqakd_register_augmentations(self, register):
            register(Augmentation(name="none", fn=lambda x, t: (x, t)))

    plugins.register_plugin(Dup(), name="dup")
    with pytest.raises(PluginError) as ei:
        plugins.get_augmentations()
    assert "'none'" in str(ei.value) and "dup" in str(ei.value) and "builtin.augmentations" in str(ei.value)


def test_trace_switch_logs_hook_calls(fresh_plugins, monkeypatch, caplog):
    monkeypatch.setenv("DAQAKD_TRACE", "1")
    with caplog.at_level(logging.DEBUG, logger="daqakd.hooks"):
        plugins.get_backends()
    assert any("daqakd_register_backends" in r.getMessage() for r in caplog.records)


def test_import_does_not_pull_in_backends():
    code = (
        "import sys, daqakd_plugins\n"
        "daqakd_plugins.load_plugins(); daqakd_plugins.get_backends(); daqakd_plugins.get_augmentations()\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-c", "import sys, daqakd_plugins; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plugins_command_lists_every_registry_with_its_plugin():
    """`daqakd plugins --json` lists architectures and generators too, and who registered every name."""
    from daqakd_plugins.commands.plugins import collect
    from daqakd_plugins.plugins import REGISTRIES, get_architectures, get_generators

    info = collect()
    assert info["architectures"] == sorted(get_architectures()) and "small_resnet" in info["architectures"]
    assert info["generators"] == sorted(get_generators()) and "dcgan" in info["generators"]
    by = info["registered_by"]
    assert set(by) == set(REGISTRIES)
    assert by["generators"]["dcgan"] == "daqakd_plugins.datafree.generators"
    assert by["backends"]["brevitas"] == "brevitas" and by["architectures"]["small_resnet"].startswith("daqakd_plugins")
    for label in ("augmentations", "metrics", "loss_components", "loss_presets"):
        assert sorted(by[label]) == info[label], label


def test_plugins_command_json_reports_availability():
    out = subprocess.run([sys.executable, "-m", "daqakd_plugins", "plugins", "--json"],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    names = {p["name"] for p in info["plugins"]}
    assert set(plugins.DEFAULT_PLUGINS) <= names and ADAPTERS <= names
    backends = {b["backend"]: b for b in info["backends"]}
    assert set(backends) == BACKENDS
    for b in backends.values():  # every backend is installed in the test environment
        assert b["available"], b
        dist = {"nncf": "nncf", "brevitas": "brevitas", "pytorch-quantization": "pytorch-quantization",
                "modelopt": "nvidia-modelopt"}[b["backend"]]
        assert b["version"] == md.version(dist)
        assert b["install"] is None
    for p in info["plugins"]:
        assert p["hooks"], p  # every registered plugin implements at least one hook


def test_unavailable_backend_reports_install_command(fresh_plugins):
    from daqakd_plugins.contracts import BackendInfo

    class Missing:
        @plugins.hookspecs.hookimpl
        def daqakd_register_backends(self, register):
            register(BackendInfo(name="ghost", module="ghost_backend_not_installed", distribution="ghost",
                                 install='pip install "ghost-backend"'))

    plugins.register_plugin(Missing(), name="ghost-plugin")
    st = plugins.backend_status(plugins.get_backend("ghost"))
    assert st["available"] is False and st["install"] == 'pip install "ghost-backend"'
    assert "ModuleNotFoundError" in st["error"]
    from daqakd_plugins.backends import require_backend
    from daqakd_plugins.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match='pip install "ghost-backend"'):
        require_backend("ghost")


def test_unknown_backend_lists_known_ones(fresh_plugins):
    with pytest.raises(UnknownNameError) as ei:
        plugins.get_backend("tensorrt")
    assert "brevitas" in str(ei.value) and "nncf" in str(ei.value)
    assert plugins.get_backend("pytorch_quantization").name == "pytorch-quantization"


def test_the_default_backend_is_what_the_adapters_declare(fresh_plugins, tmp_path):
    """No core module names a default backend: the highest BackendInfo.default_priority among the
    implemented backends wins (brevitas declares it in-tree), and a plugin that declares a higher one
    becomes the default of the API and of the CLI."""
    from daqakd_plugins.contracts import BackendInfo
    from daqakd_plugins.distill import DistillConfig

    assert plugins.default_backend() == "brevitas"
    assert DistillConfig(out=str(tmp_path / "r")).backend == "brevitas"

    class Preferred:
        @plugins.hookspecs.hookimpl
        def daqakd_register_backends(self, register):
            register(BackendInfo(name="zzz-preferred", module="json", distribution="json", install="-",
                                 default_priority=1000))
            register(BackendInfo(name="aaa-stub", module="json", distribution="json", install="-",
                                 default_priority=10_000, implemented=False))  # cannot quantize: never the default

    plugins.register_plugin(Preferred(), name="preferred-plugin")
    assert plugins.default_backend() == "zzz-preferred"
    assert DistillConfig(out=str(tmp_path / "r")).backend == "zzz-preferred"
    assert DistillConfig(out=str(tmp_path / "r"), backend="brevitas").backend == "brevitas"
