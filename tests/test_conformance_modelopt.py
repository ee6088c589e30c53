"""The conformance kit (daqakd_plugins.testing) on the Model Optimizer adapter.

    pytest -m conformance -k modelopt
"""

from __future__ import annotations

from daqakd_plugins.testing import parametrize_with_checks


@parametrize_with_checks(["modelopt"])
def test_conformance(backend: str, bits: tuple[int, int], check) -> None:
    check(backend, bits)
