"""Where accuracy goes: float ANN -> quantized ANN -> spiking network.

Usage::

    python benchmarks/bench_conversion.py RUN_DIR [--steps 100] [--bits 8]
        [--steps-list 10,20,50,100,200] [--max-rate 0.6] [--synaptic-tau 4]
        [--percentile 99.9] [--limit N]

RUN_DIR is a trained bundle (``deepr-neuro train ... --out RUN_DIR``:
``manifest.json`` + ``network.npz`` with ``l{i}_rows/cols/weight``). The data
set, its split and the data directory are read from the manifest's training
settings; calibration uses the training split, accuracies the test split.
The profile's widths come from the manifest's ``profile``. Prints float,
quantized-ANN and SNN accuracy side by side, then the steps/accuracy table
(NumPy emulator, bit-exact with Lava's fixed_pt models).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepr_neuro.store.bundle import load_bundle  # noqa: E402
from deepr_neuro.hardware.chip_format import ChipFormat  # noqa: E402
from deepr_neuro.convert.conversion import convert  # noqa: E402
from deepr_neuro.convert.accuracy import quantized_ann_accuracy, steps_accuracy_table  # noqa: E402
from deepr_neuro.store.codec import float_projections_from_arrays  # noqa: E402
from deepr_neuro.training.datasets import load_dataset  # noqa: E402
from deepr_neuro.hardware.profile import HardwareProfile  # noqa: E402
from deepr_neuro.convert.quantize import float_accuracy  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run directory (manifest.json + network.npz)")
    ap.add_argument("--steps", type=int, default=100, help="steps per sample for the conversion")
    ap.add_argument("--steps-list", default="10,20,50,100,200")
    ap.add_argument("--bits", type=int, default=None, help="weight bits (default: the profile's)")
    ap.add_argument("--max-rate", type=float, default=0.6)
    ap.add_argument("--input-rate", type=float, default=0.4)
    ap.add_argument("--synaptic-tau", type=float, default=4.0)
    ap.add_argument("--reset-compensation", type=float, default=0.5)
    ap.add_argument("--percentile", type=float, default=99.9)
    ap.add_argument("--calib", type=int, default=5000, help="calibration samples (training split)")
    ap.add_argument("--limit", type=int, default=None, help="evaluate on the first N test samples")
    a = ap.parse_args(argv)

    manifest, arrays = load_bundle(Path(a.run))
    tr = manifest.get("training", {})
    ds = load_dataset(tr.get("dataset") or manifest["dataset"]["name"], tr.get("data_dir"),
                      val_fraction=tr.get("val_fraction", 0.1), seed=tr.get("seed", 0))
    layers = float_projections_from_arrays(arrays, manifest["graph"])
    fmt = ChipFormat.from_profile(HardwareProfile.model_validate(manifest["profile"]), a.bits)
    x_cal = ds.x_train[:a.calib]
    x, y = ds.x_test, ds.y_test
    if a.limit:
        x, y = x[:a.limit], y[:a.limit]

    t0 = time.perf_counter()
    net, info = convert(layers, x_cal, fmt=fmt, steps=a.steps, percentile=a.percentile,
                        max_rate=a.max_rate, input_rate=a.input_rate,
                        synaptic_tau=a.synaptic_tau, reset_compensation=a.reset_compensation,
                        names=[q["name"] for q in manifest["graph"]["projections"]])
    t_conv = time.perf_counter() - t0
    acc_f = float_accuracy(layers, x, y)
    acc_q = quantized_ann_accuracy(net, x, y)
    t0 = time.perf_counter()
    steps_list = sorted({int(s) for s in a.steps_list.split(",")} | {a.steps})
    table = steps_accuracy_table(net, x, y, steps_list)
    t_sim = time.perf_counter() - t0
    acc_s = next(r["accuracy"] for r in table if r["steps"] == a.steps)

    print(f"run {a.run}: {ds.name}, {len(layers)} layers "
          f"{[L['n_in'] for L in layers] + [layers[-1]['n_out']]}, "
          f"{sum(len(L['weight']) for L in layers)} connections; "
          f"test n = {len(y)}, calibration n = {len(x_cal)}")
    print(f"conversion: {fmt.num_weight_bits}-bit weights, percentile {a.percentile}, "
          f"max_rate {a.max_rate}, synaptic_tau {a.synaptic_tau}, input vth "
          f"{info['input_encoding']['vth']} (rate at 255: "
          f"{info['input_encoding']['rate_at_255']:.3f}/step), {t_conv:.2f} s")
    for L in info["layers"]:
        print(f"  {L['name']:>6}: weight_exp {L['weight_exp']:>2}  vth {L['vth']:>6}  du {L['du']}"
              f"  lambda {L['activation_percentile']:.3f}  scale {L['weight_scale']:.1f}")
    print()
    print(f"{'float ANN':>14} {'quantized ANN':>14} {'SNN @' + str(a.steps):>14}")
    print(f"{acc_f:>14.4f} {acc_q:>14.4f} {acc_s:>14.4f}")
    print(f"gap SNN - float: {100 * (acc_s - acc_f):+.2f} points "
          f"(quantization {100 * (acc_q - acc_f):+.2f}, spiking {100 * (acc_s - acc_q):+.2f})")
    print()
    print(f"{'steps':>6} {'SNN acc':>8} {'vs float':>9} {'out spikes':>11}")
    for r in table:
        print(f"{r['steps']:>6} {r['accuracy']:>8.4f} {100 * (r['accuracy'] - acc_f):>+8.2f}p "
              f"{r['mean_output_spikes']:>11.1f}")
    print(f"(emulator: {t_sim:.1f} s for {len(steps_list)} runs of {len(y)} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
