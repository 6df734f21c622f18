"""Hardware profile schema: shipped profiles, error messages, memory formula."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from deepr_neuro.errors import ConfigError, DeeprError
from deepr_neuro.hardware.profile import (
    HardwareProfile,
    list_profiles,
    load_profile,
    profile_to_dict,
)

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "hardware_profiles"
LOIHI = PROFILES / "loihi.yaml"


@pytest.fixture(scope="module")
def loihi_dict():
    return yaml.safe_load(LOIHI.read_text())


@pytest.fixture(scope="module")
def loihi():
    return load_profile(LOIHI)


def write(tmp_path, data, name="x.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def bad(tmp_path, base, **changes):
    data = copy.deepcopy(base)
    for k, v in changes.items():
        if v is ...:
            data.pop(k)
        else:
            data[k] = v
    p = write(tmp_path, data)
    with pytest.raises(ConfigError) as ei:
        load_profile(p)
    return str(ei.value), p


# ------------------------------------------------------------ shipped files
def test_every_shipped_profile_is_valid_and_roundtrips():
    files = list_profiles(PROFILES)
    names = {f.name for f in files}
    assert {"loihi.yaml", "loihi2.yaml", "tiny_test.yaml"} <= names
    for f in files:
        prof = load_profile(f)
        assert prof.source == str(f)
        again = HardwareProfile.from_dict(profile_to_dict(prof))
        assert profile_to_dict(again) == profile_to_dict(prof)


def test_every_profile_field_line_is_commented():
    for f in list_profiles(PROFILES):
        for line in f.read_text().splitlines():
            s = line.strip()
            if not s or s.startswith("#") or s.startswith("- ") or ":" not in s:
                continue
            if s.startswith(("Intel", "memory", "format", "compression")):
                continue  # continuation of a folded description
            assert "#" in line, f"{f.name}: uncommented field line: {line!r}"


def test_loihi_figures(loihi):
    assert loihi.cores == 128
    assert loihi.neurons_per_core == 1024
    assert loihi.input_axons_per_core == 4096
    assert loihi.synapse_memory_bits_per_core == 16384 * 64
    assert loihi.weight_bits == 8
    assert 7 not in loihi.weight_bits_allowed


def test_loihi2_says_it_is_lower_confidence():
    text = (PROFILES / "loihi2.yaml").read_text().lower()
    assert "lower confidence" in text or "lower-confidence" in text
    assert "assumed" in text


# ------------------------------------------------------------ error messages
def test_zero_budget_message_names_file_field_and_value(tmp_path, loihi_dict):
    msg, p = bad(tmp_path, loihi_dict, cores=0)
    assert msg == f"{p}: field 'cores': must be > 0 (got 0)"


@pytest.mark.parametrize("field,value,needle", [
    ("neurons_per_core", -5, "must be > 0"),
    ("input_axons_per_core", 0, "must be > 0"),
    ("synapses_per_core", 0, "must be > 0"),
    ("cores", "many", "must be an integer"),
    ("cores", 1.5, "must be an integer"),
    ("cores", True, "must be an integer"),
    ("name", 12, "must be a string"),
    ("weight_bits", 7, "not offered"),
    ("weight_bits_allowed", [8, 16], "Lava"),
    ("weight_min", -1000, "weight_min"),
    ("weight_max", 300, "must be in [1, 255]"),
    ("weight_exp_min", 9, "weight_exp_max"),
    ("threshold_mant_bits", 24, "must be <= 17"),
    ("decay_bits", 16, "must be <= 12"),
    ("synapse_memory_bits_per_core", 1000, "64-bit words"),
    ("chip", {"neurons": 10**9}, "chip.neurons"),
])
def test_bad_values(tmp_path, loihi_dict, field, value, needle):
    msg, p = bad(tmp_path, loihi_dict, **{field: value})
    assert msg.startswith(f"{p}: field '")
    assert needle in msg
    assert field.split(".")[0] in msg


def test_unknown_key_suggests_spelling(tmp_path, loihi_dict):
    msg, _ = bad(tmp_path, loihi_dict, synapse_per_core=5)
    assert "field 'synapse_per_core': unknown key" in msg
    assert "did you mean 'synapses_per_core'?" in msg


def test_unknown_nested_key(tmp_path, loihi_dict):
    mem = dict(loihi_dict["synapse_memory"], word_size=64)
    msg, _ = bad(tmp_path, loihi_dict, synapse_memory=mem)
    assert "field 'synapse_memory.word_size': unknown key" in msg


def test_missing_field(tmp_path, loihi_dict):
    msg, _ = bad(tmp_path, loihi_dict, neurons_per_core=...)
    assert "field 'neurons_per_core': required field is missing" in msg


def test_no_budget_at_all(tmp_path, loihi_dict):
    msg, _ = bad(tmp_path, loihi_dict, synapse_memory_bits_per_core=...)
    assert "no synapse budget" in msg


def test_synapses_more_than_memory_holds(tmp_path, loihi_dict):
    msg, _ = bad(tmp_path, loihi_dict, synapses_per_core=100_000)
    assert "field 'synapses_per_core'" in msg
    assert "55188" in msg and "lower synapses_per_core" in msg
    ok = dict(loihi_dict, synapses_per_core=55_188)
    assert load_profile(write(tmp_path, ok, "ok.yaml")).synapse_capacity() == 55_188


def test_index_too_narrow(tmp_path, loihi_dict):
    mem = dict(loihi_dict["synapse_memory"], index_bits_allowed=[0, 6, 7, 8])
    msg, _ = bad(tmp_path, loihi_dict, synapse_memory=mem)
    assert "synapse_memory.index_bits_allowed" in msg and "1024" in msg


def test_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_profile(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("cores: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML at line"):
        load_profile(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_profile(p)


def test_errors_are_toolkit_and_builtin_errors(tmp_path, loihi_dict):
    with pytest.raises(DeeprError):
        HardwareProfile.from_dict(dict(loihi_dict, cores=0))
    with pytest.raises(ValueError):
        HardwareProfile.from_dict(dict(loihi_dict, cores=0))


def test_count_only_profile(loihi_dict):
    d = {k: v for k, v in loihi_dict.items()
         if k not in ("synapse_memory_bits_per_core", "synapse_memory")}
    d["synapses_per_core"] = 5000
    prof = HardwareProfile.from_dict(d)
    assert prof.synapse_capacity() == 5000
    assert prof.fits_memory([10**6])
    with pytest.raises(ConfigError, match="no synapse memory model"):
        prof.synapse_memory_bits([3])


# ------------------------------------------------------------ memory formula
def test_hardware_md_figures(loihi):
    # "Dense 8-bit weights: 576 bits per 64 synapses"
    assert loihi.chunk_bits(64, weight_bits=8, sparse=False) == 576
    # sparse, 1024 neurons -> 10 index bits: 64*18 + 10 = 1162 -> 1216
    assert loihi.index_bits() == 10
    assert loihi.chunk_bits(64) == 1216
    assert loihi.index_bits(64) == 6 and loihi.index_bits(65) == 7
    assert loihi.index_bits(1) == 0 and loihi.index_bits(2) == 6


def test_chunks_are_per_axon(loihi):
    # one axon with 64 synapses: one chunk; 64 axons with one each: 64 chunks
    assert loihi.synapse_memory_bits([64]) == 1216
    assert loihi.synapse_memory_bits([1] * 64) == 64 * 64
    assert loihi.synapse_memory_bits([65]) == 1216 + 64
    assert loihi.synapse_memory_bits([0, 0]) == 0
    assert loihi.synapse_memory_bits([]) == 0
    assert loihi.synapse_memory_bits(np.array([64, 1])) == 1216 + 64


def reference_bits_per_axon(n, bits_per_weight, header=10, per=64, word=64):
    """nengo-loihi SynapseConfig.bits_per_axon, restated."""
    bits = 0
    for i in range(0, n, per):
        m = min(n - i, per)
        bits += -word * (-(m * bits_per_weight + header) // word)
    return bits


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 3000), max_size=40),
       wb=st.sampled_from([1, 2, 3, 4, 5, 6, 8]),
       n_neurons=st.integers(1, 1024), sparse=st.booleans())
def test_memory_matches_nengo_loihi_formula(counts, wb, n_neurons, sparse):
    prof = load_profile(LOIHI)
    idx = prof.index_bits(n_neurons) if sparse else 0
    expect = sum(reference_bits_per_axon(n, wb + idx) for n in counts)
    assert prof.synapse_memory_bits(counts, wb, sparse, n_neurons) == expect


def test_capacity_best_case(loihi):
    # 862 full chunks of 1216 bits + a 20-synapse chunk in the last 384 bits
    assert loihi.synapse_capacity() == 862 * 64 + 20
    assert loihi.synapse_memory_bits([64] * 862 + [20]) <= loihi.synapse_memory_bits_per_core
    assert loihi.synapse_memory_bits([64] * 862 + [21]) > loihi.synapse_memory_bits_per_core
    # dense rows hold n_neurons weights each: 1024-wide rows cost 16 x 576 bits
    assert loihi.synapse_capacity(sparse=False) == (1048576 // (16 * 576)) * 1024
    # fewer neurons: narrower index, shorter rows; wiring cap input_axons x neurons
    assert loihi.synapse_capacity(n_neurons=4) == 4096 * 4
    # fewer weight bits hold more
    assert loihi.synapse_capacity(weight_bits=1) > loihi.synapse_capacity(weight_bits=8)
    with pytest.raises(ConfigError, match="not offered"):
        loihi.synapse_capacity(weight_bits=7)
    with pytest.raises(ConfigError, match="n_neurons"):
        loihi.synapse_capacity(n_neurons=2000)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n_neurons=st.integers(1, 1024), n_axons=st.integers(1, 4096),
       wb=st.sampled_from([1, 4, 8]))
def test_guaranteed_capacity_fits_every_layout(data, n_neurons, n_axons, wb):
    prof = load_profile(LOIHI)
    K = prof.synapse_capacity(wb, n_neurons=n_neurons, n_axons=n_axons)
    assert 0 < K <= n_axons * n_neurons
    assert K <= prof.synapse_capacity(wb, n_neurons=n_neurons)
    # adversarial layouts: as spread out as possible, random, chunk-boundary heavy
    a = min(n_axons, K)
    spread = np.full(a, K // a)
    spread[: K % a] += 1
    layouts = [spread]
    r = data.draw(st.integers(1, min(64, n_neurons)))
    m = min(n_axons, K // r)
    if m:
        lay = np.full(m, r)
        lay[0] += K - m * r
        if lay[0] <= n_neurons:
            layouts.append(lay)
    for lay in layouts:
        assert lay.sum() == K and lay.max() <= n_neurons and len(lay) <= n_axons
        assert prof.fits_memory(lay, wb, n_neurons=n_neurons), (lay[:5], K)


def test_tiny_profile_count_budget_binds():
    tiny = load_profile(PROFILES / "tiny_test.yaml")
    assert tiny.synapse_capacity() == 2048
    assert tiny.synapse_capacity(n_neurons=8) == 128 * 8
