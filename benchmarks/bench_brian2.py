"""Brian2 vs emulator: time per sample, exactness, and float-mode agreement.

A random 784-300-100-10 IntegerNetwork at the paper's 1.33 % connectivity
(K = 2352 / 900 / 300), integrate-and-fire neurons (du = 4095, dv = 0), built
as in bench_emulator_vs_lava.py (same seed, same network). Inputs are
Fashion-MNIST test images when Debian's dataset-fashion-mnist is installed,
else random sparse images.

Reports, on the same samples:
* emulator and Brian2 integer-mode time per sample, and their ratio;
* whether Brian2 integer mode gave the emulator's spikes exactly (every layer,
  step, sample);
* Brian2 time per sample when every sample builds its own network
  (batch_size=1) vs all samples as copies in one network (the default);
* Brian2 float mode: time per sample, classification agreement with the
  integer network, per-layer spike-count correlation; for the IF network
  (where the chip does no rounding) and for a leaky variant of it (hidden
  layers with du, dv = --leaky-du, --leaky-dv), where it does.

    .venv/bin/python benchmarks/bench_brian2.py [--samples 100] [--steps 100]
        [--single 5] [--batch 256] [--leaky-du 1023] [--leaky-dv 128]

Prints figures only; no assertion on time.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from deepr_neuro.simulate.brian2_backend import Brian2Backend
from deepr_neuro.simulate.crosscheck import count_correlation
from deepr_neuro.simulate.emulator import EmulatorBackend
from deepr_neuro.network.integer_network import IntegerNetwork, NeuronParams, SynapseLayer

# The same random LeNet-sized network and inputs as the emulator-vs-Lava benchmark.
from bench_emulator_vs_lava import load_inputs, random_network  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--single", type=int, default=5,
                    help="samples to time with one Brian2 network per sample")
    ap.add_argument("--batch", type=int, default=256, help="Brian2 batch_size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--leaky-du", type=int, default=1023)
    ap.add_argument("--leaky-dv", type=int, default=128)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    net = random_network(rng)
    x, source = load_inputs(args.samples, rng)
    n, steps = x.shape[0], args.steps
    k = [layer.rows.size for layer in net.layers]
    print(f"network {'-'.join(map(str, net.sizes))}, K = {'/'.join(map(str, k))}, "
          f"{n} samples ({source}) x {steps} steps")

    # warm-up (imports, Brian2's first code generation), not timed
    EmulatorBackend().run(net, x[:1], 2)
    Brian2Backend().run(net, x[:1], 2)
    Brian2Backend(mode="float").run(net, x[:1], 2)

    emu, t_emu = timed(lambda: EmulatorBackend().run(net, x, steps, record_spikes=True))
    b2i, t_b2i = timed(lambda: Brian2Backend(batch_size=args.batch).run(
        net, x, steps, record_spikes=True))
    exact = all(np.array_equal(a, b) for a, b in zip(emu.spikes, b2i.spikes))
    print("(emulator and brian2 integer timed with full spike trains recorded)")
    print(f"emulator           {1e3 * t_emu / n:9.2f} ms/sample")
    print(f"brian2 (integer)   {1e3 * t_b2i / n:9.2f} ms/sample   "
          f"ratio brian2/emulator = {t_b2i / t_emu:.1f}x   "
          f"spikes identical to emulator: {'yes' if exact else 'NO'}")
    print("spikes per sample and layer: "
          + " / ".join(f"{c.sum() / n:.1f}" for c in emu.counts))

    if args.single > 0:
        m = min(args.single, n)
        _, t_one = timed(lambda: Brian2Backend(batch_size=1).run(net, x[:m], steps))
        print(f"brian2 (integer), one network per sample: {1e3 * t_one / m:9.2f} ms/sample "
              f"({m} samples) vs {1e3 * t_b2i / n:.2f} ms/sample as copies in one network")

    t_b2f = compare_float(net, x, steps, args.batch, emu, "IF network")
    print(f"brian2 (float)     {1e3 * t_b2f / n:9.2f} ms/sample")
    leaky = with_hidden_decay(net, args.leaky_du, args.leaky_dv)
    emu_leaky = EmulatorBackend().run(leaky, x, steps)
    compare_float(leaky, x, steps, args.batch, emu_leaky,
                  f"leaky (du={args.leaky_du}, dv={args.leaky_dv})")


def with_hidden_decay(net: IntegerNetwork, du: int, dv: int) -> IntegerNetwork:
    layers = [SynapseLayer(**{**layer.__dict__, "neurons": NeuronParams(
        vth=layer.neurons.vth, du=du, dv=dv, bias_exp=layer.neurons.bias_exp,
        bias_mant=layer.neurons.bias_mant)}) for layer in net.layers]
    return IntegerNetwork(input_neurons=net.input_neurons, encoding=net.encoding,
                          layers=layers)


def compare_float(net, x, steps, batch, emu, label) -> float:
    n = x.shape[0]
    b2f, seconds = timed(lambda: Brian2Backend(mode="float", batch_size=batch).run(
        net, x, steps))
    agree = float(np.mean(b2f.predictions() == emu.predictions()))
    corr = [count_correlation(a, b) for a, b in zip(emu.counts, b2f.counts)]
    print(f"float vs integer, {label}: classification agreement {100 * agree:.1f}%, "
          "count correlation per layer "
          + " / ".join("n/a" if c is None else f"{c:.3f}" for c in corr)
          + ", spikes per sample integer "
          + " / ".join(f"{c.sum() / n:.1f}" for c in emu.counts)
          + " float " + " / ".join(f"{c.sum() / n:.1f}" for c in b2f.counts))
    return seconds

if __name__ == "__main__":
    main()
