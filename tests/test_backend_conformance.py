"""One contract for every registered backend, written once (as nengo's shared
Simulator tests are): every test below takes the ``backend`` fixture, which is
parametrised over :func:`deepr_neuro.simulate.backends.available`, so a new
backend is held to all of it by registering it.

The contract, through the public API only (``get_backend``, ``available``,
``Backend.run(net, x_uint8, steps, record_spikes)``, ``Backend.exact``,
``SimResult.counts / spikes / predictions``):

* shapes: ``counts[l]`` int32 (n_samples, n_l), ``spikes[l]`` bool
  (n_samples, steps, n_l) when recorded, else None; an empty batch gives
  correctly shaped empty arrays;
* ``steps = 0`` is accepted by every backend and gives all-zero counts and
  (n, 0, n_l) trains: a run of no time has no spikes. The CLI, ``pipeline``
  and ``crosscheck`` refuse it (``--steps`` is 1..MAX_STEPS; crosscheck would
  compare nothing), so no user reaches it by accident;
* one step of delay per projection: at ``steps = 1`` nothing has reached
  layer 1 yet; layer l first spikes at step l;
* ``record_spikes`` on and off give the same counts, ``spikes.sum(axis=1) ==
  counts``, and a second run gives the same result (no hidden state);
* bad input is refused with :class:`BackendError` naming what is wrong
  (shape, pixel values, steps, out-of-range network integers), before any
  simulator starts;
* zero state at every sample: a sample's trains do not depend on the samples
  before it;
* every exact backend (``backend.exact``) gives the emulator's spikes, bit
  for bit, on random small networks (hypothesis); an approximate one agrees
  on the predicted class of at least APPROX_CLASS_AGREEMENT of the samples
  of a network with a clear winner.

Backend-specific checks (Lava's kernels, Brian2's float propagator, the
emulator's arithmetic and chunking) stay in their own files.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from deepr_neuro.errors import BackendError
from deepr_neuro.network.integer_network import IntegerNetwork, SynapseLayer
from deepr_neuro.simulate.backends import SimResult, available, get_backend

from test_emulator import chain, dense_layer, networks, neurons

#: Marks per backend, so ``-m "not lava"`` and ``-m "not brian2"`` deselect them.
MARKS = {
    "lava": [pytest.mark.lava],
    "brian2": [pytest.mark.brian2],
    "brian2-float": [pytest.mark.brian2],
}

#: (backend, test) pairs that do not apply, with the reason (nengo's list of the same).
SKIPS = {
    ("emulator", "test_exact_backend_matches_emulator"):
        "the emulator is the reference; it is checked against Lava's own kernels "
        "in test_lava_agreement.py",
}

#: Hypothesis examples per backend for the random-network comparison (Lava compiles a
#: process graph per run, Brian2 builds a Network per run); others get DEFAULT_EXAMPLES.
EXAMPLES = {"lava": 10, "brian2": 30}
DEFAULT_EXAMPLES = 25

#: Stated tolerance of an approximate (exact=False) backend: share of samples whose
#: predicted class is the emulator's, on a network with a clear winner.
APPROX_CLASS_AGREEMENT = 0.8


@pytest.fixture(params=[pytest.param(name, marks=MARKS.get(name, []), id=name)
                        for name in available()])
def backend(request):
    name = request.param
    reason = SKIPS.get((name, request.node.originalname))
    if reason:
        pytest.skip(reason)
    if name == "lava":
        from deepr_neuro.simulate import lava_compat
        lava_compat.install()
        pytest.importorskip("lava", reason="lava-nc is not installed (scripts/setup.sh)")
    return get_backend(name)


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------

def relay_chain(n_layers=3):
    """An input neuron firing at every step into a chain of relays that fire on any
    positive input: layer l first spikes at step l if there is one step of delay."""
    inp = neurons(1, vth=0, bias=1)
    return chain(inp, *[dense_layer([[10]], neurons(1, vth=0), name=f"r{i}")
                        for i in range(n_layers)])


def random_chain(seed, sizes=(6, 5, 3)):
    """A small chain with leaky, integrating and mixed-sign layers that is busy enough
    for the comparisons to mean something."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(len(sizes) - 1):
        w = rng.integers(-120, 256, (sizes[i + 1], sizes[i]))
        w[rng.random(w.shape) < 0.3] = 0
        layers.append(dense_layer(
            w, neurons(sizes[i + 1], vth=int(rng.integers(10, 80)),
                       du=int(rng.choice([4095, 3000, 0])), dv=int(rng.choice([0, 200])),
                       bias=rng.integers(-20, 40, sizes[i + 1])),
            weight_exp=int(rng.integers(-1, 3)), bits=int(rng.integers(5, 9)), name=f"h{i}"))
    net = chain(neurons(sizes[0], vth=30), *layers, gain=4, shift=0)
    x = rng.integers(0, 256, (3, sizes[0])).astype(np.uint8)
    return net, x


def memory_chain():
    """Leaky layers with slow decay (du 1000 / 0): activity in flight at a sample's last
    step would change the next sample's trains if state leaked between samples."""
    inp = neurons(3, vth=20)
    h = dense_layer([[200, 100, 50], [-80, 120, 90]], neurons(2, vth=30, du=1000, dv=200))
    o = dense_layer([[150, -60]], neurons(1, vth=10, du=0, dv=100))
    return chain(inp, h, o, gain=8, shift=0)


def clear_readout():
    """Output k pools inputs 3k..3k+2 through a leaky relay layer: one strong pixel
    gives a clear winner, so an approximate reading should pick the same class."""
    n_cls, pool = 4, 3
    n_in = n_cls * pool
    relay = dense_layer(np.diag(np.full(n_in, 120)), neurons(n_in, vth=100, du=1500, dv=200),
                        name="relay")
    w = np.zeros((n_cls, n_in), int)
    w[np.repeat(np.arange(n_cls), pool), np.arange(n_in)] = 60
    out = dense_layer(w, neurons(n_cls, vth=150, du=1500, dv=200), name="out")
    net = chain(neurons(n_in, vth=200), relay, out, gain=8, shift=0)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 120, (30, n_in))
    x[np.arange(30), rng.integers(0, n_in, 30)] = 255
    return net, x.astype(np.uint8)


def assert_same_spikes(ref: SimResult, got: SimResult, label=""):
    assert len(ref.spikes) == len(got.spikes)
    for layer, (a, b) in enumerate(zip(ref.spikes, got.spikes)):
        assert a.shape == b.shape, f"{label} layer {layer}: shape {b.shape}, expected {a.shape}"
        if not np.array_equal(a, b):
            s, t, n = np.argwhere(a != b)[0]
            pytest.fail(f"{label} layer {layer}: first differing spike at sample {s}, step {t}, "
                        f"neuron {n} (reference {a[s, t, n]})")
    for a, b in zip(ref.counts, got.counts):
        np.testing.assert_array_equal(a, b)


def assert_well_formed(res: SimResult, net: IntegerNetwork, n_samples: int, steps: int,
                       recorded: bool):
    assert res.steps == steps
    assert [c.shape for c in res.counts] == [(n_samples, n) for n in net.sizes]
    assert all(c.dtype == np.int32 for c in res.counts)
    if recorded:
        assert [s.shape for s in res.spikes] == [(n_samples, steps, n) for n in net.sizes]
        assert all(s.dtype == np.bool_ for s in res.spikes)
        for s, c in zip(res.spikes, res.counts):
            np.testing.assert_array_equal(s.sum(axis=1), c)
    else:
        assert res.spikes is None
    assert res.predictions().shape == (n_samples,)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

def test_backend_is_registered_under_its_name_and_declares_exactness(backend, request):
    assert backend.name == request.node.callspec.params["backend"]
    assert isinstance(backend.exact, bool)


def test_unknown_backend_is_refused_naming_the_choices():
    with pytest.raises(BackendError, match="unknown backend 'emulatr'; choose one of: .*emulator"):
        get_backend("emulatr")


# ---------------------------------------------------------------------------
# Shapes and edge sizes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("record", [False, True])
def test_empty_batch_gives_empty_arrays(backend, record):
    net, _ = random_chain(0)
    res = backend.run(net, np.zeros((0, net.n_inputs), np.uint8), 5, record_spikes=record)
    assert_well_formed(res, net, 0, 5, record)


@pytest.mark.parametrize("n_samples", [0, 2])
def test_zero_steps_give_zero_counts(backend, n_samples):
    """Decided: backends accept steps = 0 (no time, no spikes); the CLI refuses it."""
    net, x = random_chain(0)
    res = backend.run(net, x[:n_samples], 0, record_spikes=True)
    assert_well_formed(res, net, n_samples, 0, True)
    assert all(not c.any() for c in res.counts)
    assert res.predictions().tolist() == [0] * n_samples   # ties go to the lowest index


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_one_step_of_delay_per_layer(backend, steps):
    net = relay_chain(3)
    res = backend.run(net, np.zeros((2, 1), np.uint8), steps, record_spikes=True)
    assert_well_formed(res, net, 2, steps, True)
    for depth, trains in enumerate(res.spikes):
        expected = [[t >= depth] for t in range(steps)]
        assert trains[0].tolist() == expected, f"layer {depth}"
        assert trains[1].tolist() == expected, f"layer {depth}, second sample"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_record_spikes_on_and_off_agree(backend, seed):
    net, x = random_chain(seed)
    x_before = x.copy()
    on = backend.run(net, x, 20, record_spikes=True)
    off = backend.run(net, x, 20, record_spikes=False)
    assert_well_formed(on, net, len(x), 20, True)
    assert_well_formed(off, net, len(x), 20, False)
    assert sum(int(c.sum()) for c in on.counts[1:]) > 0, "the test network must be busy"
    for a, b in zip(on.counts, off.counts):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(on.predictions(), off.predictions())
    assert_same_spikes(on, backend.run(net, x, 20, record_spikes=True), "second run")
    np.testing.assert_array_equal(x, x_before)          # the input is not modified


# ---------------------------------------------------------------------------
# Inputs: refused cleanly, or accepted as the integers they hold
# ---------------------------------------------------------------------------

BAD_INPUTS = [
    # (id, x, steps, what the message must name)
    ("too-wide", np.zeros((2, 4)), 3, r"inputs: expected shape \(n_samples, 3\), got \(2, 4\)"),
    ("too-narrow", np.zeros((2, 2)), 3, r"expected shape \(n_samples, 3\), got \(2, 2\)"),
    ("3-d", np.zeros((1, 1, 3)), 3, r"expected shape \(n_samples, 3\), got \(1, 1, 3\)"),
    ("0-d", np.array(7), 3, r"expected shape \(n_samples, 3\), got \(\)"),
    ("empty-1-d", np.zeros(0), 3, r"got \(0,\)"),
    ("empty-0x0", np.zeros((0, 0)), 3, r"got \(0, 0\)"),
    ("negative", np.array([[-1, 0, 0]]), 3, r"integer features 0\.\.255.*\[-1, 0\]"),
    ("above-255", np.array([[0, 256, 0]]), 3, r"integer features 0\.\.255.*\[0, 256\]"),
    ("huge-int", np.array([[2 ** 40, 0, 0]]), 3, r"0\.\.255.*1099511627776"),
    ("uint64-top", np.array([[2 ** 63, 0, 0]], np.uint64), 3, r"0\.\.255.*9223372036854775808"),
    ("fraction", np.array([[0.5, 1.0, 2.0]]), 3, r"integer features 0\.\.255.*float64.*0\.5"),
    ("nan", np.array([[np.nan, 0, 0]]), 3, r"integer features 0\.\.255.*nan"),
    ("inf", np.array([[np.inf, 0, 0]]), 3, r"integer features 0\.\.255.*inf"),
    ("steps-negative", np.zeros((1, 3)), -1, r"steps: .*non-negative integer.*-1"),
    ("steps-fraction", np.zeros((1, 3)), 2.5, r"steps: .*integer.*2\.5"),
    ("steps-string", np.zeros((1, 3)), "3", r"steps: .*integer.*'3'"),
    pytest.param("complex", np.array([[1 + 2j, 0, 0]]), 3, r"inputs", id="complex",
                 marks=pytest.mark.filterwarnings("ignore:Casting complex values")),
    pytest.param("strings", np.array([["1", "2", "3"]]), 3, r"inputs", id="strings"),
    pytest.param("object-none", np.array([[1, 2, None]], object), 3, r"inputs", id="object-none"),
    pytest.param("steps-bool", np.zeros((1, 3)), True, r"steps", id="steps-bool"),
    pytest.param("steps-none", np.zeros((1, 3)), None, r"steps", id="steps-none"),
    pytest.param("steps-nan", np.zeros((1, 3)), float("nan"), r"steps", id="steps-nan"),
    pytest.param("steps-inf", np.zeros((1, 3)), float("inf"), r"steps", id="steps-inf"),
]


def _three_input_net():
    return chain(neurons(3, vth=0, bias=1), dense_layer([[1, 1, 0], [0, 2, 3]], neurons(2)))


@pytest.mark.parametrize("case,x,steps,match",
                         [c if hasattr(c, "values") else pytest.param(*c, id=c[0])
                          for c in BAD_INPUTS])
def test_bad_input_is_refused_naming_it(backend, case, x, steps, match):
    with pytest.raises(BackendError, match=match) as info:
        backend.run(_three_input_net(), x, steps, record_spikes=True)
    assert isinstance(info.value, RuntimeError)       # errors also inherit builtins
    assert len(str(info.value)) < 500


def _network_with(**change):
    """_three_input_net with one field set out of the chip's range."""
    layer = dense_layer([[1, 1, 0], [0, 2, 3]], neurons(2), name="fc1")
    if "weight" in change:
        layer = dense_layer([[1, change["weight"], 0], [0, 2, 3]], neurons(2), name="fc1")
    if "du" in change:
        layer = dense_layer([[1, 1, 0], [0, 2, 3]], neurons(2, du=change["du"]), name="fc1")
    if "row" in change:
        layer = SynapseLayer(**{**layer.__dict__, "rows": np.array([0, 0, 1, change["row"]],
                                                                    np.int32)})
    return chain(neurons(3, vth=0, bias=1), layer, gain=change.get("gain", 1))


@pytest.mark.parametrize("change,match", [
    ({"weight": 300}, r"'fc1'.*weight.*300.*\[-256, 255\]"),
    ({"weight": -257}, r"'fc1'.*weight.*-257"),
    ({"du": 4096}, r"du.*4096.*\[0, 4095\]"),
    ({"row": 2}, r"'fc1'.*outside"),
    ({"gain": 64}, r"input.*bias_mant.*4095"),     # 255 * 64 does not fit 13 bits
], ids=["weight-300", "weight-minus-257", "du-4096", "row-outside", "encoding-overflow"])
def test_out_of_range_network_is_refused_naming_it(backend, change, match):
    with pytest.raises(BackendError, match=match):
        backend.run(_network_with(**change), np.full((1, 3), 255, np.uint8), 3)


def test_equal_pixels_in_any_form_give_equal_results(backend):
    """uint8, int64, integral floats, a read-only array, a nested list and a 1-D sample
    (one sample) are accepted as the same integers."""
    net, x = random_chain(1)
    ref = backend.run(net, x, 15, record_spikes=True)
    read_only = x.copy()
    read_only.flags.writeable = False
    for form in (x.astype(np.int64), x.astype(np.float64), read_only, x.tolist()):
        assert_same_spikes(ref, backend.run(net, form, 15, record_spikes=True), str(type(form)))
    one = backend.run(net, x[1], 15, record_spikes=True)
    assert_well_formed(one, net, 1, 15, True)
    for a, b in zip(ref.spikes, one.spikes):
        np.testing.assert_array_equal(a[1:2], b)


# ---------------------------------------------------------------------------
# Zero state at every sample
# ---------------------------------------------------------------------------

def test_every_sample_starts_from_zero_state(backend):
    net = memory_chain()
    a = np.array([255, 255, 255], np.uint8)
    b = np.array([0, 10, 0], np.uint8)
    steps = 12
    batch = backend.run(net, np.stack([a, b, a, a]), steps, record_spikes=True)
    assert batch.counts[-1][0, 0] > 0, "the test network must carry activity to the output"
    assert batch.spikes[-1][0, -1].any() or batch.spikes[1][0, -1].any(), \
        "activity must be in flight at the last step for the test to mean something"
    for trains in batch.spikes:       # a repeated sample gives identical trains
        np.testing.assert_array_equal(trains[0], trains[2])
        np.testing.assert_array_equal(trains[2], trains[3])
    alone = backend.run(net, b[None], steps, record_spikes=True)   # [a, b] vs [b]
    for trains, ref in zip(batch.spikes, alone.spikes):
        np.testing.assert_array_equal(trains[1:2], ref)


# ---------------------------------------------------------------------------
# Exact backends give the emulator's spikes; approximate ones its classes
# ---------------------------------------------------------------------------

def test_exact_backend_matches_emulator(backend):
    """Random small chains over the whole Lava range (test_emulator.networks: sign modes,
    -256/255 weights, weight_exp -8..7, 1..8 bits, du/dv 0..4095, the 24-bit wrap of u),
    the batch sent as [x, x[0], x] (samples stream through one network, a sample
    repeats, and reversing the batch changes it)."""
    if not backend.exact:
        pytest.skip(f"{backend.name} declares exact=False (approximate by design)")
    emulator = get_backend("emulator")

    @settings(max_examples=EXAMPLES.get(backend.name, DEFAULT_EXAMPLES), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(networks())
    def check(case):
        net, x, steps = case
        x = np.concatenate([x, x[:1], x])
        assert_same_spikes(emulator.run(net, x, steps, record_spikes=True),
                           backend.run(net, x, steps, record_spikes=True),
                           f"{backend.name} steps={steps}")

    check()


def test_approximate_backend_classifies_like_emulator(backend):
    if backend.exact:
        pytest.skip(f"{backend.name} is exact: held to identical spikes instead")
    net, x = clear_readout()
    ref = get_backend("emulator").run(net, x, 100)
    got = backend.run(net, x, 100)
    assert_well_formed(got, net, len(x), 100, False)
    assert ref.counts[-1].sum() > 0 and got.counts[-1].sum() > 0
    agreement = float(np.mean(ref.predictions() == got.predictions()))
    assert agreement >= APPROX_CLASS_AGREEMENT, \
        f"{backend.name}: {100 * agreement:.0f}% of classes agree with the emulator"


# ---------------------------------------------------------------------------
# Spike-source input and final-v readout (recurrent networks): every backend
# ---------------------------------------------------------------------------

def spike_recurrent_graph(seed=0, n_in=4, n_rec=5, n_out=3):
    """input (spike source) -> rec (leaky, recurrent, no self-loops) -> out (non-spiking
    integrator, vth max): the shape a trained recurrent run deploys to."""
    import dataclasses

    from deepr_neuro.network.frame_encoding import FrameEncoding
    from deepr_neuro.network.integer_network import (InputEncoding, IntegerGraph, NeuronParams, Population,
                                                     Projection)

    rng = np.random.default_rng(seed)

    def proj(name, pre, post, w, e):
        rows, cols = np.nonzero(w)
        return Projection(name, pre, post, rows.astype(np.int32), cols.astype(np.int32),
                          w[rows, cols].astype(np.int32), e, 8)

    def lif(n, vth, du, dv):
        return NeuronParams(vth=vth, du=du, dv=dv, bias_exp=0, bias_mant=np.zeros(n, np.int32))

    w_in = rng.integers(-40, 200, (n_rec, n_in)) * (rng.random((n_rec, n_in)) < 0.7)
    w_rec = rng.integers(-120, 120, (n_rec, n_rec)) * (rng.random((n_rec, n_rec)) < 0.6)
    np.fill_diagonal(w_rec, 0)
    w_out = rng.integers(-100, 100, (n_out, n_rec))
    g = IntegerGraph(
        populations=(Population("input", lif(n_in, 0, 0, 0)), Population("rec", lif(n_rec, 400, 800, 250)),
                     Population("out", lif(n_out, 131071, 4095, 0))),
        projections=(proj("in_rec", "input", "rec", w_in, 3), proj("rec_rec", "rec", "rec", w_rec, 2),
                     proj("rec_out", "rec", "out", w_out, 0)),
        encoding=InputEncoding(1, 0), readout="out")
    g = dataclasses.replace(g, input_kind="spikes", readout_kind="final_v", encoding=FrameEncoding(3))
    lengths = np.array([4, 9, 1, 7]) * 3
    spikes = rng.random((4, 27, n_in)) < 0.4
    spikes &= (np.arange(27)[None, :] < lengths[:, None])[:, :, None]
    return g, spikes, lengths


def test_spike_source_and_final_v_match_emulator(backend):
    g, spikes, lengths = spike_recurrent_graph()
    ref = get_backend("emulator").run(g, spikes, 27, record_spikes=True, n_steps=lengths)
    got = backend.run(g, spikes, 27, record_spikes=True, n_steps=lengths)
    assert ref.counts[1].sum() > 0 and ref.readout_kind == got.readout_kind == "final_v"
    assert np.array_equal(got.spikes[0], spikes)              # the source replays the trains as given
    assert got.readout_v.shape == (4, 3)
    if backend.exact:
        assert_same_spikes(ref, got, backend.name)
        assert np.array_equal(ref.readout_v, got.readout_v)
        assert got.readout_v.dtype.kind == "i"
    assert np.array_equal(got.predictions(), np.argmax(got.readout_v, axis=1))


def test_final_v_does_not_depend_on_batch_company(backend):
    """A sample's final v is the same run alone, in a batch, and with longer samples after it."""
    g, spikes, lengths = spike_recurrent_graph(seed=3)
    together = backend.run(g, spikes, 27, n_steps=lengths)
    for i in (0, 2):
        L = int(lengths[i])
        alone = backend.run(g, spikes[i:i + 1, :L], L)
        assert np.allclose(alone.readout_v[0], together.readout_v[i])
        padded = backend.run(g, spikes[i:i + 1], 27, n_steps=lengths[i:i + 1])
        assert np.array_equal(padded.counts[1][0], together.counts[1][i])
        assert np.allclose(padded.readout_v[0], together.readout_v[i])
