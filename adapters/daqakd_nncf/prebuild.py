"""``python -m daqakd_nncf.prebuild``: compile NNCF's C++ CPU extension now, during set-up.

NNCF compiles ``quantized_functions_cpu`` the first time a quantizer runs on a machine (about 40 s on an
idle core, several minutes on a busy 2-core one) and, by default, gives up after 60 s. ``bash
scripts/dev.sh`` runs this module after installing, so neither ``daqakd run``/``distill --backend nncf``
nor the test suite has to race that compile. When the build is already cached (under
``~/.cache/torch_extensions`` or ``$TORCH_EXTENSIONS_DIR``) it returns in about a second without
importing NNCF. Exit status 0: built, cached, NNCF not installed, or no C++ compiler (NNCF then uses its
slower pure-torch quantizers, and says so); 1: the build did not finish (the message names the fix).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _cached() -> bool:
    """Whether the compiled extension is already where NNCF looks (its build folder: torch's extension
    root + ``nncf/quantized_functions_cpu/<torch version>``), checked without importing NNCF."""
    import logging

    # torch.utils.cpp_extension logs "No CUDA runtime is found" on every CPU-only machine: not news here
    logging.getLogger("torch.utils.cpp_extension").addFilter(lambda r: "No CUDA runtime" not in r.getMessage())
    import torch
    from torch.utils.cpp_extension import _get_build_directory

    build = Path(_get_build_directory("nncf/quantized_functions_cpu", verbose=False)) / torch.__version__
    return any(build.glob("quantized_functions_cpu*.so")) or any(build.glob("quantized_functions_cpu*.pyd"))


def main() -> int:
    if importlib.util.find_spec("nncf") is None:
        print("daqakd[nncf]: nncf is not installed; nothing to build.", file=sys.stderr)
        return 0
    try:
        if _cached():
            return 0
    except Exception:  # noqa: BLE001 - torch's private helper moved: fall back to NNCF's own check
        pass
    from daqakd_plugins.kit import DaqakdError

    from .plugin import ensure_extension, import_nncf

    try:
        import_nncf()  # imports nncf.torch and loads (compiles) the extension, saying so
    except DaqakdError as exc:
        print(f"daqakd[nncf]: set-up could not build NNCF's extension: {exc}", file=sys.stderr)
        return 1
    if ensure_extension() == "reference":  # no compiler: NNCF runs, slower; the warning above says how to fix it
        print("daqakd[nncf]: continuing without NNCF's compiled extension.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
