#!/usr/bin/env bash
# One entry point for set-up + work, used by README.md and .ci/run.
#   bash scripts/dev.sh main [daqakd run options]   # set up, then rank -> distill -> export -> evaluate on digits
#   bash scripts/dev.sh test [pytest options]       # set up, then run the whole test suite
# Set-up creates ./.venv (or $DAQAKD_VENV) from nothing and installs daqakd with every backend at the
# exact versions in constraints.txt; it re-installs only when pyproject.toml or constraints.txt change.
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
cmd=${1:-}
shift || true
case "$cmd" in
  main) exec "$VENV/bin/daqakd" run --data digits --out runs/main "$@" ;;
  test) exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" ;;
  *) echo "usage: bash scripts/dev.sh main|test [options]" >&2; exit 2 ;;
esac
