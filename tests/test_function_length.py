"""No function in the package or the adapters is longer than MAX_LINES (issue 23, "one run engine": keep
the code easy to change). A function is measured from its ``def`` line to its last line, decorators
excluded and docstring included (``node.end_lineno - node.lineno + 1``); methods and nested functions
count on their own. A function that grows past the limit is split along a real seam (named stages with
one-line docstrings), not cut arbitrarily."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("daqakd_plugins", "adapters")
MAX_LINES = 80



def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """``(qualified name, lines)`` of every function in ``tree``, methods as ``Class.method`` and nested
    functions as ``outer.inner``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            yield prefix + node.name, node.end_lineno - node.lineno + 1
            yield from _functions(node, prefix + node.name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


def _lengths() -> dict[str, int]:
    """``path::qualified name`` → lines, over every .py file of the package and the adapters."""
    out: dict[str, int] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for name, lines in _functions(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
                out[f"{rel}::{name}"] = max(lines, out.get(f"{rel}::{name}", 0))
    return out


def test_no_function_is_longer_than_the_limit() -> None:
    lengths = _lengths()
    assert len(lengths) > 100, "found too few functions: is ROOT right?"
    long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not long, (
        f"{len(long)} function(s) over {MAX_LINES} lines; split each along a real seam (named stages with one-line "
        "docstrings) without changing behaviour:\n" + "\n".join(f"  {name}: {n} lines" for name, n in sorted(long.items()))
    )
