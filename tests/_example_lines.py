"""What the backend example tests share: the marks on the lines DA-QAKD adds and replaces, and the upstream
script rebuilt from an example (the added lines deleted, the replaced upstream lines uncommented)."""

from __future__ import annotations

MARK = "# DA-QAKD"
REPLACED = "  # DA-QAKD: replaced"


def marked(src: str) -> list[str]:
    """The lines DA-QAKD adds."""
    return [ln for ln in src.splitlines() if ln.rstrip().endswith(MARK)]


def replaced(src: str) -> list[str]:
    """The upstream lines DA-QAKD replaces (commented out in the example)."""
    return [ln for ln in src.splitlines() if ln.rstrip().endswith(REPLACED.strip())]


def upstream(src: str) -> str:
    """The upstream script: the added lines deleted, the replaced upstream lines uncommented."""
    out = []
    for ln in src.splitlines():
        if ln.rstrip().endswith(MARK):
            continue
        if ln.rstrip().endswith(REPLACED.strip()):
            body = ln.rstrip()[: -len(REPLACED)]
            indent = body[: len(body) - len(body.lstrip())]
            ln = indent + body.lstrip().removeprefix("# ")
        out.append(ln)
    return "\n".join(out) + "\n"
