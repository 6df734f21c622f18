#!/usr/bin/env bash
# Reproduce the README's sweep tables and plots (resumable: rerun to continue).
#   bash benchmarks/run_sweeps.sh digits    # about 80 seconds on 2 cores
#   bash benchmarks/run_sweeps.sh fmnist    # about 3 hours on 2 cores (soft-deepr dominates)
#   bash benchmarks/run_sweeps.sh spoken    # recurrent SNN on spoken digits, about 11 minutes on 2 cores
#   bash benchmarks/run_sweeps.sh spoken-rate  # its non-spiking (tanh) reference, about 6 minutes
#   bash benchmarks/run_sweeps.sh fmnist-rows  # recurrent SNN on row-sequential Fashion-MNIST, about 15 minutes
#   bash benchmarks/run_sweeps.sh mnist DIR # MNIST IDX files in DIR (not shipped: no download here)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dn="${DEEPR_NEURO:-$root/.venv/bin/deepr-neuro}"  # DEEPR_NEURO: another deepr-neuro command
cd "$root"
case "${1:-digits}" in
  digits)
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/digits_mlp.yaml \
        --connectivity 0.02,0.05,0.1,0.15,0.3,1.0 \
        --methods deepr,soft-deepr,global-deepr,fixed-sparse,prune-retrain,l1,dense --seeds 3 \
        --out benchmarks/results/sweep_digits --no-progress
    "$dn" plot benchmarks/results/sweep_digits ;;
  fmnist)
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/lenet300_100.yaml --dataset fashion-mnist \
        --connectivity 0.005,0.01,0.0133,0.02,0.05,0.1,1.0 \
        --methods deepr,fixed-sparse,prune-retrain,l1,dense --seeds 3 --out benchmarks/results/sweep_fmnist
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/lenet300_100.yaml --dataset fashion-mnist \
        --connectivity 0.005,0.01,0.0133,0.02,0.05,0.1,1.0 \
        --methods soft-deepr --seeds 3 --out benchmarks/results/sweep_fmnist
    "$dn" plot benchmarks/results/sweep_fmnist
    # connectivity 1.0 at the dense baselines' lr: is DEEP R's gap there the method or lr 0.5?
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/lenet300_100.yaml --dataset fashion-mnist \
        --connectivity 1.0 --methods deepr,fixed-sparse --seeds 3 --lr 0.05 \
        --out benchmarks/results/sweep_fmnist_dense_lr ;;
  spoken)
    # v4: 256 LIF, L1 1e-2, lr decay 0.9, per-connection Adam (spec); v3 = the same without per-connection Adam, v2 = 128 LIF, v1 = 128 LIF without L1 and decay
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/spoken_digits_rsnn.yaml \
        --connectivity 0.01,0.03,0.1 --methods deepr,fixed-sparse,prune-retrain --seeds 3 \
        --out benchmarks/results/sweep_spoken_digits_v4 --no-progress
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/spoken_digits_rsnn.yaml \
        --connectivity 1.0 --methods dense --seeds 3 --out benchmarks/results/sweep_spoken_digits_v4 --no-progress
    "$dn" plot benchmarks/results/sweep_spoken_digits_v4 ;;
  spoken-rate)
    # the non-spiking (tanh) reference of the same size, trained by the same code and recipe
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/spoken_digits_rate_reference.yaml \
        --connectivity 0.03,0.1 --methods deepr --seeds 3 --out benchmarks/results/sweep_spoken_digits_rate --no-progress
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/spoken_digits_rate_reference.yaml \
        --connectivity 1.0 --methods dense --seeds 3 --out benchmarks/results/sweep_spoken_digits_rate --no-progress
    "$dn" plot benchmarks/results/sweep_spoken_digits_rate ;;
  fmnist-rows)
    # row-sequential Fashion-MNIST on the recurrent SNN (Debian's dataset-fashion-mnist), 10 epochs a run
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/fmnist_rows_rsnn.yaml \
        --connectivity 0.03,0.1 --methods deepr --seeds 3 --out benchmarks/results/sweep_fmnist_rows --no-progress
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/fmnist_rows_rsnn.yaml \
        --connectivity 1.0 --methods dense --seeds 3 --out benchmarks/results/sweep_fmnist_rows --no-progress
    "$dn" plot benchmarks/results/sweep_fmnist_rows ;;
  mnist)
    dir="${2:-}"
    if [ -z "$dir" ] || [ ! -d "$dir" ]; then
      echo "usage: $0 mnist DIR  (DIR: the four MNIST IDX files, e.g. train-images-idx3-ubyte.gz; got '${dir}')" >&2
      exit 2
    fi
    "$dn" sweep --profile hardware_profiles/loihi.yaml --model models/lenet300_100.yaml \
        --dataset mnist --data-dir "$dir" \
        --connectivity 0.005,0.01,0.0133,0.02,0.05,0.1,1.0 \
        --methods deepr,soft-deepr,fixed-sparse,prune-retrain,l1,dense --seeds 3 --out benchmarks/results/sweep_mnist
    "$dn" plot benchmarks/results/sweep_mnist ;;
  *) echo "usage: $0 digits|fmnist|spoken|spoken-rate|fmnist-rows|mnist DIR" >&2; exit 2 ;;
esac
