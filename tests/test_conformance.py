"""The conformance kit (daqakd_plugins.testing) on the Brevitas adapter; each other adapter has its own
file (test_conformance_nncf.py, test_conformance_pytorch_quantization.py, test_conformance_modelopt.py).

    pytest -m conformance -k brevitas
"""

from __future__ import annotations

from daqakd_plugins.testing import parametrize_with_checks


@parametrize_with_checks(["brevitas"])
def test_conformance(backend: str, bits: tuple[int, int], check) -> None:
    check(backend, bits)
