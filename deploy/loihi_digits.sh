#!/usr/bin/env bash
# End-to-end recipe: Loihi profile -> DEEP R training on digits -> budget check
# -> export to Lava's integer formats -> simulate (emulator: whole test set;
# Lava: a few samples) -> cross-check emulator vs Lava vs Brian2.
# Copy it and change the profile, model or data set. Usage: deploy/loihi_digits.sh [RUN_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dn="${DEEPR_NEURO:-$root/.venv/bin/deepr-neuro}"
run="${1:-runs/digits}"
cd "$root"
"$dn" train --profile hardware_profiles/loihi.yaml --model models/digits_mlp.yaml --out "$run" --overwrite ${TRAIN_ARGS:-}
"$dn" report "$run"                                   # exits 1 if any core is over budget
"$dn" export "$run" --to lava
"$dn" simulate "$run" --backend emulator
"$dn" simulate "$run" --backend lava --samples "${LAVA_SAMPLES:-20}"
"$dn" crosscheck "$run" --samples "${CROSSCHECK_SAMPLES:-10}"   # exits 1 if integer backends disagree
