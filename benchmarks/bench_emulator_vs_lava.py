"""Emulator vs Lava fixed_pt: time per sample, and the emulator on a 10k test set.

A random 784-300-100-10 IntegerNetwork at the paper's 1.33 % connectivity
(K = 2352 / 900 / 300), integrate-and-fire neurons (du = 4095, dv = 0) as the
rate-coded conversion produces them. Inputs are Fashion-MNIST test images
when Debian's dataset-fashion-mnist is installed, else random sparse images.
Also checks that both backends give the same spikes on the Lava samples.

    .venv/bin/python benchmarks/bench_emulator_vs_lava.py [--lava-samples 20]
        [--samples 10000] [--steps 100] [--chunk 1000]

Prints figures only; no assertion on time.
"""
from __future__ import annotations

import argparse
import gzip
import os
import time

import numpy as np

from deepr_neuro.simulate.emulator import EmulatorBackend, synops
from deepr_neuro.network.integer_network import (InputEncoding, IntegerNetwork, NeuronParams,
                                         SynapseLayer)

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


def load_inputs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if os.path.exists(FASHION):
        with gzip.open(FASHION, "rb") as fh:
            data = np.frombuffer(fh.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
        reps = -(-n // data.shape[0])
        return np.tile(data, (reps, 1))[:n], "Fashion-MNIST test images"
    x = rng.integers(0, 256, size=(n, 784)).astype(np.uint8)
    x[rng.random((n, 784)) < 0.8] = 0
    return x, "random sparse images (Fashion-MNIST not installed)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lava-samples", type=int, default=20)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    net = random_network(rng)
    x, source = load_inputs(max(args.samples, args.lava_samples), rng)
    emu = EmulatorBackend(chunk=args.chunk)
    print(f"network 784-300-100-10, synapses per layer "
          f"{[len(layer.rows) for layer in net.layers]}, steps {args.steps}, inputs: {source}")

    n = args.lava_samples
    if n > 0:
        from deepr_neuro.simulate.lava_backend import LavaBackend
        t0 = time.perf_counter()
        LavaBackend().run(net, x[:1], args.steps)
        t_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        lava = LavaBackend().run(net, x[:n], args.steps, record_spikes=True)
        t_all = time.perf_counter() - t0
        t_lava = (t_all - t_one) / max(n - 1, 1)       # per sample, compile excluded
        t0 = time.perf_counter()
        ref = emu.run(net, x[:n], args.steps, record_spikes=True)
        t_emu_small = (time.perf_counter() - t0) / n
        same = all(np.array_equal(a, b) for a, b in zip(lava.spikes, ref.spikes))
        print(f"Lava fixed_pt : {t_all:.2f} s for {n} samples (one compile); "
              f"{t_lava * 1e3:.1f} ms/sample after compile ({t_one:.2f} s for 1 sample)")
        print(f"emulator      : {t_emu_small * 1e3:9.2f} ms/sample (same {n} samples, recorded)")
        print(f"spike trains identical on all layers and steps: {same}")

    t0 = time.perf_counter()
    res = emu.run(net, x[:args.samples], args.steps)
    t_emu = time.perf_counter() - t0
    per = t_emu / args.samples
    act = synops(net, res)
    print(f"emulator      : {t_emu:.2f} s for {args.samples} samples x {args.steps} steps "
          f"= {per * 1e3:.3f} ms/sample")
    if n > 0:
        print(f"speed-up per sample (Lava / emulator, large batch): {t_lava / per:.0f}x")
    print("mean spikes per inference per layer:", np.round(act.spikes, 1).tolist())
    print("mean synops per inference per layer:", np.round(act.synops, 1).tolist(),
          f"total {act.total_synops:.0f}")


if __name__ == "__main__":
    main()
