"""crosscheck: integer backends identical -> agree; any altered side -> detected."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepr_neuro.simulate.backends import Backend, get_backend
from deepr_neuro.simulate.brian2_backend import Brian2Backend
from deepr_neuro.simulate.crosscheck import CrosscheckReport, count_correlation, crosscheck
from deepr_neuro.simulate.emulator import EmulatorBackend
from deepr_neuro.errors import BackendError, ConfigError
from deepr_neuro.network.integer_network import (InputEncoding, IntegerNetwork, NeuronParams,
                                         SynapseLayer)


def random_net(seed, sizes=(8, 6, 4)):
    rng = np.random.default_rng(seed)

    def lif(n, bias=True):
        b = rng.integers(-200, 400, n) if bias else np.zeros(n)
        return NeuronParams(vth=int(rng.integers(20, 200)), du=int(rng.choice([4095, 3000, 0])),
                            dv=int(rng.choice([0, 100, 4095])), bias_exp=int(rng.integers(0, 4)),
                            bias_mant=b.astype(np.int32))

    layers = []
    for i in range(len(sizes) - 1):
        rows, cols = np.nonzero(rng.random((sizes[i + 1], sizes[i])) < 0.5)
        layers.append(SynapseLayer(
            name=f"h{i}", n_in=sizes[i], n_out=sizes[i + 1],
            rows=rows.astype(np.int32), cols=cols.astype(np.int32),
            weights=rng.integers(-256, 256, rows.size).astype(np.int32),
            weight_exp=int(rng.integers(-2, 4)), num_weight_bits=int(rng.integers(4, 9)),
            neurons=lif(sizes[i + 1])))
    net = IntegerNetwork(input_neurons=lif(sizes[0], bias=False),
                         encoding=InputEncoding(gain=8, shift=1), layers=layers)
    x = rng.integers(0, 256, (4, sizes[0])).astype(np.uint8)
    y = rng.integers(0, sizes[-1], 4)
    return net, x, y


def altered(net, layer_index):
    """Same network with one layer's threshold raised (a wrong vth on one side)."""
    lay = net.layers[layer_index]
    p = lay.neurons
    neurons = NeuronParams(vth=2 * p.vth + 10, du=p.du, dv=p.dv, bias_exp=p.bias_exp,
                           bias_mant=p.bias_mant)
    layers = list(net.layers)
    layers[layer_index] = SynapseLayer(**{**lay.__dict__, "neurons": neurons})
    return IntegerNetwork(input_neurons=net.input_neurons, encoding=net.encoding,
                          layers=layers)


class OnOtherNetwork(Backend):
    """A backend that (wrongly) simulates another network under a given name; it
    claims to be exact unless told otherwise (crosscheck must go by that claim)."""

    def __init__(self, name, inner, other_net, exact=True):
        self.name, self.inner, self.other, self.exact = name, inner, other_net, exact

    def run(self, net, x_uint8, steps, record_spikes=False):
        return self.inner.run(self.other, x_uint8, steps, record_spikes)


class Broken(Backend):
    name = "lava"
    exact = True

    def run(self, net, x_uint8, steps, record_spikes=False):
        raise BackendError("Lava backend: cannot import lava-nc (test)")


@pytest.mark.brian2
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_backends_agree_emulator_brian2(seed):
    net, x, y = random_net(seed)
    report = crosscheck(net, x, y, 40, backends=("emulator", "brian2", "brian2-float"))
    assert report.integer_backends_agree, report.to_table()
    assert report.integer_backends == ["emulator", "brian2"]
    for a in report.agreement("brian2"):
        assert a.spike_identity == 1.0 and a.mismatches == 0 and a.first_mismatch is None
    assert report.runs["brian2"].classification_agreement == 1.0
    assert report.runs["brian2"].accuracy == report.runs["emulator"].accuracy
    assert len(report.agreement("brian2-float")) == len(net.sizes)


@pytest.mark.lava
@pytest.mark.brian2
def test_all_four_default_backends_on_a_small_net():
    net, x, y = random_net(7, sizes=(6, 5, 3))
    report = crosscheck(net, x[:2], y[:2], 25)
    assert list(report.runs) == ["emulator", "lava", "brian2", "brian2-float"]
    assert all(run.ok for run in report.runs.values()), report.to_table()
    assert report.integer_backends_agree, report.to_table()
    assert report.to_json()["backends"]["lava"]["identical"] is True


@pytest.mark.brian2
@pytest.mark.parametrize("layer_index", [0, 1])
def test_altered_network_on_one_side_is_detected(layer_index):
    net, x, y = random_net(11, sizes=(8, 6, 4))
    # make the altered threshold matter: every neuron of that layer fires a lot
    other = altered(net, layer_index)
    probe = EmulatorBackend().run(net, x, 60, record_spikes=True)
    probe_other = EmulatorBackend().run(other, x, 60, record_spikes=True)
    assert any(not np.array_equal(a, b) for a, b in zip(probe.spikes, probe_other.spikes))
    fake = OnOtherNetwork("brian2", Brian2Backend(), other)
    report = crosscheck(net, x, y, 60, backends=("emulator", fake))
    assert not report.integer_backends_agree
    rows = report.agreement("brian2")
    # layers below the altered one are still identical; the altered one is not
    assert all(a.identical for a in rows[:layer_index + 1])
    bad = rows[layer_index + 1]
    assert not bad.identical and bad.spike_identity < 1.0 and bad.first_mismatch is not None
    assert "DIFFERS" in report.to_table()
    assert report.to_json()["integer_backends_agree"] is False


def test_altered_emulator_side_and_failures_are_detected():
    net, x, y = random_net(3)
    other = altered(net, 1)
    fake_ref = OnOtherNetwork("emulator", EmulatorBackend(), other)
    honest = OnOtherNetwork("emulator-copy", EmulatorBackend(), net)
    report = crosscheck(net, x, y, 60, backends=(fake_ref, honest))
    if any(not np.array_equal(a, b) for a, b in zip(
            EmulatorBackend().run(net, x, 60).counts, EmulatorBackend().run(other, x, 60).counts)):
        assert not report.integer_backends_agree
    # a backend that fails is a disagreement, recorded, not a crash
    report = crosscheck(net, x, y, 20, backends=("emulator", Broken()))
    assert not report.integer_backends_agree
    assert report.runs["lava"].error.startswith("BackendError")
    assert "FAILED" in report.to_table()
    assert report.to_json()["backends"]["lava"]["identical"] is None


class Approximate(Backend):
    """An approximate backend under a name crosscheck has never heard of: it runs
    another network, so it differs, but exact=False says that is by design."""

    name = "rough-reading"
    exact = False

    def __init__(self, other_net):
        self.other = other_net

    def run(self, net, x_uint8, steps, record_spikes=False):
        return EmulatorBackend().run(self.other, x_uint8, steps, record_spikes)


def test_approximate_backend_never_spoils_integer_verdict():
    net, x, y = random_net(4)
    rough = Approximate(altered(net, 0))
    assert any(not np.array_equal(a, b) for a, b in zip(
        EmulatorBackend().run(net, x, 40).counts, rough.run(net, x, 40).counts))
    twin = OnOtherNetwork("twin", EmulatorBackend(), net)
    report = crosscheck(net, x, y, 40, backends=("emulator", twin, rough))
    assert report.integer_backends_agree, report.to_table()
    assert report.integer_backends == ["emulator", "twin"]
    assert not report.runs["rough-reading"].exact
    assert not all(a.identical for a in report.agreement("rough-reading"))
    assert "differs (not exact by design)" in report.to_table()
    assert report.to_json()["backends"]["rough-reading"]["exact"] is False
    # one integer backend plus an approximate one compares no two integer backends
    report = crosscheck(net, x, y, 40, backends=("emulator", rough))
    assert not report.integer_backends_agree and "nothing compared" in report.to_table()


def test_exactness_comes_from_the_attribute_not_the_name():
    """A backend named like the registry's float one but declaring exact=True counts as
    integer (and its difference is a disagreement); one named "brian2" declaring
    exact=False never spoils the verdict."""
    net, x, y = random_net(4)
    other = altered(net, 0)
    strict_float_name = OnOtherNetwork("brian2-float", EmulatorBackend(), other, exact=True)
    report = crosscheck(net, x, y, 40, backends=("emulator", strict_float_name))
    assert report.runs["brian2-float"].exact and not report.integer_backends_agree
    assert "DIFFERS" in report.to_table()
    loose_int_name = OnOtherNetwork("brian2", EmulatorBackend(), other, exact=False)
    twin = OnOtherNetwork("twin", EmulatorBackend(), net)
    report = crosscheck(net, x, y, 40, backends=("emulator", twin, loose_int_name))
    assert report.integer_backends_agree and not report.runs["brian2"].exact


@pytest.mark.parametrize("exact", [None, "yes", 1, 0.0])
def test_a_backend_without_a_boolean_exact_is_refused(exact):
    net, x, y = random_net(4)
    odd = OnOtherNetwork("plugin", EmulatorBackend(), net, exact=exact)
    with pytest.raises(ConfigError, match=r"backend 'plugin': exact must be True .* or False"):
        crosscheck(net, x, y, 10, backends=("emulator", odd))


def test_registered_backends_declare_exactness():
    from deepr_neuro.simulate.lava_backend import LavaBackend  # the class: Lava may be absent (3.13)
    assert get_backend("emulator").exact is True and LavaBackend.exact is True
    assert Brian2Backend(mode="integer").exact is True
    assert Brian2Backend(mode="float").exact is False


def test_report_outputs_are_readable_and_serialisable():
    net, x, y = random_net(5)
    twin = OnOtherNetwork("twin", EmulatorBackend(), net)
    report = crosscheck(net, x, y, 30, backends=("emulator", twin))
    assert isinstance(report, CrosscheckReport)
    table = report.to_table()
    for word in ("emulator", "twin", "input", "h0", "h1", "integer backends agree: yes"):
        assert word in table
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("backend") and "status" in line)
    col = header.index("status")
    rows = [line for line in lines if line.startswith(("emulator ", "twin "))][:2]
    assert [row[col:] for row in rows] == ["reference", "identical"]  # fixed-width columns
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["reference"] == "emulator" and data["n_samples"] == 4
    assert data["backends"]["twin"]["per_layer"][0]["spike_identity"] == 1.0
    assert data["backends"]["emulator"]["identical"] is True


def test_user_errors():
    net, x, y = random_net(6)
    with pytest.raises(ConfigError, match="labels"):
        crosscheck(net, x, y[:2], 10, backends=("emulator",))
    with pytest.raises(ConfigError, match="unique"):
        crosscheck(net, x, y, 10, backends=("emulator", "emulator"))
    with pytest.raises(ConfigError, match="reference"):
        crosscheck(net, x, y, 10, backends=("emulator",), reference="lava")
    with pytest.raises(BackendError, match="unknown backend"):
        crosscheck(net, x, y, 10, backends=("emulatr",))
    report = crosscheck(net, x, None, 10, backends=("emulator",))
    assert report.runs["emulator"].accuracy is None
    assert not report.integer_backends_agree  # one backend compared nothing
    assert "nothing compared" in report.to_table()
    assert report.to_json()["integer_backends_compared"] == []
    with pytest.raises(ConfigError, match="steps"):
        crosscheck(net, x, y, 0, backends=("emulator", "emulator-twin"))
    with pytest.raises(ConfigError, match="samples"):
        crosscheck(net, x[:0], None, 10, backends=("emulator",))


def test_count_correlation_edge_cases():
    assert count_correlation(np.zeros(4), np.zeros(4)) == 1.0
    assert count_correlation(np.zeros(4), np.ones(4)) is None
    assert count_correlation(np.arange(4), np.zeros(4)) is None
    assert count_correlation(np.arange(4), np.arange(4) * 2) == pytest.approx(1.0)
    assert count_correlation(np.array([]), np.array([])) is None
