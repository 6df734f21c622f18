"""NIR export / import of the integer graph, verified three ways (issue 12 item 2).

(a) nir.write -> nir.read -> nir_to_graph gives the identical graph and identical spikes;
(b) the NIR graph's own continuous-time reading, from its fields alone, classifies like the
    integer network on >= 99 % of the digits test set;
(c) an outside reader (snnTorch) imports the file and runs it (slow; skipped when absent).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import nir
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepr_neuro.cli import main
from deepr_neuro.errors import ConfigError, DeeprError
from deepr_neuro.interop.nir_io import (ENCODING, INPUT, chip_weight_matrix, graph_to_nir, nir_to_graph, pop_key,
                                        proj_key, read_nir, simulate_nir, write_nir)
from deepr_neuro.network.integer_network import (InputEncoding, IntegerGraph, IntegerNetwork, NeuronParams,
                                                 Population, Projection, SynapseLayer, as_graph)
from deepr_neuro.simulate.backends import get_backend

ROOT = Path(__file__).resolve().parents[1]
STEPS = 100


# ---------------------------------------------------------------- helpers (tests only)

def graph_to_chain(g: IntegerGraph) -> IntegerNetwork:
    """Today's emulator runs the chain IntegerNetwork; a chain graph converts back exactly."""
    assert g.is_chain
    layers = [SynapseLayer(name=q.name, n_in=g.n_in(q), n_out=g.n_out(q), rows=q.rows, cols=q.cols,
                           weights=q.weights, weight_exp=q.weight_exp, num_weight_bits=q.num_weight_bits,
                           neurons=g.population(q.post).neurons) for q in g.projections]
    return IntegerNetwork(input_neurons=g.input.neurons, encoding=g.encoding, layers=layers)


def run_emulator(g: IntegerGraph, x, steps, record_spikes=False):
    emu = get_backend("emulator")
    try:  # backends that run graphs (issue 10) take it as it is
        return emu.run(g, x, steps, record_spikes=record_spikes)
    except (AttributeError, TypeError):
        return emu.run(graph_to_chain(g), x, steps, record_spikes=record_spikes)


def assert_graphs_equal(a: IntegerGraph, b: IntegerGraph) -> None:
    assert a.readout == b.readout
    assert (a.input_kind, a.readout_kind) == (b.input_kind, b.readout_kind)
    if a.input_kind == "spikes":  # a FrameEncoding (steps_per_frame, scale, signed)
        assert type(a.encoding) is type(b.encoding) and a.encoding == b.encoding
    else:
        assert (int(a.encoding.gain), int(a.encoding.shift)) == (int(b.encoding.gain), int(b.encoding.shift))
    assert [p.name for p in a.populations] == [p.name for p in b.populations]
    for p, q in zip(a.populations, b.populations):
        for f in ("vth", "du", "dv", "bias_exp"):
            assert int(getattr(p.neurons, f)) == int(getattr(q.neurons, f)), (p.name, f)
        assert np.array_equal(p.neurons.bias_mant, q.neurons.bias_mant) and q.neurons.bias_mant.dtype == np.int32
        assert (p.core is None) == (q.core is None)
        if p.core is not None:
            assert np.array_equal(p.core, q.core)
    assert len(a.projections) == len(b.projections)
    for p, q in zip(a.projections, b.projections):
        for f in ("name", "pre", "post", "weight_exp", "num_weight_bits"):
            assert getattr(p, f) == getattr(q, f), (p.name, f)
        for f in ("rows", "cols", "weights"):
            assert np.array_equal(getattr(p, f), getattr(q, f)), (p.name, f)
            assert getattr(q, f).dtype == np.int32


def strip_metadata(ng):
    ng.metadata = {}
    for node in ng.nodes.values():
        node.metadata = {}
    return ng


# ---------------------------------------------------------------- the trained network

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """One small trained + exported digits run (the demo network, fewer calibration samples)."""
    from deepr_neuro.pipeline import load_integer_network, run_dataset

    run = tmp_path_factory.mktemp("nir") / "digits"
    assert main(["train", "--profile", str(ROOT / "hardware_profiles/loihi.yaml"), "--model",
                 str(ROOT / "models/digits_mlp.yaml"), "--out", str(run), "--no-progress"]) == 0
    assert main(["export", str(run), "--calibration-samples", "300", "--no-progress"]) == 0
    manifest, _, net = load_integer_network(run)
    data = run_dataset(manifest)
    return {"run": run, "graph": as_graph(net), "x": data.x_test, "y": data.y_test}


@pytest.fixture(scope="module")
def nir_file(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("nirfile") / "digits.nir"
    size = write_nir(digits["graph"], path)
    assert size == path.stat().st_size > 0
    return path


def test_a_file_round_trip_gives_the_identical_graph_and_spikes(digits, nir_file):
    g = digits["graph"]
    back = nir_to_graph(nir.read(str(nir_file)))
    assert_graphs_equal(g, back)
    x = digits["x"][:60]
    r0 = run_emulator(g, x, STEPS, record_spikes=True)
    r1 = run_emulator(back, x, STEPS, record_spikes=True)
    for s0, s1 in zip(r0.spikes, r1.spikes):
        assert np.array_equal(s0, s1)
    assert sum(int(c.sum()) for c in r0.counts) > 0


def test_b_nir_fields_alone_classify_like_the_integer_network(digits, nir_file):
    """The reader sees only the NIR fields (metadata stripped): forward Euler at dt = 1e-4."""
    g, x = digits["graph"], digits["x"]
    ng = strip_metadata(nir.read(str(nir_file)))
    counts = simulate_nir(ng, x, STEPS)
    pred_float = np.argmax(counts[pop_key(g.readout)], axis=1)
    pred_int = run_emulator(g, x, STEPS).predictions()
    agree = float(np.mean(pred_float == pred_int))
    assert agree >= 0.99, agree
    # the input population is integrate-and-fire with du = 4095: exact up to the encoding's floor
    r = run_emulator(g, x, STEPS)
    assert np.abs(counts[pop_key(g.input.name)] - r.counts[0]).max() <= 1


def test_b_import_from_fields_quantizes_to_a_working_chip_network(digits, nir_file):
    """A NIR file without deepr-neuro metadata (as another tool writes it) is quantized onto the chip."""
    from deepr_neuro.hardware.profile import load_profile

    g, x, y = digits["graph"], digits["x"], digits["y"]
    profile = load_profile(ROOT / "hardware_profiles/loihi.yaml")
    back = nir_to_graph(strip_metadata(nir.read(str(nir_file))), profile=profile)
    assert [p.name for p in back.populations] == [pop_key(p.name) for p in g.populations]
    assert all(p.core is not None for p in back.populations)
    for q in back.projections:
        assert q.weights.dtype == np.int32 and np.abs(q.weights).max() <= 256
    pred = run_emulator(back, x, STEPS).predictions()
    pred_int = run_emulator(g, x, STEPS).predictions()
    assert np.mean(pred == pred_int) >= 0.95
    assert np.mean(pred == y) >= np.mean(pred_int == y) - 0.03


# ---------------------------------------------------------------- properties on random graphs

@st.composite
def graphs(draw, recurrent=False):
    n_pop = draw(st.integers(2, 4))
    sizes = [draw(st.integers(1, 12)) for _ in range(n_pop)]
    names = ["input"] + [f"l{i}" for i in range(1, n_pop)]
    with_cores = draw(st.booleans())
    pops = []
    for i, (name, n) in enumerate(zip(names, sizes)):
        p = NeuronParams(vth=draw(st.integers(0, 131071)), du=draw(st.integers(0, 4095)), dv=draw(st.integers(0, 4095)),
                         bias_exp=draw(st.integers(0, 7)),
                         bias_mant=np.array(draw(st.lists(st.integers(-4096, 4095), min_size=n, max_size=n)), np.int32))
        core = np.array(draw(st.lists(st.integers(0, 127), min_size=n, max_size=n)), np.int32) if with_cores else None
        pops.append(Population(name, p, core))
    pairs = [(i, i + 1) for i in range(n_pop - 1)]
    if recurrent:
        pairs += [(j, j) for j in range(1, n_pop)][: draw(st.integers(0, n_pop - 1))]
        if n_pop > 2:
            pairs.append((n_pop - 1, 1))
    projs = []
    for k, (i, j) in enumerate(pairs):
        mask = np.array(draw(st.lists(st.booleans(), min_size=sizes[i] * sizes[j], max_size=sizes[i] * sizes[j])),
                        bool).reshape(sizes[j], sizes[i])
        rows, cols = np.nonzero(mask)
        w = np.array(draw(st.lists(st.integers(-256, 255), min_size=rows.size, max_size=rows.size)), np.int32)
        projs.append(Projection(name=f"p{k}", pre=names[i], post=names[j], rows=rows.astype(np.int32),
                                cols=cols.astype(np.int32), weights=w, weight_exp=draw(st.integers(-8, 7)),
                                num_weight_bits=draw(st.integers(1, 8))))
    # NIR carries a bias on a projection into the population: a population without one has none
    fed = {q.post for q in projs} | {names[0]}
    pops = [p if p.name in fed else dataclasses.replace(
        p, neurons=dataclasses.replace(p.neurons, bias_mant=np.zeros(p.n, np.int32))) for p in pops]
    return IntegerGraph(populations=tuple(pops), projections=tuple(projs),
                        encoding=InputEncoding(gain=draw(st.integers(0, 1 << 20)), shift=draw(st.integers(0, 31))),
                        readout=names[draw(st.integers(1, n_pop - 1))])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(g=graphs(recurrent=True))
def test_round_trip_through_a_file_is_exact_for_random_graphs(g, tmp_path):
    path = tmp_path / "g.nir"
    write_nir(g, path)
    assert_graphs_equal(g, nir_to_graph(read_nir(path)))


@settings(max_examples=40, deadline=None)
@given(g=graphs())
def test_chain_graph_round_trip_spikes_identically(g):
    back = nir_to_graph(graph_to_nir(g))
    x = np.random.default_rng(0).integers(0, 256, size=(3, g.n_inputs))
    try:
        r0 = run_emulator(g, x, 12, record_spikes=True)
    except DeeprError:  # e.g. an encoded bias beyond 13 bits: the round trip must refuse alike
        with pytest.raises(DeeprError):
            run_emulator(back, x, 12)
        return
    r1 = run_emulator(back, x, 12, record_spikes=True)
    for s0, s1 in zip(r0.spikes, r1.spikes):
        assert np.array_equal(s0, s1)


@settings(max_examples=60, deadline=None)
@given(g=graphs())
def test_chip_weight_matrix_is_the_emulators_effective_weights(g):
    from deepr_neuro.simulate.emulator import effective_weights

    chain = graph_to_chain(g)
    for q, layer in zip(g.projections, chain.layers):
        want = effective_weights(layer).toarray()
        assert np.array_equal(chip_weight_matrix(q, layer.n_in, layer.n_out), want)


def test_recurrent_projection_is_an_edge_back():
    pops = tuple(Population(n, NeuronParams(vth=10, du=4095, dv=0, bias_exp=0, bias_mant=np.zeros(2, np.int32)))
                 for n in ("input", "a"))
    projs = (Projection("ff", "input", "a", np.array([0, 1], np.int32), np.array([0, 1], np.int32),
                        np.array([5, 5], np.int32), 0, 8),
             Projection("rec", "a", "a", np.array([0, 1], np.int32), np.array([1, 0], np.int32),
                        np.array([-3, 7], np.int32), 0, 8))
    g = IntegerGraph(pops, projs, InputEncoding(1, 0), "a")
    ng = graph_to_nir(g)
    assert (pop_key("a"), proj_key("rec")) in ng.edges and (proj_key("rec"), pop_key("a")) in ng.edges
    assert_graphs_equal(g, nir_to_graph(ng))


def test_mapping_of_the_fields():
    """The documented mapping: tau_syn = dt 4096 / (du + 1), tau_mem = dt 4096 / dv (inf at 0),
    r = tau_mem / dt, w_in = tau_syn / dt, v_threshold = vth * 64, weights x 2**(6 + weight_exp)."""
    p = NeuronParams(vth=100, du=1023, dv=0, bias_exp=2, bias_mant=np.array([3, -1], np.int32))
    q = NeuronParams(vth=7, du=4095, dv=512, bias_exp=0, bias_mant=np.zeros(2, np.int32))
    g = IntegerGraph((Population("input", q), Population("h", p)),
                     (Projection("w", "input", "h", np.array([0, 1], np.int32), np.array([1, 0], np.int32),
                                 np.array([10, -20], np.int32), 3, 8),), InputEncoding(5, 2), "h")
    ng = graph_to_nir(g)
    h, inp, w, enc = ng.nodes[pop_key("h")], ng.nodes[pop_key("input")], ng.nodes[proj_key("w")], ng.nodes[ENCODING]
    assert type(h).__name__ == "CubaLIF"
    assert np.allclose(h.tau_syn, 1e-4 * 4) and np.all(np.isinf(h.tau_mem)) and np.all(np.isinf(h.r))
    assert np.allclose(h.w_in, 4) and np.allclose(h.v_threshold, 6400) and np.all(h.v_leak == 0)
    assert np.allclose(inp.tau_syn, 1e-4) and np.allclose(inp.tau_mem, 1e-4 * 8) and np.allclose(inp.r, 8)
    assert np.array_equal(w.weight, np.array([[0, 10 * 2 ** 9], [-20 * 2 ** 9, 0]]))
    assert np.allclose(w.bias, np.array([12, -4]) * 1024 / 4096)  # bias << bias_exp, times (du + 1) / 4096
    assert np.allclose(enc.weight, np.eye(2) * 5 / 4) and np.allclose(enc.bias, 0)
    assert ng.metadata["dt"] == 1e-4 and ng.edges[0] == (INPUT, ENCODING)


# ---------------------------------------------------------------- hostile files and graphs

def _small():
    pops = (Population("input", NeuronParams(vth=50, du=4095, dv=0, bias_exp=0, bias_mant=np.zeros(3, np.int32))),
            Population("out", NeuronParams(vth=80, du=1023, dv=0, bias_exp=0, bias_mant=np.zeros(2, np.int32))))
    projs = (Projection("w", "input", "out", np.array([0, 1], np.int32), np.array([2, 0], np.int32),
                        np.array([100, -50], np.int32), 2, 8),)
    return IntegerGraph(pops, projs, InputEncoding(16, 2), "out")


def _tamper(fn):
    ng = graph_to_nir(_small())
    fn(ng)
    return ng


EDITS = {
    "weight edited": (lambda ng: ng.nodes[proj_key("w")].weight.__setitem__((0, 0), 1.0), "proj_w"),
    "threshold edited": (lambda ng: setattr(ng.nodes[pop_key("out")], "v_threshold", np.ones(2)), "pop_out"),
    "vth out of range": (lambda ng: ng.nodes[pop_key("out")].metadata.__setitem__("vth", 1 << 20), "pop_out"),
    "du missing": (lambda ng: ng.nodes[pop_key("out")].metadata.pop("du"), "pop_out"),
    "du a string": (lambda ng: ng.nodes[pop_key("out")].metadata.__setitem__("du", "1023"), "pop_out"),
    "rows beyond post": (lambda ng: ng.nodes[proj_key("w")].metadata.__setitem__("rows", np.array([0, 9], np.int32)),
                         "proj_w"),
    "weights float": (lambda ng: ng.nodes[proj_key("w")].metadata.__setitem__("weights", np.array([1.5, 2.0])),
                      "proj_w"),
    "unsorted synapses": (lambda ng: ng.nodes[proj_key("w")].metadata.__setitem__("rows", np.array([1, 0], np.int32)),
                          "proj_w"),
    "pre unknown": (lambda ng: ng.nodes[proj_key("w")].metadata.__setitem__("pre", "nope"), "proj_w"),
    "into the input": (lambda ng: ng.nodes[proj_key("w")].metadata.__setitem__("post", "input"), "proj_w"),
    "population node gone": (lambda ng: ng.nodes.pop(pop_key("out")), "pop_out"),
    "population is an IF": (lambda ng: ng.nodes.__setitem__(pop_key("out"), nir.IF(r=np.ones(2), v_threshold=np.ones(2))),
                            "pop_out"),
    "format 2": (lambda ng: ng.metadata.__setitem__("format", 2), "(graph)"),
    "readout unknown": (lambda ng: ng.metadata.__setitem__("readout", "x" * 5000), "(graph)"),
    "edge removed": (lambda ng: ng.edges.remove((proj_key("w"), pop_key("out"))), "proj_w"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_inconsistent_metadata_is_refused_naming_the_node(case):
    edit, node = EDITS[case]
    ng = _tamper(edit)
    with pytest.raises(ConfigError) as e:
        nir_to_graph(ng)
    msg = str(e.value)
    assert repr(node) in msg or node in msg
    assert len(msg) < 700


def _fields_graph(**swap):
    ng = strip_metadata(graph_to_nir(_small()))
    for key, node in swap.items():
        if node is None:
            ng.nodes.pop(key)
            ng.edges = [e for e in ng.edges if key not in e]
        else:
            ng.nodes[key] = node
    return ng


FIELD_CASES = {
    "conv node": (lambda ng: ng.nodes.__setitem__(pop_key("out"), nir.Conv1d(
        input_shape=3, weight=np.ones((2, 2, 1)), stride=1, padding=0, dilation=1, groups=1, bias=np.zeros(2))), "pop_out"),
    "leaky integrator": (lambda ng: ng.nodes.__setitem__(pop_key("out"), nir.LI(
        tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2))), "pop_out"),
    "v_leak": (lambda ng: setattr(ng.nodes[pop_key("out")], "v_leak", np.ones(2)), "pop_out"),
    "v_reset": (lambda ng: setattr(ng.nodes[pop_key("out")], "v_reset", np.ones(2)), "pop_out"),
    "threshold per neuron": (lambda ng: setattr(ng.nodes[pop_key("out")], "v_threshold", np.array([1.0, 2.0])),
                             "pop_out"),
    "negative threshold": (lambda ng: setattr(ng.nodes[pop_key("out")], "v_threshold", -np.ones(2)), "pop_out"),
    "tau_syn below dt": (lambda ng: setattr(ng.nodes[pop_key("out")], "tau_syn", np.full(2, 1e-6)), "pop_out"),
    "tau_syn infinite": (lambda ng: setattr(ng.nodes[pop_key("out")], "tau_syn", np.full(2, np.inf)), "pop_out"),
    "non-diagonal input": (lambda ng: setattr(ng.nodes[ENCODING], "weight", np.ones((3, 3))), ENCODING),
    "negative input gain": (lambda ng: setattr(ng.nodes[ENCODING], "weight", -np.eye(3)), ENCODING),
    "nan weight": (lambda ng: ng.nodes[proj_key("w")].weight.__setitem__((0, 0), np.nan), "proj_w"),
    "neuron to neuron": (lambda ng: ng.edges.append((pop_key("input"), pop_key("out"))), "pop_input"),
    "two outputs": (lambda ng: (ng.nodes.__setitem__("output2", nir.Output(output_type={"output": np.array([2])})),
                                ng.edges.append((pop_key("out"), "output2"))), "Output"),
    "output from weights": (lambda ng: (ng.edges.remove((pop_key("out"), "output")),
                                        ng.edges.append((proj_key("w"), "output"))), "output"),
}


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_unmappable_nir_is_refused_naming_the_node(case):
    edit, node = FIELD_CASES[case]
    ng = strip_metadata(graph_to_nir(_small()))
    edit(ng)
    with pytest.raises(ConfigError) as e:
        nir_to_graph(ng)
    assert node in str(e.value)


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 100])
def test_unreadable_files_are_config_errors(tmp_path, content):
    path = tmp_path / "bad.nir"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="not a readable NIR file"):
        read_nir(path)


def test_missing_file_and_directory(tmp_path):
    for p in (tmp_path / "nope.nir", tmp_path):
        with pytest.raises(ConfigError, match="not found"):
            read_nir(p)


@pytest.mark.parametrize("name", ["a/b", "a.b", "", "x" * 101, "sp ace"])
def test_export_refuses_names_nir_cannot_carry(name):
    g = _small()
    g = dataclasses.replace(g, populations=(g.populations[0], dataclasses.replace(g.populations[1], name=name)),
                            projections=(dataclasses.replace(g.projections[0], post=name),), readout=name)
    with pytest.raises(ConfigError, match="name"):
        graph_to_nir(g)


def test_export_refuses_a_bias_with_no_incoming_projection():
    g = _small()
    lone = Population("lone", NeuronParams(vth=1, du=0, dv=0, bias_exp=0, bias_mant=np.ones(2, np.int32)))
    g = dataclasses.replace(g, populations=g.populations + (lone,))
    with pytest.raises(ConfigError, match="'lone'"):
        graph_to_nir(g)


def test_if_and_lif_nodes_from_other_tools_are_mapped():
    ng = strip_metadata(graph_to_nir(_small()))
    ng.nodes[pop_key("input")] = nir.IF(r=np.full(3, 1e4), v_threshold=np.full(3, 3200.0))
    ng.nodes[pop_key("out")] = nir.LIF(tau=np.full(2, 1e-3), r=np.full(2, 10.0), v_leak=np.zeros(2),
                                       v_threshold=np.full(2, 5120.0))
    g = nir_to_graph(ng)
    assert (g.input.neurons.du, g.input.neurons.dv) == (4095, 0)
    out = g.population(pop_key("out")).neurons
    assert (out.du, out.dv) == (4095, round(4096 * 0.1))


# ---------------------------------------------------------------- (c) an outside reader

@pytest.mark.slow
def test_c_snntorch_imports_and_runs_the_file(digits, nir_file):
    torch = pytest.importorskip("torch", reason="snnTorch needs torch: pip install torch==2.13.0 (CPU wheel)")
    pytest.importorskip("nirtorch", reason="snnTorch's NIR import needs nirtorch: pip install nirtorch")
    import_nir = pytest.importorskip("snntorch.import_nir", reason="snnTorch is not installed: pip install snntorch")
    g, x = digits["graph"], digits["x"]
    module = import_nir.import_from_nir(nir.read(str(nir_file)))
    xt = torch.tensor(x, dtype=torch.float32)
    counts = torch.zeros(len(x), g.population(g.readout).n)
    with torch.no_grad():
        for _ in range(STEPS):
            out = module(xt)
            counts += out[0] if isinstance(out, tuple) else out
    pred = counts.argmax(1).numpy()
    pred_int = run_emulator(g, x, STEPS).predictions()
    assert np.mean(pred == pred_int) >= 0.99
    ours = simulate_nir(nir.read(str(nir_file)), x, STEPS)[pop_key(g.readout)]
    assert np.array_equal(counts.numpy().astype(np.int64), ours)  # snnTorch runs the same equations


# ---------------------------------------------------------------- the CLI (through cli.main)

def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert len(err[0]) < 900
    return err[0]


def test_cli_export_to_nir_then_import_fits(digits, tmp_path, capsys):
    out = tmp_path / "d.nir"
    assert main(["export", str(digits["run"]), "--to", "nir", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "CubaLIF" in text and "delay" in text
    back = nir_to_graph(read_nir(out))
    assert all(p.core is not None for p in back.populations)  # the run's placement travels in the file
    assert main(["import", str(out), "--profile", str(ROOT / "hardware_profiles/loihi.yaml")]) == 0
    text = capsys.readouterr().out
    assert "FITS" in text and "h1" in text
    assert main(["import", str(out), "--profile", str(ROOT / "hardware_profiles/loihi.yaml"), "--json"]) == 0
    import json
    js = json.loads(capsys.readouterr().out)
    assert js["fits"] and sum(c["synapses"] for c in js["cores"]) == sum(q.weights.size for q in back.projections)


def test_cli_export_default_path_is_in_the_run(digits, capsys):
    assert main(["export", str(digits["run"]), "--to", "nir"]) == 0
    assert (digits["run"] / "network.nir").is_file()
    capsys.readouterr()


def test_cli_import_that_does_not_fit_exits_1(digits, nir_file, tmp_path, capsys):
    d = __import__("yaml").safe_load((ROOT / "hardware_profiles/tiny_test.yaml").read_text())
    d["neurons_per_core"] = 16
    d["synapse_memory_bits_per_core"] = 8192
    d["synapses_per_core"] = 256
    p = tmp_path / "small.yaml"
    p.write_text(__import__("yaml").safe_dump(d))
    assert main(["import", str(nir_file), "--profile", str(p)]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_cli_import_of_a_foreign_file_is_placed_and_checked(nir_file, tmp_path, capsys):
    ng = strip_metadata(nir.read(str(nir_file)))
    path = tmp_path / "foreign.nir"
    nir.write(str(path), ng)
    assert main(["import", str(path), "--profile", str(ROOT / "hardware_profiles/loihi.yaml")]) == 0
    assert "pop_h1" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["not exported", "out is a dir", "out folder missing", "steps with nir",
                                  "out with lava", "run missing"])
def test_cli_export_nir_hostile(digits, tmp_path, capsys, case):
    run = str(digits["run"])
    if case == "not exported":
        trained = tmp_path / "t"
        assert main(["train", "--profile", str(ROOT / "hardware_profiles/loihi.yaml"), "--model",
                     str(ROOT / "models/digits_mlp.yaml"), "--out", str(trained), "--epochs", "1",
                     "--no-progress"]) in (0, 1)
        capsys.readouterr()
        argv, want = ["export", str(trained), "--to", "nir"], "export"
    elif case == "out is a dir":
        argv, want = ["export", run, "--to", "nir", "--out", str(tmp_path)], "directory"
    elif case == "out folder missing":
        argv, want = ["export", run, "--to", "nir", "--out", str(tmp_path / "no" / "x.nir")], "does not exist"
    elif case == "steps with nir":
        argv, want = ["export", run, "--to", "nir", "--steps", "50"], "--steps"
    elif case == "out with lava":
        argv, want = ["export", run, "--out", str(tmp_path / "x.nir")], "--out"
    else:
        argv, want = ["export", str(tmp_path / "nope"), "--to", "nir"], "nope"
    assert main(argv) == 2
    assert want in one_error(capsys)


@pytest.mark.parametrize("case", ["missing file", "garbage file", "bad profile", "unmappable node"])
def test_cli_import_hostile(nir_file, tmp_path, capsys, case):
    prof = str(ROOT / "hardware_profiles/loihi.yaml")
    f = tmp_path / "x.nir"
    if case == "missing file":
        argv, want = ["import", str(tmp_path / "none.nir"), "--profile", prof], "not found"
    elif case == "garbage file":
        f.write_bytes(b"\x00garbage" * 100)
        argv, want = ["import", str(f), "--profile", prof], "not a readable NIR file"
    elif case == "bad profile":
        argv, want = ["import", str(nir_file), "--profile", str(tmp_path / "p.yaml")], "p.yaml"
    else:
        ng = strip_metadata(nir.read(str(nir_file)))
        ng.nodes[pop_key("h2")] = nir.LI(tau=np.ones(64), r=np.ones(64), v_leak=np.zeros(64))
        nir.write(str(f), ng)
        argv, want = ["import", str(f), "--profile", prof], "'pop_h2'"
    assert main(argv) == 2
    assert want in one_error(capsys)


def test_cli_estimate_table_and_json(digits, capsys):
    run = str(digits["run"])
    loihi = str(ROOT / "hardware_profiles/loihi.yaml")
    assert main(["estimate", run, "--steps", "20", "100", "--samples", "80", "--profile", loihi]) == 0
    text = capsys.readouterr().out
    assert "ESTIMATES from published pre-silicon" in text and "Davies" in text
    assert "NeuroBench" in text and "bottleneck" in text
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("20 ", "100 "))]
    assert [r[0] for r in rows] == ["20", "100"]
    assert main(["estimate", run, "--steps", "20", "100", "--samples", "80", "--profile", loihi, "--json"]) == 0
    import json
    js = json.loads(capsys.readouterr().out)
    a, b = js["by_steps"]
    assert a["steps"] == 20 and b["steps"] == 100 and a["samples"] == 80
    assert b["energy_pj"]["total"] > a["energy_pj"]["total"] > 0 and b["latency_us"] > a["latency_us"]
    assert set(b["neurobench"]) >= {"footprint_bytes", "connection_sparsity", "activation_sparsity",
                                    "synaptic_operations_effective_acs", "synaptic_operations_dense"}
    assert "pre-silicon" in b["estimate"]


def test_cli_estimate_reads_the_block_from_the_runs_profile_file(digits, capsys):
    import json
    manifest = json.loads((digits["run"] / "manifest.json").read_text())
    assert "energy" not in manifest["profile"]  # manifests stay as they were: figures live in the profile file
    assert main(["estimate", str(digits["run"]), "--steps", "20", "--samples", "10"]) == 0
    assert "ESTIMATES from published pre-silicon" in capsys.readouterr().out


def test_cli_estimate_with_a_profile_without_figures_says_so(digits, capsys):
    assert main(["estimate", str(digits["run"]), "--steps", "20", "--samples", "10", "--profile",
                 str(ROOT / "hardware_profiles/loihi2.yaml")]) == 0
    text = capsys.readouterr().out
    assert "no energy block" in text and "not estimated" in text


@pytest.mark.parametrize("argv,want", [
    (["--steps", "0"], "--steps"), (["--steps", "20", "20"], "--steps"), (["--steps", "100000"], "--steps"),
    (["--samples", "0"], "--samples"), (["--profile", "TINY"], "cannot hold"), (["--profile", "/nonexistent.yaml"],
                                                                                  "nonexistent")])
def test_cli_estimate_hostile(digits, capsys, argv, want):
    argv = [a if a != "TINY" else str(ROOT / "hardware_profiles/tiny_test.yaml") for a in argv]
    assert main(["estimate", str(digits["run"])] + argv) == 2
    assert want in one_error(capsys)
