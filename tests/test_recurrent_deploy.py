"""Deploying a trained recurrent run: export, simulate on every backend, crosscheck.

A tiny recurrent network (16 LIF, 1 epoch on spoken digits, dense and with
masks) is trained with H6's ``train_recurrent`` and written as a bundle per
the R1/R2 contract (tests/recurrent_bundle.py). Export quantizes it; the
integer backends must give identical spikes in every population and step and
identical final v ON THE TRAINED NETWORK (Lava on a few samples, Brian2 on
more); the deployed network stays close to the float one. Hostile bundles and
flags are refused with one ``error:`` line naming the file / field.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepr_neuro.cli import main
from deepr_neuro.convert.recurrent import READOUT_VTH, dequantized_weights, quantize_projection
from deepr_neuro.network.fixed_point import sign_mode_of, truncate_weights, weight_range, weight_step
from deepr_neuro.pipeline import load_integer_graph
from deepr_neuro.store.bundle import load_bundle, read_manifest, save_bundle

from recurrent_bundle import train_tiny, write_recurrent_bundle



from spoken_data import need_spoken  # noqa: E402

pytestmark = need_spoken


@pytest.fixture(scope="module")
def digits():
    from deepr_neuro.training.sequences import load_sequences
    return load_sequences("spoken-digits", seed=0)


@pytest.fixture(scope="module", params=[None, 0.3], ids=["dense", "masked"])
def trained(request, tmp_path_factory, digits):
    model, data, _ = train_tiny(n_rec=16, epochs=1, connectivity=request.param, data=digits)
    run = write_recurrent_bundle(tmp_path_factory.mktemp("rec") / "run", model, data)
    pristine = tmp_path_factory.mktemp("pristine") / "run"
    shutil.copytree(run, pristine)
    return run, pristine, model


@pytest.fixture(scope="module")
def exported(trained):
    run, _, model = trained
    assert main(["export", str(run), "--no-progress"]) == 0
    return run, model


def test_export_writes_spike_source_graph_and_snn_block(exported, capsys):
    run, model = exported
    m = read_manifest(run)
    snn = m["snn"]
    assert snn["input"]["kind"] == "spikes" and snn["readout_kind"] == "final_v"
    assert snn["input"]["encoding"] == model.spec.encoding.info()
    assert snn["steps_per_frame"] == model.spec.encoding.steps_per_frame
    for k in ("float_test", "quantized_test", "snn_test", "float_val"):
        assert 0 <= snn["accuracy"][k] <= 1
    assert set(snn["activity"]["spikes_per_inference"]) == {"input", "rec", "out"}
    assert snn["activity"]["spikes_per_inference"]["out"] == 0          # readout never spikes
    assert snn["activity"]["synops_per_inference"]["rec"] > 0
    _, _, g = load_integer_graph(run)
    assert g.input_kind == "spikes" and g.readout_kind == "final_v" and g.readout == "out"
    assert g.population("out").neurons.vth == READOUT_VTH
    assert all(int(b) == 0 for p in g.populations for b in p.neurons.bias_mant)
    rec = g.population("rec").neurons
    assert (rec.du, rec.dv) == (model.spec.rec.du, model.spec.rec.dv)
    # the chip threshold is the trained one scaled by k in [1, 4) (weights into rec scaled alike)
    assert model.spec.rec.vth <= rec.vth < 4 * model.spec.rec.vth and rec.vth == snn["deploy"]["rec_vth"]
    assert snn["deploy"]["rec_weight_sq_error"] <= snn["deploy"]["rec_weight_sq_error_at_trained_vth"]
    assert g.population("rec").core is not None and len(set(g.population("rec").core.tolist())) == 2


def test_exported_weights_are_rounded_float_weights_on_lavas_grid(exported):
    run, model = exported
    _, arrays = load_bundle(run)
    _, _, g = load_integer_graph(run)
    snn = read_manifest(run)["snn"]
    for q in g.projections:
        w = np.asarray(arrays[f"proj/{q.name}/weight"], np.float64)
        qw = np.asarray(q.weights)
        assert np.array_equal(truncate_weights(qw, q.num_weight_bits), qw)    # Lava keeps them as they are
        scale = snn["deploy"]["projections"][q.name]["scale"]
        step = weight_step(q.num_weight_bits, "mixed") * 2.0 ** q.weight_exp / scale
        assert np.max(np.abs(dequantized_weights(qw, q.weight_exp, scale) - w)) <= step / 2 + 1e-9
        if q.name != "rec_out":
            assert scale == g.population("rec").neurons.vth                 # W = round(w * vth' / 2**e)


def test_deployed_network_close_to_float(exported):
    snn = read_manifest(exported[0])["snn"]["accuracy"]
    assert abs(snn["snn_test"] - snn["quantized_test"]) <= 0.03
    assert abs(snn["snn_test"] - snn["float_test"]) <= 0.03


def test_simulate_emulator_gives_export_accuracy(exported, capsys):
    run, _ = exported
    capsys.readouterr()
    assert main(["simulate", str(run), "--backend", "emulator", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == read_manifest(run)["snn"]["accuracy"]["snn_test"]
    assert out["readout"] == "final_v" and out["spikes_per_inference"]["out"] == 0


@pytest.mark.brian2
def test_crosscheck_brian2_identical_on_trained_network(exported, capsys):
    pytest.importorskip("brian2")
    run, _ = exported
    capsys.readouterr()
    rc = main(["crosscheck", str(run), "--samples", "24", "--backends", "emulator,brian2", "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["integer_backends_agree"] is True
    b2 = rep["backends"]["brian2"]
    assert b2["identical"] is True and b2["readout_v_identical"] is True
    assert b2["classification_agreement"] == 1.0


@pytest.mark.lava
def test_crosscheck_all_backends_on_trained_network(exported, capsys):
    pytest.importorskip("lava")
    run, _ = exported
    capsys.readouterr()
    rc = main(["crosscheck", str(run), "--samples", "3", "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["integer_backends_agree"] is True
    for name in ("lava", "brian2"):
        assert rep["backends"][name]["identical"] is True
        assert rep["backends"][name]["readout_v_identical"] is True
    assert rep["backends"]["brian2-float"]["ok"] is True


@pytest.mark.parametrize("backend", ["emulator", pytest.param("brian2-float", marks=pytest.mark.brian2)])
def test_simulate_cli_each_backend(exported, capsys, backend):
    run, _ = exported
    assert main(["simulate", str(run), "--backend", backend, "--samples", "4"]) == 0
    assert "accuracy" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# Hostile bundles and flags: one `error:` line naming the file / field
# ---------------------------------------------------------------------------

def _edit(pristine, tmp_path, manifest_edit=None, arrays_edit=None):
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    m, arrays = load_bundle(run)
    m = {k: v for k, v in m.items() if k not in ("format", "version", "integrity")}
    if manifest_edit:
        manifest_edit(m)
    if arrays_edit:
        arrays_edit(arrays)
    save_bundle(run, m, arrays)
    return run


def _set(path, value):
    def edit(m):
        d = m
        for k in path[:-1]:
            d = d[k]
        if value is _DEL:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return edit


_DEL = object()


def _self_loop(a):
    rows, cols = a["proj/rec_rec/rows"].copy(), a["proj/rec_rec/cols"].copy()
    cols[0] = rows[0]
    order = np.lexsort((cols, rows))
    a["proj/rec_rec/rows"], a["proj/rec_rec/cols"] = rows[order], cols[order]
    a["proj/rec_rec/weight"] = a["proj/rec_rec/weight"][order]


def _nan(a):
    a["proj/in_rec/weight"] = a["proj/in_rec/weight"].copy()
    a["proj/in_rec/weight"][0] = np.nan


HOSTILE = [
    ("no recurrent block", dict(manifest_edit=_set(["recurrent"], _DEL)), "recurrent"),
    ("block not an object", dict(manifest_edit=_set(["recurrent"], [1, 2])), "recurrent"),
    ("encoding steps 0", dict(manifest_edit=_set(["recurrent", "encoding", "steps_per_frame"], 0)), "steps_per_frame"),
    ("encoding steps 1e9", dict(manifest_edit=_set(["recurrent", "encoding", "steps_per_frame"], 10 ** 9)),
     "steps_per_frame"),
    ("encoding scale nan", dict(manifest_edit=_set(["recurrent", "encoding", "scale"], float("nan"))), "scale"),
    ("encoding kind", dict(manifest_edit=_set(["recurrent", "encoding", "kind"], "latency")), "encoding"),
    ("encoding string", dict(manifest_edit=_set(["recurrent", "encoding"], "x" * 5000)), "encoding"),
    ("neurons missing", dict(manifest_edit=_set(["recurrent", "neurons"], {})), "neurons"),
    ("du 5000", dict(manifest_edit=_set(["recurrent", "neurons", "rec", "du"], 5000)), "du"),
    ("vth 0", dict(manifest_edit=_set(["recurrent", "neurons", "rec", "vth"], 0)), "vth"),
    ("vth float", dict(manifest_edit=_set(["recurrent", "neurons", "out", "vth"], 1.5)), "vth"),
    ("nonlinearity rate", dict(manifest_edit=_set(["recurrent", "nonlinearity"], "rate")), "spiking"),
    ("nonlinearity junk", dict(manifest_edit=_set(["recurrent", "nonlinearity"], "relu")), "kind"),
    ("self connection", dict(arrays_edit=_self_loop), "itself"),
    ("nan weight", dict(arrays_edit=_nan), "not finite"),
    ("weight bits 9", dict(manifest_edit=_set(["training", "weight_bits"], 9)), "weight_bits"),
]


@pytest.mark.parametrize("what,edit,pattern", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_recurrent_bundle_refused(trained, tmp_path, capsys, what, edit, pattern):
    _, pristine, _ = trained
    run = _edit(pristine, tmp_path, **edit)
    capsys.readouterr()
    assert main(["export", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and pattern in err[0], err
    assert len(err[0]) < 1000
    assert "snn" not in read_manifest(run)                      # nothing written


@pytest.mark.parametrize("argv", [
    ["export", "{run}", "--steps", "10"],
    ["simulate", "{run}", "--steps", "10"],
    ["crosscheck", "{run}", "--steps", "10", "--backends", "emulator"],
    ["export", "{run}", "--to", "nir", "--steps", "10"],   # --to nir of a recurrent run: tests/test_nir_recurrent.py
    ["simulate", "{run}", "--samples", "0"],
    ["simulate", "{run}", "--samples", "-3"],
])
def test_hostile_flags_refused(exported, capsys, argv):
    run, _ = exported
    capsys.readouterr()
    assert main([a.format(run=run) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err


def test_graph_other_than_input_rec_out_refused(trained, tmp_path, capsys):
    _, pristine, _ = trained

    def rename(m):
        m["graph"]["readout"] = "rec"
    run = _edit(pristine, tmp_path, manifest_edit=rename)
    assert main(["export", str(run), "--no-progress"]) == 2
    assert "in_rec, rec_rec, rec_out" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The quantizer
# ---------------------------------------------------------------------------

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=0, max_size=40),
       st.sampled_from([1.0, 64.0, 1024.0, 131071.0, 3.7]), st.integers(1, 8),
       st.sampled_from([(-7, 7), (-8, 7), (0, 0), (-2, 3)]))
def test_quantize_projection_on_grid_and_nearest(ws, scale, bits, exp_range):
    w = np.asarray(ws, np.float64)
    qw, e, info = quantize_projection(w, scale, bits, exp_range)
    assert exp_range[0] <= e <= exp_range[1]
    mode = sign_mode_of(qw)
    lo, hi = weight_range(bits, mode)
    assert qw.dtype == np.int32 and (qw.size == 0 or (qw.min() >= lo and qw.max() <= hi))
    assert not np.any(qw % weight_step(bits, mode))
    assert np.array_equal(truncate_weights(qw, bits), qw)
    if info["clipped"] == 0 and w.size:
        step = weight_step(bits, "mixed") * 2.0 ** e / scale
        assert np.max(np.abs(dequantized_weights(qw, e, scale) - w)) <= step / 2 + 1e-9 * max(1, np.abs(w).max())


@pytest.mark.parametrize("w", [[-5e-324], [5e-324, -5e-324], [1e-310]])
def test_quantize_projection_subnormal_weights_round_to_zero(w):
    qw, e, info = quantize_projection(np.asarray(w), 1.0, 1)
    assert e == -7 and not qw.any() and info["clipped"] == 0


@pytest.mark.parametrize("w,scale", [([np.nan], 1.0), ([np.inf], 1.0), ([1.0], 0.0), ([1.0], float("nan")),
                                     ([1.0], -2.0)])
def test_quantize_projection_refuses(w, scale):
    from deepr_neuro.errors import ConfigError
    with pytest.raises(ConfigError):
        quantize_projection(np.asarray(w), scale, 8)


# ---------------------------------------------------------------------------
# The deployed graph IS the float model (delays, reset, readout step) when
# quantization is exact: IF neurons, weights on the chip's grid
# ---------------------------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_exactly_representable_float_model_equals_emulator(seed):
    from deepr_neuro.convert.recurrent import deploy_recurrent
    from deepr_neuro.network.frame_encoding import FrameEncoding
    from deepr_neuro.simulate.emulator import EmulatorBackend
    from deepr_neuro.training.recurrent import LifParams, RecurrentModel, RecurrentSpec

    rng = np.random.default_rng(seed)
    enc = FrameEncoding(steps_per_frame=2, scale=2.0, signed=True)
    spec = RecurrentSpec(n_in=6, n_rec=7, n_out=3, encoding=enc, rec=LifParams(du=4095, dv=0, vth=64),
                         out=LifParams(du=4095, dv=0, vth=131071))
    pot = spec.potential()
    # even multiples of 1/64, |w| < 2: exact in float32 and on the 8-bit grid (W = w * 64 * 2 at weight_exp -1)
    w = {k: (rng.integers(-32, 64, m.shape) * 2).astype(np.float32) / 64 for k, m in pot.items()}
    masks = {k: m & (rng.random(m.shape) < 0.7) for k, m in pot.items()}
    model = RecurrentModel(spec, w, masks)
    frames = rng.normal(0, 1, (5, 6, 3)).astype(np.float32)
    lengths = rng.integers(1, 7, 5)
    dep = deploy_recurrent(model, 8, (-7, 7), frames, lengths)
    spikes = enc.encode(frames, lengths)
    n_steps = lengths * 2
    trace = model.forward(spikes, n_steps)
    res = EmulatorBackend().run(dep.graph, spikes, spikes.shape[1], record_spikes=True, n_steps=n_steps)
    for b in range(5):      # every step up to each sample's end: the same spikes in rec
        L = int(n_steps[b])
        assert np.array_equal(res.spikes[1][b, :L], trace.z[:L, b] > 0), f"sample {b}"
    # the readout: v_int = 64 * W_out(.) = 64 * c * v_float, up to the rounding of w_out * c
    c = dep.scales["rec_out"]
    # an IF readout sums one rounded weight per rec spike: at most (rec spikes) x (largest rounding error)
    err = dep.info["projections"]["rec_out"]["max_abs_error"]
    for b in range(5):
        bound = int(res.spikes[1][b, :int(n_steps[b])].sum()) * err + 1e-6 * max(1.0, np.abs(trace.logits[b]).max())
        assert np.all(np.abs(res.readout_v[b] / (64.0 * c) - trace.logits[b]) <= bound), f"sample {b}"


# ---------------------------------------------------------------------------
# Activity over each sample's own steps: independent of how samples are batched
# ---------------------------------------------------------------------------

def _small_graph(seed):
    from deepr_neuro.convert.recurrent import deploy_recurrent
    from deepr_neuro.network.frame_encoding import FrameEncoding
    from deepr_neuro.training.recurrent import LifParams, RecurrentModel, RecurrentSpec

    rng = np.random.default_rng(seed)
    enc = FrameEncoding(steps_per_frame=2, scale=2.0, signed=True)
    spec = RecurrentSpec(n_in=6, n_rec=9, n_out=3, encoding=enc, rec=LifParams.from_tau(2.0, 8.0, vth=64))
    pot = spec.potential()
    w = {k: rng.normal(0, 0.8, m.shape).astype(np.float32) for k, m in pot.items()}
    model = RecurrentModel(spec, w, {k: m & (rng.random(m.shape) < 0.8) for k, m in pot.items()})
    frames = rng.normal(0, 1.5, (11, 8, 3)).astype(np.float32)
    lengths = rng.integers(1, 9, 11)
    return deploy_recurrent(model, 8, (-7, 7), frames, lengths).graph, frames, lengths


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, 12))
def test_activity_does_not_depend_on_batching(seed, batch_size):
    from deepr_neuro.convert.recurrent import activity, run_sequences
    from deepr_neuro.simulate.emulator import EmulatorBackend

    g, frames, lengths = _small_graph(seed)
    S = g.encoding.steps_per_frame
    ref_v, ref_counts, _, _ = run_sequences(EmulatorBackend(), g, frames, lengths, batch_size=1)  # no padding
    v, counts, res, _ = run_sequences(EmulatorBackend(), g, frames, lengths, batch_size=batch_size)
    assert np.array_equal(v, ref_v)
    for a, b in zip(counts, ref_counts):
        assert np.array_equal(a, b)
    assert activity(g, counts, lengths * S) == activity(g, ref_counts, lengths * S)
    assert all(r.spikes is None for r in res)          # recorded only to count, not returned
    # and the counts are each sample's own steps of one padded run of everything at once
    full = EmulatorBackend().run(g, g.encoding.encode(frames[:, :lengths.max()], lengths), int(lengths.max()) * S,
                                 record_spikes=True, n_steps=lengths * S)
    for k, c in enumerate(counts):
        own = np.stack([full.spikes[k][i, :lengths[i] * S].sum(axis=0) for i in range(len(lengths))])
        assert np.array_equal(c, own)


def test_activity_of_trained_network_does_not_depend_on_batching(exported):
    from deepr_neuro.convert.recurrent import activity, load_run_sequences, run_sequences
    from deepr_neuro.simulate.emulator import EmulatorBackend

    run, _ = exported
    _, _, g = load_integer_graph(run)
    data = load_run_sequences(read_manifest(run))
    x, L = data.x_test[:40], data.len_test[:40]
    S = g.encoding.steps_per_frame
    acts = [activity(g, run_sequences(EmulatorBackend(), g, x, L, batch_size=b)[1], L * S) for b in (1, 7, 64)]
    assert acts[0] == acts[1] == acts[2]
    assert acts[0]["total_spikes"] > 0


# ---------------------------------------------------------------------------
# The recurrent population's chip threshold
# ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.sampled_from([16, 64, 1024, 5000, 16383, 20000]), st.integers(2, 8),
       st.floats(0.01, 20))
def test_rec_threshold_never_worse_and_in_range(seed, vth, bits, spread):
    from deepr_neuro.convert.recurrent import REC_VTH_MAX, rec_threshold

    rng = np.random.default_rng(seed)
    W = {"in_rec": rng.normal(0, spread, (5, 7)), "rec_rec": rng.standard_cauchy((7, 7)) * spread}
    masks = {k: rng.random(w.shape) < 0.6 for k, w in W.items()}
    t, info = rec_threshold(W, masks, vth, bits, (-7, 7))
    assert isinstance(t, int) and info["rec_vth"] == t and info["rec_vth_trained"] == vth
    assert vth <= t and (t == vth or t <= REC_VTH_MAX) and t < 4 * vth
    assert info["rec_weight_sq_error"] <= info["rec_weight_sq_error_at_trained_vth"]


def test_rec_threshold_keeps_vth_of_exact_weights_and_empty_projections():
    from deepr_neuro.convert.recurrent import rec_threshold

    w = {"in_rec": np.array([[2 / 64, -4 / 64], [1.0, 0.5]]), "rec_rec": np.zeros((2, 2))}
    m = {"in_rec": np.ones((2, 2), bool), "rec_rec": np.zeros((2, 2), bool)}
    assert rec_threshold(w, m, 64, 8, (-7, 7))[0] == 64
    assert rec_threshold(w, {k: np.zeros((2, 2), bool) for k in m}, 64, 8, (-7, 7))[0] == 64
