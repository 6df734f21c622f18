#!/usr/bin/env bash
# Set up if needed (idempotent), then run the test suite. Extra arguments go to
# pytest, e.g. `scripts/test.sh -m slow` for the full-data-set runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/python -m pytest "$@"
