"""Energy / latency estimate and the profile's energy block (issue 12 items 4-5)."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from deepr_neuro.errors import ConfigError
from deepr_neuro.estimate.cost import combine, estimate
from deepr_neuro.hardware.profile import HardwareProfile, load_profile
from deepr_neuro.network.integer_network import (InputEncoding, IntegerGraph, NeuronParams, Population, Projection,
                                                 chain_to_graph)
from deepr_neuro.simulate.backends import SimResult, get_backend

ROOT = Path(__file__).resolve().parents[1]
LOIHI = ROOT / "hardware_profiles" / "loihi.yaml"


@pytest.fixture(scope="module")
def loihi_dict():
    return yaml.safe_load(LOIHI.read_text())


def profile_with(base, **energy):
    d = copy.deepcopy(base)
    d["energy"].update(energy)
    return HardwareProfile.from_dict(d, source="test.yaml")


# ---------------------------------------------------------------- the energy block

def test_loihi_block_is_davies_table_2():
    e = load_profile(LOIHI).energy
    assert "Davies" in e.source and "Table 2" in e.source and "pre-silicon" in e.source
    assert (e.synaptic_op_pj, e.synaptic_op_ns) == (23.6, 3.5)
    assert (e.neuron_update_active_pj, e.neuron_update_inactive_pj) == (81.0, 52.0)
    assert (e.neuron_update_active_ns, e.neuron_update_inactive_ns) == (8.4, 5.3)
    assert (e.spike_within_tile_pj, e.spike_within_tile_ns) == (1.7, 2.1)
    assert (e.hop_east_west_pj, e.hop_north_south_pj, e.hop_east_west_ns, e.hop_north_south_ns) == (3.0, 4.0, 4.1, 6.5)
    assert (e.barrier_ns_min, e.barrier_ns_max, e.barrier_tiles_min, e.barrier_tiles_max) == (113.0, 465.0, 1, 32)
    assert e.barrier_ns(1) == 113.0 and e.barrier_ns(32) == 465.0 and e.barrier_ns(1000) == 465.0
    assert 113.0 < e.barrier_ns(16) < 465.0


def test_loihi2_and_tiny_have_no_block_and_loihi2_says_why():
    assert load_profile(ROOT / "hardware_profiles/loihi2.yaml").energy is None
    assert load_profile(ROOT / "hardware_profiles/tiny_test.yaml").energy is None
    assert "no per-operation" in (ROOT / "hardware_profiles/loihi2.yaml").read_text()


HOSTILE_ENERGY = {
    "source missing": ({"source": ...}, "energy.source"),
    "source too short": ({"source": "me"}, "energy.source"),
    "negative energy": ({"synaptic_op_pj": -1.0}, "energy.synaptic_op_pj"),
    "nan energy": ({"neuron_update_active_pj": float("nan")}, "energy.neuron_update_active_pj"),
    "inf time": ({"synaptic_op_ns": float("inf")}, "energy.synaptic_op_ns"),
    "string figure": ({"hop_east_west_pj": "3 pJ"}, "energy.hop_east_west_pj"),
    "unknown key": ({"synaptic_op_pJ": 1.0}, "energy.synaptic_op_pJ"),
    "zero cores per tile": ({"cores_per_tile": 0}, "energy.cores_per_tile"),
    "barrier ns reversed": ({"barrier_ns_min": 500.0}, "barrier_ns_min"),
    "barrier tiles reversed": ({"barrier_tiles_min": 64}, "barrier_tiles_min"),
    "huge figure": ({"synaptic_op_pj": 1e300}, "energy.synaptic_op_pj"),
    "bool figure": ({"synaptic_op_pj": True}, "energy.synaptic_op_pj"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ENERGY))
def test_hostile_energy_blocks_name_the_field(loihi_dict, tmp_path, case):
    change, field = HOSTILE_ENERGY[case]
    d = copy.deepcopy(loihi_dict)
    for k, v in change.items():
        if v is ...:
            d["energy"].pop(k)
        else:
            d["energy"][k] = v
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError) as e:
        load_profile(p)
    assert str(p) in str(e.value) and field in str(e.value)


def test_energy_block_is_not_a_list(loihi_dict, tmp_path):
    d = copy.deepcopy(loihi_dict)
    d["energy"] = [1, 2]
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="energy"):
        load_profile(p)


# ---------------------------------------------------------------- a case worked by hand

def _hand_graph():
    z = np.zeros
    pops = (Population("input", NeuronParams(vth=1, du=4095, dv=0, bias_exp=0, bias_mant=z(2, np.int32)),
                       np.array([0, 5], np.int32)),
            Population("a", NeuronParams(vth=1, du=4095, dv=0, bias_exp=0, bias_mant=z(1, np.int32)),
                       np.array([9], np.int32)))
    projs = (Projection("w", "input", "a", np.array([0, 0], np.int32), np.array([0, 1], np.int32),
                        np.array([5, 0], np.int32), 0, 8),)
    g = IntegerGraph(pops, projs, InputEncoding(1, 0), "a")
    s_in = np.zeros((1, 3, 2), bool)
    s_in[0, 0, 0] = s_in[0, 1, 0] = s_in[0, 1, 1] = True
    s_a = np.zeros((1, 3, 1), bool)
    s_a[0, 2, 0] = True
    res = SimResult(counts=[s_in.sum(1).astype(np.int32), s_a.sum(1).astype(np.int32)], spikes=[s_in, s_a], steps=3)
    return g, res


def test_hand_worked_example(loihi_dict):
    """Cores 0, 5 (input) and 9 (a) on tiles 0, 1, 2 of a 2-tile-wide mesh: tile 0 (0,0),
    tile 1 (1,0), tile 2 (0,1). input0 spikes at t=0,1; input1 at t=1; a spikes at t=2."""
    g, res = _hand_graph()
    prof = profile_with(loihi_dict, mesh_tiles_x=2)
    e = estimate(g, res, prof, 3)
    assert e.synaptic_ops == 3                      # 3 input spikes x 1 stored synapse each (zero weight too)
    assert e.neurobench["synaptic_operations_effective_acs"] == 2   # the zero weight is not an AC
    assert (e.hops_east_west, e.hops_north_south, e.messages_within_tile) == (1, 3, 0)
    assert (e.neuron_updates_active, e.neuron_updates_inactive) == (8, 1)  # a idle only at t=0
    assert e.energy_pj["synaptic_ops"] == pytest.approx(3 * 23.6)
    assert e.energy_pj["neuron_updates"] == pytest.approx(8 * 81 + 52)
    assert e.energy_pj["spike_messages"] == pytest.approx(1 * 3.0 + 3 * 4.0)
    assert e.energy_pj["total"] == pytest.approx(3 * 23.6 + 8 * 81 + 52 + 15)
    barrier = 113 + (465 - 113) * 2 / 31
    assert e.tiles_used == 3 and e.cores_used == 3
    assert e.latency_us == pytest.approx((8.4 + (3.5 + 8.4) + (2 * 3.5 + 8.4) + 3 * barrier) / 1000)
    assert e.step_ns == pytest.approx(e.latency_us * 1000 / 3)
    assert e.inferences_per_s == pytest.approx(1e6 / e.latency_us)
    assert e.bottleneck_core == 9 and e.bottleneck_share == pytest.approx(2 / 3)
    nb = e.neurobench
    assert nb["connection_sparsity"] == 0.5                 # NeuroBench: the stored zero weight is a zero
    assert nb["activation_sparsity"] == pytest.approx(1 - 4 / 9)
    assert nb["synaptic_operations_dense"] == 3 * (2 + 4)   # projection 2x1 + input encoding 2x2, per step
    assert nb["footprint_bytes"] == 4 * (4 + 2 + 2 + 1) + 4 * 3 * 2
    js = e.to_json()
    assert "pre-silicon" in js["estimate"] and "Davies" in js["estimate"]


def test_without_an_energy_block_the_estimate_says_so(loihi_dict):
    g, res = _hand_graph()
    d = copy.deepcopy(loihi_dict)
    d.pop("energy")
    e = estimate(g, res, HardwareProfile.from_dict(d, source="plain.yaml"), 3)
    assert e.energy_pj is None and e.latency_us is None and e.synaptic_ops == 3
    assert any("no 'energy:' block" in n for n in e.notes)
    assert "no energy model" in e.to_json()["estimate"]


@pytest.mark.parametrize("bad", ["no spikes", "wrong steps", "no samples"])
def test_results_that_cannot_be_estimated_are_refused(loihi_dict, bad):
    g, res = _hand_graph()
    prof = profile_with(loihi_dict)
    if bad == "no spikes":
        res = SimResult(counts=res.counts, spikes=None, steps=3)
        match = "record_spikes"
    elif bad == "wrong steps":
        match = "expected"
    else:
        res = SimResult(counts=[c[:0] for c in res.counts], spikes=[s[:0] for s in res.spikes], steps=3)
        match = "no samples"
    with pytest.raises(ConfigError, match=match):
        estimate(g, res, prof, 5 if bad == "wrong steps" else 3)


# ---------------------------------------------------------------- properties on simulated networks

@st.composite
def chains(draw):
    from deepr_neuro.network.integer_network import IntegerNetwork, SynapseLayer

    sizes = [draw(st.integers(1, 10)) for _ in range(draw(st.integers(2, 4)))]
    layers = []
    for i in range(1, len(sizes)):
        mask = np.array(draw(st.lists(st.booleans(), min_size=sizes[i] * sizes[i - 1],
                                      max_size=sizes[i] * sizes[i - 1])), bool).reshape(sizes[i], sizes[i - 1])
        rows, cols = np.nonzero(mask)
        w = np.array(draw(st.lists(st.integers(-256, 255), min_size=rows.size, max_size=rows.size)), np.int32)
        layers.append(SynapseLayer(f"l{i}", sizes[i - 1], sizes[i], rows.astype(np.int32), cols.astype(np.int32),
                                   w, draw(st.integers(-2, 4)), 8,
                                   NeuronParams(vth=draw(st.integers(1, 200)), du=draw(st.sampled_from([1023, 4095])),
                                                dv=0, bias_exp=0, bias_mant=np.zeros(sizes[i], np.int32))))
    net = IntegerNetwork(NeuronParams(vth=draw(st.integers(1, 300)), du=4095, dv=0, bias_exp=0,
                                      bias_mant=np.zeros(sizes[0], np.int32)), InputEncoding(16, 0), layers)
    return net


@settings(max_examples=40, deadline=None)
@given(net=chains(), steps=st.integers(1, 12))
def test_counts_agree_with_the_emulator_and_energy_adds_up(loihi_dict, net, steps):
    from deepr_neuro.simulate.activity import synops

    prof = profile_with(loihi_dict)
    x = np.random.default_rng(steps).integers(0, 256, size=(5, net.n_inputs))
    res = get_backend("emulator").run(net, x, steps, record_spikes=True)
    e = estimate(chain_to_graph(net), res, prof, steps, x_uint8=x)
    assert e.synaptic_ops == pytest.approx(synops(net, res).total_synops)
    assert e.spikes == pytest.approx(sum(c.sum() for c in res.counts) / 5)
    assert e.neuron_updates_active + e.neuron_updates_inactive == pytest.approx(sum(net.sizes) * steps)
    parts = e.energy_pj
    assert parts["total"] == pytest.approx(parts["synaptic_ops"] + parts["neuron_updates"] + parts["spike_messages"])
    assert parts["synaptic_ops"] == pytest.approx(23.6 * e.synaptic_ops)
    assert e.latency_us * 1000 >= steps * prof.energy.barrier_ns(1) - 1e-9
    assert 0 <= e.neurobench["activation_sparsity"] <= 1 and 0 <= e.neurobench["connection_sparsity"] <= 1
    assert e.neurobench["synaptic_operations_effective_acs"] <= e.synaptic_ops + 1e-9
    # chunks combine into the whole
    halves = [estimate(chain_to_graph(net), get_backend("emulator").run(net, xs, steps, record_spikes=True), prof,
                       steps, x_uint8=xs) for xs in (x[:2], x[2:])]
    both = combine(halves)
    for k in ("synaptic_ops", "spikes", "latency_us", "neuron_updates_active"):
        assert getattr(both, k) == pytest.approx(getattr(e, k)), k
    assert both.energy_pj["total"] == pytest.approx(e.energy_pj["total"])
    assert both.samples == 5


def test_placement_defaults_to_contiguous_cores(loihi_dict):
    g, res = _hand_graph()
    import dataclasses
    g = dataclasses.replace(g, populations=tuple(dataclasses.replace(p, core=None) for p in g.populations))
    e = estimate(g, res, profile_with(loihi_dict), 3)
    assert e.cores_used == 2 and e.tiles_used == 1 and e.messages_within_tile == 3 and e.hops_north_south == 0
    assert math.isfinite(e.latency_us)


# ---------------------------------------------------------------- recurrent runs

@pytest.fixture(scope="module")
def recurrent_run(tmp_path_factory):
    import sys
    sys.path.insert(0, str(ROOT / "tests"))
    from spoken_data import REASON, have_spoken
    if not have_spoken():
        pytest.skip(REASON)
    from recurrent_bundle import train_tiny, write_recurrent_bundle
    from deepr_neuro.cli import main

    model, data, _ = train_tiny(n_rec=16, epochs=1, connectivity=0.3)
    run = write_recurrent_bundle(tmp_path_factory.mktemp("rec") / "run", model, data, profile="loihi")
    assert main(["export", str(run), "--no-progress"]) == 0
    return run


def _cli_json(capsys, argv):
    import json
    from deepr_neuro.cli import main
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_recurrent_estimate_runs_as_simulate_does(recurrent_run, capsys):
    from deepr_neuro.pipeline import load_integer_graph
    est = _cli_json(capsys, ["estimate", str(recurrent_run), "--samples", "80", "--json"])
    sim = _cli_json(capsys, ["simulate", str(recurrent_run), "--samples", "80", "--json"])
    _, _, g = load_integer_graph(recurrent_run)
    S = int(g.encoding.steps_per_frame)
    assert len(est["by_steps"]) == 1 and est["steps_per_frame"] == S and est["readout"] == "final_v"
    row = est["by_steps"][0]
    assert row["accuracy"] == sim["accuracy"] and row["samples"] == 80
    assert row["steps"] == pytest.approx(sim["steps_per_inference"])          # mean of n_i * S
    # own steps only: never more spikes than simulate's padded batches count; input spikes identical
    assert row["spikes"] <= sim["total_spikes"] + 1e-9
    n_upd = g.population("rec").n + g.population("out").n                     # the spike source has no updates
    assert row["neuron_updates_active"] + row["neuron_updates_inactive"] == pytest.approx(n_upd * row["steps"])
    e = load_profile(LOIHI).energy
    assert row["latency_us"] * 1000 >= row["steps"] * e.barrier_ns(1) - 1e-6
    assert row["energy_pj"]["total"] == pytest.approx(sum(v for k, v in row["energy_pj"].items() if k != "total"))
    nb = row["neurobench"]
    assert nb["synaptic_operations_effective_macs"] is None and 0 <= nb["activation_sparsity"] <= 1
    assert nb["synaptic_operations_effective_acs"] <= row["synaptic_ops"] + 1e-9
    capsys.readouterr()
    from deepr_neuro.cli import main
    assert main(["estimate", str(recurrent_run), "--samples", "10"]) == 0
    out = capsys.readouterr().out
    assert "final-v readout" in out and "steps per frame" in out and "effective MACs -" in out


@settings(max_examples=12, deadline=None)
@given(idx=st.lists(st.integers(0, 199), min_size=1, max_size=6, unique=True))
def test_recurrent_costs_count_each_samples_own_steps(recurrent_run, idx):
    """A padded batch with n_steps costs exactly the mean of each sample run alone for its own steps."""
    from deepr_neuro.convert.recurrent import load_run_sequences
    from deepr_neuro.pipeline import load_integer_graph
    m, _, g = load_integer_graph(recurrent_run)
    data = load_run_sequences(m)
    prof = load_profile(LOIHI)
    S = int(g.encoding.steps_per_frame)
    idx = [i % len(data.y_test) for i in idx]
    L = data.len_test[idx].astype(np.int64)
    T = int(L.max())
    emu = get_backend("emulator")
    spikes = g.encoding.encode(data.x_test[idx, :T], L)
    res = emu.run(g, spikes, T * S, record_spikes=True, n_steps=L * S)
    batch = estimate(g, res, prof, T * S, n_steps=L * S)
    alone = [estimate(g, emu.run(g, spikes[j:j + 1, :L[j] * S], int(L[j] * S), record_spikes=True), prof,
                      int(L[j] * S)) for j in range(len(idx))]
    for k in ("synaptic_ops", "spikes", "latency_us", "neuron_updates_active", "neuron_updates_inactive",
              "messages_within_tile", "hops_east_west", "hops_north_south", "steps"):
        assert getattr(batch, k) == pytest.approx(np.mean([getattr(a, k) for a in alone])), k
    assert batch.energy_pj["total"] == pytest.approx(np.mean([a.energy_pj["total"] for a in alone]))
    both = combine([estimate(g, emu.run(g, spikes[j:j + 1, :L[j] * S], int(L[j] * S), record_spikes=True), prof,
                             int(L[j] * S)) for j in range(len(idx))])
    assert both.latency_us == pytest.approx(batch.latency_us) and both.step_ns == pytest.approx(batch.step_ns)


@pytest.mark.parametrize("argv", [["--steps", "4"], ["--steps", "10", "20"], ["--samples", "0"],
                                  ["--samples", "-3"], ["--steps", "0"]])
def test_recurrent_hostile_flags_refused_with_one_line(recurrent_run, capsys, argv):
    from deepr_neuro.cli import main
    capsys.readouterr()
    assert main(["estimate", str(recurrent_run), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and ("--steps" in err[0] or "--samples" in err[0]), err


def test_recurrent_bad_n_steps_refused(recurrent_run):
    from deepr_neuro.pipeline import load_integer_graph
    _, _, g = load_integer_graph(recurrent_run)
    x = np.zeros((2, 8, g.n_inputs), bool)
    res = get_backend("emulator").run(g, x, 8, record_spikes=True, n_steps=np.array([8, 4]))
    for bad in (np.array([9, 4]), np.array([0, 4]), np.array([8])):
        with pytest.raises(ConfigError, match="n_steps"):
            estimate(g, res, load_profile(LOIHI), 8, n_steps=bad)
