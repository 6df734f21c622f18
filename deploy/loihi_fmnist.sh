#!/usr/bin/env bash
# End-to-end recipe for the paper's LeNet-300-100 at 1.33 % connectivity on
# Fashion-MNIST (Debian's dataset-fashion-mnist), Loihi per-core budgets.
# About 2 minutes of training on 2 cores. Usage: deploy/loihi_fmnist.sh [RUN_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dn="${DEEPR_NEURO:-$root/.venv/bin/deepr-neuro}"
run="${1:-runs/fmnist}"
cd "$root"
"$dn" train --profile hardware_profiles/loihi.yaml --model models/lenet300_100.yaml --dataset fashion-mnist \
    --out "$run" --overwrite ${TRAIN_ARGS:-}
"$dn" report "$run"
"$dn" export "$run" --to lava
"$dn" simulate "$run" --backend emulator
"$dn" simulate "$run" --backend lava --samples "${LAVA_SAMPLES:-50}"
"$dn" crosscheck "$run" --samples "${CROSSCHECK_SAMPLES:-20}"
