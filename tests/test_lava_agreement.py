"""Emulator vs Lava: exact equality of every neuron's spike at every step.

Two levels, both with Lava's own code and no mock of it:

* Lava's fixed-point *kernels* (``PyLifModelBitAcc`` methods, the weight
  utilities Sparse calls, and Sparse's a_buff lines) stepped in-process with
  Lava's channel dtypes: fast, so hypothesis can try hundreds of networks;
* the real Lava runtime (``LavaBackend``: processes, channels,
  ``Loihi2SimCfg(select_tag="fixed_pt")``), slow, marked ``lava``, on the
  arithmetic's corner cases (the 24-bit wrap of u, int32 overflow, v clip).

Lava runtime = emulator on random networks, zero state between streamed samples
and the other contracts every backend keeps are in test_backend_conformance.py
(with emulator = kernels here, that closes kernels = runtime).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deepr_neuro.simulate import lava_compat
from deepr_neuro.simulate.backends import get_backend
from deepr_neuro.simulate.emulator import EmulatorBackend, effective_bias, lif_step
from deepr_neuro.network.integer_network import IntegerNetwork

from conftest import lava_skip_reason
from test_emulator import chain, dense_layer, networks, neurons

if lava_skip_reason() is not None:  # Lava's kernels are imported below
    pytest.skip(f"Lava absent here: {lava_skip_reason()}", allow_module_level=True)
lava_compat.install()

from lava.proc.lif.models import PyLifModelBitAcc  # noqa: E402
from lava.utils.weightutils import (clip_weights, determine_sign_mode,  # noqa: E402
                                    truncate_weights)


def assert_same_spikes(expected, actual, label=""):
    for layer, (a, b) in enumerate(zip(expected.spikes, actual.spikes)):
        if not np.array_equal(a, b):
            sample, step, neuron = np.argwhere(a != b)[0]
            pytest.fail(f"{label} layer {layer}: first disagreement at sample {sample}, "
                        f"step {step}, neuron {neuron} (expected {a[sample, step, neuron]})")
    for a, b in zip(expected.counts, actual.counts):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------------------
# Lava's kernels, stepped in-process
# ---------------------------------------------------------------------------

def _lif_model(p, bias_mant):
    """A PyLifModelBitAcc holding its Vars as Lava's builder makes them."""
    m = PyLifModelBitAcc({})
    n = len(bias_mant)
    m.u = np.zeros(n, np.int32)
    m.v = np.zeros(n, np.int32)
    m.du, m.dv, m.vth = int(p.du), int(p.dv), int(p.vth)
    m.bias_mant = np.zeros(n, np.int16)
    m.bias_mant[:] = bias_mant
    m.bias_exp = np.zeros(n, np.int16)
    m.bias_exp[:] = p.bias_exp
    return m


_edges = [0, 1, -1, 131071, 131072, 131073, -131071, -131072, -131073,
          1 << 19, -(1 << 19), (1 << 25) - 1, -(1 << 25), (1 << 26), -(1 << 26)]


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_lif_step_matches_lava_subthr_dynamics(data):
    """One LIF step from arbitrary int32 state and input, against Lava's own methods:
    decay, the single wrap (2**23 kept, -2**23 -> +2**23), int32 overflow of
    a << 6, v clip, strict threshold, reset."""
    n = data.draw(st.integers(1, 8))
    ints = lambda lo, hi: st.lists(st.one_of(st.sampled_from([e for e in _edges if lo <= e <= hi]),
                                             st.integers(lo, hi)), min_size=n, max_size=n)
    a_in = np.array(data.draw(ints(-(1 << 26), 1 << 26)), np.int32)
    u0 = np.array(data.draw(ints(-(1 << 30), 1 << 30)), np.int32)
    v0 = np.array(data.draw(ints(-(1 << 23) + 1, (1 << 23) - 1)), np.int32)
    bias_mant = np.array(data.draw(st.lists(st.integers(-4096, 4095), min_size=n, max_size=n)))
    p = neurons(n, vth=data.draw(st.integers(0, 131071)), du=data.draw(st.integers(0, 4095)),
                dv=data.draw(st.integers(0, 4095)), bias_exp=data.draw(st.integers(0, 7)),
                bias=bias_mant)
    m = _lif_model(p, p.bias_mant)
    m.u[:], m.v[:] = u0, v0
    m.scale_bias()
    m.scale_threshold()
    m.subthr_dynamics(activation_in=np.zeros(n, np.int16) + a_in)
    s_lava = m.spiking_activation()
    m.reset_voltage(s_lava)
    u, v = u0.copy(), v0.copy()
    s = lif_step(u, v, a_in.copy(), effective_bias(p.bias_mant, p.bias_exp), p)
    assert s.tolist() == s_lava.tolist()
    assert u.tolist() == m.u.tolist()
    assert v.tolist() == m.v.tolist()


def lava_kernels_run(net: IntegerNetwork, x, steps, seen=None):
    """Spike trains (per layer: samples, steps, n) from Lava's own arithmetic.

    ``seen`` (a set) collects which corner cases the run went through.
    """
    seen = set() if seen is None else seen
    bias = net.encode(x)
    trains = [np.zeros((len(x), steps, n), bool) for n in net.sizes]
    weights = []
    for layer in net.layers:
        w = sp.csr_matrix((layer.weights, (layer.rows, layer.cols)),
                          shape=(layer.n_out, layer.n_in))
        mode = determine_sign_mode(w)                  # as PySparseModelBitAcc.run_spk
        seen.add(f"sign mode {mode.name}")
        w = clip_weights(w, mode, num_bits=8)
        weights.append(truncate_weights(w, mode, layer.num_weight_bits))
    for k in range(len(x)):
        lifs = [_lif_model(net.input_neurons, bias[k])]
        lifs += [_lif_model(layer.neurons, layer.neurons.bias_mant) for layer in net.layers]
        a_buff = [np.zeros(layer.n_out, np.int32) for layer in net.layers]
        for t in range(steps):
            sent = []                                  # Sparse sends a_buff from t - 1 ...
            for buf in a_buff:
                channel = np.zeros(buf.shape, np.int32)   # a_out channel is int32
                channel[:] = buf
                sent.append(channel)
            for li, m in enumerate(lifs):
                a_in = np.zeros(m.u.shape, np.int16)      # PyInPort.recv starts from its dtype
                if li > 0:
                    a_in = a_in + sent[li - 1]
                m.scale_bias()
                m.scale_threshold()
                before = m.u.astype(np.int64)
                m.subthr_dynamics(activation_in=a_in)
                if li > 0:
                    decayed = before * (4096 - m.du - 1)
                    decayed = np.sign(decayed) * (np.abs(decayed) >> 12)
                    naive = decayed + (a_in.astype(np.int64) << 6)
                    if (naive > 2**23).any() or (naive <= -2**23).any():
                        seen.add("u wrapped")
                    if (np.abs(naive) >= 2**31).any():
                        seen.add("int32 overflow of u")
                if (np.abs(m.v) == 2**23 - 1).any():
                    seen.add("v clipped")
                s = m.spiking_activation()
                m.reset_voltage(s)
                s_channel = np.zeros(m.u.shape, np.int32)
                s_channel[:] = s
                trains[li][k, t] = s_channel != 0
                if li < len(net.layers):               # ... then accumulates step t's spikes
                    s_in = s_channel.astype(bool)
                    a_accum = weights[li][:, s_in].sum(axis=1).A1
                    we = int(net.layers[li].weight_exp)
                    a_buff[li] = (np.left_shift(a_accum, we) if we > 0
                                  else np.right_shift(a_accum, -we))
    return trains


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_emulator_matches_lava_kernels(case):
    net, x, steps = case
    seen = set()
    expected = lava_kernels_run(net, x, steps, seen)
    for what in sorted(seen):
        event(what)
    got = EmulatorBackend(chunk=2).run(net, x, steps, record_spikes=True)
    for layer, (a, b) in enumerate(zip(expected, got.spikes)):
        assert np.array_equal(a, b), f"layer {layer}: {np.argwhere(a != b)[:3]}"


# ---------------------------------------------------------------------------
# The real Lava runtime
# ---------------------------------------------------------------------------

def _saturating_net(n_in=10, du=4095, weight_exp=6, vth=0):
    """n_in input neurons spiking every step into one neuron with weights 255.

    With weight_exp 6, a = n_in * 255 << 6 and u = a << 6: for n_in = 10 that
    is 10_444_800 > 2**23, which Lava wraps to 10_444_800 - 2**24 < 0: a
    strong excitatory input becomes inhibitory.
    """
    inp = neurons(n_in, vth=0, bias=1)
    return chain(inp, dense_layer(np.full((1, n_in), 255), neurons(1, vth=vth, du=du),
                                  weight_exp=weight_exp))


@pytest.mark.lava
def test_lava_wraps_u_past_2_pow_23_like_the_emulator():
    net = _saturating_net()
    x = np.zeros((1, 10), np.uint8)
    lava = get_backend("lava").run(net, x, 6, record_spikes=True)
    emu = EmulatorBackend().run(net, x, 6, record_spikes=True)
    assert_same_spikes(lava, emu)
    assert lava.counts[0].tolist() == [[6] * 10]
    assert lava.counts[1].tolist() == [[0]]     # wrapped negative: never fires


@pytest.mark.lava
def test_lava_int32_overflow_of_u_and_v_clip_like_the_emulator():
    """du = 0: u gains ~2.5e7 per step past the single wrap, overflowing int32
    after ~85 steps; v sits at the clip. Both must agree on every step."""
    net = _saturating_net(n_in=20, du=0, weight_exp=7, vth=131071)
    x = np.zeros((1, 20), np.uint8)
    lava = get_backend("lava").run(net, x, 100, record_spikes=True)
    emu = EmulatorBackend().run(net, x, 100, record_spikes=True)
    assert_same_spikes(lava, emu)
    assert 0 < emu.counts[1][0, 0] < 99        # the overflow does change the train
