"""Emulator vs Lava fixed_pt: time per sample, and the emulator on a 10k test set.

Two networks of the same size:

* feed-forward (FF): a random 784-300-100-10 IntegerNetwork at the paper's
  1.33 % connectivity (K = 2352 / 900 / 300), integrate-and-fire neurons
  (du = 4095, dv = 0) as the rate-coded conversion produces them;
* recurrent (REC): the same chain as an IntegerGraph plus a recurrent
  projection 300 -> 300 (``--rec-density``, 2 % = 1800 synapses), so the hidden
  population receives two projections (input and itself) every step.

Inputs are Fashion-MNIST test images when Debian's dataset-fashion-mnist is
installed, else random sparse images. Also checks that both backends give the
same spikes on the Lava samples, in every population and step.

    .venv/bin/python benchmarks/bench_emulator_vs_lava.py [--lava-samples 20]
        [--samples 10000] [--steps 100] [--chunk 1000] [--only ff|rec]

Prints figures only; no assertion on time.
"""
from __future__ import annotations

import argparse
import gzip
import os
import time

import numpy as np

from deepr_neuro.simulate.activity import synops
from deepr_neuro.simulate.emulator import EmulatorBackend
from deepr_neuro.network.integer_network import (InputEncoding, IntegerGraph, IntegerNetwork, NeuronParams,
                                                 Projection, SynapseLayer, chain_to_graph)

FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def random_network(rng: np.random.Generator) -> IntegerNetwork:
    sizes = [784, 300, 100, 10]
    budgets = [2352, 900, 300]
    vths = [60, 40, 30]
    layers = []
    for i, (n_in, n_out, k) in enumerate(zip(sizes[:-1], sizes[1:], budgets)):
        flat = np.sort(rng.choice(n_in * n_out, size=k, replace=False))
        rows, cols = (flat // n_in).astype(np.int32), (flat % n_in).astype(np.int32)
        mag = rng.integers(20, 256, size=k)
        sign = np.where(rng.random(k) < 0.7, 1, -1)
        weights = np.clip(sign * mag, -256, 255).astype(np.int32)
        layers.append(SynapseLayer(
            name=f"fc{i + 1}", n_in=n_in, n_out=n_out, rows=rows, cols=cols,
            weights=weights, weight_exp=0, num_weight_bits=8,
            neurons=NeuronParams(vth=vths[i], du=4095, dv=0, bias_exp=0,
                                 bias_mant=np.zeros(n_out, np.int32))))
    # input: bias_mant = x >> 1 (0..127), bias_exp 6, vth 300: a 255 pixel spikes every 3rd step
    inputs = NeuronParams(vth=300, du=4095, dv=0, bias_exp=6,
                          bias_mant=np.zeros(784, np.int32))
    return IntegerNetwork(input_neurons=inputs, encoding=InputEncoding(gain=1, shift=1),
                          layers=layers)


def recurrent_graph(net: IntegerNetwork, rng: np.random.Generator, density: float) -> IntegerGraph:
    """The FF network's graph plus a recurrent projection onto the first hidden population."""
    g = chain_to_graph(net)
    hidden = g.populations[1]
    n = hidden.n
    k = max(1, int(round(density * n * n)))
    flat = np.sort(rng.choice(n * n, size=k, replace=False))
    rows, cols = (flat // n).astype(np.int32), (flat % n).astype(np.int32)
    mag = rng.integers(20, 256, size=k)
    sign = np.where(rng.random(k) < 0.5, 1, -1)
    rec = Projection(name=f"{hidden.name}_rec", pre=hidden.name, post=hidden.name, rows=rows, cols=cols,
                     weights=np.clip(sign * mag, -256, 255).astype(np.int32), weight_exp=-1, num_weight_bits=8)
    return IntegerGraph(populations=g.populations, projections=g.projections + (rec,), encoding=g.encoding,
                        readout=g.readout)


def load_inputs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if os.path.exists(FASHION):
        with gzip.open(FASHION, "rb") as fh:
            data = np.frombuffer(fh.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
        reps = -(-n // data.shape[0])
        return np.tile(data, (reps, 1))[:n], "Fashion-MNIST test images"
    x = rng.integers(0, 256, size=(n, 784)).astype(np.uint8)
    x[rng.random((n, 784)) < 0.8] = 0
    return x, "random sparse images (Fashion-MNIST not installed)"


def compare(label, net, x, args, emu):
    """Lava and emulator on the same samples; returns the Lava/emulator ratio (None without Lava)."""
    n = args.lava_samples
    t_lava = None
    if n > 0:
        from deepr_neuro.simulate.lava_backend import LavaBackend
        backend = LavaBackend()
        t0 = time.perf_counter()
        lava = backend.run(net, x[:n], args.steps, record_spikes=True)
        t_all = time.perf_counter() - t0
        per_sample = backend.sample_seconds
        t_one = per_sample[0]                          # includes the compile
        # median over the samples after the first: robust to the compile and to a busy machine
        t_lava = float(np.median(per_sample[1:])) if len(per_sample) > 1 else t_one
        t0 = time.perf_counter()
        ref = emu.run(net, x[:n], args.steps, record_spikes=True)
        t_emu_small = (time.perf_counter() - t0) / n
        same = all(np.array_equal(a, b) for a, b in zip(lava.spikes, ref.spikes))
        print(f"[{label}] Lava fixed_pt : {t_all:.2f} s for {n} samples (one compile); "
              f"{t_lava * 1e3:.1f} ms/sample after compile (median; first sample with compile {t_one:.2f} s)")
        print(f"[{label}] emulator      : {t_emu_small * 1e3:9.2f} ms/sample (same {n} samples, recorded)")
        print(f"[{label}] spike trains identical in all populations and steps: {same}")

    t0 = time.perf_counter()
    res = emu.run(net, x[:args.samples], args.steps)
    t_emu = time.perf_counter() - t0
    per = t_emu / args.samples
    act = synops(net, res)
    print(f"[{label}] emulator      : {t_emu:.2f} s for {args.samples} samples x {args.steps} steps "
          f"= {per * 1e3:.3f} ms/sample")
    ratio = t_lava / per if t_lava is not None else None
    if ratio is not None:
        print(f"[{label}] speed-up per sample (Lava / emulator, large batch): {ratio:.0f}x")
    print(f"[{label}] mean spikes per inference per population:", np.round(act.spikes, 1).tolist())
    print(f"[{label}] mean synops per inference per projection:",
          {k: round(v, 1) for k, v in act.projection_synops.items()}, f"total {act.total_synops:.0f}")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lava-samples", type=int, default=20)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rec-density", type=float, default=0.02)
    ap.add_argument("--only", choices=("ff", "rec"), default=None)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    net = random_network(rng)
    x, source = load_inputs(max(args.samples, args.lava_samples), rng)
    rec = recurrent_graph(net, np.random.default_rng(args.seed + 1), args.rec_density)
    emu = EmulatorBackend(chunk=args.chunk)
    print(f"network 784-300-100-10, synapses per layer "
          f"{[len(layer.rows) for layer in net.layers]}, recurrent 300 -> 300: {rec.projections[-1].rows.size} "
          f"synapses ({args.rec_density:.1%}), steps {args.steps}, inputs: {source}")
    ratios = {}
    if args.only in (None, "ff"):
        ratios["FF"] = compare("FF", net, x, args, emu)
    if args.only in (None, "rec"):
        ratios["REC"] = compare("REC", rec, x, args, emu)
    print("ratios (Lava / emulator per sample):",
          ", ".join(f"{k} {v:.0f}x" if v is not None else f"{k} n/a" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
