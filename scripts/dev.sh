#!/usr/bin/env bash
# One entry point for set-up + work, used by README.md and .ci/run.
#   bash scripts/dev.sh main [daqakd run options]   # set up, then rank -> distill -> export -> evaluate on digits
#   bash scripts/dev.sh test [pytest options]       # set up, then run the whole test suite
# Set-up creates ./.venv (or $DAQAKD_VENV) from nothing and installs daqakd with every backend at the
# exact versions in constraints.txt; it re-installs only when pyproject.toml or constraints.txt change, and
# builds NNCF's C++ extension when it is not cached yet (daqakd_nncf.prebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DAQAKD_VENV:-.venv}
PY=${PYTHON:-python3}
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.daqakd-stamp" 2>/dev/null)" != "$want" ]; then
  echo "[daqakd] setting up $VENV (first time: ~2 minutes, ~6 GB with torch and all four backends)" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all,dev]" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  "$VENV/bin/python" -c "import daqakd_plugins, torch, torchvision" # fail here, not later, if set-up broke
  echo "$want" > "$VENV/.daqakd-stamp"
fi
# NNCF compiles a C++ extension the first time it quantizes (minutes on a busy machine, and NNCF's own
# limit is 60 s): build it here, once, so no run or test races that compile (~1 s when it is cached).
"$VENV/bin/python" -m daqakd_nncf.prebuild
cmd=${1:-}
shift || true
case "$cmd" in
  main) exec "$VENV/bin/daqakd" run --data digits --out runs/main "$@" ;;
  test)
    # one pytest worker per core, at most 4 (each test runs torch on one thread; more workers than cores only
    # slow each other down); DAQAKD_TEST_WORKERS=0 runs in one process, and a later -n N overrides this
    cores=$(nproc 2>/dev/null || echo 2)
    workers=${DAQAKD_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
    exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -n "$workers" --dist worksteal "$@" ;;
  *) echo "usage: bash scripts/dev.sh main|test [options]" >&2; exit 2 ;;
esac
