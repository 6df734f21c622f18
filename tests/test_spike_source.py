"""Spike-source inputs and final-v readouts on random recurrent graphs: every backend.

The input population of a recurrent network is a spike source replaying the
integer trains of ``network.frame_encoding`` (Lava: a RingBuffer; Brian2: a
SpikeGeneratorGroup; emulator: the array). Samples have their own lengths
(``n_steps``): a batch runs max steps and the final-v readout is the readout
population's v after each sample's own last step. Random graphs (recurrence,
fan-in, leaky and IF neurons) must give the same spikes in every population
and step and the same final v on the emulator, a plain per-sample loop,
Brian2 integer (hundreds of graphs) and Lava (tens).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepr_neuro.errors import BackendError, DeeprError
from deepr_neuro.network.checks import check_graph
from deepr_neuro.network.fixed_point import effective_bias, shift_weight_exp
from deepr_neuro.network.frame_encoding import FrameEncoding
from deepr_neuro.network.integer_network import InputEncoding
from deepr_neuro.simulate.backends import SimResult, get_backend
from deepr_neuro.simulate.emulator import EmulatorBackend, effective_weights, lif_step

from test_graph_backends import assert_same_spikes, graphs, lif, proj, graph


@st.composite
def spike_graphs(draw, max_pops=4, max_n=5, max_steps=16):
    """A random graph with a spike-source input, a final-v (or spike-count) readout,
    random 0/1 trains and per-sample lengths (padding silent)."""
    g, x, steps = draw(graphs(max_pops=max_pops, max_n=max_n, max_steps=max_steps))
    kind = draw(st.sampled_from(["final_v", "final_v", "spike_count"]))
    g = dataclasses.replace(g, input_kind="spikes", readout_kind=kind,
                            encoding=FrameEncoding(steps_per_frame=draw(st.integers(1, 4))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 4))
    density = draw(st.sampled_from([0.1, 0.4, 0.9]))
    spikes = rng.random((n, steps, g.n_inputs)) < density
    lengths = rng.integers(1, steps + 1, n)
    spikes &= (np.arange(steps)[None, :] < lengths[:, None])[:, :, None]
    return g, spikes, steps, lengths


def reference(g, spikes, steps, lengths):
    """Plain per-sample loop: input population = the given trains; every other
    population updates from what each projection computed at t - 1; v of the
    readout after step lengths[s] - 1."""
    sizes = g.sizes
    idx = {n: k for k, n in enumerate(g.names)}
    ws = [effective_weights(q, (sizes[idx[q.post]], sizes[idx[q.pre]])).toarray().astype(np.int32)
          for q in g.projections]
    out = [np.zeros((spikes.shape[0], steps, n), bool) for n in sizes]
    k_out = idx[g.readout]
    final_v = np.zeros((spikes.shape[0], sizes[k_out]), np.int64)
    for s in range(spikes.shape[0]):
        u = [np.zeros(n, np.int32) for n in sizes]
        v = [np.zeros(n, np.int32) for n in sizes]
        bias = [None] + [effective_bias(p.neurons.bias_mant, p.neurons.bias_exp) for p in g.populations[1:]]
        pending = [np.zeros(sizes[idx[q.post]], np.int32) for q in g.projections]
        for t in range(steps):
            spk = [spikes[s, t].copy()]
            for k, p in enumerate(g.populations[1:], start=1):
                a = np.zeros(sizes[k], np.int32)
                for j, q in enumerate(g.projections):
                    if idx[q.post] == k:
                        a = a + pending[j]
                spk.append(lif_step(u[k], v[k], a, bias[k], p.neurons))
                if k == k_out and t == lengths[s] - 1:
                    final_v[s] = v[k]
            for k in range(len(sizes)):
                out[k][s, t] = spk[k]
            pending = [shift_weight_exp(ws[j] @ spk[idx[q.pre]].astype(np.int32), int(q.weight_exp))
                       for j, q in enumerate(g.projections)]
    return out, final_v


def assert_same_readout(a: SimResult, b: SimResult, what):
    if a.readout_kind == "final_v":
        assert a.readout_v is not None and b.readout_v is not None, what
        assert np.array_equal(a.readout_v, b.readout_v), f"{what}: final v differs"
        assert np.array_equal(a.predictions(), b.predictions()), what
    else:
        assert a.readout_v is None and b.readout_v is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spike_graphs())
def test_emulator_spike_source_matches_plain_loop(case):
    g, spikes, steps, lengths = case
    res = EmulatorBackend(chunk=2).run(g, spikes, steps, record_spikes=True, n_steps=lengths)
    ref, final_v = reference(g, spikes, steps, lengths)
    for k in range(len(ref)):
        assert np.array_equal(res.spikes[k], ref[k]), f"population {k}"
        assert np.array_equal(res.counts[k], ref[k].sum(axis=1))
    if g.readout_kind == "final_v":
        assert np.array_equal(res.readout_v, final_v)
        assert np.array_equal(res.predictions(), np.argmax(final_v, axis=1))
    else:
        assert res.readout_v is None


@pytest.mark.brian2
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spike_graphs(max_steps=12))
def test_brian2_integer_equals_emulator_on_spike_graphs(case):
    pytest.importorskip("brian2")
    g, spikes, steps, lengths = case
    emu = EmulatorBackend().run(g, spikes, steps, record_spikes=True, n_steps=lengths)
    b2 = get_backend("brian2").run(g, spikes, steps, record_spikes=True, n_steps=lengths)
    assert_same_spikes(emu, b2, "emulator vs brian2")
    assert_same_readout(emu, b2, "emulator vs brian2")


@pytest.mark.lava
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spike_graphs(max_pops=3, max_n=4, max_steps=10))
def test_lava_equals_emulator_on_spike_graphs(case):
    pytest.importorskip("lava")
    g, spikes, steps, lengths = case
    emu = EmulatorBackend().run(g, spikes, steps, record_spikes=True, n_steps=lengths)
    lava = get_backend("lava").run(g, spikes, steps, record_spikes=True, n_steps=lengths)
    assert_same_spikes(emu, lava, "emulator vs lava")
    assert_same_readout(emu, lava, "emulator vs lava")


def _relay():
    """input (spike source, 2 channels) -> a (IF, vth 0: fires on any input) -> out (integrator)."""
    g = graph([("input", lif(2)), ("a", lif(2, vth=0)), ("out", lif(2, du=4095, dv=0, vth=131071))],
              [proj("ia", "input", "a", [[1, 0], [0, 1]]), proj("ao", "a", "out", [[3, 0], [0, 5]])],
              readout="out")
    return dataclasses.replace(g, input_kind="spikes", readout_kind="final_v", encoding=FrameEncoding(2))


def test_one_step_delay_per_projection_and_final_v_at_own_last_step():
    """A spike at step t reaches a at t + 1 and out at t + 2; v is read at each sample's end."""
    g = _relay()
    spikes = np.zeros((2, 6, 2), bool)
    spikes[0, 0, 0] = True        # sample 0: one spike on channel 0 at step 0, length 3
    spikes[1, 1, 1] = True        # sample 1: one spike on channel 1 at step 1, length 6
    spikes[1, 2, 1] = True
    res = EmulatorBackend().run(g, spikes, 6, record_spikes=True, n_steps=np.array([3, 6]))
    assert res.spikes[1][0, :, 0].tolist() == [False, True, False, False, False, False]
    assert np.array_equal(res.readout_v, [[3 << 6, 0], [0, 2 * 5 << 6]])
    assert res.predictions().tolist() == [0, 1]
    # sample 0 read one step earlier: its spike has not reached out yet
    early = EmulatorBackend().run(g, spikes, 6, n_steps=np.array([2, 6]))
    assert early.readout_v[0].tolist() == [0, 0]


def test_final_v_ties_go_to_lowest_index():
    g = _relay()
    spikes = np.zeros((1, 4, 2), bool)
    spikes[0, 0] = True
    g = dataclasses.replace(g, projections=(g.projections[0], proj("ao", "a", "out", [[4, 0], [0, 4]])))
    res = EmulatorBackend().run(g, spikes, 4)
    assert res.readout_v[0, 0] == res.readout_v[0, 1] > 0 and res.predictions().tolist() == [0]


def test_mlp_path_unchanged_readout_v_absent():
    g = graph([("input", lif(2, vth=2)), ("a", lif(2, vth=3))], [proj("ia", "input", "a", [[5, 0], [0, 5]])],
              gain=4, shift=0)
    res = EmulatorBackend().run(g, np.array([[10, 200]], np.uint8), 8)
    assert res.readout_v is None and res.readout_kind == "spike_count"
    assert res.predictions().tolist() == [int(np.argmax(res.counts[1][0]))]


HOSTILE_INPUTS = [
    ("wrong steps axis", lambda: np.zeros((1, 5, 2), bool), 6, None, r"shape \(n_samples, 6 steps, 2 channels\)"),
    ("wrong channels", lambda: np.zeros((1, 6, 3), bool), 6, None, "2 channels"),
    ("uint8 frames", lambda: np.zeros((1, 2), np.uint8), 6, None, "spike trains of shape"),
    ("value 2", lambda: np.full((1, 6, 2), 2, np.int8), 6, None, "0 or 1"),
    ("negative", lambda: np.full((1, 6, 2), -1, np.int32), 6, None, "0 or 1"),
    ("float trains", lambda: np.zeros((1, 6, 2), np.float64), 6, None, "bool or integer"),
    ("object trains", lambda: np.zeros((1, 6, 2), object), 6, None, "bool or integer"),
    ("length 0", lambda: np.zeros((1, 6, 2), bool), 6, np.array([0]), "n_steps"),
    ("length > steps", lambda: np.zeros((1, 6, 2), bool), 6, np.array([7]), "n_steps"),
    ("float length", lambda: np.zeros((1, 6, 2), bool), 6, np.array([3.0]), "n_steps"),
    ("lengths count", lambda: np.zeros((2, 6, 2), bool), 6, np.array([3]), "n_steps"),
    ("spike in padding", lambda: np.ones((1, 6, 2), bool), 6, np.array([3]), "padding"),
    ("negative steps", lambda: np.zeros((1, 0, 2), bool), -1, None, "steps"),
    ("bool steps", lambda: np.zeros((1, 1, 2), bool), True, None, "steps"),
]


@pytest.mark.parametrize("what,make,steps,lengths,pattern", HOSTILE_INPUTS, ids=[h[0] for h in HOSTILE_INPUTS])
def test_hostile_spike_inputs_refused(what, make, steps, lengths, pattern):
    with pytest.raises(BackendError, match=pattern):
        EmulatorBackend().run(_relay(), make(), steps, n_steps=lengths)


def test_hostile_spike_graphs_refused():
    g = _relay()
    with pytest.raises(BackendError, match="input_kind"):
        check_graph(dataclasses.replace(g, input_kind="frames"))
    with pytest.raises(BackendError, match="readout_kind"):
        check_graph(dataclasses.replace(g, readout_kind="max_v"))
    with pytest.raises(BackendError, match="FrameEncoding"):
        check_graph(dataclasses.replace(g, encoding=InputEncoding(1, 0)))
    with pytest.raises(BackendError, match="input population"):
        check_graph(dataclasses.replace(g, readout="input"))
    with pytest.raises(BackendError, match="n_steps"):   # lengths only for a spike source
        EmulatorBackend().run(dataclasses.replace(g, input_kind="bias", encoding=InputEncoding(1, 0)),
                              np.zeros((1, 2), np.uint8), 4, n_steps=np.array([2]))
    assert issubclass(BackendError, DeeprError)


@pytest.mark.parametrize("n", [0, 3])
def test_empty_batch_and_zero_steps(n):
    res = EmulatorBackend().run(_relay(), np.zeros((n, 0, 2), bool), 0)
    assert res.readout_v.shape == (n, 2) and not res.readout_v.any()
