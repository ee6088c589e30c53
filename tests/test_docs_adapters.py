"""docs/adapters.md's example adapter is real: its code block runs, registers, and passes the whole
conformance kit (daqakd_plugins.testing), the way a user would register a local adapter.

    pytest -m conformance -k torch-fq      # ~1 min on 2 shared cores, most of it in check_resume
"""

from __future__ import annotations

import ast
import os
import re
import sys
import types
from pathlib import Path

import pytest

from daqakd_plugins import testing

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters.md"
MODULE = "daqakd_torch_fq"  # the doc's code block starts with "# daqakd_torch_fq.py"
BACKEND = "torch-fq"


def adapter_source() -> str:
    """The one ```python block of docs/adapters.md that opens with ``# daqakd_torch_fq.py``."""
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)
    found = [b for b in blocks if b.startswith(f"# {MODULE}.py")]
    assert len(found) == 1, f"docs/adapters.md must hold exactly one ```python block opening with '# {MODULE}.py'"
    return found[0]


@pytest.fixture
def torch_fq(fresh_plugins, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    """The doc's adapter executed as a fresh module and registered at run time in this process; for the
    subprocesses the kit starts (daqakd distill, the blocked-import check), the same code as a file on
    PYTHONPATH named in DAQAKD_PLUGINS, as docs/adapters.md §3 tells users to do."""
    from daqakd_plugins.plugins import register_plugin

    src = adapter_source()
    path = tmp_path / f"{MODULE}.py"
    path.write_text(src, encoding="utf-8")
    mod = types.ModuleType(MODULE)
    mod.__file__ = str(path)
    monkeypatch.setitem(sys.modules, MODULE, mod)  # as an import would (dataclasses look the module up)
    exec(compile(src, str(path), "exec"), mod.__dict__)
    register_plugin(mod, name=MODULE)  # loads the other plugins first: DAQAKD_PLUGINS is still unset here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("DAQAKD_PLUGINS", MODULE)
    return mod


@pytest.mark.conformance
@pytest.mark.parametrize("check", testing.CHECKS, ids=[f"{BACKEND}-{c.__name__.removeprefix('check_')}" for c in testing.CHECKS])
def test_doc_adapter_passes_the_kit(torch_fq: types.ModuleType, check) -> None:
    """Each kit check, at every bit widths the kit schedules it for this backend (read after registration,
    so the doc's registered range decides, as parametrize_with_checks would)."""
    runs = [(b, bits) for b, bits, c in testing.checks(BACKEND) if c is check]
    assert runs, f"the kit schedules {check.__name__} for no bit widths of {BACKEND}"
    for backend, bits in runs:
        try:
            check(backend, bits)
        except Exception as exc:
            raise AssertionError(f"docs/adapters.md's adapter fails {check.__name__} at W{bits[0]}A{bits[1]}: "
                                 f"{type(exc).__name__}: {exc}") from exc


def test_doc_adapter_imports_only_the_kit_and_its_backend() -> None:
    """The example needs nothing of daqakd beyond daqakd_plugins.kit, and imports onnxruntime (its
    BackendInfo.module) only inside a hook, never at module level."""
    tree = ast.parse(adapter_source())
    daqakd = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("daqakd"):
            daqakd.add(node.module + ":" + ",".join(a.name for a in node.names))
        elif isinstance(node, ast.Import):
            daqakd |= {a.name for a in node.names if a.name.startswith("daqakd")}
    assert daqakd == {"daqakd_plugins:kit"}, daqakd
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
           for a in (n.names if isinstance(n, ast.Import) else [ast.alias(name=n.module or "")])}
    assert "onnxruntime" not in top, "the backend must be imported lazily, inside the hooks"


def test_doc_adapter_shows_in_daqakd_plugins(torch_fq: types.ModuleType) -> None:
    """What `daqakd plugins` reports for it: the plugin with its hooks, the backend available with its range."""
    from daqakd_plugins.commands.plugins import collect

    info = collect()
    plugin = next(p for p in info["plugins"] if p["name"] == MODULE)
    assert set(plugin["hooks"]) == {"daqakd_register_backends", "daqakd_quantize", "daqakd_calibrate",
                                    "daqakd_export", "daqakd_describe_quantizers"}
    backend = next(b for b in info["backends"] if b["backend"] == BACKEND)
    assert backend["available"] and backend["module"] == "onnxruntime"
    assert backend["weight_bits"] == [2, 8] and backend["act_bits"] == [1, 8]


def test_doc_names_every_check_and_backend_hook() -> None:
    """docs/adapters.md stays in step with the kit and the hookspecs: every check and every backend hook
    is described there."""
    import inspect

    from daqakd_plugins import hookspecs

    text = DOC.read_text(encoding="utf-8")
    missing = [c.__name__ for c in testing.CHECKS if f"`{c.__name__}`" not in text]
    assert not missing, f"checks not described in docs/adapters.md §5: {missing}"
    # the backend hooks: those taking a request object, plus registration, describing and unwrapping
    hooks = [n for n in dir(hookspecs) if n.startswith("daqakd_") and (
        "request" in inspect.signature(getattr(hookspecs, n)).parameters
        or n in ("daqakd_register_backends", "daqakd_describe_quantizers", "daqakd_unwrap_output"))]
    assert len(hooks) == 8, hooks
    missing = [h for h in hooks if f"`{h}(" not in text]
    assert not missing, f"backend hooks without a contract row in docs/adapters.md §4: {missing}"
