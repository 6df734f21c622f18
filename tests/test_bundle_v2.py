"""Bundle format version 2 (the network graph) and version 1 (the chain) read into one form.

tests/data/bundle_v1_tiny/ was written by deepr-neuro before format version 2
(64-12-10 MLP on digits, 1 epoch, loihi profile, exported at 20 steps with 40
calibration samples): it must load, report, simulate and re-export exactly as
it did then. The graph cases build version-2 bundles with recurrent projections
and several projections into one population, which need no new array names.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepr_neuro.cli import main
from deepr_neuro.errors import BundleError, DeeprError
from deepr_neuro.hardware.report import core_report
from deepr_neuro.network.integer_network import (InputEncoding, IntegerGraph, NeuronParams, Population,
                                                 Projection)
from deepr_neuro.pipeline import load_integer_graph, load_integer_network
from deepr_neuro.store.bundle import MANIFEST, NETWORK, load_bundle, read_manifest, save_bundle
from deepr_neuro.store.codec import (integer_graph_from_arrays, integer_graph_to_arrays, is_export_key,
                                     v1_key_map)

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "tests/data/bundle_v1_tiny"

#: what the old code printed for this bundle: `deepr-neuro report` and `simulate --samples 50 --json`
V1_REPORT_ROWS = [  # core, layer, neurons, synapses, budget, capacity, axons, memory bits
    (8, "h1", 6, 77, 77, 384, 47, 3072), (9, "h1", 6, 77, 77, 384, 53, 3520),
    (10, "out", 5, 30, 30, 60, 12, 896), (11, "out", 5, 30, 30, 60, 12, 960)]
V1_SIM = {"accuracy": 0.12, "spikes_per_inference": {"input": 474.12, "h1": 57.68, "out": 9.86},
          "synops_per_inference": {"input": 1068.08, "h1": 270.3, "out": 0.0}}


def raw(run):
    manifest = json.loads((run / MANIFEST).read_text())
    with np.load(run / NETWORK) as z:
        arrays = {k: z[k] for k in z.files}
    return manifest, arrays


@pytest.fixture
def v1_run(tmp_path):
    run = tmp_path / "v1"
    shutil.copytree(V1, run)
    return run


@pytest.fixture
def v2_run(tmp_path):
    """The same run in format version 2 (written by this deepr-neuro's save_bundle)."""
    run = tmp_path / "v2"
    shutil.copytree(V1, run)
    manifest, arrays = raw(run)
    save_bundle(run, manifest, arrays)  # a chain in the version-1 shape is written as version 2
    return run


# ------------------------------------------------------------------ version 1 keeps working

def test_committed_v1_bundle_is_version_1_and_loads_as_the_graph(v1_run):
    assert read_manifest(v1_run)["version"] == 1
    manifest, arrays = load_bundle(v1_run, need_fit=True)
    g = manifest["graph"]
    assert [(p["name"], p["size"], p["role"]) for p in g["populations"]] == \
        [("input", 64, "input"), ("h1", 12, "hidden"), ("out", 10, "readout")]
    assert [(q["name"], q["pre"], q["post"], q["budget"]) for q in g["projections"]] == \
        [("h1", "input", "h1", 154), ("out", "h1", "out", 60)]
    assert all(k.startswith(("pop/", "proj/", "input/")) or k == "rewired_per_step" for k in arrays)
    _, file_arrays = raw(v1_run)  # same arrays, renamed
    km = v1_key_map(["h1", "out"])
    assert {km[k] for k in file_arrays} == set(arrays)
    assert all(np.array_equal(file_arrays[k], arrays[km[k]]) and file_arrays[k].dtype == arrays[km[k]].dtype
               for k in file_arrays)


def test_committed_v1_bundle_reports_as_before(v1_run, capsys):
    assert main(["report", str(v1_run)]) == 0
    out = capsys.readouterr().out
    assert "cores used: 12 of 128; synapses: 214; weights: 8-bit" in out and "FITS" in out
    rep = core_report(*load_bundle(v1_run))
    rows = [(c.core, c.layer, c.neurons, c.synapses, c.budget, c.capacity, c.axons, c.memory_bits)
            for c in rep.cores if c.layer != "input"]
    assert rows == V1_REPORT_ROWS


def test_committed_v1_bundle_simulates_as_before(v1_run, capsys):
    assert main(["simulate", str(v1_run), "--samples", "50", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for k, v in V1_SIM.items():
        assert got[k] == v, k


def test_v1_and_v2_give_the_same_network_and_spikes(v1_run, v2_run):
    from deepr_neuro.pipeline import run_dataset
    from deepr_neuro.simulate.backends import get_backend

    m1, a1, n1 = load_integer_network(v1_run)
    m2, a2, n2 = load_integer_network(v2_run)
    assert read_manifest(v2_run)["version"] == 2
    assert a1.keys() == a2.keys() and all(np.array_equal(a1[k], a2[k]) for k in a1)
    assert m1["graph"] == m2["graph"]
    x = run_dataset(m1).x_test[:8]
    r1 = get_backend("emulator").run(n1, x, 20, record_spikes=True)
    r2 = get_backend("emulator").run(n2, x, 20, record_spikes=True)
    assert all(np.array_equal(s, t) for s, t in zip(r1.spikes, r2.spikes))


def test_reexport_of_a_v1_run_upgrades_it_to_v2_with_identical_arrays(v1_run, capsys):
    """Same steps and calibration as the old export: every array and accuracy identical."""
    m_old, a_old = raw(v1_run)
    assert main(["export", str(v1_run), "--steps", "20", "--calibration-samples", "40", "--no-progress"]) == 0
    m_new, a_new = raw(v1_run)
    assert m_new["version"] == 2 and "layers" not in m_new and "graph" in m_new
    km = v1_key_map(["h1", "out"])
    assert {km[k] for k in a_old} == set(a_new)
    for k, v in a_old.items():
        assert v.dtype == a_new[km[k]].dtype and np.array_equal(v, a_new[km[k]]), k
    assert m_new["snn"]["accuracy"] == m_old["snn"]["accuracy"]
    assert {k: v for k, v in m_new["snn"]["calibration"].items() if k != "seconds"} == \
        {k: v for k, v in m_old["snn"]["calibration"].items() if k != "seconds"}
    assert m_new["snn"]["activity"] == m_old["snn"]["activity"]
    assert not list(v1_run.glob(".*.tmp"))
    load_bundle(v1_run, need_fit=True)


def test_a_v1_bundle_written_by_save_bundle_version_1_stays_version_1(tmp_path):
    run = tmp_path / "r"
    shutil.copytree(V1, run)
    manifest, arrays = raw(run)
    save_bundle(run, manifest, arrays, version=1)
    m, a = raw(run)
    assert m["version"] == 1 and set(a) == set(arrays)
    load_bundle(run, need_fit=True)


@pytest.mark.parametrize("version", [0, 3, "2", None, 2.0])
def test_unknown_versions_are_refused(v2_run, version):
    m, _ = raw(v2_run)
    m["version"] = version
    (v2_run / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="'version'"):
        load_bundle(v2_run)


def test_save_bundle_refuses_an_unknown_version(tmp_path):
    with pytest.raises(BundleError, match="version 7"):
        save_bundle(tmp_path, {"a": 1}, {}, version=7)


# ------------------------------------------------------------------ version-2 manifest tampering

def _g(path, value):
    def f(m):
        obj = m["graph"]
        for k in path[:-1]:
            obj = obj[k]
        if value is KeyError:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
        return m
    return f


def _top(key, value):
    def f(m):
        if value is KeyError:
            del m[key]
        else:
            m[key] = value
        return m
    return f


GRAPH_CASES = {
    "no graph": (_top("graph", KeyError), ["'graph'", "missing"]),
    "graph a list": (_top("graph", []), ["'graph'", "object"]),
    "v1 layers instead": (lambda m: {**{k: v for k, v in m.items() if k != "graph"}, "layers": []}, ["'graph'"]),
    "populations empty": (_g(["populations"], []), ["graph.populations", "non-empty"]),
    "projections missing": (_g(["projections"], KeyError), ["graph.projections"]),
    "population a string": (_g(["populations", 1], "h1"), ["graph.populations[1]"]),
    "first not input": (_g(["populations", 0, "role"], "hidden"), ["graph.populations[0].role"]),
    "second input": (_g(["populations", 1, "role"], "input"), ["graph.populations[1].role"]),
    "role unknown": (_g(["populations", 2, "role"], "output"), ["graph.populations[2].role"]),
    "name duplicate": (_g(["populations", 2, "name"], "h1"), ["graph.populations[2].name", "twice"]),
    "name empty": (_g(["populations", 1, "name"], ""), ["graph.populations[1].name"]),
    "name huge": (_g(["populations", 1, "name"], "x" * 10000), ["graph.populations[1].name", "(cut)"]),
    "size zero": (_g(["populations", 1, "size"], 0), ["graph.populations[1].size"]),
    "size bool": (_g(["populations", 1, "size"], True), ["graph.populations[1].size"]),
    "size disagrees with arrays": (_g(["populations", 2, "size"], 11), ["graph.populations[2]"]),
    "cores empty": (_g(["populations", 1, "cores"], []), ["graph.populations[1].cores"]),
    "core gap": (_g(["populations", 1, "cores", 1, "start"], 7), ["graph.populations[1].cores[1]"]),
    "core twice": (_g(["populations", 2, "cores", 0, "core"], 8), ["core id 8", "twice"]),
    "core off chip": (_g(["populations", 2, "cores", 0, "core"], 500), ["core id 500"]),
    "budget missing": (_g(["populations", 1, "cores", 0, "budget"], KeyError), ["cores[0].budget"]),
    "budget negative": (_g(["populations", 1, "cores", 0, "budget"], -1), ["cores[0].budget"]),
    "pre unknown": (_g(["projections", 0, "pre"], "retina"), ["graph.projections[0].pre", "retina"]),
    "post is input": (_g(["projections", 1, "post"], "input"), ["graph.projections[1].post", "input"]),
    "post a number": (_g(["projections", 1, "post"], 3), ["graph.projections[1].post"]),
    "projection name twice": (_g(["projections", 1, "name"], "h1"), ["graph.projections[1].name", "twice"]),
    "projection budget text": (_g(["projections", 0, "budget"], "many"), ["graph.projections[0].budget"]),
    "readout input": (_g(["readout"], "input"), ["graph.readout"]),
    "readout unknown": (_g(["readout"], "logits"), ["graph.readout"]),
    "input size vs model": (_g(["populations", 0, "size"], 65), ["graph.populations[0]", "65"]),
    "neurons per core": (lambda m: {**m, "profile": {**m["profile"], "neurons_per_core": 4}}, ["neurons_per_core"]),
}


@pytest.mark.parametrize("case", sorted(GRAPH_CASES))
def test_tampered_graph_manifest_is_refused_naming_the_field(v2_run, case):
    tamper, words = GRAPH_CASES[case]
    m, _ = raw(v2_run)
    (v2_run / MANIFEST).write_text(json.dumps(tamper(m)))
    with pytest.raises(DeeprError) as info:
        load_bundle(v2_run, need_fit=True)
    msg = str(info.value)
    assert "manifest.json" in msg or "network.npz" in msg
    assert all(w in msg for w in words), msg
    assert len(msg) < 1500


@pytest.mark.parametrize("command", ["report", "simulate", "export"])
def test_every_command_names_the_graph_field_in_one_line(v2_run, capsys, command):
    m, _ = raw(v2_run)
    m["graph"]["projections"][0]["pre"] = "retina"
    (v2_run / MANIFEST).write_text(json.dumps(m))
    assert main([command, str(v2_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "graph.projections[0].pre" in err[0]


# ------------------------------------------------------------------ graphs beyond chains

def _with_extra_projections(run, extra, export=False):
    """Add trained projections (name, pre, post, rows, cols) to the tiny run's graph (export dropped)."""
    m, a = raw(run)
    del m["snn"]
    a = {k: v for k, v in a.items() if not is_export_key(k)}
    for name, pre, post, rows, cols in extra:
        order = np.lexsort((cols, rows))
        m["graph"]["projections"].append({"name": name, "pre": pre, "post": post, "budget": len(rows)})
        a[f"proj/{name}/rows"] = np.asarray(rows, np.int32)[order]
        a[f"proj/{name}/cols"] = np.asarray(cols, np.int32)[order]
        a[f"proj/{name}/weight"] = np.linspace(-1, 1, len(rows)).astype(np.float32)
    # per-core budgets K_c over every projection into the core
    for p in m["graph"]["populations"][1:]:
        core = a[f"pop/{p['name']}/core"]
        for c in p["cores"]:
            c["budget"] = int(sum(np.sum(core[a[f"proj/{q['name']}/rows"]] == c["core"])
                                  for q in m["graph"]["projections"] if q["post"] == p["name"]))
    save_bundle(run, m, a)
    return m, a


def _unique_pairs(rng, n_post, n_pre, k):
    flat = rng.choice(n_post * n_pre, size=min(k, n_post * n_pre), replace=False)
    return (flat // n_pre).tolist(), (flat % n_pre).tolist()


def test_recurrent_and_converging_projections_need_no_new_names(v2_run):
    rng = np.random.default_rng(0)
    rec = _unique_pairs(rng, 12, 12, 20)   # h1 -> h1 (recurrent)
    skip = _unique_pairs(rng, 10, 64, 30)  # input -> out (a second projection into out)
    back = _unique_pairs(rng, 12, 10, 5)   # out -> h1 (a later population back onto an earlier one)
    m, a = _with_extra_projections(v2_run, [("h1_rec", "h1", "h1", *rec), ("skip", "input", "out", *skip),
                                            ("back", "out", "h1", *back)])
    manifest, arrays = load_bundle(v2_run, need_fit=True)
    assert {"proj/h1_rec/rows", "proj/skip/cols", "proj/back/weight"} <= set(arrays)
    rep = core_report(manifest, arrays)
    assert rep.fits
    _check_report_against_brute_force(manifest, arrays, rep)


def _check_report_against_brute_force(manifest, arrays, rep):
    g = manifest["graph"]
    by_core = {c.core: c for c in rep.cores}
    for p in g["populations"][1:]:
        core = arrays[f"pop/{p['name']}/core"]
        for c in p["cores"]:
            syn, axons = 0, set()
            for q in g["projections"]:
                if q["post"] != p["name"]:
                    continue
                rows, cols = arrays[f"proj/{q['name']}/rows"], arrays[f"proj/{q['name']}/cols"]
                for r, col in zip(rows, cols):
                    if core[r] == c["core"]:
                        syn += 1
                        axons.add((q["pre"], int(col)))
            assert by_core[c["core"]].synapses == syn == c["budget"]
            assert by_core[c["core"]].axons == len(axons)  # distinct pre neurons across all sources


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_report_counts_every_projection_into_a_core(tmp_path_factory, data):
    """Random extra projections (recurrent, skip, backward, several from one source): per core, the
    synapses over all projections into it and the distinct presynaptic neurons across sources."""
    run = tmp_path_factory.mktemp("g") / "r"
    shutil.copytree(V1, run)
    m, a = raw(run)
    save_bundle(run, m, a)
    sizes = {"input": 64, "h1": 12, "out": 10}
    n = data.draw(st.integers(1, 4))
    extra = []
    for i in range(n):
        pre = data.draw(st.sampled_from(sorted(sizes)))
        post = data.draw(st.sampled_from(["h1", "out"]))
        k = data.draw(st.integers(0, 25))
        seed = data.draw(st.integers(0, 2**31 - 1))
        extra.append((f"x{i}", pre, post, *_unique_pairs(np.random.default_rng(seed), sizes[post], sizes[pre], k)))
    _with_extra_projections(run, extra)
    manifest, arrays = load_bundle(run)  # two projections from one source may exceed the dense capacity
    _check_report_against_brute_force(manifest, arrays, core_report(manifest, arrays))


@pytest.mark.parametrize("where, value, words", [
    ("rows", 12, ["proj/h1_rec/rows", "n_out = 12"]),
    ("cols", 12, ["proj/h1_rec/cols", "n_in = 12", "'h1'"]),
    ("cols", -1, ["proj/h1_rec/cols", "-1"]),
])
def test_a_recurrent_projection_is_checked_like_any_other(v2_run, where, value, words):
    _with_extra_projections(v2_run, [("h1_rec", "h1", "h1", [0, 1, 2], [3, 4, 5])])
    m, a = raw(v2_run)
    v = a[f"proj/h1_rec/{where}"].copy()
    v[-1] = value
    a[f"proj/h1_rec/{where}"] = v
    save_bundle(v2_run, m, a)
    with pytest.raises(BundleError) as info:
        load_bundle(v2_run)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_tampered_v2_arrays_beside_their_manifest_are_refused(v2_run):
    m, a = raw(v2_run)
    a["proj/h1/qweight"] = a["proj/h1/qweight"].copy()
    a["proj/h1/qweight"][0] += 2
    np.savez(v2_run / NETWORK, **a)
    with pytest.raises(BundleError, match="does not belong"):
        load_bundle(v2_run)


def test_export_refuses_a_graph_it_cannot_convert(v2_run, capsys):
    _with_extra_projections(v2_run, [("h1_rec", "h1", "h1", [0, 1], [1, 0])])
    assert main(["export", str(v2_run), "--steps", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "chains" in err[0] and "recurrent" in err[0]


# ------------------------------------------------------------------ the integer graph codec

@st.composite
def integer_graphs(draw):
    ints = st.integers
    names = ["in", "a", "b", "c"][:draw(ints(2, 4))]
    pops = []
    for i, name in enumerate(names):
        n = draw(ints(1, 6))
        bias = np.array(draw(st.lists(ints(-4095, 4095), min_size=n, max_size=n)), dtype=np.int32)
        pops.append(Population(name, NeuronParams(vth=draw(ints(0, 2**17 - 1)), du=draw(ints(0, 4095)),
                                                  dv=draw(ints(0, 4095)), bias_exp=draw(ints(0, 7)),
                                                  bias_mant=bias)))
    size = {p.name: p.n for p in pops}
    projs = []
    for j in range(draw(ints(1, 5))):
        pre, post = draw(st.sampled_from(names)), draw(st.sampled_from(names[1:]))  # recurrent allowed
        pairs = sorted(draw(st.sets(st.tuples(ints(0, size[post] - 1), ints(0, size[pre] - 1)), max_size=10)))
        rows = np.array([r for r, _ in pairs], np.int32)
        cols = np.array([c for _, c in pairs], np.int32)
        w = np.array(draw(st.lists(ints(-256, 255), min_size=len(pairs), max_size=len(pairs))), np.int32)
        projs.append(Projection(f"p{j}", pre, post, rows, cols, w, draw(ints(-7, 7)), draw(ints(1, 8))))
    return IntegerGraph(tuple(pops), tuple(projs), InputEncoding(draw(ints(0, 1000)), draw(ints(0, 20))),
                        readout=draw(st.sampled_from(names[1:])))


def _block(g):
    return {"populations": [{"name": p.name, "size": p.n} for p in g.populations],
            "projections": [{"name": q.name, "pre": q.pre, "post": q.post} for q in g.projections],
            "readout": g.readout}


@settings(max_examples=100, deadline=None)
@given(integer_graphs())
def test_integer_graph_round_trips_exactly(g):
    arrays = integer_graph_to_arrays(g)
    back = integer_graph_from_arrays(arrays, _block(g))
    assert back.names == g.names and back.readout == g.readout and back.encoding == g.encoding
    for p, q in zip(g.populations, back.populations):
        assert (p.neurons.vth, p.neurons.du, p.neurons.dv, p.neurons.bias_exp) == \
            (q.neurons.vth, q.neurons.du, q.neurons.dv, q.neurons.bias_exp)
        assert np.array_equal(p.neurons.bias_mant, q.neurons.bias_mant) and q.neurons.bias_mant.dtype == np.int32
    for p, q in zip(g.projections, back.projections):
        assert (p.name, p.pre, p.post, p.weight_exp, p.num_weight_bits) == \
            (q.name, q.pre, q.post, q.weight_exp, q.num_weight_bits)
        for f in ("rows", "cols", "weights"):
            assert np.array_equal(getattr(p, f), getattr(q, f)) and getattr(q, f).dtype == np.int32
    assert all(is_export_key(k) != k.endswith(("/rows", "/cols")) for k in arrays)  # rows/cols: trained


def test_load_integer_graph_keeps_each_population_on_its_cores(v1_run):
    manifest, arrays, g = load_integer_graph(v1_run)
    assert g.is_chain and g.readout == "out"
    for p, block in zip(g.populations, manifest["graph"]["populations"]):
        for c in block["cores"]:
            assert np.all(p.core[c["start"]:c["stop"]] == c["core"])
