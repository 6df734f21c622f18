"""End to end on the trained digits network: export, emulator vs Lava vs Brian2, recipes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepr_neuro.simulate.backends import get_backend
from deepr_neuro.store.bundle import load_bundle
from deepr_neuro.cli import main
from deepr_neuro.pipeline import load_integer_network, run_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tmp_path_factory.mktemp("deploy") / "digits"
    assert main(["train", "--profile", str(ROOT / "hardware_profiles/loihi.yaml"),
                 "--model", str(ROOT / "models/digits_mlp.yaml"), "--out", str(run), "--no-progress"]) == 0
    assert main(["export", str(run)]) == 0
    return run


def test_export_adds_integer_network_and_snn_block(exported):
    manifest, arrays = load_bundle(exported)
    snn = manifest["snn"]
    acc = snn["accuracy"]
    for k in ("float_test", "quantized_test", "snn_test"):
        assert 0.0 <= acc[k] <= 1.0
    assert acc["float_test"] > 0.9 and acc["snn_test"] > 0.85
    assert snn["steps_per_sample"] == 100
    assert json.loads((exported / "manifest.json").read_text())["version"] == 2
    for name in ("h1", "h2", "out"):
        q = arrays[f"proj/{name}/qweight"]
        assert q.dtype.kind == "i" and q.min() >= -256 and q.max() <= 255
        assert len(q) == len(arrays[f"proj/{name}/rows"])
        for k in ("weight_exp", "num_weight_bits"):
            assert f"proj/{name}/{k}" in arrays
        for k in ("vth", "du", "dv", "bias_exp", "bias_mant", "core"):
            assert f"pop/{name}/{k}" in arrays


@pytest.mark.lava
@pytest.mark.brian2
def test_trained_digits_network_agrees_spike_for_spike_on_20_samples(exported):
    manifest, _, net = load_integer_network(exported)
    data = run_dataset(manifest)
    x = data.x_test[:20]
    steps = 60
    ref = get_backend("emulator").run(net, x, steps, record_spikes=True)
    for name in ("lava", "brian2"):
        other = get_backend(name).run(net, x, steps, record_spikes=True)
        for layer, (a, b) in enumerate(zip(ref.spikes, other.spikes)):
            assert np.array_equal(a, b), f"{name} differs from the emulator in layer {layer}"


def test_cli_simulate_and_crosscheck_emulator_only(exported, capsys):
    assert main(["simulate", str(exported), "--backend", "emulator", "--samples", "50"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["report", str(exported)]) == 0


def test_simulate_before_export_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--profile", str(ROOT / "hardware_profiles/loihi.yaml"),
                 "--model", str(ROOT / "models/digits_mlp.yaml"), "--out", str(run), "--no-progress",
                 "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["simulate", str(run)]) == 2
    assert "export" in capsys.readouterr().err


@pytest.mark.lava
@pytest.mark.brian2
def test_digits_recipe_runs_end_to_end(tmp_path):
    env = dict(os.environ, DEEPR_NEURO=str(Path(sys.executable).parent / "deepr-neuro"),
               TRAIN_ARGS="--epochs 5 --no-progress", LAVA_SAMPLES="5", CROSSCHECK_SAMPLES="3")
    out = subprocess.run(["bash", str(ROOT / "deploy/loihi_digits.sh"), str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "integer backends agree: yes" in out.stdout
    assert "FITS" in out.stdout


@pytest.mark.slow
def test_fmnist_recipe_runs_end_to_end(tmp_path):
    env = dict(os.environ, DEEPR_NEURO=str(Path(sys.executable).parent / "deepr-neuro"),
               TRAIN_ARGS="--no-progress")
    out = subprocess.run(["bash", str(ROOT / "deploy/loihi_fmnist.sh"), str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=3000)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "integer backends agree: yes" in out.stdout
