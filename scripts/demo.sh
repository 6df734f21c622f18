#!/usr/bin/env bash
# The main job on the embedded default data set (scikit-learn digits):
# set up if needed, train with DEEP R under Loihi's per-core budgets, print the
# per-core report, then export to the chip's integer formats, simulate on the
# NumPy emulator and on Lava, and cross-check against Brian2.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
run="${1:-runs/digits}"
dn=".venv/bin/deepr-neuro"
"$dn" profiles
"$dn" train --profile hardware_profiles/loihi.yaml --model models/digits_mlp.yaml --out "$run" --overwrite
"$dn" report "$run"
