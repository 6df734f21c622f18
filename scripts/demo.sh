#!/usr/bin/env bash
# The main job on the embedded default data set (scikit-learn digits): set up
# if needed, then run the deploy/loihi_digits.sh recipe: train with DEEP R
# under Loihi's per-core budgets, print the per-core report, export to the
# chip's integer formats, simulate on the NumPy emulator (whole test set) and
# on Lava (a few samples), and cross-check emulator vs Lava vs Brian2.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
"$root/.venv/bin/deepr-neuro" profiles --dir "$root/hardware_profiles"
exec bash "$root/deploy/loihi_digits.sh" "${1:-runs/digits}"
