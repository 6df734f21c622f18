#!/usr/bin/env bash
# Set up if needed (idempotent), then run the test suite. Extra arguments go to
# pytest, e.g. `scripts/test.sh -m slow` for the full-data-set runs.
# PYTHON and VENV are passed to scripts/setup.sh (which interpreter, which
# venv), e.g. `PYTHON=python3.13 VENV=.venv-3.13 bash scripts/test.sh -q`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
venv="${VENV:-.venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
exec "$venv/bin/python" -m pytest "$@"
