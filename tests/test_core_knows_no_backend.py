"""The core knows no backend: no module under daqakd_plugins/ imports a backend package or names a
backend's types (Brevitas' QuantTensor, its shared-quantizer reload workaround); those live in the
adapters, behind the hooks."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "daqakd_plugins"
BACKENDS = ("brevitas", "nncf", "pytorch_quantization", "modelopt", "openvino", "qonnx")
#: the backends' registered names: a string that is exactly one of them is a hard-coded choice (the
#: default backend comes from what the adapters declare, BackendInfo.default_priority)
BACKEND_STRINGS = ("brevitas", "nncf", "pytorch-quantization", "modelopt")
BACKEND_NAMES = ("QuantTensor", "IntQuantTensor", "load_state_keep_aliases", "TensorQuantizer", "mtq", "mto")


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in BACKENDS]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in BACKENDS:
                out.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Name) and node.id in BACKEND_NAMES:
            out.append(f"name {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in BACKEND_NAMES:
            out.append(f"attribute .{node.attr}")
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in BACKEND_NAMES:
            out.append(f"defines {node.name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in BACKEND_STRINGS:
            out.append(f"string {node.value!r}")
    return out


def test_no_core_module_imports_or_names_a_backend() -> None:
    found = {str(p.relative_to(CORE)): o for p in sorted(CORE.rglob("*.py")) if (o := _offences(p))}
    assert not found, f"backend-specific code in the core: {found}"


def test_the_check_sees_what_it_guards(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x):\n    from brevitas.quant_tensor import QuantTensor\n    return isinstance(x, QuantTensor)\n")
    assert _offences(bad) == ["from brevitas.quant_tensor import ...", "name QuantTensor"]
    bad.write_text('def f(backend=None):\n    """The default is brevitas."""\n    return backend or "brevitas"\n')
    assert _offences(bad) == ["string 'brevitas'"]
