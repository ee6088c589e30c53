"""daqakd adapter for NNCF 3.x (OpenVINO). Registered through the ``daqakd`` entry point (see pyproject.toml).

Importing this package imports neither NNCF nor torch; the hooks import them when called.
"""

from .options import NNCFOptions

__all__ = ["NNCFOptions"]
