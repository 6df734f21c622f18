"""Recurrent spiking networks trained with DEEP R under per-core budgets (R1): the
``kind: recurrent`` spec, RecurrentTrainer, the CLI, sweep, resume and the report.

Tiny specs (24 recurrent neurons over 3 cores, a few dozen samples a split,
1-2 epochs) keep every test fast; the data is the real spoken-digits file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepr_neuro.cli import main
from deepr_neuro.errors import BudgetError, ConfigError
from deepr_neuro.hardware.profile import load_profile
from deepr_neuro.store.bundle import load_bundle
from deepr_neuro.training.model_spec import ModelSpec
from deepr_neuro.training.recurrent_spec import (RecurrentModelSpec, lif_params, load_any_model_spec,
                                                 load_recurrent_data, projection_budgets)
from deepr_neuro.training.recurrent_trainer import RecurrentTrainer
from deepr_neuro.training.recurrent import LifParams
from deepr_neuro.training.trainer import TrainSettings, check_invariants, train

ROOT = Path(__file__).resolve().parents[1]
TINY_PROFILE = str(ROOT / "hardware_profiles" / "tiny_test.yaml")
LOIHI = str(ROOT / "hardware_profiles" / "loihi.yaml")

from spoken_data import REASON as SPOKEN_MISSING, have_spoken  # noqa: E402

if not have_spoken():
    pytest.skip(SPOKEN_MISSING, allow_module_level=True)

TINY = {
    "kind": "recurrent", "name": "tiny_rsnn", "dataset": "spoken-digits", "max_samples": 48,
    "encoding": {"steps_per_frame": 1, "scale": 2.0, "signed": True},
    "recurrent": {"size": 24, "max_neurons_per_core": 8, "neuron": {"du": 900, "dv": 250, "vth": 1024}},
    "projections": {"in_rec": {"connectivity": 0.3, "init_scale": 3.0}, "rec_rec": {"connectivity": 0.2},
                    "rec_out": {"connectivity": 0.5, "init_scale": 0.1}},
    "training": {"epochs": 2, "batch_size": 16},
}


def write_spec(tmp_path: Path, data: dict, name: str = "spec.yaml") -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return str(p)


def spec_of(data: dict = TINY, **training) -> RecurrentModelSpec:
    spec = RecurrentModelSpec.from_dict(data, source="tiny.yaml")
    return spec.with_overrides(**training) if training else spec


@pytest.fixture(scope="module")
def tiny_data():
    spec = spec_of()
    return load_recurrent_data(spec, TrainSettings.from_spec(spec))


def rec_union_counts(arrays, manifest):
    """Active synapses per core of 'rec' over in_rec and rec_rec together, from the bundle arrays."""
    core = arrays["pop/rec/core"]
    rows = np.concatenate([arrays["proj/in_rec/rows"], arrays["proj/rec_rec/rows"]])
    counts = {}
    for c in manifest["graph"]["populations"][1]["cores"]:
        counts[c["core"]] = (int(np.sum(core[rows] == c["core"])), c["budget"])
    return counts


# ---------------------------------------------------------------- the CLI
def test_cli_train_writes_a_recurrent_v2_bundle_with_exact_budgets_and_report(tmp_path, capsys):
    spec = write_spec(tmp_path, TINY)
    out = tmp_path / "run"
    assert main(["train", "--profile", TINY_PROFILE, "--model", spec, "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "epoch   2" in text and "rewired" in text
    manifest, arrays = load_bundle(out)
    assert manifest["version"] == 2 and manifest["model"]["kind"] == "recurrent"
    g = manifest["graph"]
    assert [p["name"] for p in g["populations"]] == ["input", "rec", "out"]
    assert [q["name"] for q in g["projections"]] == ["in_rec", "rec_rec", "rec_out"]
    assert g["readout"] == "out" and len(g["populations"][1]["cores"]) == 3
    rec = manifest["recurrent"]
    assert rec["readout"] == "final_v" and rec["steps_per_frame"] == 1
    assert rec["neurons"]["rec"] == {"du": 900, "dv": 250, "vth": 1024}
    assert len(rec["normalisation"]["mean"]) == 13 and rec["encoding"]["signed"] is True
    for name in ("in_rec", "rec_rec", "rec_out"):
        assert arrays[f"proj/{name}/weight"].dtype == np.float32
        r, c = arrays[f"proj/{name}/rows"], arrays[f"proj/{name}/cols"]
        assert np.all(np.lexsort((c, r)) == np.arange(len(r)))
    assert not np.any(arrays["proj/rec_rec/rows"] == arrays["proj/rec_rec/cols"])  # no self-connection
    for n, k in rec_union_counts(arrays, manifest).values():
        assert n == k  # K_c exact over the union of in_rec and rec_rec
    assert len(arrays["proj/rec_out/rows"]) == g["projections"][2]["budget"]
    hist = json.loads((out / "history.json").read_text())["epochs"]
    assert len(hist) == 2 and all(len(h["rewired"]) == 2 for h in hist)
    assert len(arrays["rewired_per_step"]) == 2 * 3  # 48 samples / 16 a batch, 2 epochs
    assert (out / "checkpoint.npz").exists()
    assert main(["report", str(out)]) == 0
    report = capsys.readouterr().out
    assert "FITS" in report and "in_rec" in report and "rec_rec" in report
    assert main(["report", str(out), "--json"]) == 0
    cores = json.loads(capsys.readouterr().out)["cores"]
    rec_cores = [c for c in cores if c["layer"] == "rec"]
    assert all(set(c["by_projection"]) == {"in_rec", "rec_rec"} for c in rec_cores)
    assert all(sum(v[0] for v in c["by_projection"].values()) == c["synapses"] == c["budget"] for c in rec_cores)
    # the same run again is refused (no --resume / --overwrite), the run is kept
    before = (out / "network.npz").read_bytes()
    assert main(["train", "--profile", TINY_PROFILE, "--model", spec, "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.count("error:") == 1
    assert (out / "network.npz").read_bytes() == before


@pytest.mark.parametrize("per_connection", [False, True])
def test_cli_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, per_connection):
    data_spec = {**TINY, "training": {**TINY["training"], "epochs": 3, "optimizer": "adam",
                                      "adam_per_connection": per_connection}}
    spec = spec_of(data_spec)
    prof = load_profile(TINY_PROFILE)
    s = TrainSettings.from_spec(spec)
    data = load_recurrent_data(spec, s)
    train(prof, spec, s, data, tmp_path / "full", progress=False, trainer_cls=RecurrentTrainer)
    part = train(prof, spec, s, data, tmp_path / "part", progress=False, trainer_cls=RecurrentTrainer,
                 stop_after_epochs=1)
    assert part.epoch == 1 and not (tmp_path / "part" / "manifest.json").exists()
    path = write_spec(tmp_path, data_spec)
    assert main(["train", "--profile", TINY_PROFILE, "--model", path, "--out", str(tmp_path / "part"),
                 "--resume", "--no-progress"]) == 0
    _, a = load_bundle(tmp_path / "full")
    _, b = load_bundle(tmp_path / "part")
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    ha = json.loads((tmp_path / "full" / "history.json").read_text())["epochs"]
    hb = json.loads((tmp_path / "part" / "history.json").read_text())["epochs"]
    strip = lambda h: [{k: v for k, v in e.items() if not k.startswith("seconds")} for e in h]  # noqa: E731
    assert strip(ha) == strip(hb)


def test_resume_under_another_recurrent_spec_is_refused(tmp_path, capsys):
    path = write_spec(tmp_path, TINY)
    spec = spec_of()
    s = TrainSettings.from_spec(spec)
    train(load_profile(TINY_PROFILE), spec, s, load_recurrent_data(spec, s), tmp_path / "r", progress=False,
          trainer_cls=RecurrentTrainer,
          stop_after_epochs=1)
    other = write_spec(tmp_path, {**TINY, "recurrent": {**TINY["recurrent"], "neuron": {"du": 901, "dv": 250}}},
                       "other.yaml")
    for model in (other,):
        assert main(["train", "--profile", TINY_PROFILE, "--model", model, "--out", str(tmp_path / "r"),
                     "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and "recurrent" in err
    assert main(["train", "--profile", TINY_PROFILE, "--model", path, "--out", str(tmp_path / "r"),
                 "--resume", "--no-progress", "--lr", "0.01"]) == 2
    assert "'lr'" in capsys.readouterr().err


# ---------------------------------------------------------------- methods and budgets
@pytest.mark.parametrize("method", ["deepr", "soft-deepr", "global-deepr", "fixed-sparse", "dense",
                                    "prune-retrain", "l1"])
def test_every_method_trains_under_budgets(tmp_path, tiny_data, method):
    spec = spec_of(method=method, epochs=2, noise=1e-4 if "deepr" in method else 0.0,
                   alpha=1e-4 if "deepr" in method else 0.0)
    s = TrainSettings.from_spec(spec)
    t = train(load_profile(TINY_PROFILE), spec, s, tiny_data, tmp_path / method, progress=False,
              trainer_cls=RecurrentTrainer)
    check_invariants(t.deepr, t.plan, method)
    manifest, arrays = load_bundle(tmp_path / method)
    assert not np.any(arrays["proj/rec_rec/rows"] == arrays["proj/rec_rec/cols"])
    pot = {"in_rec": 26 * 24, "rec_rec": 24 * 23, "rec_out": 24 * 10}
    n = {q: len(arrays[f"proj/{q}/rows"]) for q in pot}
    if method == "dense":
        assert n == pot
    elif method in ("deepr", "fixed-sparse", "prune-retrain", "l1"):
        for got, k in rec_union_counts(arrays, manifest).values():
            assert got == k
    elif method == "soft-deepr":  # at most K_c on every core
        for got, k in rec_union_counts(arrays, manifest).values():
            assert got <= k
    else:  # global DEEP R: the network's total exact, each core within its capacity
        assert sum(n.values()) == t.plan.total_budget
        caps = {c.core_id: c.capacity for c in t.plan.layers[0].cores}
        for core, (got, _) in rec_union_counts(arrays, manifest).items():
            assert got <= caps[core]
    assert 0.0 <= manifest["metrics"]["test_accuracy"] <= 1.0
    assert np.isfinite(t.history[-1]["train_loss"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(size=st.integers(2, 20), per_core=st.integers(1, 12), p_in=st.floats(0.05, 1.0),
       p_rec=st.floats(0.02, 1.0), p_out=st.floats(0.05, 1.0),
       method=st.sampled_from(["deepr", "fixed-sparse", "global-deepr", "soft-deepr"]),
       seed=st.integers(0, 1000))
def test_budgets_exact_after_every_step_and_never_a_self_connection(tmp_path_factory, tiny_data, size, per_core,
                                                                     p_in, p_rec, p_out, method, seed):
    data = {**TINY, "recurrent": {"size": size, "max_neurons_per_core": per_core},
            "projections": {"in_rec": {"connectivity": p_in}, "rec_rec": {"connectivity": p_rec},
                            "rec_out": {"connectivity": p_out}}}
    spec = spec_of(data, method=method, epochs=1, seed=seed, batch_size=16, noise=1e-3, alpha=1e-4)
    s = TrainSettings.from_spec(spec)
    try:
        t = RecurrentTrainer(load_profile(TINY_PROFILE), spec, s, tiny_data, tmp_path_factory.mktemp("p"))
    except (ConfigError, BudgetError):
        return  # a projection with 0 connections at this p, or a budget the cores cannot place: refused
    steps = []

    def check(tr):
        check_invariants(tr.deepr, tr.plan, method)
        rec = tr.deepr.layers[0]
        act = rec.active_mask()
        # pre space of rec is [26 input channels | rec neurons]: a self-connection is col == 26 + row
        assert not np.any(rec.cols[act] == 26 + rec.rows[act])
        assert not np.any(np.diag(tr.model.masks["rec_rec"]))
        steps.append(1)

    t.after_step = check
    t.run_epoch()
    assert len(steps) == 3


# ---------------------------------------------------------------- the spec
def test_shipped_recurrent_specs_validate_and_map_over_several_cores():
    for name, n_rec_cores in (("spoken_digits_rsnn.yaml", 8), ("fmnist_rows_rsnn.yaml", 4),
                              ("spoken_digits_rate_reference.yaml", 8)):
        spec = load_any_model_spec(ROOT / "models" / name)
        assert isinstance(spec, RecurrentModelSpec)
        from deepr_neuro.training.trainer import build_plan

        plan = build_plan(load_profile(LOIHI), spec, TrainSettings.from_spec(spec))
        rec = plan.layers[0]
        assert rec.name == "rec" and len(rec.cores) == n_rec_cores
        assert [s.projection for s in rec.sources] == ["in_rec", "rec_rec"]
        for c in rec.cores:
            assert sum(c.budget_by_projection) == c.budget
    # the MLP specs are unchanged
    assert isinstance(load_any_model_spec(ROOT / "models" / "digits_mlp.yaml"), ModelSpec)


def test_time_constants_convert_exactly_as_lifparams_from_tau():
    spec = spec_of({**TINY, "recurrent": {"size": 24, "neuron": {"tau_syn": 4.0, "tau_mem": 16.0, "vth": 512}}})
    rec, out = lif_params(spec)
    assert rec == LifParams.from_tau(4.0, 16.0, vth=512)
    assert (out.du, out.dv) == (4095, 0)


def test_connectivity_flag_scales_into_rec_only_and_dense_is_everything():
    spec = spec_of()
    k = projection_budgets(spec, 0.1)
    assert k == {"in_rec": round(0.1 * 26 * 24), "rec_rec": round(0.1 * 24 * 23), "rec_out": 120}
    assert projection_budgets(spec, dense=True) == {"in_rec": 624, "rec_rec": 552, "rec_out": 240}


HOSTILE = [
    ({"kind": "recurent"}, "kind"),
    ({"kind": "mlp"}, "kind"),
    ({"projections": {"in_rec": {"connectivity": 0.3}, "rec_out": {"connectivity": 0.5}}}, "projections"),
    ({"projections": {**TINY["projections"], "out_rec": {"connectivity": 0.5}}}, "out_rec"),
    ({"projections": {**TINY["projections"], "in_rec": {"connectivity": 0}}}, "projections.in_rec.connectivity"),
    ({"projections": {**TINY["projections"], "rec_rec": {"connectivity": 1.5}}}, "projections.rec_rec.connectivity"),
    ({"projections": {**TINY["projections"], "rec_rec": {"connectivity": "nan"}}}, "projections.rec_rec"),
    ({"recurrent": {"size": 24, "neuron": {"du": 10}}}, "recurrent.neuron"),
    ({"recurrent": {"size": 24, "neuron": {"du": 10, "dv": 5, "tau_syn": 3.0}}}, "recurrent.neuron"),
    ({"recurrent": {"size": 24, "neuron": {"du": 5000, "dv": 5}}}, "recurrent.neuron.du"),
    ({"recurrent": {"size": 24, "neuron": {"tau_syn": -1.0, "tau_mem": 5.0}}}, "recurrent.neuron.tau_syn"),
    ({"recurrent": {"size": 24, "neuron": {"du": 1, "dv": 1, "vth": 0}}}, "recurrent.neuron.vth"),
    ({"recurrent": {"size": 1}}, "recurrent.size"),
    ({"recurrent": {"size": 0}}, "recurrent.size"),
    ({"recurrent": {"size": True}}, "recurrent.size"),
    ({"recurrent": {"size": 24, "max_neurons_per_core": 0}}, "recurrent.max_neurons_per_core"),
    ({"dataset": "spoken-digit"}, "dataset"),
    ({"dataset": "digits"}, "dataset"),
    ({"encoding": {"steps_per_frame": 0}}, "encoding.steps_per_frame"),
    ({"encoding": {"scale": -2.0}}, "encoding.scale"),
    ({"nonlinearity": "relu"}, "nonlinearity"),
    ({"bptt": {"clip_norm": 0}}, "bptt.clip_norm"),
    ({"max_samples": 0}, "max_samples"),
    ({"training": {"lr": -1.0}}, "training.lr"),
    ({"training": {"method": "deeper"}}, "training.method"),
    ({"layers": []}, "layers"),
    ({"recurrent": {"size": 24, "neuronz": {}}}, "recurrent.neuronz"),
]


@pytest.mark.parametrize("change, field", HOSTILE)
def test_hostile_specs_are_refused_naming_file_and_field(tmp_path, capsys, change, field):
    path = write_spec(tmp_path, {**TINY, **change})
    rc = main(["train", "--profile", TINY_PROFILE, "--model", path, "--out", str(tmp_path / "run"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("error:") == 1 and "Traceback" not in err
    assert path in err and field.split(".")[0] in err
    assert not (tmp_path / "run" / "manifest.json").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--method", "dense", "--connectivity", "0.1"], "--connectivity"),
    (["--connectivity", "0.0001"], "projections.in_rec.connectivity"),
    (["--connectivity", "1.5"], "--connectivity"),
    (["--dataset", "digits"], "dataset"),
    (["--epochs", "0"], "epochs"),
])
def test_hostile_flags_are_refused(tmp_path, capsys, flags, needle):
    path = write_spec(tmp_path, TINY)
    rc = main(["train", "--profile", TINY_PROFILE, "--model", path, "--out", str(tmp_path / "run"),
               "--no-progress", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and needle in err, err


def test_a_network_the_chip_cannot_hold_is_refused_with_the_table(tmp_path, capsys):
    path = write_spec(tmp_path, {**TINY, "recurrent": {"size": 2000, "max_neurons_per_core": 64}})
    assert main(["train", "--profile", TINY_PROFILE, "--model", path, "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cores" in err and "tiny_test.yaml" in err
    assert not (tmp_path / "run").exists()


def test_sweep_and_plot_accept_a_recurrent_spec(tmp_path, capsys):
    path = write_spec(tmp_path, {**TINY, "training": {**TINY["training"], "epochs": 1}})
    out = tmp_path / "sweep"
    assert main(["sweep", "--profile", TINY_PROFILE, "--model", path, "--out", str(out), "--connectivity",
                 "0.2,1.0", "--methods", "deepr,dense", "--workers", "1", "--no-progress"]) == 0
    capsys.readouterr()
    results = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    ok = [r for r in results if r["status"] == "ok"]
    assert len(ok) == 3 and all(r["layers"] == ["in_rec", "rec_rec", "rec_out"] for r in ok)
    assert all(len(r["rewired_per_epoch"]) == 1 for r in ok)
    assert main(["plot", str(out)]) == 0
    assert (out / "plots" / "rewiring.png").exists()


def test_train_refuses_a_recurrent_spec_without_its_trainer(tmp_path, tiny_data):
    spec = spec_of()
    with pytest.raises(ConfigError, match="trainer_cls"):
        train(load_profile(TINY_PROFILE), spec, TrainSettings.from_spec(spec), tiny_data, tmp_path / "r",
              progress=False)
    assert not (tmp_path / "r").exists()


def test_qat_epochs_train_on_quantized_weights_and_keep_budgets(tmp_path, tiny_data):
    spec = spec_of(epochs=2, qat_epochs=1)
    t = train(load_profile(TINY_PROFILE), spec, TrainSettings.from_spec(spec), tiny_data, tmp_path / "q",
              progress=False, trainer_cls=RecurrentTrainer)
    assert [h["quantization_aware"] for h in t.history] == [False, True]
    check_invariants(t.deepr, t.plan, "deepr")
    t._sync_model(8)  # the QAT forward pass: at most 2**8 distinct levels per projection
    for name in ("in_rec", "rec_rec", "rec_out"):
        assert len(np.unique(t.model.weights[name])) <= 2 ** 8


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    """A real process killed at an arbitrary point after its first checkpoint; --resume ends bit-identical."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = {**TINY, "training": {**TINY["training"], "epochs": 30}}
    path = write_spec(tmp_path, data)
    cmd = [sys.executable, "-m", "deepr_neuro.cli", "train", "--profile", TINY_PROFILE, "--model", path,
           "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (killed / "checkpoint.npz").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert (killed / "checkpoint.npz").exists()
    assert subprocess.run(cmd + ["--out", str(killed), "--resume"], capture_output=True).returncode == 0
    # the reference runs in a process of its own too: a sweep run in this process may have left
    # BLAS at one thread, and float rounding then differs from the subprocesses'
    assert subprocess.run(cmd + ["--out", str(tmp_path / "full")], capture_output=True).returncode == 0
    _, a = load_bundle(tmp_path / "full")
    _, b = load_bundle(killed)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("tamper", ["nan", "negative", "beyond adam_t", "fractional", "strings"])
def test_resume_refuses_damaged_per_connection_adam_counts(tmp_path, capsys, tamper):
    """The counts adam_per_connection keeps are whole numbers in 0..adam_t; anything else in a
    checkpoint is refused naming the array, and the checkpoint is left as it was."""
    data = {**TINY, "training": {**TINY["training"], "epochs": 3, "optimizer": "adam", "adam_per_connection": True}}
    spec = spec_of(data)
    s = TrainSettings.from_spec(spec)
    out = tmp_path / "run"
    train(load_profile(TINY_PROFILE), spec, s, load_recurrent_data(spec, s), out, progress=False,
          trainer_cls=RecurrentTrainer, stop_after_epochs=1)
    with np.load(out / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    n = arrays["l0_adam_n"]
    arrays["l0_adam_n"] = {"nan": np.full_like(n, np.nan), "negative": n - n.max() - 1,
                           "beyond adam_t": n + int(arrays["adam_t"]) + 1, "fractional": n + 0.5,
                           "strings": np.array(["x"] * len(n))}[tamper]
    np.savez(out / "checkpoint.npz", **arrays)
    before = (out / "checkpoint.npz").read_bytes()
    path = write_spec(tmp_path, data)
    capsys.readouterr()
    assert main(["train", "--profile", TINY_PROFILE, "--model", path, "--out", str(out), "--resume",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "l0_adam_n" in err[0]
    assert (out / "checkpoint.npz").read_bytes() == before
