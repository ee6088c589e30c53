"""The conformance kit (daqakd_plugins.testing) on every implemented backend adapter.

    pytest -m conformance -k brevitas      # the kit on one backend
"""

from __future__ import annotations

from daqakd_plugins.testing import parametrize_with_checks

IMPLEMENTED = ["brevitas"]


@parametrize_with_checks(IMPLEMENTED)
def test_conformance(backend: str, bits: tuple[int, int], check) -> None:
    check(backend, bits)
