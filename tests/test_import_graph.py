"""The import graph of daqakd_plugins, read with ``ast`` (issue 10, "Adapter kit").

Four rules:

* the core never imports the built-ins: no module outside ``daqakd_plugins.builtin`` imports
  ``daqakd_plugins.builtin`` or anything under it, in any form (module level, inside a function, under
  ``if TYPE_CHECKING``). The built-ins reach the core through the plugin manager, which names them as
  strings (registration, not import).
* the module-level import graph has no cycle. Imports inside functions (lazy, run at call time) and
  under ``if TYPE_CHECKING`` do not run at import time and are left out of this rule.
* counting the imports inside functions too, there is still no cycle (a lazy import that closes a circle
  is a layering knot waiting to become an import-time one).
* no module imports another module's ``_private`` name (in the core and in the adapters).
* an adapter imports ``daqakd_plugins.kit`` and nothing deeper (in any form, inside functions too), and an
  adapter package's own imports have no cycle either.

Run as a script (``python tests/test_import_graph.py``) to print the edges that close each cycle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "daqakd_plugins"
BUILTIN = f"{PACKAGE}.builtin"


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    top_level: bool  # runs at import time (not in a function, not under `if TYPE_CHECKING`)


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name (a package is named by its ``__init__``)."""
    out: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs at import time."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def walk(node: ast.AST, top: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, top))
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            top = False  # runs when called, not at import
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                walk(stmt, False)
            for stmt in node.orelse:
                walk(stmt, top)
            return
        for child in ast.iter_child_nodes(node):
            walk(child, top)

    walk(tree, True)
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """The package modules an import statement loads (explicitly named; parents are not counted)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return [n for n in names if n in modules]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base)
        target = f"{prefix}.{node.module}" if node.module else prefix
    else:
        target = node.module or ""
    out = []
    attrs = False  # a name that is not a submodule: an attribute of `target` itself
    for alias in node.names:  # `from . import backends`, `from .builtin import losses`
        sub = f"{target}.{alias.name}"
        if sub in modules:
            out.append(sub)
        else:
            attrs = True
    if attrs:
        parts = target.split(".")
        while parts and ".".join(parts) not in modules:  # an unknown submodule: its nearest package
            parts.pop()
        if parts:
            out.append(".".join(parts))
    return out


def import_edges(root: Path = ROOT) -> list[Edge]:
    files = module_files(root)
    modules = set(files)
    edges: list[Edge] = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, top in _imports(tree):
            for dst in _targets(node, mod, path.name == "__init__.py", modules):
                if dst != mod:
                    edges.append(Edge(mod, dst, node.lineno, top))
    return edges


def find_cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a self-loop), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(sccs)


def _describe(cycle: list[str], edges: list[Edge]) -> str:
    inside = set(cycle)
    lines = [f"  {e.src} -> {e.dst} (line {e.line})" for e in edges if e.src in inside and e.dst in inside]
    return "{" + ", ".join(cycle) + "}\n" + "\n".join(sorted(set(lines)))


def core_to_builtin(edges: list[Edge]) -> list[Edge]:
    def in_builtin(m: str) -> bool:
        return m == BUILTIN or m.startswith(BUILTIN + ".")

    return [e for e in edges if in_builtin(e.dst) and not in_builtin(e.src)]


# --------------------------------------------------------------------------------------------------
def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The parser finds relative, absolute, `from . import x`, function-local and TYPE_CHECKING imports."""
    pkg = tmp_path / PACKAGE
    (pkg / "builtin").mkdir(parents=True)
    (pkg / "sub").mkdir()
    for f in ("__init__.py", "builtin/__init__.py", "builtin/x.py", "sub/__init__.py", "b.py", "c.py"):
        (pkg / f).write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "import daqakd_plugins.c\n"
        "if TYPE_CHECKING:\n    from .sub import thing\n"
        "class K:\n    from .c import y\n"
        "def f():\n    from .builtin.x import z\n"
    )
    (pkg / "sub" / "m.py").write_text("from ..builtin import x\nfrom .. import a\n")
    edges = {(e.src, e.dst, e.top_level) for e in import_edges(tmp_path)}
    p = PACKAGE
    assert (f"{p}.a", f"{p}.b", True) in edges
    assert (f"{p}.a", f"{p}.c", True) in edges  # absolute import and class body (both run at import)
    assert (f"{p}.a", f"{p}.sub", False) in edges  # TYPE_CHECKING
    assert (f"{p}.a", f"{p}.builtin.x", False) in edges  # function-local
    assert (f"{p}.sub.m", f"{p}.builtin.x", True) in edges
    assert (f"{p}.sub.m", f"{p}.a", True) in edges
    bad = {(e.src, e.dst) for e in core_to_builtin(import_edges(tmp_path))}
    assert bad == {(f"{p}.a", f"{p}.builtin.x"), (f"{p}.sub.m", f"{p}.builtin.x")}
    (pkg / "b.py").write_text("from .sub import m\n")
    assert find_cycles([e for e in import_edges(tmp_path) if e.top_level]) == [[f"{p}.a", f"{p}.b", f"{p}.sub.m"]]


def test_the_core_never_imports_the_builtins():
    edges = import_edges()
    assert len({e.src for e in edges}) > 20, "the parser found almost no imports; is the package path right?"
    bad = core_to_builtin(edges)
    assert not bad, "core modules import daqakd_plugins.builtin (put what they need in the core or in a contract):\n" + "\n".join(
        f"  {e.src} -> {e.dst} (line {e.line}{'' if e.top_level else ', lazy'})" for e in bad
    )


def test_module_level_imports_have_no_cycle():
    edges = [e for e in import_edges() if e.top_level]
    cycles = find_cycles(edges)
    assert not cycles, "import cycles among module-level imports:\n" + "\n".join(_describe(c, edges) for c in cycles)


def test_no_cycle_counting_imports_inside_functions():
    edges = import_edges()
    cycles = find_cycles(edges)
    assert not cycles, "import cycles (imports inside functions included):\n" + "\n".join(
        _describe(c, edges) for c in cycles)


def private_imports(root: Path = ROOT) -> list[str]:
    """``from x import _name`` where ``x`` is another module of the core or of an adapter package."""
    found: list[str] = []
    bases = [(root, PACKAGE)] + [(root / "adapters", p.name) for p in sorted((root / "adapters").glob("daqakd_*"))]
    for top, pkg in bases:
        for path in sorted((top / pkg).rglob("*.py")):
            parts = list(path.relative_to(top).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            mod = ".".join(parts[:-1] if is_pkg else parts)
            for node, _ in _imports(ast.parse(path.read_text(), filename=str(path))):
                if not isinstance(node, ast.ImportFrom):
                    continue
                ours = node.level > 0 or (node.module or "").split(".")[0] in {PACKAGE, pkg}
                for alias in node.names:
                    name = alias.name
                    if ours and name.startswith("_") and not name.startswith("__"):
                        found.append(f"{mod} (line {node.lineno}) imports {'.' * node.level}{node.module or ''}.{name}")
    return found


def test_no_private_name_is_imported_across_modules():
    bad = private_imports()
    assert not bad, "private names imported from another module (make them public, or move them):\n" + "\n".join(bad)


def adapter_core_imports(root: Path = ROOT) -> list[str]:
    """Every import of ``daqakd_plugins`` by an adapter that is not ``daqakd_plugins.kit``."""
    found: list[str] = []
    for path in sorted((root / "adapters").glob("daqakd_*/**/*.py")):
        where = path.relative_to(root)
        for node, _ in _imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif node.level:
                continue  # the adapter's own modules
            elif node.module == PACKAGE:
                mods = [f"{PACKAGE}.{a.name}" for a in node.names]  # `from daqakd_plugins import kit`
            else:
                mods = [node.module or ""]
            bad = [m for m in mods if m.split(".")[0] == PACKAGE and m != f"{PACKAGE}.kit"]
            found += [f"{where} (line {node.lineno}) imports {m}" for m in bad]
    return found


def adapter_edges(package: Path) -> list[Edge]:
    """The import edges among one adapter package's own modules."""
    files: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    edges = []
    for mod, path in files.items():
        for node, top in _imports(ast.parse(path.read_text(), filename=str(path))):
            for dst in _targets(node, mod, path.name == "__init__.py", set(files)):
                if dst != mod:
                    edges.append(Edge(mod, dst, node.lineno, top))
    return edges


def test_adapters_import_the_kit_and_nothing_deeper():
    bad = adapter_core_imports()
    assert not bad, "adapters import daqakd_plugins beyond the kit (add what they need to kit.py):\n" + "\n".join(bad)


def test_the_adapter_check_sees_every_form(tmp_path):
    pkg = tmp_path / "adapters" / "daqakd_x"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text(
        "from daqakd_plugins import kit\nfrom daqakd_plugins.kit import hookimpl\nfrom . import b\n"
        "from daqakd_plugins import LossTerm\nimport daqakd_plugins.data\n"
        "def f():\n    from daqakd_plugins.augment import resolve_augmentation\n")
    (pkg / "b.py").write_text("def g():\n    from .a import f\n")
    assert [b.split(" imports ")[1] for b in adapter_core_imports(tmp_path)] == [
        "daqakd_plugins.LossTerm", "daqakd_plugins.data", "daqakd_plugins.augment"]
    assert find_cycles(adapter_edges(pkg)) == [["daqakd_x.a", "daqakd_x.b"]]


def test_no_cycle_inside_an_adapter():
    for package in sorted((ROOT / "adapters").glob("daqakd_*")):
        edges = adapter_edges(package)
        cycles = find_cycles(edges)
        assert not cycles, f"import cycles in {package.name}:\n" + "\n".join(_describe(c, edges) for c in cycles)


if __name__ == "__main__":
    all_edges = import_edges()
    for label, sel in (("module-level", [e for e in all_edges if e.top_level]), ("all (incl. lazy)", all_edges)):
        cyc = find_cycles(sel)
        print(f"{label}: {len(cyc)} cycle(s)")
        for c in cyc:
            print(_describe(c, sel))
    print("core -> builtin:")
    for e in core_to_builtin(all_edges):
        print(f"  {e.src} -> {e.dst} (line {e.line}{'' if e.top_level else ', lazy'})")
