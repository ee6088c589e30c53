"""The conformance kit (daqakd_plugins.testing) on the NNCF adapter: W8A8 and W4A4, real NNCF,
OpenVINO and onnxruntime on digits.

    pytest -m conformance -k nncf
"""

from __future__ import annotations

from daqakd_plugins.testing import parametrize_with_checks


@parametrize_with_checks(["nncf"])
def test_conformance(backend: str, bits: tuple[int, int], check) -> None:
    check(backend, bits)
