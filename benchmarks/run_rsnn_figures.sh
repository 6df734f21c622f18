#!/bin/bash
# Recurrent networks beyond the spoken-digits sweep (which is `bash benchmarks/run_sweeps.sh spoken`):
# training speed and memory of the spiking network, and row-sequential Fashion-MNIST
# (256 LIF over 4 cores), one seed each, through the ordinary CLI.
# Usage: bash benchmarks/run_rsnn_figures.sh [OUT]   (about 25 minutes on 2 cores; Fashion-MNIST from
# Debian's dataset-fashion-mnist package). Each run prints per-epoch accuracy, seconds and the share of
# update+rewiring; peak RSS and wall time go to OUT/rss.txt (GNU time).
set -e
OUT=${1:-runs/rsnn_figures}
mkdir -p "$OUT"
dn="${DEEPR_NEURO:-deepr-neuro}"
run() { name=$1; shift
  /usr/bin/time -f "$name peak_rss_kb %M wall %e" "$dn" train --profile hardware_profiles/loihi.yaml \
    --out "$OUT/$name" --overwrite --no-progress "$@" > "$OUT/$name.log" 2>&1; tail -1 "$OUT/$name.log" >> "$OUT/rss.txt"; }
S=models/spoken_digits_rsnn.yaml
run sd_dense   --model $S --method dense
run sd_deepr10 --model $S --method deepr --connectivity 0.1
F=models/fmnist_rows_rsnn.yaml
run fm_dense   --model $F --method dense
run fm_deepr10 --model $F --method deepr --connectivity 0.1
run fm_deepr03 --model $F --method deepr --connectivity 0.03
grep -h "test accuracy" "$OUT"/*.log
