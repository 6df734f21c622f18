"""The NumPy emulator: Lava's integer arithmetic on hand-computed cases, and its
batching (chunks, samples) as properties.

Agreement with Lava itself is in test_lava_agreement.py; the contracts every
backend keeps (shapes, steps edge cases, record on/off, bad input refused, zero
state per sample, exactness) are in test_backend_conformance.py. The network
strategy below is shared with both.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepr_neuro.simulate.backends import get_backend
from deepr_neuro.network.fixed_point import MAX_UV, V_MAX
from deepr_neuro.simulate.activity import synops
from deepr_neuro.simulate.emulator import EmulatorBackend, decay, effective_weights, lif_step
from deepr_neuro.errors import BackendError, DeeprError
from deepr_neuro.network.integer_network import (InputEncoding, IntegerNetwork, NeuronParams,
                                         SynapseLayer)


# ---------------------------------------------------------------------------
# Builders and the random-network strategy (also used by test_lava_agreement)
# ---------------------------------------------------------------------------

def neurons(n, vth=0, du=4095, dv=0, bias_exp=0, bias=0) -> NeuronParams:
    return NeuronParams(vth=vth, du=du, dv=dv, bias_exp=bias_exp,
                        bias_mant=np.broadcast_to(np.asarray(bias, np.int32), (n,)).copy())


def dense_layer(w, p: NeuronParams, weight_exp=0, bits=8, name="l") -> SynapseLayer:
    """Layer from a dense (n_out, n_in) matrix; zeros are not connections."""
    w = np.asarray(w, dtype=np.int32)
    rows, cols = np.nonzero(w)
    return SynapseLayer(name=name, n_in=w.shape[1], n_out=w.shape[0],
                        rows=rows.astype(np.int32), cols=cols.astype(np.int32),
                        weights=w[rows, cols], weight_exp=weight_exp,
                        num_weight_bits=bits, neurons=p)


def chain(inp: NeuronParams, *layers, gain=1, shift=0) -> IntegerNetwork:
    return IntegerNetwork(input_neurons=inp, encoding=InputEncoding(gain, shift),
                          layers=list(layers))


def _decay_value(draw):
    return draw(st.one_of(st.sampled_from([0, 1, 2048, 4094, 4095]), st.integers(0, 4095)))


@st.composite
def networks(draw, max_layers=3, max_n=20):
    """Random small IntegerNetworks over the whole Lava range, plus inputs.

    Draws the regime (sizes, decays, thresholds, weight kind, exponents) with
    hypothesis and the arrays from a drawn seed. Weight kinds include the
    extremes -256/255, all-positive and all-negative layers (Lava's
    excitatory / inhibitory sign modes) and large weight_exp with du = 0, the
    way to push u past 2**23.
    """
    n_layers = draw(st.integers(1, max_layers))
    sizes = [draw(st.integers(1, max_n)) for _ in range(n_layers + 1)]
    # a third of the cases are driven hard: dense, large positive weights and
    # weight_exp, so that a << 6 passes 2**23 and u wraps
    drive = draw(st.sampled_from([False, False, True]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def params(n):
        vth = draw(st.one_of(st.integers(0, 16), st.integers(0, 131071),
                             st.sampled_from([0, 131071])))
        bias_exp = draw(st.integers(0, 7))
        kind = draw(st.sampled_from(["zero", "small", "full", "extreme"]))
        if kind == "zero":
            bias = np.zeros(n)
        elif kind == "small":
            bias = rng.integers(-64, 65, n)
        elif kind == "full":
            bias = rng.integers(-4096, 4096, n)
        else:
            bias = rng.choice([-4096, 4095], n)
        return NeuronParams(vth=vth, du=_decay_value(draw), dv=_decay_value(draw),
                            bias_exp=bias_exp, bias_mant=bias.astype(np.int32))

    gain = draw(st.integers(0, 16))
    shift = draw(st.integers(0, 4))
    max_enc = (255 * gain) >> shift
    inp = params(sizes[0])
    inp = NeuronParams(vth=inp.vth, du=inp.du, dv=inp.dv, bias_exp=inp.bias_exp,
                       bias_mant=np.clip(inp.bias_mant, -4096, 4095 - max_enc).astype(np.int32))
    layers = []
    for i in range(n_layers):
        n_in, n_out = sizes[i], sizes[i + 1]
        density = 1.0 if drive else draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))
        mask = rng.random((n_out, n_in)) < density
        rows, cols = np.nonzero(mask)
        kind = draw(st.sampled_from(["extreme", "positive"] if drive else
                                    ["uniform", "extreme", "positive", "negative", "small"]))
        k = rows.size
        if kind == "uniform":
            w = rng.integers(-256, 256, k)
        elif kind == "extreme":
            w = rng.choice([-256, 255], k)
        elif kind == "positive":
            w = rng.integers(0, 256, k)
        elif kind == "negative":
            w = rng.integers(-256, 1, k)
        else:
            w = rng.integers(-3, 4, k)
        layers.append(SynapseLayer(
            name=f"h{i}", n_in=n_in, n_out=n_out, rows=rows.astype(np.int32),
            cols=cols.astype(np.int32), weights=w.astype(np.int32),
            weight_exp=draw(st.integers(4, 7) if drive else st.integers(-8, 7)),
            num_weight_bits=draw(st.integers(1, 8)),
            neurons=params(n_out)))
    net = IntegerNetwork(input_neurons=inp, encoding=InputEncoding(gain, shift), layers=layers)
    n_samples = draw(st.integers(1, 3))
    x_kind = "full" if drive else draw(st.sampled_from(["random", "full", "zero"]))
    if x_kind == "random":
        x = rng.integers(0, 256, (n_samples, sizes[0]))
    else:
        x = np.full((n_samples, sizes[0]), 255 if x_kind == "full" else 0)
    steps = draw(st.integers(1, 30))
    return net, x.astype(np.uint8), steps


# ---------------------------------------------------------------------------
# Arithmetic, hand-computed
# ---------------------------------------------------------------------------

def test_decay_truncates_toward_zero_with_ds_offset():
    u = np.array([1000, -1000, 4096, -1, 0], np.int32)
    # du = 0 -> factor 4096 - (0 + 1) = 4095: 1000 * 4095 / 4096 = 999.76 -> 999
    assert decay(u, 0, 1).tolist() == [999, -999, 4095, 0, 0]
    # du = 4095 with ds_offset 1 -> factor 0
    assert decay(u, 4095, 1).tolist() == [0, 0, 0, 0, 0]
    # dv = 0 with dm_offset 0 -> factor 4096: unchanged
    assert decay(u, 0, 0).tolist() == u.tolist()
    # dv = 2048 -> halve, toward zero: -1 * 2048 / 4096 = -0.5 -> 0
    assert decay(u, 2048, 0).tolist() == [500, -500, 2048, 0, 0]


def _one_step(a, du=4095, dv=0, vth=131071, bias=0, bias_exp=0, u0=0, v0=0):
    a = np.atleast_1d(np.asarray(a, np.int32))
    u = np.full(a.shape, u0, np.int32)
    v = np.full(a.shape, v0, np.int32)
    p = neurons(a.size, vth=vth, du=du, dv=dv, bias_exp=bias_exp, bias=bias)
    s = lif_step(u, v, a, np.left_shift(p.bias_mant, bias_exp), p)
    return u, v, s


def test_u_wraps_once_past_2_pow_23_as_lava_writes_it():
    # a << 6: 131072 << 6 = 2**23 exactly (not > 2**23: kept, outside 24-bit signed)
    u, _, _ = _one_step([131072, 131073, -131071, -131072, 1 << 19])
    assert u.tolist() == [MAX_UV, MAX_UV + 64 - 2 * MAX_UV, -MAX_UV + 64,
                          MAX_UV,          # -2**23 is "<= -2**23": gains 2**24
                          (1 << 25) - (1 << 24)]  # one wrap only, 2**24 stays


def test_u_accumulates_with_du_zero_then_wraps():
    # u = 8_000_000 decays to 7_998_046 (x 4095 >> 12); + 10000 << 6 = 640000
    # gives 8_638_046 > 2**23, which wraps to 8_638_046 - 2**24 = -8_139_170
    u, _, _ = _one_step([5000, 10000], du=0, u0=8_000_000)
    decayed = (8_000_000 * 4095) >> 12
    assert decayed == 7_998_046
    assert u.tolist() == [decayed + 320_000, -8_139_170]


def test_v_clips_at_24_bits_and_threshold_is_shifted():
    _, v, s = _one_step([0], vth=131071, bias=4095, bias_exp=7, v0=V_MAX - 10)
    assert v.tolist() == [0] and s.tolist() == [True]       # clipped to 2**23-1 > vth << 6
    _, v, s = _one_step([0], vth=131071, bias=-4096, bias_exp=7, v0=-V_MAX + 10)
    assert v.tolist() == [-V_MAX] and s.tolist() == [False]
    # threshold: spike iff v > vth << 6 (strict)
    _, v, s = _one_step([0], vth=1, bias=64, dv=0)
    assert s.tolist() == [False] and v.tolist() == [64]
    _, v, s = _one_step([0], vth=1, bias=65, dv=0)
    assert s.tolist() == [True] and v.tolist() == [0]


def _weights_after_lava(w, bits):
    layer = dense_layer(np.array([w]), neurons(1), bits=bits)
    return effective_weights(layer).toarray()[0].tolist()


def test_truncation_mixed_floors_negative_weights():
    # mixed sign: 8 - b + 1 bits dropped by arithmetic shift
    assert _weights_after_lava([-3, 3, -256, 255], 8) == [-4, 2, -256, 254]
    assert _weights_after_lava([-3, 3, -256, 255], 1) == [-256, 0, -256, 0]
    assert _weights_after_lava([-1, 1, 100, -100], 5) == [-16, 0, 96, -112]


def test_truncation_excitatory_and_inhibitory_modes():
    # no negative weight: excitatory, 8 - b bits, clip [0, 255]
    assert _weights_after_lava([3, 200, 255], 8) == [3, 200, 255]
    assert _weights_after_lava([3, 200, 255], 1) == [0, 128, 128]
    # no positive weight: inhibitory; magnitude truncated (toward zero), -256 -> -255
    assert _weights_after_lava([-3, -200, -256], 8) == [-3, -200, -255]
    assert _weights_after_lava([-3, -200, -256], 7) == [-2, -200, -254]
    assert _weights_after_lava([-3, -200, -256], 1) == [0, -128, -128]


def _single_synapse_run(weights, weight_exp, steps=3, vth=131071, bias=4095):
    """Input neurons that spike at every step into one IF neuron; returns nothing,
    but the post neuron's v at the end via its spikes under known thresholds."""
    n = len(weights)
    inp = neurons(n, vth=0, bias=bias)            # v = bias > 0: spike every step
    return chain(inp, dense_layer(np.array([weights]), neurons(1, vth=vth),
                                  weight_exp=weight_exp))


@pytest.mark.parametrize("weights,weight_exp,a", [
    ([3, 3], -1, 3),        # shift of the sum: (3 + 3) >> 1 = 3, not 1 + 1
    ([-3], -1, -2),         # arithmetic right shift floors: -3 >> 1 = -2
    ([-4, -4, 2], -2, -2),   # mixed, bits 8: -4,-4,2 stay; sum -6 >> 2 = -2
    ([5], 3, 40),           # left shift
    ([255, 255], 7, 510 << 7),
])
def test_weight_exp_shifts_the_summed_input(weights, weight_exp, a):
    """Post neuron: du = 4095 (u = a << 6), dv = 0, v starts at 0: after its first
    input step v = a << 6 (clipped), so vth just below / at that value brackets a."""
    target = max(min(a << 6, V_MAX), -V_MAX)
    for vth_shifted, expect in [(target - 1, True), (target, False)]:
        if vth_shifted < 0 or vth_shifted % 64:
            continue
        net = _single_synapse_run(weights, weight_exp, vth=vth_shifted >> 6)
        res = EmulatorBackend().run(net, np.zeros((1, len(weights)), np.uint8), 2,
                                    record_spikes=True)
        assert res.spikes[1][0, :, 0].tolist() == [False, expect]
    # and the sign: a negative input never makes the neuron spike
    if a <= 0:
        net = _single_synapse_run(weights, weight_exp, vth=0)
        res = EmulatorBackend().run(net, np.zeros((1, len(weights)), np.uint8), 3)
        assert res.counts[1].tolist() == [[0]]


def test_input_layer_is_driven_by_encoded_bias():
    # bias_mant = (x * 3) >> 1 + base; dv = 0: v grows by bias << bias_exp per step
    inp = neurons(2, vth=10, bias=[0, 100], bias_exp=2)    # threshold 640
    net = chain(inp, gain=3, shift=1)
    x = np.array([[200, 0]], np.uint8)   # biases (300 + 0, 0 + 100) << 2 = 1200, 400
    res = EmulatorBackend().run(net, x, 4, record_spikes=True)
    assert res.spikes[0][0].T.tolist() == [[True, True, True, True],
                                           [False, True, False, True]]


def test_synops_counts_spikes_times_fan_out():
    inp = neurons(2, vth=0, bias=1)      # both spike every step
    w = np.array([[1, 1], [1, 0], [0, 0]])
    net = chain(inp, dense_layer(w, neurons(3, vth=131071)))
    res = EmulatorBackend().run(net, np.zeros((2, 2), np.uint8), 4)
    act = synops(net, res)
    assert act.spikes.tolist() == [8.0, 0.0]
    assert act.synops.tolist() == [4 * 2 + 4 * 1, 0.0]
    assert act.total_synops == 12.0


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

def test_registry_gives_the_emulator():
    assert isinstance(get_backend("emulator"), EmulatorBackend)


# ---------------------------------------------------------------------------
# Batching properties
# ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(), st.integers(1, 4))
def test_chunking_does_not_change_spikes(case, chunk):
    """Samples simulated ``chunk`` at a time give what one chunk of all gives (the
    zero-state, record on/off and empty/zero-step contracts of every backend are in
    test_backend_conformance.py)."""
    net, x, steps = case
    whole = EmulatorBackend(chunk=1000).run(net, x, steps, record_spikes=True)
    parts = EmulatorBackend(chunk=chunk).run(net, x, steps, record_spikes=True)
    for a, b in zip(whole.spikes, parts.spikes):
        assert np.array_equal(a, b)
    counts_only = EmulatorBackend(chunk=chunk).run(net, x, steps)
    assert all(np.array_equal(a, b) for a, b in zip(counts_only.counts, whole.counts))


def test_chunk_must_be_positive():
    with pytest.raises(BackendError, match="chunk: must be an integer >= 1"):
        EmulatorBackend(chunk=0)
