"""Backends on integer graphs: recurrent projections, several projections into one
population, every population and step identical across emulator, Brian2 integer and Lava.

Random graphs (hypothesis) draw self-loops (pre == post), later -> earlier
projections, several projections into one population with different
weight_exp and num_weight_bits, leaky and integrate-and-fire neurons and
varied steps. Chain graphs must give exactly what the chain emulator gave
before the graph (a per-sample reference of the old layer-to-layer loop is
kept here). Hostile graphs and inputs are refused with a BackendError that
names the population or projection and the field.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepr_neuro.errors import BackendError, DeeprError
from deepr_neuro.network.checks import check_graph
from deepr_neuro.network.integer_network import (InputEncoding, IntegerGraph, IntegerNetwork, NeuronParams,
                                                 Population, Projection, chain_to_graph)
from deepr_neuro.simulate.activity import synops
from deepr_neuro.simulate.backends import Backend, get_backend
from deepr_neuro.simulate.emulator import EmulatorBackend, effective_weights, lif_step
from deepr_neuro.network.fixed_point import effective_bias, shift_weight_exp

from test_emulator import networks


# ---------------------------------------------------------------------------
# Builders and the random-graph strategy
# ---------------------------------------------------------------------------

def lif(n, vth=0, du=4095, dv=0, bias_exp=0, bias=0) -> NeuronParams:
    return NeuronParams(vth=vth, du=du, dv=dv, bias_exp=bias_exp,
                        bias_mant=np.broadcast_to(np.asarray(bias, np.int32), (n,)).copy())


def proj(name, pre, post, w, weight_exp=0, bits=8) -> Projection:
    """Projection from a dense (n_post, n_pre) matrix; zeros are not connections."""
    w = np.asarray(w, dtype=np.int32)
    rows, cols = np.nonzero(w)
    return Projection(name=name, pre=pre, post=post, rows=rows.astype(np.int32), cols=cols.astype(np.int32),
                      weights=w[rows, cols], weight_exp=weight_exp, num_weight_bits=bits)


def graph(pops, projs, readout=None, gain=1, shift=0) -> IntegerGraph:
    pops = tuple(Population(name, p) for name, p in pops)
    return IntegerGraph(populations=pops, projections=tuple(projs), encoding=InputEncoding(gain, shift),
                        readout=readout or pops[-1].name)


@st.composite
def graphs(draw, max_pops=4, max_n=5, max_steps=16):
    """Small random integer graphs with recurrence and fan-in, plus inputs and steps."""
    n_pops = draw(st.integers(2, max_pops))
    sizes = [draw(st.integers(1, max_n)) for _ in range(n_pops)]
    names = ["input"] + [f"p{k}" for k in range(1, n_pops)]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def params(k):
        kind = draw(st.sampled_from(["if", "leaky", "any"]))
        if kind == "if":
            du, dv = 4095, 0
        elif kind == "leaky":
            du, dv = draw(st.sampled_from([0, 1024, 3000, 4094])), draw(st.sampled_from([0, 100, 2048, 4095]))
        else:
            du, dv = draw(st.integers(0, 4095)), draw(st.integers(0, 4095))
        if k == 0:   # a busy input, so that the populations behind it have something to do
            vth, bias_exp = draw(st.integers(0, 32)), draw(st.integers(2, 5))
        else:        # mostly low thresholds; a few that (almost) never fire
            vth = draw(st.one_of(st.integers(0, 24), st.integers(0, 64), st.sampled_from([0, 500, 131071])))
            bias_exp = draw(st.integers(0, 4))
        bias = rng.integers(-64, 65, sizes[k]) if draw(st.booleans()) else np.zeros(sizes[k])
        return NeuronParams(vth=vth, du=du, dv=dv, bias_exp=bias_exp, bias_mant=bias.astype(np.int32))

    pops = [Population(names[0], params(0))]
    pops += [Population(names[k], params(k)) for k in range(1, n_pops)]
    edges = []
    # every non-input population is fed from some earlier one, then extra edges: self-loops,
    # later -> earlier, and a second projection from the same pre (fan-in from one source)
    for k in range(1, n_pops):
        edges.append((draw(st.integers(0, k - 1)), k))
    for _ in range(draw(st.integers(0, 4))):
        edges.append((draw(st.integers(0, n_pops - 1)), draw(st.integers(1, n_pops - 1))))
    if draw(st.booleans()):
        k = draw(st.integers(1, n_pops - 1))
        edges.append((k, k))                              # a self-loop for sure
    projs = []
    for j, (a, b) in enumerate(edges):
        density = draw(st.sampled_from([0.3, 0.7, 1.0]))
        mask = rng.random((sizes[b], sizes[a])) < density
        rows, cols = np.nonzero(mask)
        kind = draw(st.sampled_from(["mixed", "pos", "neg", "extreme"]))
        if kind == "mixed":
            w = rng.integers(-256, 256, rows.size)
        elif kind == "pos":
            w = rng.integers(0, 256, rows.size)
        elif kind == "neg":
            w = rng.integers(-256, 1, rows.size)
        else:
            w = rng.choice([-256, -255, -1, 1, 254, 255], rows.size)
        projs.append(Projection(name=f"q{j}", pre=names[a], post=names[b], rows=rows.astype(np.int32),
                                cols=cols.astype(np.int32), weights=w.astype(np.int32),
                                weight_exp=draw(st.one_of(st.integers(-4, 4), st.sampled_from([-8, 7]))), num_weight_bits=draw(st.integers(1, 8))))
    readout = names[draw(st.integers(1, n_pops - 1))]
    g = IntegerGraph(populations=tuple(pops), projections=tuple(projs),
                     encoding=InputEncoding(draw(st.integers(1, 16)), draw(st.integers(0, 3))), readout=readout)
    x = rng.integers(0, 256, (draw(st.integers(1, 3)), sizes[0])).astype(np.uint8)
    steps = draw(st.integers(1, max_steps))
    return g, x, steps


def assert_same_spikes(a, b, what):
    assert len(a.spikes) == len(b.spikes)
    for k, (sa, sb) in enumerate(zip(a.spikes, b.spikes)):
        if not np.array_equal(sa, sb):
            s, t, i = np.argwhere(sa != sb)[0]
            raise AssertionError(f"{what}: population {k} differs first at sample {s}, step {t}, neuron {i}")
    for ca, cb in zip(a.counts, b.counts):
        assert np.array_equal(ca, cb)


def reference(g: IntegerGraph, x, steps):
    """Plain per-sample, per-step loop of the graph semantics (no input table, no
    batching, no skipping): every population updates from what each projection
    into it computed at t - 1, summed in int32; then every projection computes."""
    bias_in = g.encode(x)
    sizes = g.sizes
    idx = {n: k for k, n in enumerate(g.names)}
    ws = [effective_weights(q, (sizes[idx[q.post]], sizes[idx[q.pre]])).toarray().astype(np.int32)
          for q in g.projections]
    out = [np.zeros((x.shape[0], steps, n), bool) for n in sizes]
    for s in range(x.shape[0]):
        u = [np.zeros(n, np.int32) for n in sizes]
        v = [np.zeros(n, np.int32) for n in sizes]
        bias = [effective_bias(bias_in[s], g.populations[0].neurons.bias_exp)]
        bias += [effective_bias(p.neurons.bias_mant, p.neurons.bias_exp) for p in g.populations[1:]]
        pending = [np.zeros(sizes[idx[q.post]], np.int32) for q in g.projections]
        for t in range(steps):
            spk = []
            for k, p in enumerate(g.populations):
                a = np.zeros(sizes[k], np.int32)
                for j, q in enumerate(g.projections):
                    if idx[q.post] == k:
                        a = a + pending[j]
                spk.append(lif_step(u[k], v[k], a, bias[k], p.neurons))
                out[k][s, t] = spk[k]
            pending = [shift_weight_exp(ws[j] @ spk[idx[q.pre]].astype(np.int32), int(q.weight_exp))
                       for j, q in enumerate(g.projections)]
    return out


# ---------------------------------------------------------------------------
# Emulator: graph semantics, chain results unchanged
# ---------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_emulator_matches_plain_graph_loop(case):
    g, x, steps = case
    got = EmulatorBackend(chunk=2).run(g, x, steps, record_spikes=True)
    want = reference(g, x, steps)
    for k, (a, b) in enumerate(zip(got.spikes, want)):
        assert np.array_equal(a, b), f"population {g.names[k]}"


def chain_reference(net: IntegerNetwork, x, steps):
    """Today's chain emulator (layer l fed only by layer l - 1), per sample, as it was."""
    bias_in = net.encode(x)
    out = [np.zeros((x.shape[0], steps, n), bool) for n in net.sizes]
    ws = [effective_weights(layer).toarray().astype(np.int32) for layer in net.layers]
    for s in range(x.shape[0]):
        u0, v0 = np.zeros(net.n_inputs, np.int32), np.zeros(net.n_inputs, np.int32)
        u = [np.zeros(layer.n_out, np.int32) for layer in net.layers]
        v = [np.zeros(layer.n_out, np.int32) for layer in net.layers]
        pending = [None] * len(net.layers)
        b0 = effective_bias(bias_in[s], net.input_neurons.bias_exp)
        for t in range(steps):
            sp = lif_step(u0, v0, None, b0, net.input_neurons)
            out[0][s, t] = sp
            arriving, pending = pending, [None] * len(net.layers)
            for li, layer in enumerate(net.layers):
                if sp.any():
                    pending[li] = shift_weight_exp(ws[li] @ sp.astype(np.int32), int(layer.weight_exp))
                sp = lif_step(u[li], v[li], arriving[li],
                              effective_bias(layer.neurons.bias_mant, layer.neurons.bias_exp), layer.neurons)
                out[li + 1][s, t] = sp
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(max_layers=3, max_n=8))
def test_chain_graph_gives_todays_chain_results(case):
    net, x, steps = case
    on_net = EmulatorBackend(chunk=3).run(net, x, steps, record_spikes=True)
    on_graph = EmulatorBackend().run(chain_to_graph(net), x, steps, record_spikes=True)
    assert_same_spikes(on_net, on_graph, "chain network vs chain_to_graph")
    for k, want in enumerate(chain_reference(net, np.atleast_2d(x), steps)):
        assert np.array_equal(on_net.spikes[k], want), f"layer {k} differs from the chain loop"
    assert on_graph.populations == tuple(["input"] + [layer.name for layer in net.layers])


def test_each_projection_floors_its_own_sum():
    """Two projections into one neuron, weight 1 and weight_exp -1 each: Lava floors
    each Sparse's output (0 + 0), a single accumulator would give (1 + 1) >> 1 = 1."""
    inp = lif(2, vth=0, bias=1)                         # both inputs spike every step
    g = graph([("input", inp), ("out", lif(1, vth=0, du=4095))],
              [proj("a", "input", "out", [[1, 0]], weight_exp=-1),
               proj("b", "input", "out", [[0, 1]], weight_exp=-1)])
    res = EmulatorBackend().run(g, np.zeros((1, 2), np.uint8), 5, record_spikes=True)
    assert res.counts[1].tolist() == [[0]]
    merged = graph([("input", inp), ("out", lif(1, vth=0, du=4095))],
                   [proj("ab", "input", "out", [[1, 1]], weight_exp=-1)])
    assert EmulatorBackend().run(merged, np.zeros((1, 2), np.uint8), 5).counts[1].tolist() == [[4]]


def test_self_loop_sustains_activity_one_step_later():
    """A neuron kicked once by the input keeps firing through its own self-loop,
    every step, starting one step after the kick reaches it."""
    g = graph([("input", lif(1, vth=0, bias=0)), ("r", lif(1, vth=0, du=4095))],
              [proj("in", "input", "r", [[1]]), proj("loop", "r", "r", [[1]])])
    x = np.array([[1]], np.uint8)                       # bias 1: input spikes at step 0 onwards
    res = EmulatorBackend().run(g, x, 6, record_spikes=True)
    assert res.spikes[0][0, :, 0].tolist() == [True] * 6
    assert res.spikes[1][0, :, 0].tolist() == [False] + [True] * 5


def test_readout_population_decides_predictions():
    g = graph([("input", lif(2, vth=0)), ("hid", lif(2, vth=0)), ("out", lif(2, vth=1000))],
              [proj("a", "input", "hid", [[0, 0], [1, 0]]), proj("b", "hid", "out", [[1, 1], [1, 1]])],
              readout="hid")
    res = EmulatorBackend().run(g, np.array([[5, 0]], np.uint8), 4)
    assert res.readout == "hid" and res.populations == ("input", "hid", "out")
    assert res.predictions().tolist() == [1]            # "out" is silent: argmax of it would say 0


def test_activity_per_projection_counts_recurrent_fan_out():
    g = graph([("input", lif(2, vth=0)), ("r", lif(3, vth=0))],
              [proj("in", "input", "r", [[1, 0], [1, 0], [0, 1]]),
               proj("loop", "r", "r", [[0, 1, 1], [0, 0, 0], [1, 0, 0]])])
    x = np.array([[4, 0], [4, 4]], np.uint8)
    res = EmulatorBackend().run(g, x, 7)
    act = synops(g, res)
    fan_in, fan_loop = np.array([2, 1]), np.array([1, 1, 1])
    want_in = (res.counts[0].sum(axis=0) @ fan_in) / 2
    want_loop = (res.counts[1].sum(axis=0) @ fan_loop) / 2
    assert act.projection_synops == {"in": want_in, "loop": want_loop}
    assert act.synops.tolist() == [want_in, want_loop] and want_loop > 0


# ---------------------------------------------------------------------------
# Brian2 integer = emulator, spike for spike, on random graphs; float mode runs graphs
# ---------------------------------------------------------------------------

@pytest.mark.brian2
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(max_steps=12))
def test_brian2_integer_equals_emulator_on_graphs(case):
    pytest.importorskip("brian2")
    g, x, steps = case
    emu = EmulatorBackend().run(g, x, steps, record_spikes=True)
    b2 = get_backend("brian2").run(g, x, steps, record_spikes=True)
    assert_same_spikes(emu, b2, "emulator vs brian2")


@pytest.mark.brian2
def test_brian2_float_runs_recurrent_graph_and_agrees_on_integrate_and_fire():
    """IF neurons, no wrap or clip reached: the float reading gives the integer spikes."""
    pytest.importorskip("brian2")
    g = graph([("input", lif(3, vth=10)), ("a", lif(4, vth=20)), ("b", lif(2, vth=15))],
              [proj("ia", "input", "a", np.full((4, 3), 8)),
               proj("aa", "a", "a", [[0, 4, 0, 0], [0, 0, 4, 0], [0, 0, 0, 4], [4, 0, 0, 0]], weight_exp=1),
               proj("ab", "a", "b", np.full((2, 4), 6), weight_exp=-1),
               proj("ba", "b", "a", np.full((4, 2), 2), weight_exp=2)])
    x = np.array([[40, 80, 120], [0, 200, 10]], np.uint8)
    emu = EmulatorBackend().run(g, x, 30, record_spikes=True)
    fl = get_backend("brian2-float").run(g, x, 30, record_spikes=True)
    assert get_backend("brian2-float").exact is False and get_backend("brian2").exact is True
    assert_same_spikes(emu, fl, "emulator vs brian2-float (IF)")
    assert emu.counts[2].sum() > 0


# ---------------------------------------------------------------------------
# Lava = emulator on random graphs (the reference)
# ---------------------------------------------------------------------------

@pytest.mark.lava
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(max_pops=4, max_n=4, max_steps=10))
def test_lava_equals_emulator_on_graphs(case):
    pytest.importorskip("lava")
    g, x, steps = case
    emu = EmulatorBackend().run(g, x, steps, record_spikes=True)
    lava = get_backend("lava").run(g, x, steps, record_spikes=True)
    assert_same_spikes(emu, lava, "emulator vs lava")


@pytest.mark.lava
def test_lava_floors_each_projection_and_runs_self_loops():
    """The two hand-made cases above, in Lava itself."""
    pytest.importorskip("lava")
    inp = lif(2, vth=0, bias=1)
    g = graph([("input", inp), ("out", lif(1, vth=0, du=4095)), ("r", lif(1, vth=0, du=4095))],
              [proj("a", "input", "out", [[1, 0]], weight_exp=-1),
               proj("b", "input", "out", [[0, 1]], weight_exp=-1),
               proj("in", "input", "r", [[1, 0]]), proj("loop", "r", "r", [[1]]),
               proj("back", "r", "out", [[3]], weight_exp=-2)])
    x = np.zeros((2, 2), np.uint8)
    lava = get_backend("lava").run(g, x, 6, record_spikes=True)
    emu = EmulatorBackend().run(g, x, 6, record_spikes=True)
    assert_same_spikes(emu, lava, "emulator vs lava")
    assert lava.counts[1].tolist() == [[0], [0]] and lava.counts[2].tolist() == [[5], [5]]


# ---------------------------------------------------------------------------
# Backend.run: one opening for all; hostile graphs and inputs refused
# ---------------------------------------------------------------------------

def _base():
    return graph([("input", lif(2)), ("h", lif(3, vth=5)), ("o", lif(2, vth=5))],
                 [proj("ih", "input", "h", np.ones((3, 2))), proj("ho", "h", "o", np.ones((2, 3))),
                  proj("hh", "h", "h", np.eye(3))])


def _with(g, pops=None, projs=None, **kw):
    return IntegerGraph(populations=tuple(pops if pops is not None else g.populations),
                        projections=tuple(projs if projs is not None else g.projections),
                        encoding=kw.get("encoding", g.encoding), readout=kw.get("readout", g.readout))


def _q(q, **kw):
    return Projection(**{**q.__dict__, **kw})


def _p(p, **kw):
    n = {**p.neurons.__dict__, **kw}
    return Population(p.name, NeuronParams(**n), p.core)


HOSTILE = [
    ("duplicate population", lambda g: _with(g, pops=[*g.populations, g.populations[1]]),
     r"population 'h': the name is used twice"),
    ("duplicate projection", lambda g: _with(g, projs=[*g.projections, g.projections[0]]),
     r"projection 'ih': the name is used twice"),
    ("unknown pre", lambda g: _with(g, projs=[_q(g.projections[0], pre="nope")]), r"projection 'ih'.pre: no population"),
    ("unknown post", lambda g: _with(g, projs=[_q(g.projections[0], post="x" * 5000)]),
     r"projection 'ih'.post: no population"),
    ("into the input", lambda g: _with(g, projs=[_q(g.projections[2], post="input", rows=np.arange(3, dtype=np.int32) % 2)]),
     r"projection 'hh'.post: 'input' is the input population"),
    ("readout missing", lambda g: _with(g, readout="gone"), r"graph.readout: no population named 'gone'"),
    ("float weights", lambda g: _with(g, projs=[_q(g.projections[0], weights=g.projections[0].weights * 1.0)]),
     r"projection 'ih'.weights: dtype float64 is not an integer"),
    ("length mismatch", lambda g: _with(g, projs=[_q(g.projections[0], cols=g.projections[0].cols[:-1])]),
     r"projection 'ih': rows, cols and weights differ in length"),
    ("row out of range", lambda g: _with(g, projs=[_q(g.projections[0], rows=g.projections[0].rows + 3)]),
     r"projection 'ih'.rows: index \d+ outside post population 'h'"),
    ("negative col", lambda g: _with(g, projs=[_q(g.projections[0], cols=g.projections[0].cols - 1)]),
     r"projection 'ih'.cols: index -1 outside pre population 'input'"),
    ("weight 300", lambda g: _with(g, projs=[_q(g.projections[1], weights=g.projections[1].weights * 300)]),
     r"projection 'ho'.weight: value 300 outside .*\[-256, 255\]"),
    ("weight bits 9", lambda g: _with(g, projs=[_q(g.projections[1], num_weight_bits=9)]),
     r"projection 'ho'.num_weight_bits: value 9 outside .*\[1, 8\]"),
    ("weight bits 0", lambda g: _with(g, projs=[_q(g.projections[1], num_weight_bits=0)]),
     r"projection 'ho'.num_weight_bits: value 0"),
    ("weight_exp 8", lambda g: _with(g, projs=[_q(g.projections[2], weight_exp=8)]),
     r"projection 'hh'.weight_exp: value 8 outside .*\[-8, 7\]"),
    ("weight_exp float", lambda g: _with(g, projs=[_q(g.projections[2], weight_exp=1.5)]),
     r"projection 'hh'.weight_exp: 1.5 is not an integer"),
    ("vth negative", lambda g: _with(g, pops=[g.populations[0], _p(g.populations[1], vth=-1), g.populations[2]]),
     r"population 'h'.vth: value -1 outside"),
    ("du 4096", lambda g: _with(g, pops=[g.populations[0], g.populations[1], _p(g.populations[2], du=4096)]),
     r"population 'o'.du: value 4096 outside .*\[0, 4095\]"),
    ("bias_mant 5000", lambda g: _with(g, pops=[g.populations[0], _p(g.populations[1], bias_mant=np.full(3, 5000, np.int32)), g.populations[2]]),
     r"population 'h'.bias_mant: value 5000 outside .*\[-4096, 4095\]"),
    ("bias_mant 2-d", lambda g: _with(g, pops=[g.populations[0], _p(g.populations[1], bias_mant=np.zeros((3, 1), np.int32)), g.populations[2]]),
     r"population 'h'.bias_mant: expected a 1-d array"),
    ("bias_exp bool", lambda g: _with(g, pops=[_p(g.populations[0], bias_exp=True), *g.populations[1:]]),
     r"population 'input'.bias_exp: True is not an integer"),
    ("core length", lambda g: _with(g, pops=[g.populations[0], Population("h", g.populations[1].neurons, np.zeros(2, np.int32)), g.populations[2]]),
     r"population 'h'.core: 2 entries for 3 neurons"),
    ("gain negative", lambda g: _with(g, encoding=InputEncoding(-1, 0)), r"input encoding: gain -1"),
    ("shift 40", lambda g: _with(g, encoding=InputEncoding(1, 40)), r"input encoding: .*shift 40"),
    ("no populations", lambda g: _with(g, pops=[], projs=[]), r"graph.populations: empty"),
]


@pytest.mark.parametrize("what,make,pattern", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_graph_refused_naming_the_part(what, make, pattern):
    bad = make(_base())
    with pytest.raises(BackendError, match=pattern) as ei:
        EmulatorBackend().run(bad, np.zeros((1, 2), np.uint8), 3)
    assert len(str(ei.value)) < 600                      # echoed values are cut
    with pytest.raises(BackendError, match=pattern):
        check_graph(bad)


@pytest.mark.parametrize("x,steps,pattern", [
    (np.zeros((1, 3), np.uint8), 3, r"expected shape \(n_samples, 2\)"),
    (np.full((1, 2), 256), 3, "integer features 0..255"),
    (np.full((1, 2), 0.5), 3, "integer features 0..255"),
    (np.full((1, 2), np.nan), 3, "integer features 0..255"),
    (np.array([["a", "b"]]), 3, "integer features 0..255"),
    (np.zeros((1, 2), np.uint8), -1, "steps: must be a non-negative integer"),
    (np.zeros((1, 2), np.uint8), 2.5, "steps: must be a non-negative integer"),
    (np.zeros((1, 2), np.uint8), float("inf"), "steps: must be a non-negative integer"),
    (np.zeros((1, 2), np.uint8), float("nan"), "steps: must be a non-negative integer"),
    (np.zeros((1, 2), np.uint8), True, "steps: must be a non-negative integer"),
    (np.zeros((1, 2), np.uint8), "3", "steps: must be a non-negative integer"),
])
def test_hostile_inputs_refused(x, steps, pattern):
    with pytest.raises(BackendError, match=pattern):
        EmulatorBackend().run(_base(), x, steps)


def test_encoded_bias_out_of_range_refused():
    g = _with(_base(), encoding=InputEncoding(1000, 0))
    with pytest.raises(DeeprError, match=r"input \(encoded sample\).bias_mant: value 255000"):
        EmulatorBackend().run(g, np.full((1, 2), 255, np.uint8), 3)


def test_not_a_network_refused():
    with pytest.raises(BackendError, match="expected an IntegerGraph or IntegerNetwork"):
        EmulatorBackend().run({"layers": []}, np.zeros((1, 2), np.uint8), 3)


class Recording(Backend):
    """A backend that records what Backend.run hands to _simulate."""

    name = "recording"
    exact = False

    def __init__(self):
        self.calls = []

    def _simulate(self, graph, bias, steps, counts, spikes):
        self.calls.append((graph, bias.copy(), steps, spikes is not None))
        counts[-1][:, 0] = 7


@pytest.mark.parametrize("n,steps,record", [(0, 5, True), (3, 0, True), (0, 0, False), (2, 4, False), (2, 4, True)])
def test_backend_run_validates_allocates_and_skips_empty_work(n, steps, record):
    b = Recording()
    g = _base()
    res = b.run(g, np.full((n, 2), 3, np.uint8), steps, record_spikes=record)
    assert [c.shape for c in res.counts] == [(n, 2), (n, 3), (n, 2)]
    assert all(c.dtype == np.int32 for c in res.counts)
    if record:
        assert [s.shape for s in res.spikes] == [(n, steps, 2), (n, steps, 3), (n, steps, 2)]
    else:
        assert res.spikes is None
    assert res.populations == ("input", "h", "o") and res.readout == "o" and res.steps == steps
    if n == 0 or steps == 0:
        assert b.calls == []
    else:
        (graph_seen, bias, steps_seen, rec), = b.calls
        assert graph_seen is g and bias.dtype == np.int32 and bias.tolist() == [[3, 3]] * n
        assert steps_seen == steps and rec == record
        assert res.predictions().tolist() == [0] * n


def test_backend_exactness_is_an_attribute():
    assert EmulatorBackend.exact is True and Recording.exact is False
    from deepr_neuro.simulate.lava_backend import LavaBackend  # the class: Lava may be absent (3.13)
    assert get_backend("emulator").exact and LavaBackend.exact


# ---------------------------------------------------------------------------
# fixed_point: the one home of Lava's numbers agrees with the installed Lava
# ---------------------------------------------------------------------------

@pytest.mark.lava
def test_fixed_point_numbers_are_lavas():
    pytest.importorskip("lava")
    import deepr_neuro.simulate.lava_compat  # noqa: F401  (makes lava importable on 3.11)
    from lava.proc.lif.models import PyLifModelBitAcc
    from lava.proc.sparse.models import PySparseModelBitAcc
    from deepr_neuro.network import fixed_point as fp
    m = PyLifModelBitAcc({})
    assert (m.ds_offset, m.dm_offset, m.act_shift, m.vth_shift, m.decay_shift, m.uv_bitwidth, m.max_uv_val) == \
        (fp.DS_OFFSET, fp.DM_OFFSET, fp.ACT_SHIFT, fp.VTH_SHIFT, fp.DECAY_SHIFT, fp.UV_BITS, fp.MAX_UV)
    assert PyLifModelBitAcc.bias_mant.precision == fp.LAVA_FORMAT["bias_mant_bits"]
    assert PyLifModelBitAcc.du.precision == fp.LAVA_FORMAT["decay_bits"]
    assert PySparseModelBitAcc.a_out.d_type == np.int32          # what the InPort adds, in int32
    assert PyLifModelBitAcc.a_in.d_type == np.int16              # zeros it adds onto (int16 + int32 -> int32)


def test_fixed_point_is_the_one_home():
    """The profile, the chip format and the emulator read the same numbers."""
    from deepr_neuro.hardware import profile
    from deepr_neuro.hardware.chip_format import ChipFormat
    from deepr_neuro.network import fixed_point as fp
    from deepr_neuro.simulate import emulator
    assert profile.LAVA_LIMITS is fp.LAVA_LIMITS
    f = ChipFormat()
    assert (f.vth_max, f.bias_mant_min, f.bias_mant_max, f.decay_max) == (
        fp.LAVA_LIMITS["vth"][1], *fp.LAVA_LIMITS["bias_mant"], fp.LAVA_LIMITS["du"][1])
    assert (f.weight_exp_min, f.weight_exp_max) == fp.LAVA_LIMITS["weight_exp"]
    assert emulator.MAX_UV is fp.MAX_UV and emulator.ACT_SHIFT is fp.ACT_SHIFT
