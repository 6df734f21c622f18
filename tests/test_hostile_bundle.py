"""Hostile bundles: nothing wrong is accepted by report, export, simulate or crosscheck.

One small run (tiny_test profile, digits, 1 epoch, 20 steps) is trained and
exported once per module (format version 2), and also written in the version-1
layout; the array cases run on both (cases name version-1 arrays, translated to
version-2 names for a version-2 bundle). Every test tampers with a copy. A tampered bundle
must be refused with a DeeprError naming the file and the array / field, or,
when the tampering changes nothing (same values), give identical spikes.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepr_neuro.store import bundle as bundle_mod
from deepr_neuro.simulate.backends import get_backend
from deepr_neuro.store.bundle import MANIFEST, NETWORK, load_bundle, save_bundle
from deepr_neuro.store.bundle_check import is_export_key
from deepr_neuro.cli import main
from deepr_neuro.store.codec import integer_graph_from_arrays, v1_key_map
from deepr_neuro.pipeline import load_integer_network
from deepr_neuro.errors import BudgetError, BundleError, DeeprError
from v1_bundles import to_v1

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "hardware_profiles/tiny_test.yaml"
DIGITS = ROOT / "models/digits_mlp.yaml"
STEPS = 20


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", "--profile", str(TINY), "--model", str(DIGITS), "--out", str(run),
                 "--epochs", "1", "--no-progress"]) == 0
    assert main(["export", str(run), "--steps", str(STEPS), "--calibration-samples", "40",
                 "--no-progress"]) == 0
    return run


#: version-1 array name -> version-2 name of the digits MLP (layers h1, h2, out)
TO_V2 = v1_key_map(["h1", "h2", "out"])
TO_V1 = {v: k for k, v in TO_V2.items()}


@pytest.fixture(scope="module")
def exported_v1(exported, tmp_path_factory):
    """The same run in the version-1 layout (what every run written before version 2 holds)."""
    run = tmp_path_factory.mktemp("hostile_v1") / "run"
    shutil.copytree(exported, run)
    manifest, arrays = raw(exported)
    m1, a1 = to_v1(manifest, arrays)
    save_bundle(run, m1, a1, version=1)
    return run


@pytest.fixture(params=["v2", "v1"])
def bundle(request, exported, exported_v1):
    """Each format in turn: the run trained now (v2) and its version-1 copy."""
    return exported if request.param == "v2" else exported_v1


@pytest.fixture(scope="module")
def reference(exported):
    """The untouched network's spikes on a few test samples (the no-op yardstick)."""
    manifest, _, net = load_integer_network(exported)
    from deepr_neuro.pipeline import run_dataset

    x = run_dataset(manifest).x_test[:4]
    return x, get_backend("emulator").run(net, x, STEPS, record_spikes=True)


def copy_run(exported, tmp_path, name="r"):
    dst = tmp_path / name
    shutil.copytree(exported, dst)
    return dst


def version(run):
    """The bundle's format version (a tampered manifest counts as version 1: its words are v1's)."""
    try:
        m = json.loads((run / MANIFEST).read_text())
        return m.get("version") if isinstance(m, dict) and isinstance(m.get("graph"), dict) else 1
    except (ValueError, RecursionError):
        return 1


def raw(run):
    """manifest.json and network.npz as they are in the files."""
    manifest = json.loads((run / MANIFEST).read_text())
    with np.load(run / NETWORK) as z:
        arrays = {k: z[k] for k in z.files}
    return manifest, arrays


def raw1(run):
    """As :func:`raw`, with the arrays of a version-2 bundle under their version-1 names
    (the cases below name those); :func:`write_arrays` names them back."""
    manifest, arrays = raw(run)
    if manifest["version"] == 2:
        arrays = {TO_V1.get(k, k): v for k, v in arrays.items()}
    return manifest, arrays


def named(run, words):
    """The words an error about ``run`` holds: version-1 array names become version-2 ones
    for a version-2 bundle."""
    return [TO_V2.get(w, w) for w in words] if version(run) == 2 else list(words)


def write_arrays(run, arrays, rehash):
    """Replace network.npz (arrays under version-1 names, see :func:`raw1`); ``rehash``:
    also rewrite the manifest's hashes (a consistent but wrong bundle, so the structural
    checks are what refuses it)."""
    manifest, _ = raw(run)
    v = manifest["version"]
    if v == 2:
        arrays = {TO_V2.get(k, k): a for k, a in arrays.items()}
    if rehash:
        save_bundle(run, manifest, arrays, version=v)
    else:
        np.savez(run / NETWORK, **arrays)


def write_manifest(run, manifest):
    (run / MANIFEST).write_text(json.dumps(manifest))


def refused(run, *words, need_fit=True):
    with pytest.raises(DeeprError) as info:
        load_bundle(run, need_fit=need_fit)
    msg = str(info.value)
    for w in named(run, words):
        assert w in msg, msg
    return msg


# --------------------------------------------------------------- array tampering

def _set(key, index, value):
    def f(a):
        v = a[key].copy()
        v[index] = value
        a[key] = v
    return f


def _astype(key, dtype):
    def f(a):
        a[key] = a[key].astype(dtype)
    return f


def _put(key, value):
    def f(a):
        a[key] = value
    return f


def _drop(key):
    def f(a):
        del a[key]
    return f


def _resize(key, n):
    def f(a):
        a[key] = a[key][:n] if n < len(a[key]) else np.concatenate([a[key], a[key][-1:]])
    return f


def _duplicate_pair(a):
    for k in ("rows", "cols", "weight", "qweight"):
        v = a[f"l0_{k}"].copy()
        v[1] = v[0]
        a[f"l0_{k}"] = v


def _swap_entries(a):
    for k in ("rows", "cols", "weight", "qweight"):
        v = a[f"l1_{k}"].copy()
        v[[0, -1]] = v[[-1, 0]]
        a[f"l1_{k}"] = v


def _move_neuron_between_cores(a):
    c = a["l0_core"].copy()
    first, last = 0, len(c) - 1
    assert c[first] != c[last]
    c[[first, last]] = c[[last, first]]
    a["l0_core"] = c


def _odd_qweight(a):
    q = a["l0_qweight"].copy()
    q[0] = 1 if q[0] != 1 else 3  # 8-bit mixed weights live on a grid of 2
    a["l0_qweight"] = q


ARRAY_CASES = {
    "rows float": (_astype("l0_rows", np.float64), ["l0_rows", "dtype"]),
    "cols complex": (_astype("l0_cols", np.complex128), ["l0_cols", "dtype"]),
    "qweight float": (_astype("l0_qweight", np.float64), ["l0_qweight", "dtype"]),
    "qweight complex": (_astype("l1_qweight", np.complex64), ["l1_qweight", "dtype"]),
    "bias_mant float": (_astype("l2_bias_mant", np.float32), ["l2_bias_mant", "dtype"]),
    "weight int": (_astype("l0_weight", np.int32), ["l0_weight", "dtype"]),
    "weight complex": (_astype("l0_weight", np.complex128), ["l0_weight", "dtype"]),
    "vth float scalar": (_put("l0_vth", np.float64(100.5)), ["l0_vth", "dtype"]),
    "rows bool": (_astype("l2_rows", bool), ["l2_rows", "dtype"]),
    "cols short": (_resize("l0_cols", -1), ["l0_cols", "entries"]),
    "cols long": (_resize("l1_cols", 10**9), ["l1_cols", "entries"]),
    "weight short": (_resize("l0_weight", -1), ["l0_weight", "shape"]),
    "qweight short": (_resize("l2_qweight", -1), ["l2_qweight", "entries"]),
    "core short": (_resize("l1_core", -1), ["l1_core", "entries"]),
    "bias_mant long": (_resize("l0_bias_mant", 10**9), ["l0_bias_mant", "entries"]),
    "in_bias_mant short": (_resize("in_bias_mant", -1), ["in_bias_mant", "entries"]),
    "rows 2-D": (lambda a: a.__setitem__("l0_rows", a["l0_rows"][:, None]), ["l0_rows", "1-D"]),
    "row = n_out": (_set("l0_rows", -1, 128), ["l0_rows", "128", "n_out = 128"]),
    "row negative": (_set("l1_rows", 0, -1), ["l1_rows", "-1"]),
    "col = n_in": (_set("l2_cols", 5, 64), ["l2_cols", "n_in = 64"]),
    "col huge uint64": (_astype("l0_cols", np.uint64), None),  # a no-op: same values
    "duplicate pair": (_duplicate_pair, ["l0_rows", "duplicate"]),
    "unsorted": (_swap_entries, ["l1_rows", "out of order"]),
    "neuron moved between cores": (_move_neuron_between_cores, ["l0_core", "core ranges"]),
    "core id off chip": (_set("l1_core", 3, 99), ["l1_core", "99"]),
    "weight nan": (_set("l0_weight", 3, np.nan), ["l0_weight", "index 3", "not finite", "'h1'"]),
    "weight inf": (_set("l2_weight", 0, np.inf), ["l2_weight", "not finite", "'out'"]),
    "qweight 300": (_set("l0_qweight", 2, 300), ["l0_qweight", "300"]),
    "qweight -300": (_set("l0_qweight", 2, -300), ["l0_qweight", "-300"]),
    "qweight off grid": (_odd_qweight, ["l0_qweight", "multiple"]),
    "num_weight_bits 7": (_put("l0_num_weight_bits", np.int64(7)), ["l0_num_weight_bits", "7"]),
    "num_weight_bits 0": (_put("l1_num_weight_bits", np.int64(0)), ["l1_num_weight_bits"]),
    "weight_exp 99": (_put("l0_weight_exp", np.int64(99)), ["l0_weight_exp", "99"]),
    "weight_exp -99": (_put("l2_weight_exp", np.int64(-99)), ["l2_weight_exp", "-99"]),
    "vth negative": (_put("l1_vth", np.int64(-1)), ["l1_vth", "-1"]),
    "vth 2**17": (_put("l1_vth", np.int64(2**17)), ["l1_vth", "131072"]),
    "du 4096": (_put("l0_du", np.int64(4096)), ["l0_du", "4096"]),
    "dv -1": (_put("l2_dv", np.int64(-1)), ["l2_dv"]),
    "bias_exp 8": (_put("l2_bias_exp", np.int64(8)), ["l2_bias_exp", "8"]),
    "bias_mant 5000": (_set("l2_bias_mant", 0, 5000), ["l2_bias_mant", "5000"]),
    "in_shift negative": (_put("in_shift", np.int64(-3)), ["in_shift", "-3"]),
    "in_shift 64": (_put("in_shift", np.int64(64)), ["in_shift", "64"]),
    "in_gain negative": (_put("in_gain", np.int64(-1)), ["in_gain"]),
    "in_gain overflows bias": (_put("in_gain", np.int64(2**30)), ["in_gain"]),
    "in_vth 2 values": (_put("in_vth", np.array([5, 6])), ["in_vth", "single integer"]),
    "input_core moved": (_set("input_core", 0, 1), ["input_core", "index 0"]),
    "rewired negative": (_set("rewired_per_step", 0, -5), ["rewired_per_step", "-5"]),
    "extra layer arrays": (_put("l3_qweight", np.zeros(3, np.int32)), ["l3_qweight", "unknown array"]),
    "stray key": (_put("notes", np.zeros(1)), ["notes", "unknown array"]),
    "missing vth": (_drop("l1_vth"), ["l1_vth", "missing"]),
    "missing rows": (_drop("l0_rows"), ["l0_rows", "missing"]),
    "missing core": (_drop("l2_core"), ["l2_core", "missing"]),
    "missing in_gain": (_drop("in_gain"), ["in_gain", "missing"]),
}


@pytest.mark.parametrize("case", sorted(ARRAY_CASES))
def test_tampered_arrays_are_refused_naming_the_array(bundle, tmp_path, case, reference):
    tamper, words = ARRAY_CASES[case]
    run = copy_run(bundle, tmp_path)
    manifest, arrays = raw1(run)
    tamper(arrays)
    # as a consistent bundle (hashes rewritten): the structural checks must refuse it
    write_arrays(run, arrays, rehash=True)
    if words is None:  # no-op tampering: accepted, same spikes
        _, _, net = load_integer_network(run)
        x, ref = reference
        got = get_backend("emulator").run(net, x, STEPS, record_spikes=True)
        assert all(np.array_equal(a, b) for a, b in zip(ref.spikes, got.spikes))
        return
    msg = refused(run, "network.npz", *words)
    assert len(msg) < 1500
    # the same file beside the original manifest: refused by the integrity check first
    run2 = copy_run(bundle, tmp_path, "r2")
    write_arrays(run2, arrays, rehash=False)
    refused(run2, "does not belong", "network.npz", "manifest.json")


@pytest.mark.parametrize("command", ["report", "simulate", "crosscheck", "export"])
def test_every_command_refuses_a_tampered_bundle_with_one_error_line(bundle, tmp_path, capsys, command):
    run = copy_run(bundle, tmp_path)
    manifest, arrays = raw1(run)
    _duplicate_pair(arrays)
    write_arrays(run, arrays, rehash=True)
    capsys.readouterr()
    args = [command, str(run)] + (["--backends", "emulator,emulator"] if command == "crosscheck" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named(run, ["l0_rows"])[0] in err[0]
    assert "duplicate" in err[0]
    assert "Traceback" not in "".join(err)


# --------------------------------------------------------------- manifest tampering

def _m(path, value):
    """Set (or, for value=KeyError, delete) a field given as a list of keys/indices."""
    def f(m):
        obj = m
        for k in path[:-1]:
            obj = obj[k]
        if value is KeyError:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
        return m
    return f


def _move_core_boundary(m):
    cores = m["layers"][0]["cores"]
    cores[0]["post_stop"] -= 1
    cores[1]["post_start"] -= 1
    return m


MANIFEST_CASES = {
    "a list": (lambda m: [m], ["JSON object", "list"]),
    "null": (lambda m: None, ["JSON object", "NoneType"]),
    "a number": (lambda m: 3, ["JSON object"]),
    "no layers": (_m(["layers"], KeyError), ["'layers'", "missing"]),
    "no profile": (_m(["profile"], KeyError), ["'profile'", "missing"]),
    "no dataset": (_m(["dataset"], KeyError), ["'dataset'", "missing"]),
    "no training": (_m(["training"], KeyError), ["'training'", "missing"]),
    "layers a dict": (_m(["layers"], {"a": 1}), ["'layers'", "list"]),
    "layers empty": (_m(["layers"], []), ["'layers'", "empty"]),
    "profile a string": (_m(["profile"], "loihi"), ["'profile'", "object"]),
    "training null": (_m(["training"], None), ["'training'"]),
    "snn a list": (_m(["snn"], []), ["'snn'"]),
    "layer a string": (_m(["layers", 1], "h2"), ["layers[1]"]),
    "n_out a string": (_m(["layers", 0, "n_out"], "128"), ["layers[0].n_out"]),
    "n_out bool": (_m(["layers", 2, "n_out"], True), ["layers[2].n_out"]),
    "n_out disagrees with arrays": (_m(["layers", 2, "n_out"], 11), ["layers[2]"]),
    "n_in disagrees": (_m(["layers", 1, "n_in"], 127), ["layers[1].n_in"]),
    "input_size disagrees": (_m(["model", "input_size"], 65), ["input_size"]),
    "no name": (_m(["layers", 0, "name"], KeyError), ["layers[0].name"]),
    "duplicate name": (_m(["layers", 1, "name"], "h1"), ["layers[1].name", "twice"]),
    "cores missing": (_m(["layers", 0, "cores"], KeyError), ["layers[0].cores"]),
    "core id off chip": (_m(["layers", 0, "cores", 0, "core"], 99), ["core id 99"]),
    "core id twice": (_m(["layers", 1, "cores", 0, "core"], 2), ["core id 2", "twice"]),
    "core range gap": (_m(["layers", 0, "cores", 1, "post_start"], 33), ["layers[0].cores[1]"]),
    "neurons moved between cores": (_move_core_boundary, ["l0_core", "core ranges"]),
    "too many neurons on a core": (_m(["profile", "neurons_per_core"], 16), ["neurons_per_core"]),
    "profile invalid": (_m(["profile", "cores"], -1), ["profile", "cores"]),
    "profile unknown field": (_m(["profile", "turbo"], True), ["profile", "turbo"]),
    "chip smaller": (_m(["profile", "cores"], 4), ["core id"]),
    "steps_per_sample 0": (_m(["snn", "steps_per_sample"], 0), ["snn.steps_per_sample", "got 0"]),
    "steps_per_sample -5": (_m(["snn", "steps_per_sample"], -5), ["snn.steps_per_sample"]),
    "steps_per_sample 1e8": (_m(["snn", "steps_per_sample"], 10**8), ["snn.steps_per_sample"]),
    "steps_per_sample float": (_m(["snn", "steps_per_sample"], 20.5), ["snn.steps_per_sample"]),
    "seed a string": (_m(["training", "seed"], "x"), ["training.seed"]),
    "val_fraction 2": (_m(["training", "val_fraction"], 2), ["training.val_fraction"]),
    "weight_bits not offered": (_m(["training", "weight_bits"], 7), ["training.weight_bits"]),
    "dataset name": (_m(["dataset", "name"], None), ["dataset.name"]),
    "format": (_m(["format"], "zip"), ["'format'"]),
    "version 2 on a version-1 body": (_m(["version"], 2), ["'graph'", "missing"]),
    "version 3": (_m(["version"], 3), ["'version'", "reads versions 1, 2"]),
    "version true": (_m(["version"], True), ["'version'"]),
    "layer named input": (_m(["layers", 0, "name"], "input"), None),  # the input population becomes "input_"
    "hash changed": (_m(["integrity", "network_sha256"], "0" * 64), ["does not belong"]),
    "hash wrong type": (_m(["integrity", "network_sha256"], 5), ["'integrity'"]),
    "integrity a list": (_m(["integrity"], [1]), ["'integrity'"]),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_tampered_manifest_is_refused_naming_the_field(exported_v1, tmp_path, case):
    """Version-1 manifests (graph manifests: tests/test_bundle_v2.py)."""
    tamper, words = MANIFEST_CASES[case]
    run = copy_run(exported_v1, tmp_path)
    manifest, _ = raw(run)
    write_manifest(run, tamper(manifest))
    if words is None:  # accepted
        m, _ = load_bundle(run, need_fit=True)
        assert m["graph"]["populations"][0]["name"] == "input_"
        return
    refused(run, *words)


@pytest.mark.parametrize("text", ["", "{", "[1, 2", "\xff\xfe", "[" * 100000 + "]" * 100000])
def test_manifest_that_is_not_json_is_refused(exported, tmp_path, text):
    run = copy_run(exported, tmp_path)
    (run / MANIFEST).write_bytes(text.encode("latin-1"))
    refused(run, "manifest.json", "not valid JSON")


def test_capacities_are_recomputed_from_the_profile(exported, tmp_path, capsys):
    run = copy_run(exported, tmp_path)
    manifest, _ = raw(run)
    for pop in manifest["graph"]["populations"][1:]:
        for c in pop["cores"]:
            c["capacity"] = 10**9  # stored numbers are never trusted...
    manifest["profile"]["synapses_per_core"] = 100  # ...the profile is
    write_manifest(run, manifest)
    assert main(["report", str(run)]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "capacity 100" in out
    for command in ("simulate", "crosscheck", "export"):
        assert main([command, str(run)]) == 2
        err = capsys.readouterr().err
        assert "does not fit" in err and "capacity 100" in err and "report" in err
    with pytest.raises(BudgetError):
        load_bundle(run, need_fit=True)


# --------------------------------------------------------------- whole-bundle integrity

def test_network_from_another_export_beside_the_old_manifest(exported, tmp_path, capsys):
    """A re-export killed between its two files: refused, and re-running export repairs it."""
    other = copy_run(exported, tmp_path, "other")
    assert main(["export", str(other), "--steps", "7", "--calibration-samples", "20", "--no-progress"]) == 0
    run = copy_run(exported, tmp_path)
    shutil.copy(other / NETWORK, run / NETWORK)  # new network.npz, old manifest.json
    capsys.readouterr()
    assert main(["simulate", str(run), "--samples", "5"]) == 2
    err = capsys.readouterr().err
    assert "network.npz" in err and "manifest.json" in err and "deepr-neuro export" in err
    assert main(["report", str(run)]) == 2
    assert main(["export", str(run), "--steps", str(STEPS), "--calibration-samples", "40", "--no-progress"]) == 0
    assert main(["simulate", str(run), "--samples", "5"]) == 0
    _, a = raw(run)
    _, b = raw(exported)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_trained_arrays_of_another_run_are_refused_even_by_export(exported, tmp_path):
    run = copy_run(exported, tmp_path)
    manifest, arrays = raw1(run)
    arrays["l0_weight"] = arrays["l0_weight"] * np.float32(2)
    write_arrays(run, arrays, rehash=False)
    msg = refused(run, "does not belong", "trained arrays")
    assert "train" in msg
    with pytest.raises(BundleError, match="does not belong"):
        load_bundle(run, for_export=True)


def test_bundles_without_hashes_still_load_and_are_still_checked(bundle, tmp_path):
    run = copy_run(bundle, tmp_path)
    manifest, arrays = raw1(run)
    del manifest["integrity"]  # as written before the hashes existed
    write_manifest(run, manifest)
    m, a = load_bundle(run, need_fit=True)
    assert "integrity" not in m and len(a) == len(arrays)
    _move_neuron_between_cores(arrays)
    write_arrays(run, arrays, rehash=False)
    refused(run, "l0_core")


def test_leftover_temp_files_are_ignored_and_cleaned(exported, tmp_path):
    run = copy_run(exported, tmp_path)
    stale = run / f".{NETWORK}.abc123.tmp"
    fresh = run / f".{MANIFEST}.def456.tmp"
    stale.write_bytes(b"half a zip")
    fresh.write_bytes(b"{")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    load_bundle(run, need_fit=True)  # ignored
    manifest, arrays = raw(run)
    save_bundle(run, manifest, arrays)
    assert not stale.exists()  # an hour-old leftover is removed by the next write
    assert fresh.exists()  # a fresh one may belong to a write in progress
    load_bundle(run, need_fit=True)


def test_disk_full_is_a_clean_error_and_keeps_the_old_file(exported, tmp_path, monkeypatch):
    """ENOSPC from the kernel (/dev/full), not a simulated exception."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    run = copy_run(exported, tmp_path)
    before = (run / NETWORK).read_bytes()
    manifest, arrays = raw(run)
    real_fdopen = os.fdopen

    def full(fd, mode="r", *a, **k):
        os.close(fd)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), mode, *a, **k)

    monkeypatch.setattr(bundle_mod.os, "fdopen", full)
    with pytest.raises(BundleError) as info:
        save_bundle(run, manifest, arrays)
    msg = str(info.value)
    assert "network.npz" in msg and "ENOSPC" in msg and os.strerror(errno.ENOSPC) in msg and "unchanged" in msg
    assert "seek of closed file" not in msg
    monkeypatch.undo()
    assert (run / NETWORK).read_bytes() == before
    assert not list(run.glob(".*.tmp"))
    load_bundle(run, need_fit=True)


# --------------------------------------------------------------- command-line values

@pytest.mark.parametrize("args, words", [
    (["simulate", "{run}", "--samples", "0"], ["--samples", "got 0"]),
    (["simulate", "{run}", "--samples", "-1"], ["--samples", "got -1"]),
    (["simulate", "{run}", "--steps", "0"], ["--steps", "got 0"]),
    (["simulate", "{run}", "--steps", "-4"], ["--steps"]),
    (["simulate", "{run}", "--steps", "100000000"], ["--steps", "10000"]),
    (["crosscheck", "{run}", "--samples", "0"], ["--samples"]),
    (["crosscheck", "{run}", "--samples", "-2"], ["--samples"]),
    (["crosscheck", "{run}", "--steps", "0"], ["--steps"]),
    (["crosscheck", "{run}", "--steps", "100000000"], ["--steps"]),
    (["export", "{run}", "--calibration-samples", "0"], ["--calibration-samples"]),
    (["export", "{run}", "--calibration-samples", "-1"], ["--calibration-samples"]),
    (["export", "{run}", "--steps", "0"], ["--steps"]),
    (["export", "{run}", "--steps", "100000000"], ["--steps", "10000"]),
])
def test_bad_counts_are_refused_before_any_work(exported, capsys, args, words):
    before = (exported / MANIFEST).read_bytes()
    assert main([a.format(run=exported) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and all(w in err for w in words), err
    assert (exported / MANIFEST).read_bytes() == before


def test_crosscheck_says_agree_only_after_comparing_two_integer_backends(exported, capsys):
    assert main(["crosscheck", str(exported), "--backends", "emulator", "--samples", "2"]) == 1
    out = capsys.readouterr().out
    assert "agree: NO" in out and "nothing compared" in out
    assert main(["crosscheck", str(exported), "--backends", "emulator", "--samples", "2", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["integer_backends_agree"] is False and data["integer_backends_compared"] == []


@pytest.mark.brian2
def test_crosscheck_agrees_on_two_integer_backends(exported, capsys):
    assert main(["crosscheck", str(exported), "--backends", "emulator,brian2", "--samples", "2",
                 "--steps", "10"]) == 0
    assert "agree: yes (emulator, brian2 on 2 samples x 10 steps)" in capsys.readouterr().out


# --------------------------------------------------------------- --weight-bits

def test_weight_bits_are_honoured_by_the_fit_check_and_by_export(tmp_path, capsys):
    """A memory-bound profile: 2-bit weights fit where 8-bit ones do not."""
    prof = tmp_path / "mem.yaml"
    text = TINY.read_text().replace("synapses_per_core: 2048", "").replace(
        "synapse_memory_bits_per_core: 65536", "synapse_memory_bits_per_core: 16384")
    prof.write_text(text)
    run = tmp_path / "wb1"
    assert main(["train", "--profile", str(prof), "--model", str(DIGITS), "--out", str(run), "--epochs", "1",
                 "--weight-bits", "2", "--connectivity", "0.5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "weights: 2-bit" in out and "FITS" in out
    assert main(["report", str(run)]) == 0
    assert main(["export", str(run), "--steps", "10", "--calibration-samples", "20", "--no-progress"]) == 0
    _, arrays = raw1(run)
    assert all(int(arrays[f"l{i}_num_weight_bits"]) == 2 for i in range(3))
    assert main(["report", str(run)]) == 0
    # the same network measured at the profile's 8 bits does not fit: refused
    manifest, arrays = raw1(run)
    manifest["training"]["weight_bits"] = None
    del manifest["snn"]
    write_manifest(run, manifest)
    write_arrays(run, {k: v for k, v in arrays.items() if not is_export_key(k)}, rehash=True)
    capsys.readouterr()
    assert main(["report", str(run)]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert main(["export", str(run), "--steps", "10", "--no-progress"]) == 2
    assert "does not fit" in capsys.readouterr().err


# --------------------------------------------------------------- property tests

_INT_KEYS = ["l0_rows", "l1_cols", "l2_rows", "l0_qweight", "l1_qweight", "l2_qweight", "l0_core", "l1_core",
             "in_bias_mant", "l2_bias_mant", "l0_vth", "l1_du", "l2_dv", "l0_weight_exp", "in_shift", "in_gain",
             "l1_num_weight_bits", "l2_bias_exp", "input_core"]
_ALL_KEYS = _INT_KEYS + ["l0_weight", "l2_weight", "rewired_per_step"]

tamperings = st.one_of(
    st.tuples(st.just("value"), st.sampled_from(_ALL_KEYS), st.integers(0, 10**6),
              st.one_of(st.integers(-2**40, 2**40), st.sampled_from([np.nan, np.inf, 0.5, -1e30])),
              st.none()),
    st.tuples(st.just("dtype"), st.sampled_from(_ALL_KEYS), st.none(),
              st.sampled_from(["float64", "float32", "complex128", "int8", "int16", "int64", "uint8", "uint32",
                               "bool"]), st.none()),
    st.tuples(st.just("length"), st.sampled_from(_ALL_KEYS), st.integers(-3, 3), st.none(), st.none()),
    st.tuples(st.just("swap"), st.sampled_from(["l0_core", "l1_core", "l2_rows", "l0_cols", "l1_qweight",
                                                "input_core"]),
              st.integers(0, 10**6), st.integers(0, 10**6), st.none()),
    st.tuples(st.just("duplicate"), st.sampled_from(["l0", "l1", "l2"]), st.integers(0, 10**6), st.none(),
              st.none()),
    st.tuples(st.just("add"), st.sampled_from(["l3_rows", "extra", "l0_foo", "in_bias"]), st.none(), st.none(),
              st.none()),
    st.tuples(st.just("remove"), st.sampled_from(_ALL_KEYS), st.none(), st.none(), st.none()),
)


def _apply(arrays, op):
    kind, key, a, b, _ = op
    if kind == "value":
        v = arrays[key].copy()
        if v.ndim == 0:
            v = v.reshape(1)
            shape0 = True
        else:
            shape0 = False
        if v.size == 0:  # an earlier op emptied it: nothing to change
            return
        i = a % v.size
        try:
            v[i] = b
        except (OverflowError, ValueError, TypeError):  # value does not fit the dtype: make room
            v = v.astype(np.float64 if isinstance(b, float) else object)
            v[i] = b
            if v.dtype == object:
                v = v.astype(np.float64)
        arrays[key] = v.reshape(()) if shape0 else v
    elif kind == "dtype":
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # complex -> real discards the imaginary part: intended
            arrays[key] = arrays[key].astype(b)
    elif kind == "length":
        v = arrays[key]
        if v.ndim == 0 or a == 0:
            arrays[key] = np.atleast_1d(v)[:0] if a < 0 else np.repeat(np.atleast_1d(v), 2)
        elif a < 0:
            arrays[key] = v[:a]
        else:
            arrays[key] = np.concatenate([v, v[:a]])
    elif kind == "swap":
        v = arrays[key].copy()
        i, j = a % v.size, b % v.size
        v[[i, j]] = v[[j, i]]
        arrays[key] = v
    elif kind == "duplicate":
        if any(f"{key}_{k}" not in arrays for k in ("rows", "cols", "weight", "qweight")):
            return
        n = min(len(arrays[f"{key}_{k}"]) for k in ("rows", "cols", "weight", "qweight"))
        i = a % (n - 1)
        for k in ("rows", "cols", "weight", "qweight"):
            v = arrays[f"{key}_{k}"].copy()
            v[i + 1] = v[i]
            arrays[f"{key}_{k}"] = v
    elif kind == "add":
        arrays[key] = np.zeros(3, dtype=np.int32)
    elif kind == "remove":
        del arrays[key]


def _outcome(run, reference):
    """Refused with a DeeprError, or accepted with identical spikes: nothing else."""
    try:
        _, _, net = load_integer_network(run)
    except DeeprError as e:
        assert str(e) and len(str(e)) < 2000
        return "refused"
    x, ref = reference
    got = get_backend("emulator").run(net, x, STEPS, record_spikes=True)
    assert all(np.array_equal(a, b) for a, b in zip(ref.spikes, got.spikes)), "accepted a changed network"
    return "same"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(tamperings, min_size=1, max_size=3))
def test_random_tampering_is_refused_or_changes_nothing(bundle, tmp_path_factory, reference, ops):
    """Any change to network.npz beside its manifest: refused, or a no-op with identical spikes."""
    run = copy_run(bundle, tmp_path_factory.mktemp("prop"))
    _, arrays = raw1(run)
    for op in ops:
        if op[0] in ("remove", "value", "dtype", "length", "swap") and op[1] not in arrays:
            continue
        _apply(arrays, op)
    write_arrays(run, arrays, rehash=False)
    _outcome(run, reference)


_STRUCTURAL = st.one_of(
    st.tuples(st.just("dtype"), st.sampled_from(_INT_KEYS), st.none(),
              st.sampled_from(["float64", "float32", "complex128", "bool"]), st.none()),
    st.tuples(st.just("dtype"), st.sampled_from(["l0_weight", "l1_weight"]), st.none(),
              st.sampled_from(["int32", "complex64", "bool"]), st.none()),
    st.tuples(st.just("length"), st.sampled_from(_ALL_KEYS[:-1]), st.sampled_from([-2, -1, 1, 2]), st.none(),
              st.none()),
    st.tuples(st.just("duplicate"), st.sampled_from(["l0", "l1", "l2"]), st.integers(0, 10**6), st.none(),
              st.none()),
    st.tuples(st.just("add"), st.sampled_from(["l3_rows", "extra", "l0_foo", "in_bias"]), st.none(), st.none(),
              st.none()),
    # input_core and rewired_per_step are optional (not read by the simulators)
    st.tuples(st.just("remove"), st.sampled_from([k for k in _ALL_KEYS if k not in ("input_core", "rewired_per_step")]),
              st.none(), st.none(), st.none()),
    st.tuples(st.just("value"), st.sampled_from(["l0_rows", "l1_cols", "l2_rows", "l0_cols"]),
              st.integers(0, 10**6), st.sampled_from([-1, 10**4, 2**31 - 1]), st.none()),
    st.tuples(st.just("value"), st.sampled_from(["l0_qweight", "l2_qweight"]), st.integers(0, 10**6),
              st.sampled_from([-257, 256, 3, 10**6]), st.none()),
    st.tuples(st.just("value"), st.sampled_from(["l0_vth", "l1_du", "l2_dv", "in_shift",
                                                 "l2_bias_exp", "l1_num_weight_bits"]),
              st.none(), st.sampled_from([-1, -100, 2**20]), st.none()),
    st.tuples(st.just("value"), st.sampled_from(["l0_weight_exp", "l2_weight_exp"]),
              st.none(), st.sampled_from([-100, 8, 2**20]), st.none()),
    st.tuples(st.just("value"), st.sampled_from(["l0_weight", "l2_weight"]), st.integers(0, 10**6),
              st.sampled_from([np.nan, np.inf, -np.inf]), st.none()),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=_STRUCTURAL)
def test_structural_tampering_is_refused_even_without_hashes(bundle, tmp_path_factory, op):
    """Bundles written before the hashes existed: every structural violation is still refused."""
    run = copy_run(bundle, tmp_path_factory.mktemp("legacy"))
    manifest, arrays = raw1(run)
    del manifest["integrity"]
    write_manifest(run, manifest)
    if op[0] == "value" and op[2] is None:
        op = (op[0], op[1], 0, op[3], None)
    _apply(arrays, op)
    write_arrays(run, arrays, rehash=False)
    with pytest.raises(DeeprError):
        load_integer_network(run)


def test_integer_graph_from_arrays_never_casts(exported):
    manifest, arrays = raw(exported)
    graph = manifest["graph"]
    for key, dtype in (("proj/h1/qweight", np.float64), ("proj/h2/rows", np.complex128),
                       ("pop/out/vth", np.float32), ("pop/input/bias_mant", np.float64)):
        bad = dict(arrays, **{key: arrays[key].astype(dtype)})
        with pytest.raises(BundleError, match=key):
            integer_graph_from_arrays(bad, graph)
    big = dict(arrays, **{"proj/h1/qweight": arrays["proj/h1/qweight"].astype(np.int64) + 2**32})
    with pytest.raises(BundleError, match="32-bit"):
        integer_graph_from_arrays(big, graph)


def test_ctrl_c_during_export_leaves_the_bundle_as_it_was(exported, tmp_path):
    """A real process and a real SIGINT: exit 130, a message that does not suggest --resume,
    and both files untouched."""
    run = copy_run(exported, tmp_path)
    before = {n: (run / n).read_bytes() for n in (MANIFEST, NETWORK)}
    exe = Path(sys.executable).parent / "deepr-neuro"
    proc = subprocess.Popen([str(exe), "export", str(run), "--steps", "5000", "--calibration-samples", "3000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    for line in proc.stderr:  # wait until the calibration has started
        if "calibrating" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "unchanged" in err and "--resume" not in err and "Traceback" not in err
    assert {n: (run / n).read_bytes() for n in (MANIFEST, NETWORK)} == before
    assert not list(run.glob(".*.tmp"))


def test_a_damaged_snn_block_is_refused_and_export_repairs_it(exported, tmp_path, capsys):
    run = copy_run(exported, tmp_path)
    manifest, _ = raw(run)
    manifest["snn"]["steps_per_sample"] = 0
    write_manifest(run, manifest)
    assert main(["simulate", str(run), "--samples", "3"]) == 2
    assert "snn.steps_per_sample" in capsys.readouterr().err
    assert main(["export", str(run), "--steps", str(STEPS), "--calibration-samples", "40", "--no-progress"]) == 0
    assert main(["simulate", str(run), "--samples", "3"]) == 0


@pytest.mark.parametrize("kind", ["garbage", "empty", "pickled object array", "a directory", "missing"])
def test_unreadable_network_files_are_refused(exported, tmp_path, kind):
    run = copy_run(exported, tmp_path)
    npz = run / NETWORK
    npz.unlink()
    if kind == "garbage":
        npz.write_bytes(b"PK\x03\x04 not really a zip")
    elif kind == "empty":
        npz.write_bytes(b"")
    elif kind == "pickled object array":
        np.savez(npz, l0_rows=np.array([{"a": 1}], dtype=object))
    elif kind == "a directory":
        npz.mkdir()
    msg = refused(run, "network.npz")
    assert ("missing" if kind == "missing" else "cannot be read") in msg
