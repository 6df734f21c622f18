"""Training loop: reproducibility, resume == uninterrupted, bundle format, CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepr_neuro.store.bundle import load_bundle
from deepr_neuro.cli import main
from deepr_neuro.training.datasets import load_dataset
from deepr_neuro.errors import BudgetError, BundleError, ConfigError
from deepr_neuro.training.model_spec import load_model_spec
from deepr_neuro.hardware.profile import load_profile
from deepr_neuro.training.trainer import TrainSettings, train

ROOT = Path(__file__).resolve().parents[1]
LOIHI = ROOT / "hardware_profiles" / "loihi.yaml"
DIGITS = ROOT / "models" / "digits_mlp.yaml"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _settings(spec, **kw):
    spec = spec.with_overrides(**kw)
    return spec, TrainSettings.from_spec(spec)


def _train(tmp, digits, name, epochs=4, **kw):
    spec, s = _settings(load_model_spec(DIGITS), epochs=epochs, **kw)
    return train(load_profile(LOIHI), spec, s, digits, tmp / name, progress=False)


def test_seed_makes_runs_reproducible(tmp_path, digits):
    a = _train(tmp_path, digits, "a", epochs=2)
    b = _train(tmp_path, digits, "b", epochs=2)
    _, xa = load_bundle(tmp_path / "a")
    _, xb = load_bundle(tmp_path / "b")
    for k in xa:
        np.testing.assert_array_equal(xa[k], xb[k])
    assert a.history[-1]["test_accuracy"] == b.history[-1]["test_accuracy"]


@pytest.mark.parametrize("method,optimizer", [("deepr", "adam"), ("deepr", "sgd"), ("global-deepr", "adam"),
                                              ("soft-deepr", "sgd"), ("prune-retrain", "adam"), ("l1", "sgd"),
                                              ("fixed-sparse", "adam")])
def test_resume_after_kill_equals_uninterrupted(tmp_path, digits, method, optimizer):
    lr = 0.003 if optimizer == "adam" else 0.05
    spec, s = _settings(load_model_spec(DIGITS), epochs=4, method=method, optimizer=optimizer, lr=lr)
    prof = load_profile(LOIHI)
    full = train(prof, spec, s, digits, tmp_path / "full", progress=False)
    # "killed" after 2 epochs: a checkpoint, no bundle yet
    part = train(prof, spec, s, digits, tmp_path / "part", progress=False, stop_after_epochs=2)
    assert part.epoch == 2 and not (tmp_path / "part" / "manifest.json").exists()
    resumed = train(prof, spec, s, digits, tmp_path / "part", progress=False, resume=True)
    assert resumed.epoch == 4
    _, a = load_bundle(tmp_path / "full")
    _, b = load_bundle(tmp_path / "part")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [h["test_accuracy"] for h in full.history] == [h["test_accuracy"] for h in resumed.history]


def test_resume_with_other_settings_is_refused(tmp_path, digits):
    spec, s = _settings(load_model_spec(DIGITS), epochs=3)
    train(load_profile(LOIHI), spec, s, digits, tmp_path / "r", progress=False, stop_after_epochs=1)
    spec2, s2 = _settings(load_model_spec(DIGITS), epochs=3, lr=0.5)
    with pytest.raises(ConfigError, match="lr"):
        train(load_profile(LOIHI), spec2, s2, digits, tmp_path / "r", progress=False, resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(load_profile(LOIHI), spec, s, digits, tmp_path / "r", progress=False)


def test_bundle_follows_format_v2(tmp_path, digits):
    tr = _train(tmp_path, digits, "b", epochs=2)
    manifest, arrays = load_bundle(tmp_path / "b")
    assert manifest["format"] == "deepr-neuro-bundle" and manifest["version"] == 2
    g = manifest["graph"]
    assert [p["name"] for p in g["populations"]] == ["input", "h1", "h2", "out"]
    assert [(q["name"], q["pre"], q["post"]) for q in g["projections"]] == \
        [("h1", "input", "h1"), ("h2", "h1", "h2"), ("out", "h2", "out")]
    assert g["readout"] == "out" and [p["role"] for p in g["populations"]] == ["input", "hidden", "hidden", "readout"]
    for key in ("profile", "model", "metrics", "training", "seed", "package_version", "git_commit", "dataset"):
        assert key in manifest
    assert len(manifest["dataset"]["sha256"]) == 64
    pops = {p["name"]: p for p in g["populations"]}
    for q in g["projections"]:
        r, c, w = (arrays[f"proj/{q['name']}/{k}"] for k in ("rows", "cols", "weight"))
        post = pops[q["post"]]
        core = arrays[f"pop/{q['post']}/core"]
        assert r.dtype == np.int32 and c.dtype == np.int32 and w.dtype == np.float32
        assert len(core) == post["size"]
        order = np.lexsort((c, r))
        assert np.array_equal(order, np.arange(len(r))), "rows/cols sorted by (row, col)"
        assert len(r) == q["budget"]
        assert np.all(w != 0)
        # per-core budgets hold in the saved network
        for cinfo in post["cores"]:
            assert int(np.sum(core[r] == cinfo["core"])) == cinfo["budget"]
    # core ids global and distinct across populations
    ids = [c["core"] for p in g["populations"] for c in p["cores"]]
    assert len(ids) == len(set(ids))


def test_train_refuses_what_does_not_fit(tmp_path, digits):
    spec = load_model_spec(DIGITS).with_overrides(epochs=1)
    tiny = load_profile(ROOT / "hardware_profiles" / "tiny_test.yaml")
    big = spec.model_copy(update={"max_neurons_per_core": 1})  # 202 neurons -> more cores than tiny has
    with pytest.raises(BudgetError, match="cores"):
        train(tiny, big, TrainSettings.from_spec(big), digits, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_train_and_report(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "--profile", str(LOIHI), "--model", str(DIGITS), "--out", str(out), "--epochs", "2",
               "--no-progress", "--seed", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "FITS" in text and "test accuracy" in text
    manifest, _ = load_bundle(out)
    assert manifest["training"]["seed"] == 3 and manifest["training"]["epochs"] == 2
    assert main(["report", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] is True and data["cores_used"] == 9


def test_cli_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "hardware_profiles" / "loihi.yaml").read_text().replace("cores: 128", "cores: 0"))
    rc = main(["train", "--profile", str(bad), "--model", str(DIGITS), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.yaml" in err and "cores" in err and "Traceback" not in err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no manifest" in capsys.readouterr().err
    rc = main(["train", "--profile", str(LOIHI), "--model", str(DIGITS), "--out", str(tmp_path / "o"),
               "--connectivity", "1.5"])
    assert rc == 2 and "connectivity" in capsys.readouterr().err


def test_report_flags_a_core_over_budget(tmp_path, digits):
    _train(tmp_path, digits, "r", epochs=1)
    manifest, arrays = load_bundle(tmp_path / "r")
    from deepr_neuro.hardware.report import core_report
    manifest["graph"]["populations"][1]["cores"][0]["capacity"] = 10  # stored capacities are never trusted
    assert core_report(manifest, arrays).fits
    manifest["profile"]["synapses_per_core"] = 10  # the limit is recomputed from the profile
    result = core_report(manifest, arrays)
    assert not result.fits and "capacity 10" in result.to_table()


def test_damaged_bundle_is_a_clear_error(tmp_path, digits):
    _train(tmp_path, digits, "d", epochs=1)
    (tmp_path / "d" / "network.npz").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="network.npz"):
        load_bundle(tmp_path / "d")


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "deepr-neuro"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "deepr-neuro" in out.stdout


@pytest.mark.parametrize("method", ["fixed-sparse", "prune-retrain", "l1"])
def test_baselines_end_exactly_on_the_per_core_budgets(tmp_path, digits, method):
    tr = _train(tmp_path, digits, method, epochs=4, method=method)
    manifest, arrays = load_bundle(tmp_path / method)
    for pop in manifest["graph"]["populations"][1:]:  # an MLP: projection i is named after its post layer
        name = pop["name"]
        core = arrays[f"pop/{name}/core"][arrays[f"proj/{name}/rows"]]
        for c in pop["cores"]:
            assert int(np.sum(core == c["core"])) == c["budget"]
        assert np.any(arrays[f"proj/{name}/weight"] < 0) and np.any(arrays[f"proj/{name}/weight"] > 0)
    assert sum(tr.history[-1]["rewired"]) == 0
    if method == "l1":
        assert "test_accuracy_before_prune" in tr.history[-1]
    if method == "prune-retrain":
        assert tr.history[2].get("pruned_before_epoch") is True  # pruned after 2 of 4 epochs
        assert tr.history[1]["active"][0] == 64 * 128  # dense phase
    assert manifest["metrics"]["test_accuracy"] > 0.5


def test_dense_baseline_uses_every_connection(tmp_path, digits):
    tr = _train(tmp_path, digits, "dense", epochs=1, method="dense")
    assert [lp.budget for lp in tr.plan.layers] == [64 * 128, 128 * 64, 64 * 10]
    spec, s = _settings(load_model_spec(DIGITS), epochs=1, method="dense")
    s.connectivity = 0.1
    with pytest.raises(ConfigError, match="dense"):
        train(load_profile(LOIHI), spec, s, digits, tmp_path / "d2", progress=False)


def test_rewiring_counts_per_step_are_saved(tmp_path, digits):
    tr = _train(tmp_path, digits, "rw", epochs=2)
    _, arrays = load_bundle(tmp_path / "rw")
    per_step = arrays["rewired_per_step"]
    steps = -(-len(digits.y_train) // tr.settings.batch_size)
    assert per_step.shape == (2 * steps,)
    assert per_step.sum() == sum(sum(h["rewired"]) for h in tr.history)


def test_quantization_aware_epochs_keep_budgets_and_match_quantized_accuracy(tmp_path, digits):
    tr = _train(tmp_path, digits, "qat", epochs=4, qat_epochs=2)
    assert [h["quantization_aware"] for h in tr.history] == [False, False, True, True]
    from deepr_neuro.training.trainer import check_invariants
    check_invariants(tr.deepr, tr.plan, "deepr")
    assert tr.history[-1]["active"] == [lp.budget for lp in tr.plan.layers]


def test_resume_accepts_a_checkpoint_from_before_a_new_setting_existed(tmp_path, digits):
    spec, s = _settings(load_model_spec(DIGITS), epochs=3)
    train(load_profile(LOIHI), spec, s, digits, tmp_path / "old", progress=False, stop_after_epochs=1)
    # rewrite the checkpoint as an older version would have: without the newest settings
    path = tmp_path / "old" / "checkpoint.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta_json"]).decode())
    for k in ("qat_epochs", "dense_lr", "l1_alpha"):
        meta["settings"].pop(k)
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    resumed = train(load_profile(LOIHI), spec, s, digits, tmp_path / "old", progress=False, resume=True)
    assert resumed.epoch == 3


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_fit(tmp_path, capsys):
    out = tmp_path / "keep"
    assert main(["train", "--profile", str(LOIHI), "--model", str(DIGITS), "--out", str(out), "--epochs", "1",
                 "--no-progress"]) == 0
    rc = main(["train", "--profile", str(ROOT / "hardware_profiles/tiny_test.yaml"),
               "--model", str(ROOT / "models/lenet300_100.yaml"), "--out", str(out), "--overwrite"])
    assert rc == 2 and "does not fit" in capsys.readouterr().err
    assert (out / "manifest.json").exists()


def test_divergence_is_flagged_in_history_manifest_and_a_warning(tmp_path, digits, capsys):
    """A learning rate far too high makes the loss NaN: the run still ends (its
    bundle says where it diverged) and the user is told to lower --lr, once."""
    t = _train(tmp_path, digits, "hot", epochs=3, lr=1e300, optimizer="sgd", method="fixed-sparse")
    first = next(h["epoch"] for h in t.history if not np.isfinite(h["train_loss"]))
    manifest, _ = load_bundle(tmp_path / "hot")
    assert manifest["metrics"]["diverged_at_epoch"] == first
    out = capsys.readouterr().out
    assert out.count("training diverged") == 1 and f"epoch {first}" in out and "lower --lr" in out
    calm = _train(tmp_path, digits, "calm", epochs=1)
    assert load_bundle(tmp_path / "calm")[0]["metrics"]["diverged_at_epoch"] is None


# Field order of TrainSettings before issue 10 (it was declared by hand then).
OLD_SETTINGS_ORDER = ("dataset", "data_dir", "epochs", "batch_size", "optimizer", "lr", "lr_decay", "alpha", "noise",
                      "method", "theta_min", "adam_beta1", "adam_beta2", "adam_eps", "val_fraction", "seed",
                      "connectivity", "weight_bits", "l1_alpha", "prune_epoch_fraction", "qat_epochs", "dense_lr")


def test_settings_are_declared_once_and_old_checkpoints_still_resume(tmp_path, digits):
    """TrainSettings = the run's fields + every TrainingSpec field (same defaults);
    DeepRConfig takes its types and defaults from TrainingSpec too; a checkpoint
    written with the old field order resumes to the uninterrupted run's arrays."""
    from dataclasses import fields

    from deepr_neuro.training.deepr import DeepRConfig
    from deepr_neuro.training.model_spec import TrainingSpec

    names = [f.name for f in fields(TrainSettings)]
    # fields added since: a checkpoint without them resumes as if they had their defaults
    assert set(names) == set(OLD_SETTINGS_ORDER) | {"adam_per_connection"}
    assert set(TrainingSpec.model_fields) <= set(names)
    for f in fields(DeepRConfig):
        assert f.default == TrainingSpec.model_fields[f.name].default
    spec, s = _settings(load_model_spec(DIGITS), epochs=3, method="soft-deepr")
    full = train(load_profile(LOIHI), spec, s, digits, tmp_path / "full", progress=False)
    train(load_profile(LOIHI), spec, s, digits, tmp_path / "old", progress=False, stop_after_epochs=1)
    path = tmp_path / "old" / "checkpoint.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta_json"]).decode())
    meta["settings"] = {k: meta["settings"][k] for k in OLD_SETTINGS_ORDER}
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    resumed = train(load_profile(LOIHI), spec, s, digits, tmp_path / "old", progress=False, resume=True)
    a, b = full.network_arrays(), resumed.network_arrays()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_projection_slices_of_an_mlp_are_its_layers(tmp_path, digits):
    """One projection into each layer: its slice is the whole layer, as exported."""
    tr = _train(tmp_path, digits, "p", epochs=1)
    arrays = tr.network_arrays()
    projections = tr.projection_arrays()
    assert list(projections) == [lp.name for lp in tr.plan.layers]
    for i, (name, p) in enumerate(projections.items()):
        assert p["post"] == name and p["pre"] == (tr.plan.graph.populations[i].name)
        for key, arr in (("rows", "l{}_rows"), ("cols", "l{}_cols"), ("weight", "l{}_weight")):
            np.testing.assert_array_equal(p[key], arrays[arr.format(i)])
