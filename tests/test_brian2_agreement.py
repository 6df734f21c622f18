"""Brian2 backend: integer mode is spike-for-spike identical to the emulator.

The emulator is itself checked against Lava (tests of the emulator/Lava
backends). Brian2 = emulator spike for spike on random networks, the approximate
float mode's class tolerance and the contracts every backend keeps are in
test_backend_conformance.py; here are Brian2's own parts: the 24-bit wrap and v
clip reached on purpose, chip weights per Lava sign mode, batching, Brian2
global state, and the float mode's propagator.
"""
from __future__ import annotations

import numpy as np
import pytest

from deepr_neuro.simulate import emulator as emu
from deepr_neuro.simulate.backends import get_backend
from deepr_neuro.simulate.brian2_backend import Brian2Backend, chip_weights, float_propagator, sign_mode
from deepr_neuro.simulate.emulator import EmulatorBackend, effective_weights
from deepr_neuro.errors import ConfigError
from deepr_neuro.network.integer_network import (InputEncoding, IntegerNetwork, NeuronParams,
                                         SynapseLayer)

pytestmark = pytest.mark.brian2


# ------------------------------------------------------------------ helpers

def assert_same_spikes(ref, got, label=""):
    assert len(ref.counts) == len(got.counts)
    for layer, (a, b) in enumerate(zip(ref.spikes, got.spikes)):
        if not np.array_equal(a, b):
            s, t, n = np.argwhere(a != b)[0]
            pytest.fail(f"{label} layer {layer}: first differing spike at sample {s}, "
                        f"step {t}, neuron {n} (reference {a[s, t, n]}, brian2 {b[s, t, n]})")
    for a, b in zip(ref.counts, got.counts):
        np.testing.assert_array_equal(a, b)


def lif(n, vth=100, du=4095, dv=0, bias_exp=0, bias=None):
    b = np.zeros(n, np.int32) if bias is None else np.asarray(bias, np.int32)
    return NeuronParams(vth=vth, du=du, dv=dv, bias_exp=bias_exp, bias_mant=b)


def layer(name, n_in, n_out, rows, cols, weights, neurons, weight_exp=0, bits=8):
    order = np.lexsort((cols, rows))
    return SynapseLayer(name=name, n_in=n_in, n_out=n_out,
                        rows=np.asarray(rows, np.int32)[order],
                        cols=np.asarray(cols, np.int32)[order],
                        weights=np.asarray(weights, np.int32)[order],
                        weight_exp=weight_exp, num_weight_bits=bits, neurons=neurons)


# ------------------------------------------------------------- exactness

def _saturating_net():
    """15 always-spiking inputs into 255-weights at weight_exp 7: u passes 2**23."""
    n_in = 15
    rows, cols = np.nonzero(np.ones((3, n_in)))
    w = np.where(rows == 2, -256, 255)
    w[(rows == 1) & (cols < 3)] = -256
    hidden = lif(3, vth=131071, du=0, dv=0)
    l0 = layer("h", n_in, 3, rows, cols, w, hidden, weight_exp=7, bits=8)
    inp = lif(n_in, vth=0, bias=np.full(n_in, 1))
    return IntegerNetwork(input_neurons=inp, encoding=InputEncoding(1, 0), layers=[l0])


def test_integer_mode_matches_through_24_bit_wrap_and_v_clip(monkeypatch):
    hits = {"hi": 0, "lo": 0, "vclip": 0}
    wrap = emu.wrap_u

    def spy(dc):
        hits["hi"] += int((dc > emu.MAX_UV).sum())
        hits["lo"] += int((dc <= -emu.MAX_UV).sum())
        return wrap(dc)

    monkeypatch.setattr(emu, "wrap_u", spy)
    net = _saturating_net()
    x = np.zeros((2, net.n_inputs), np.uint8)
    ref = EmulatorBackend().run(net, x, 40, record_spikes=True)
    assert hits["hi"] > 0 and hits["lo"] > 0, "the test network must reach the wrap"
    got = Brian2Backend().run(net, x, 40, record_spikes=True)
    assert_same_spikes(ref, got)
    assert ref.counts[-1].sum() > 0


def test_chip_weights_follow_lava_sign_modes():
    # mixed: [-256, 255], drop 9 - bits low bits (floors negatives)
    mixed = layer("m", 3, 1, [0, 0, 0], [0, 1, 2], [-256, -3, 200], lif(1), bits=4)
    assert sign_mode(mixed.weights, 3, 1) == "mixed"
    np.testing.assert_array_equal(chip_weights(mixed)[2], [-256, -32, 192])
    # inhibitory: magnitude truncated (rounds toward zero), -256 clipped to -255
    inh = layer("i", 3, 1, [0, 0, 0], [0, 1, 2], [-256, -3, -200], lif(1), bits=4)
    np.testing.assert_array_equal(chip_weights(inh)[2], [-240, 0, -192])
    # agrees with the emulator's own reading of Lava
    for lay in (mixed, inh):
        np.testing.assert_array_equal(
            chip_weights(lay)[2], effective_weights(lay).toarray()[0][chip_weights(lay)[1]])


# --------------------------------------------------------- run plumbing

def _small_net(seed=0, n=(6, 5, 3)):
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(len(n) - 1):
        rows, cols = np.nonzero(rng.random((n[i + 1], n[i])) < 0.6)
        layers.append(layer(f"h{i}", n[i], n[i + 1], rows, cols,
                            rng.integers(-80, 200, rows.size), lif(n[i + 1], vth=60)))
    return IntegerNetwork(input_neurons=lif(n[0], vth=60), encoding=InputEncoding(4, 0),
                          layers=layers)


def test_batches_give_what_one_batch_gives():
    """Samples split over Brian2 networks of batch_size copies give the same trains."""
    net = _small_net()
    x = np.random.default_rng(1).integers(0, 256, (5, net.n_inputs)).astype(np.uint8)
    full = Brian2Backend(batch_size=256).run(net, x, 30, record_spikes=True)
    assert full.counts[-1].sum() > 0
    assert_same_spikes(full, Brian2Backend(batch_size=2).run(net, x, 30, record_spikes=True))
    assert get_backend("brian2-float").mode == "float"


def test_no_global_brian2_state_changed():
    import brian2 as b2
    target = b2.prefs.codegen.target
    b2.start_scope()
    stray = b2.NeuronGroup(1, "x : 1")  # a user's object in the magic scope
    Brian2Backend().run(_small_net(), np.zeros((1, 6), np.uint8), 5)
    assert b2.prefs.codegen.target == target
    b2.run(1 * b2.ms)  # the user's magic network still holds only their object
    assert stray.t[:] > 0 * b2.ms


def test_user_errors_are_deepr_errors():
    """Backend-specific settings; bad networks and inputs are in test_backend_conformance.py."""
    with pytest.raises(ConfigError, match="mode"):
        Brian2Backend(mode="analog")
    with pytest.raises(ConfigError, match="batch_size"):
        Brian2Backend(batch_size=0)


# -------------------------------------------------------------- float mode

def test_float_propagator_limits():
    # integrate-and-fire: delta current, no leak -> v += input + bias, like the chip
    assert float_propagator(lif(1, du=4095, dv=0)) == {"Eu": 0.0, "Ev": 1.0, "Cu": 1.0,
                                                       "Cb": 1.0}
    # without v leak, an event's charge into v over the first step is w (as the chip's u)
    for du in (0, 7, 1000, 4094):
        c = float_propagator(lif(1, du=du, dv=0))
        assert c["Cu"] == pytest.approx(1.0)
        assert c["Eu"] == pytest.approx(1 - (du + 1) / 4096)
    # tau_u == tau_v takes the limit, not 0/0
    c = float_propagator(lif(1, du=99, dv=100))
    assert np.isfinite(list(c.values())).all()
    assert c["Ev"] == pytest.approx(1 - 100 / 4096)


def test_float_mode_equals_integer_for_integrate_and_fire():
    """du = 4095, dv = 0: the chip does no rounding, so the ideal neuron agrees."""
    net = _small_net(seed=3, n=(20, 15, 5))
    x = np.random.default_rng(2).integers(0, 256, (20, net.n_inputs)).astype(np.uint8)
    ref = EmulatorBackend().run(net, x, 100)
    flt = Brian2Backend(mode="float").run(net, x, 100)
    for a, b in zip(ref.counts, flt.counts):
        np.testing.assert_array_equal(a, b)


def _leaky(net, du, dv):
    layers = [SynapseLayer(**{**lay.__dict__, "neurons": lif(
        lay.n_out, vth=lay.neurons.vth, du=du, dv=dv)}) for lay in net.layers]
    return IntegerNetwork(input_neurons=net.input_neurons, encoding=net.encoding,
                          layers=layers)


def test_float_mode_roughly_agrees_for_leaky_neurons():
    net = _leaky(_small_net(seed=3, n=(20, 15, 5)), du=2000, dv=300)
    x = np.random.default_rng(2).integers(0, 256, (20, net.n_inputs)).astype(np.uint8)
    ref = EmulatorBackend().run(net, x, 100)
    flt = Brian2Backend(mode="float").run(net, x, 100)
    np.testing.assert_array_equal(ref.counts[0], flt.counts[0])
    assert any(not np.array_equal(a, b) for a, b in zip(ref.counts, flt.counts))
    for a, b in zip(ref.counts[1:], flt.counts[1:]):
        assert b.sum() > 0
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8
        assert 0.5 < b.sum() / max(a.sum(), 1) < 2.0
