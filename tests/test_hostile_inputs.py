"""Hostile inputs (issue 9): every profile, model spec, data file and flag is
checked; a refusal is one ``error:`` line naming the file and the field, exit 2,
no traceback, and fast; a diverging run finishes with its bundle flagged.

Each CLI case runs through ``deepr_neuro.cli.main``. Bombs (YAML aliases, gzip)
are real files made in tmp_path, small on disk, with a time bound.
"""
import gzip
import json
import math
import re
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepr_neuro.hardware import mapping
from deepr_neuro.cli import main
from deepr_neuro.training.datasets import MAX_IDX_PAYLOAD_BYTES, read_idx
from deepr_neuro.errors import BudgetError, ConfigError, DataError, DeeprError, InvariantError
from deepr_neuro.training.model_spec import (MAX_ADAM_EPS, MAX_BATCH_SIZE, MAX_EPOCHS, MAX_L1, MAX_SEED, ModelSpec,
                                    load_model_spec)
from deepr_neuro.hardware.profile import MAX_CORES, MAX_NEURONS_PER_CORE, HardwareProfile, load_profile
from deepr_neuro.hardware.yaml_io import MAX_YAML_NODES
from deepr_neuro.training.rewiring import CoreSpec, dead_slots, init_layer, rewire_deepr

ROOT = Path(__file__).resolve().parents[1]
LOIHI = ROOT / "hardware_profiles" / "loihi.yaml"
TINY = ROOT / "hardware_profiles" / "tiny_test.yaml"
DIGITS = ROOT / "models" / "digits_mlp.yaml"
LENET = ROOT / "models" / "lenet300_100.yaml"
LOIHI_TEXT = LOIHI.read_text()
DIGITS_TEXT = DIGITS.read_text()
FAST = 5.0  # seconds a refusal may take, bombs included


def _sub(text: str, key: str, value: str) -> str:
    """Replace the first ``key: ...`` line of a YAML text (indentation kept)."""
    out, n = re.subn(rf"^(\s*){re.escape(key)}:.*$", rf"\g<1>{key}: {value}", text, count=1, flags=re.M)
    assert n == 1, key
    return out


def _without_folded_description(text: str) -> str:
    """The shipped files write ``description: >-`` over several lines; make it one line."""
    return re.sub(r"^description: >-.*\n(  .*\n)+", "description: x\n", text, flags=re.M)


BOMB = ('lol0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
        + "".join(f"lol{i + 1}: &a{i + 1} [" + ", ".join([f"*a{i}"] * 9) + "]\n" for i in range(8)))


def _cli(argv, capsys):
    t0 = time.perf_counter()
    rc = main([str(a) for a in argv])
    seconds = time.perf_counter() - t0
    cap = capsys.readouterr()
    return rc, cap.out, cap.err, seconds


def _assert_refused(rc, err, seconds, *needles):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert sum(ln.startswith("error:") for ln in lines) == 1 and lines[0].startswith("error:"), err
    assert len(lines[0]) < 1200, "an echoed value was not cut"
    for needle in needles:
        assert needle in err, (needle, err)
    assert seconds < FAST, f"refusal took {seconds:.1f} s"


def _train_argv(tmp_path, profile=LOIHI, model=DIGITS, *extra):
    return ["train", "--profile", profile, "--model", model, "--out", tmp_path / "run", "--epochs", "1",
            "--no-progress", *extra]


# ---------------------------------------------------------------- profiles
PROFILE_CASES = {
    # name: (profile text, field or words the error must name)
    "duplicate top-level key": (LOIHI_TEXT + "cores: 64\n", "duplicate key 'cores'"),
    "duplicate nested key": (LOIHI_TEXT.replace("  word_bits: 64", "  word_bits: 64\n  word_bits: 32"),
                             "duplicate key 'word_bits'"),
    "cores 10**30": (_sub(LOIHI_TEXT, "cores", str(10 ** 30)), "field 'cores': must be <= 1048576"),
    "cores 2**20 + 1": (_sub(LOIHI_TEXT, "cores", str(2 ** 20 + 1)), "field 'cores'"),
    "cores inf": (_sub(LOIHI_TEXT, "cores", ".inf"), "field 'cores'"),
    "cores nan": (_sub(LOIHI_TEXT, "cores", ".nan"), "field 'cores'"),
    "cores bool": (_sub(LOIHI_TEXT, "cores", "true"), "field 'cores'"),
    "cores negative": (_sub(LOIHI_TEXT, "cores", "-5"), "field 'cores'"),
    "neurons per core 2**21": (_sub(LOIHI_TEXT, "neurons_per_core", str(2 ** 21)), "field 'neurons_per_core'"),
    "axons 10**12": (_sub(LOIHI_TEXT, "input_axons_per_core", str(10 ** 12)), "field 'input_axons_per_core'"),
    "out axons 10**12": (_sub(LOIHI_TEXT, "output_axons_per_core", str(10 ** 12)), "field 'output_axons_per_core'"),
    "synapses per core 10**30": (LOIHI_TEXT + f"synapses_per_core: {10 ** 30}\n", "field 'synapses_per_core'"),
    "memory bits 10**30": (_sub(LOIHI_TEXT, "synapse_memory_bits_per_core", str(10 ** 30)),
                           "field 'synapse_memory_bits_per_core'"),
    "chunk 10**9": (_sub(LOIHI_TEXT, "chunk_max_synapses", str(10 ** 9)), "field 'synapse_memory.chunk_max_synapses'"),
    "word bits 10**9": (_sub(LOIHI_TEXT, "word_bits", str(10 ** 9)), "field 'synapse_memory.word_bits'"),
    "header bits 10**9": (_sub(LOIHI_TEXT, "chunk_header_bits", str(10 ** 9)), "field 'synapse_memory.chunk_header_bits'"),
    "index width 10**6": (_sub(LOIHI_TEXT, "index_bits_allowed", "[0, 1000000]"),
                          "field 'synapse_memory.index_bits_allowed'"),
    "weight exponent 10**6": (_sub(LOIHI_TEXT, "weight_exp_max", str(10 ** 6)), "field 'weight_exp_max'"),
    "weight bits 10**30": (_sub(LOIHI_TEXT, "weight_bits", str(10 ** 30)), "weight_bits"),
    "chip synapses 10**30": (_sub(LOIHI_TEXT, "synapses", str(10 ** 30)), "field 'chip.synapses'"),
    "alias bomb in description": (BOMB + _sub(_without_folded_description(LOIHI_TEXT), "description", "*a8"),
                                  "alias"),
    "alias bomb in name": (BOMB + _sub(LOIHI_TEXT, "name", "*a8"), "alias"),
    "too many aliases": ("x: &x 1\n" + "".join(f"y{i}: *x\n" for i in range(150)) + LOIHI_TEXT,
                         "more than 100 alias references"),
    "recursive alias": (_sub(_without_folded_description(LOIHI_TEXT), "description", "&r [*r]"), "alias"),
    "long string echoed": (_sub(LOIHI_TEXT, "cores", "'" + "9" * 100_000 + "'"), "field 'cores'"),
    "huge unknown key": (LOIHI_TEXT + "? " + "k" * 50_000 + "\n: 1\n", "unknown key"),
    "integer of 5000 digits": (_sub(LOIHI_TEXT, "cores", "9" * 5000), "cannot be read"),
    "nesting 20000 deep": ("x: " + "[" * 20000 + "]" * 20000 + "\n" + LOIHI_TEXT, "hostile.yaml"),
    "empty file": ("", "must be a YAML mapping"),
    "a list": ("- 1\n- 2\n", "must be a YAML mapping"),
    "not YAML": ("cores: [1, 2\n", "not valid YAML"),
    "two documents": (LOIHI_TEXT + "---\n" + LOIHI_TEXT, "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_hostile_profile_is_refused(tmp_path, capsys, case):
    text, needle = PROFILE_CASES[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    rc, _, err, seconds = _cli(_train_argv(tmp_path, path), capsys)
    _assert_refused(rc, err, seconds, str(path), needle)
    with pytest.raises(ConfigError):
        load_profile(path)


# ---------------------------------------------------------------- model specs
MODEL_CASES = {
    "duplicate training key": (DIGITS_TEXT.replace("  epochs: 30", "  epochs: 30\n  epochs: 2"),
                               "duplicate key 'epochs'"),
    "duplicate layer key": (DIGITS_TEXT.replace("    size: 128", "    size: 128\n    size: 64"), "duplicate key 'size'"),
    "layer of 10**8 neurons": (DIGITS_TEXT.replace("size: 128", "size: 100000000"), "field 'layers[0].size'"),
    "potential connections over the bound": (DIGITS_TEXT.replace("size: 128", "size: 10000000"),
                                             "field 'layers[1].size'"),
    "input size 10**30": (_sub(DIGITS_TEXT, "input_size", str(10 ** 30)), "field 'input_size'"),
    "102 layers": (DIGITS_TEXT.replace("  - name: out", "".join(f"  - {{name: x{i}, size: 10, connectivity: 1.0}}\n"
                                                              for i in range(99)) + "  - name: out"),
                   "field 'layers'"),
    "epochs 10**9": (_sub(DIGITS_TEXT, "epochs", str(10 ** 9)), "field 'training.epochs'"),
    "batch size 10**9": (_sub(DIGITS_TEXT, "batch_size", str(10 ** 9)), "field 'training.batch_size'"),
    "seed 2**32": (_sub(DIGITS_TEXT, "seed", str(2 ** 32)), "field 'training.seed'"),
    "seed -1": (_sub(DIGITS_TEXT, "seed", "-1"), "field 'training.seed'"),
    "adam_eps inf": (_sub(DIGITS_TEXT, "adam_eps", ".inf"), "field 'training.adam_eps': must be a finite number"),
    "adam_eps 10": (_sub(DIGITS_TEXT, "adam_eps", "10.0"), "field 'training.adam_eps'"),
    "lr nan": (_sub(DIGITS_TEXT, "lr", ".nan"), "field 'training.lr'"),
    "lr 1e400 (inf)": (_sub(DIGITS_TEXT, "lr", "1e400"), "field 'training.lr'"),
    "lr as text inf": (_sub(DIGITS_TEXT, "lr", "'inf'"), "field 'training.lr'"),
    "alpha -1": (_sub(DIGITS_TEXT, "alpha", "-1.0"), "field 'training.alpha'"),
    "alpha inf": (_sub(DIGITS_TEXT, "alpha", ".inf"), "field 'training.alpha'"),
    "noise inf": (_sub(DIGITS_TEXT, "noise", ".inf"), "field 'training.noise'"),
    "theta_min -inf": (_sub(DIGITS_TEXT, "theta_min", "-.inf"), "field 'training.theta_min'"),
    "max neurons per core 10**30": (_sub(DIGITS_TEXT, "max_neurons_per_core", str(10 ** 30)),
                                    "field 'max_neurons_per_core'"),
    "connectivity nan": (DIGITS_TEXT.replace("connectivity: 0.15", "connectivity: .nan", 1),
                         "field 'layers[0].connectivity'"),
    "connectivity 1e400": (DIGITS_TEXT.replace("connectivity: 0.15", "connectivity: 1e400", 1),
                           "field 'layers[0].connectivity'"),
    "alias bomb in description": (BOMB + _sub(_without_folded_description(DIGITS_TEXT), "description", "*a8"),
                                  "alias"),
    "output layer smaller than the classes": (DIGITS_TEXT.replace("size: 10 ", "size: 5 "),
                                              "field 'layers[2].size'"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_hostile_model_spec_is_refused(tmp_path, capsys, case):
    text, needle = MODEL_CASES[case]
    path = tmp_path / "hostile_model.yaml"
    path.write_text(text)
    rc, _, err, seconds = _cli(_train_argv(tmp_path, LOIHI, path), capsys)
    _assert_refused(rc, err, seconds, str(path), needle)
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_layer_within_spec_bounds_but_beyond_the_chip_is_refused_before_mapping(tmp_path, capsys):
    """10^7 neurons pass the spec's bound; the mapper counts cores first (not per core)."""
    path = tmp_path / "wide.yaml"
    path.write_text(DIGITS_TEXT.replace("size: 128", "size: 10000000").replace("    size: 64 ", "    size: 8 ")
                    .replace("connectivity: 0.15", "connectivity: 0.0001", 1))
    rc, _, err, seconds = _cli(_train_argv(tmp_path, LOIHI, path), capsys)
    assert rc == 2 and "Traceback" not in err and seconds < FAST
    assert "neurons alone need" in err and "loihi.yaml: cores" in err and "layer 'h1': 10000000 neurons" in err


def test_model_that_does_not_match_the_data_is_refused_before_training(tmp_path, capsys):
    rc, _, err, seconds = _cli(_train_argv(tmp_path, LOIHI, LENET, "--dataset", "digits"), capsys)
    _assert_refused(rc, err, seconds, str(LENET), "field 'input_size'", "784 inputs", "'digits'", "64 features")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


# ---------------------------------------------------------------- flags
FLAG_CASES = [
    ("--lr", "inf", "field 'training.lr'"), ("--lr", "nan", "field 'training.lr'"),
    ("--lr", "-1", "field 'training.lr'"), ("--lr", "0", "field 'training.lr'"),
    ("--lr", "1e400", "field 'training.lr'"),
    ("--alpha", "inf", "field 'training.alpha'"), ("--alpha", "-1", "field 'training.alpha'"),
    ("--alpha", "nan", "field 'training.alpha'"), ("--alpha", "2", "field 'training.alpha'"),
    ("--noise", "inf", "field 'training.noise'"), ("--noise", "-1e-5", "field 'training.noise'"),
    ("--noise", "nan", "field 'training.noise'"), ("--noise", "1e400", "field 'training.noise'"),
    ("--seed", str(2 ** 32), "field 'training.seed'"), ("--seed", "-1", "field 'training.seed'"),
    ("--seed", str(10 ** 30), "field 'training.seed'"),
    ("--epochs", "0", "field 'training.epochs'"), ("--epochs", str(10 ** 9), "field 'training.epochs'"),
    ("--batch-size", "0", "field 'training.batch_size'"), ("--batch-size", str(10 ** 12), "field 'training.batch_size'"),
    ("--lr-decay", "inf", "field 'training.lr_decay'"), ("--lr-decay", "nan", "field 'training.lr_decay'"),
    ("--lr-decay", "0", "field 'training.lr_decay'"), ("--lr-decay", "1.5", "field 'training.lr_decay'"),
    ("--theta-min", "-inf", "field 'training.theta_min'"), ("--theta-min", "nan", "field 'training.theta_min'"),
    ("--val-fraction", "nan", "field 'training.val_fraction'"), ("--val-fraction", "1", "field 'training.val_fraction'"),
    ("--dense-lr", "inf", "field 'training.dense_lr'"), ("--l1-alpha", "inf", "field 'training.l1_alpha'"),
    ("--prune-epoch-fraction", "nan", "field 'training.prune_epoch_fraction'"),
    ("--qat-epochs", "-1", "field 'training.qat_epochs'"),
    ("--connectivity", "inf", "--connectivity"), ("--connectivity", "nan", "--connectivity"),
    ("--connectivity", "0", "--connectivity"), ("--connectivity", "-0.5", "--connectivity"),
    ("--weight-bits", "7", "weight_bits_allowed"), ("--weight-bits", str(10 ** 30), "weight_bits_allowed"),
    ("--data-dir", "/tmp", "--data-dir"),
]


@pytest.mark.parametrize("flag,value,needle", FLAG_CASES)
def test_hostile_flag_is_refused(tmp_path, capsys, flag, value, needle):
    rc, _, err, seconds = _cli(_train_argv(tmp_path, LOIHI, DIGITS, f"{flag}={value}"), capsys)
    _assert_refused(rc, err, seconds, needle)
    if needle.startswith("field"):
        assert f"[set by {flag}]" in err and str(DIGITS) in err


# ---------------------------------------------------------------- unreadable files
def _unreadable(tmp_path, kind):
    if kind == "directory":
        d = tmp_path / "adir.yaml"
        d.mkdir()
        return d, "directory"
    if kind == "missing":
        return tmp_path / "nope.yaml", "not found"
    if kind == "under a file":
        f = tmp_path / "afile"
        f.write_text("x")
        return f / "p.yaml", "not found"
    if kind == "binary":
        f = tmp_path / "bin.yaml"
        f.write_bytes(b"\xff\xfe\x00\x81" * 64)
        return f, "UTF-8"
    if kind == "over 1 MiB":
        f = tmp_path / "big.yaml"
        f.write_text(LOIHI_TEXT + "#" + "x" * (1 << 20) + "\n")
        return f, "larger than"
    if kind == "fifo":
        import os
        f = tmp_path / "fifo.yaml"
        os.mkfifo(f)
        return f, "not a regular file"
    if kind == "socket":
        f = tmp_path / "s.yaml"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(f))
        return f, "not a regular file"
    raise AssertionError(kind)


@pytest.mark.parametrize("which", ["profile", "model"])
@pytest.mark.parametrize("kind", ["directory", "missing", "under a file", "binary", "over 1 MiB", "fifo", "socket"])
def test_unreadable_input_file_is_refused(tmp_path, capsys, which, kind):
    path, needle = _unreadable(tmp_path, kind)
    argv = _train_argv(tmp_path, path, DIGITS) if which == "profile" else _train_argv(tmp_path, LOIHI, path)
    rc, _, err, seconds = _cli(argv, capsys)
    _assert_refused(rc, err, seconds, str(path), needle)


def test_permission_denied_is_a_clean_error(tmp_path):
    """As root every file is readable: then the check runs in a child as 'nobody'."""
    import os
    import subprocess
    import sys

    f = tmp_path / "secret.yaml"
    f.write_text(LOIHI_TEXT)
    f.chmod(0)
    code = ("import sys\nfrom deepr_neuro.hardware.profile import load_profile\nfrom deepr_neuro.errors import ConfigError\n"
            f"try:\n    load_profile({str(f)!r})\nexcept ConfigError as e:\n    print('REFUSED', e); sys.exit(0)\n"
            "print('READ'); sys.exit(1)\n")
    kw = {}
    if os.geteuid() == 0:
        tmp_path.chmod(0o755)
        kw["user"] = 65534
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           cwd="/", env={**os.environ, "PYTHONPATH": str(ROOT)}, **kw)
    except (PermissionError, OSError) as exc:  # pragma: no cover - no such user on this machine
        pytest.skip(f"cannot run as another user: {exc}")
    if "ModuleNotFoundError" in r.stderr or "PermissionError: [Errno 13] Permission denied: '/" in r.stderr:
        pytest.skip("the child cannot import the package as 'nobody'")  # pragma: no cover
    assert r.returncode == 0, r.stdout + r.stderr
    assert "REFUSED" in r.stdout and "cannot read" in r.stdout and str(f) in r.stdout


# ---------------------------------------------------------------- IDX data
def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.astype(">u1").tobytes()


def _mnist_dir(tmp_path, side=28, n_train=40, n_test=20) -> Path:
    d = tmp_path / "mnist"
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("t10k", n_test)):
        (d / f"{name}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx(rng.integers(0, 256, (n, side, side)).astype(np.uint8))))
        (d / f"{name}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.arange(n, dtype=np.uint8) % 10)))
    return d


def _gzip_bomb(path: Path, header: bytes, gigabytes: float) -> None:
    """The IDX header, then ``gigabytes`` of zeros: gzip members concatenated
    (a reader inflates them all), a few MB on disk."""
    block = gzip.compress(bytes(1 << 24), compresslevel=9)  # 16 MiB of zeros -> ~16 kB
    with open(path, "wb") as f:
        f.write(gzip.compress(header))
        for _ in range(int(gigabytes * 64)):
            f.write(block)


@pytest.mark.parametrize("declared", ["mnist-sized", "huge"])
def test_gzip_bomb_idx_is_refused_fast_without_inflating_it(tmp_path, capsys, declared):
    d = _mnist_dir(tmp_path)
    dims = (60000, 28, 28) if declared == "mnist-sized" else (2 ** 31, 28, 28)
    bomb = d / "train-images-idx3-ubyte.gz"
    _gzip_bomb(bomb, bytes([0, 0, 8, 3]) + struct.pack(">III", *dims), gigabytes=6)
    assert bomb.stat().st_size < 10 << 20
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="trailing bytes" if declared == "mnist-sized" else "above the limit") as ei:
        read_idx(bomb)
    assert time.perf_counter() - t0 < FAST and str(bomb) in str(ei.value)
    rc, _, err, seconds = _cli(_train_argv(tmp_path, LOIHI, LENET, "--dataset", "mnist", "--data-dir", d), capsys)
    _assert_refused(rc, err, seconds, str(bomb))


def test_idx_header_over_the_size_limit_is_refused_before_reading(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(bytes([0, 0, 0x0E, 2]) + struct.pack(">II", 2 ** 20, 2 ** 10))  # 8 GiB of float64 declared
    with pytest.raises(DataError, match=str(MAX_IDX_PAYLOAD_BYTES)):
        read_idx(p)


def test_idx_28x28_images_with_an_8x8_model_is_one_clean_error(tmp_path, capsys):
    d = _mnist_dir(tmp_path)
    rc, _, err, seconds = _cli(_train_argv(tmp_path, LOIHI, DIGITS, "--dataset", "mnist", "--data-dir", d), capsys)
    _assert_refused(rc, err, seconds, str(DIGITS), "field 'input_size'", "'mnist'", "784 features", "28x28")


@pytest.mark.parametrize("kind", ["data dir is a file", "image file is a directory", "image file is a fifo"])
def test_unreadable_data_is_refused(tmp_path, capsys, kind):
    import os

    d = _mnist_dir(tmp_path)
    target = d / "train-images-idx3-ubyte.gz"
    if kind == "data dir is a file":
        d = target
    elif kind == "image file is a directory":
        target.unlink()
        target.mkdir()
    else:
        target.unlink()
        os.mkfifo(target)
    rc, _, err, seconds = _cli(_train_argv(tmp_path, LOIHI, LENET, "--dataset", "mnist", "--data-dir", d), capsys)
    _assert_refused(rc, err, seconds, "train-images" if kind != "data dir is a file" else str(d))


def test_idx_set_that_matches_the_model_trains(tmp_path, capsys):
    """The accepted side of the IDX checks: a small, valid 28x28 set trains LeNet."""
    d = _mnist_dir(tmp_path)
    rc, out, err, _ = _cli(_train_argv(tmp_path, LOIHI, LENET, "--dataset", "mnist", "--data-dir", d), capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["dataset"]["name"] == "mnist"


# ---------------------------------------------------------------- divergence
DIVERGING = [
    ["--lr", "1e300"], ["--lr", "1e300", "--optimizer", "sgd"], ["--lr", "10", "--optimizer", "sgd"],
    ["--noise", "1e300"], ["--lr", "1e300", "--method", "soft-deepr"], ["--noise", "1e300", "--method", "soft-deepr"],
    ["--lr", "1e300", "--method", "global-deepr"], ["--lr", "1e300", "--method", "fixed-sparse"],
    ["--lr", "1e300", "--method", "dense", "--dense-lr", "1e300"],
]


@pytest.mark.parametrize("extra", DIVERGING, ids=lambda e: " ".join(e))
def test_diverging_run_finishes_with_a_flagged_bundle(tmp_path, capsys, extra):
    rc, out, err, _ = _cli(_train_argv(tmp_path, LOIHI, DIGITS, *extra, "--epochs", "2"), capsys)
    assert rc == 0, err
    assert "Traceback" not in err and "RuntimeWarning" not in err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["metrics"]["diverged_at_epoch"] in (1, 2)
    assert "training diverged" in out
    method = manifest["training"]["method"]
    if method in ("deepr", "soft-deepr", "global-deepr"):
        # non-finite thetas were dead: the exported weights are finite, the budgets exact
        with np.load(tmp_path / "run" / "network.npz") as z:
            for key in z.files:
                if key.endswith("_weight"):
                    assert np.isfinite(z[key]).all(), key
        g = manifest["graph"]
        for pop in g["populations"][1:]:
            with np.load(tmp_path / "run" / "network.npz") as z:
                core = z[f"pop/{pop['name']}/core"][z[f"proj/{pop['name']}/rows"]]
            counts = [int(np.count_nonzero(core == c["core"])) for c in pop["cores"]]
            for n, c in zip(counts, pop["cores"]):
                assert n <= c["capacity"]
                if method == "deepr":
                    assert n == c["budget"]
                elif method == "soft-deepr":
                    assert n <= c["budget"]
        if method == "global-deepr":  # the network's total is exact
            with np.load(tmp_path / "run" / "network.npz") as z:
                total = sum(len(z[f"proj/{q['name']}/rows"]) for q in g["projections"])
            assert total == sum(q["budget"] for q in g["projections"])


def test_a_diverging_sweep_cell_completes(tmp_path, capsys):
    """A sweep cell that diverges is a result (flagged), not a failure retried forever."""
    rc, out, err, _ = _cli(["sweep", "--profile", LOIHI, "--model", DIGITS, "--out", tmp_path / "sw",
                            "--connectivity", "0.1", "--epochs", "1", "--lr", "1e300", "--workers", "1",
                            "--no-progress"], capsys)
    assert rc == 0, err
    assert "0 failed" in out and "diverged" in out


# ---------------------------------------------------------------- invariants
def _layer(rng, n_in=20, n_out=12, budgets=(30, 25, 20), axon_limit=64):
    cores, start = [], 0
    for b, n in zip(budgets, (4, 4, 4)):
        cores.append(CoreSpec(start, start + n, b, 10 ** 6, axon_limit))
        start += n
    return init_layer(rng, n_in, n_out, cores)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1),
       bad=st.lists(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e308]), max_size=40),
       axon_limit=st.sampled_from([3, 8, 64]))
def test_rewiring_keeps_budgets_exact_when_thetas_are_not_finite(seed, bad, axon_limit):
    rng = np.random.default_rng(seed)
    layer = _layer(rng, axon_limit=axon_limit, budgets=(10, 8, 6))
    idx = rng.choice(len(layer.theta), size=min(len(bad), len(layer.theta)), replace=False)
    layer.theta[idx] = bad[:len(idx)]
    rewire_deepr(rng, layer)
    assert np.all(np.isfinite(layer.theta)) and np.all(layer.theta > 0)
    assert layer.core_counts().tolist() == [10, 8, 6]
    assert (layer.core_axons() <= axon_limit).all()
    assert len(np.unique(layer.keys())) == len(layer.keys())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=True, max_value=3.4028234663852886e38), max_size=50))
def test_dead_slots_equals_theta_le_zero_for_usable_thetas(values):
    """So a normal run's rewiring draws exactly the random numbers it drew before."""
    theta = np.array(values, dtype=np.float64)
    assert np.array_equal(dead_slots(theta), np.flatnonzero(theta <= 0))


def test_invariant_break_is_the_toolkits_error_naming_layer_core_count_and_budget(tmp_path):
    from deepr_neuro.training.datasets import load_dataset
    from deepr_neuro.training.trainer import TrainSettings, Trainer, check_invariants

    spec = load_model_spec(DIGITS).with_overrides(epochs=1)
    tr = Trainer(load_profile(LOIHI), spec, TrainSettings.from_spec(spec), load_dataset("digits"), tmp_path / "r")
    check_invariants(tr.deepr, tr.plan, "deepr")
    tr.deepr.layers[0].theta[:5] = -1.0  # five dead connections not refilled
    with pytest.raises(InvariantError, match=r"layer 'h1' core \d+: \d+ synapses != budget \d+") as ei:
        check_invariants(tr.deepr, tr.plan, "deepr")
    assert isinstance(ei.value, DeeprError) and isinstance(ei.value, RuntimeError)
    tr.deepr.layers[0].theta[:5] = 1.0
    tr.plan.layers[0].cores[0] = type(tr.plan.layers[0].cores[0])(
        **{**tr.plan.layers[0].cores[0].__dict__, "capacity": 1})
    with pytest.raises(InvariantError, match=r"synapses > capacity 1 \(loihi.yaml: synapse memory"):
        check_invariants(tr.deepr, tr.plan, "soft-deepr")


# ---------------------------------------------------------------- property tests
_HOSTILE_VALUES = st.one_of(
    st.integers(min_value=-(10 ** 40), max_value=10 ** 40),
    st.sampled_from([0, -1, 2 ** 20, 2 ** 20 + 1, 2 ** 31, 2 ** 63, 10 ** 30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.booleans(), st.none(),
    st.lists(st.integers(-5, 10 ** 9), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _profile_paths(data, prefix=()):
    out = []
    for k, v in data.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out += _profile_paths(v, prefix + (k,))
    return out


LOIHI_DICT = yaml.safe_load(LOIHI_TEXT)
PROFILE_PATHS = _profile_paths(LOIHI_DICT)


def _check_loaded_profile(p: HardwareProfile) -> None:
    assert 1 <= p.cores <= MAX_CORES and 1 <= p.neurons_per_core <= MAX_NEURONS_PER_CORE
    assert p.weight_bits in p.weight_bits_allowed
    cap = p.synapse_capacity()
    assert 0 <= cap <= p.input_axons_per_core * p.neurons_per_core


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.sampled_from(PROFILE_PATHS),
                                    st.sampled_from(["set", "delete", "add"]), _HOSTILE_VALUES),
                          min_size=1, max_size=3))
def test_mutated_profile_is_refused_cleanly_or_valid(tmp_path, mutations):
    import copy

    data = copy.deepcopy(LOIHI_DICT)
    for path, op, value in mutations:
        node = data
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
        else:
            if op == "set":
                node[path[-1]] = value
            elif op == "delete":
                node.pop(path[-1], None)
            else:
                node[f"{path[-1]}_extra"] = value
    f = tmp_path / "mutated.yaml"
    f.write_text(yaml.safe_dump(data))
    t0 = time.perf_counter()
    try:
        p = load_profile(f)
    except ConfigError as e:
        msg = str(e)
        assert msg.startswith(str(f)) and len(msg) < 4000
    else:
        _check_loaded_profile(p)
    assert time.perf_counter() - t0 < FAST


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(0, len(LOIHI_TEXT) - 1), cut=st.integers(0, 20),
       insert=st.text(alphabet="&*:-[]{}!'\"\n #0123456789abcx.,|>", max_size=20))
def test_text_mutated_profile_is_refused_cleanly_or_valid(tmp_path, pos, cut, insert):
    f = tmp_path / "t.yaml"
    f.write_text(LOIHI_TEXT[:pos] + insert + LOIHI_TEXT[pos + cut:])
    try:
        p = load_profile(f)
    except ConfigError as e:
        assert str(f) in str(e)
    else:
        _check_loaded_profile(p)


_SETTING_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                            st.sampled_from([0.0, -0.0, 1e-320, 1e300, -1e300, 1.0, 2.0]))
FLOAT_FIELDS = ["lr", "lr_decay", "alpha", "noise", "adam_eps", "adam_beta1", "adam_beta2", "val_fraction",
                "theta_min", "dense_lr", "l1_alpha", "prune_epoch_fraction"]
INT_FIELDS = ["epochs", "batch_size", "seed", "qat_epochs"]


@settings(max_examples=200, deadline=None)
@given(floats=st.dictionaries(st.sampled_from(FLOAT_FIELDS), _SETTING_FLOATS, max_size=4),
       ints=st.dictionaries(st.sampled_from(INT_FIELDS), st.integers(-(10 ** 20), 10 ** 20), max_size=2))
def test_training_settings_are_finite_and_bounded_or_refused(floats, ints):
    spec = load_model_spec(DIGITS)
    try:
        s = spec.with_overrides(**floats, **ints).training
    except ConfigError as e:
        bad = sorted({*floats, *ints})
        assert any(f"training.{k}" in str(e) for k in bad), str(e)
        return
    for k in FLOAT_FIELDS:
        v = getattr(s, k)
        assert v is None or math.isfinite(v)
    assert s.lr > 0 and s.noise >= 0 and 0 <= s.alpha <= MAX_L1 and 0 < s.adam_eps <= MAX_ADAM_EPS
    assert 0 <= s.seed <= MAX_SEED and 1 <= s.epochs <= MAX_EPOCHS and 1 <= s.batch_size <= MAX_BATCH_SIZE


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 400), min_size=1, max_size=4), n_in=st.integers(1, 300),
       p=st.floats(0.001, 1.0), npc=st.integers(1, 128), cores=st.integers(1, 64),
       cap=st.integers(1, 5000), axons=st.integers(1, 300))
def test_mapper_shortcut_gives_the_plan_of_the_plain_loop(monkeypatch, sizes, n_in, p, npc, cores, cap, axons):
    """The O(1) skip over core counts that cannot fit never changes a plan (or an error)."""
    budgets = [max(1, min(a * b, round(p * a * b))) for a, b in zip([n_in] + sizes, sizes)]
    names = [f"l{i}" for i in range(len(sizes))]

    def capacity(n, n_in_):
        return min(cap + 3 * n, n * min(n_in_, axons))

    def plan():
        try:
            r = mapping.plan_network(n_in, sizes, names, budgets, neurons_per_core=npc, cores=cores,
                                     synapse_capacity=capacity, axon_limit=axons)
            return [(c.core_id, c.post_start, c.post_stop, c.budget, c.capacity) for c in r.all_cores]
        except BudgetError as e:
            return "fail", "neurons alone" in str(e)

    fast = plan()
    with monkeypatch.context() as m:
        m.setattr(mapping, "_first_feasible_cores", lambda k, n_out, n_in_, start, stop, cap_of: start)
        plain = plan()
    assert (fast == plain) or (fast[0] == "fail" and plain[0] == "fail")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 10 ** 7), min_size=1, max_size=3), input_size=st.integers(1, 10 ** 7))
def test_any_layer_sizes_are_mapped_or_refused_fast(sizes, input_size):
    layers = [{"name": f"l{i}", "size": s, "connectivity": 0.001} for i, s in enumerate(sizes)]
    t0 = time.perf_counter()
    try:
        spec = ModelSpec.from_dict({"name": "m", "input_size": input_size, "layers": layers}, "gen.yaml")
        from deepr_neuro.training.trainer import TrainSettings, build_plan
        build_plan(load_profile(LOIHI), spec, TrainSettings.from_spec(spec))
    except (ConfigError, BudgetError):
        pass
    assert time.perf_counter() - t0 < FAST


def test_alias_expansion_limit_is_about_nodes_not_a_fixed_small_depth(tmp_path):
    """Anchors used sparingly (a shared training block) still load; a bomb does not."""
    ok = DIGITS_TEXT.replace("training:", "training: &t").replace("name: digits_mlp", "name: digits_mlp")
    f = tmp_path / "a.yaml"
    f.write_text(ok)
    assert load_model_spec(f).training.epochs == 30
    lines = ["x0: &x0 [1, 2]"] + [f"x{i}: &x{i} [*x{i - 1}, *x{i - 1}]" for i in range(1, 18)]
    f.write_text("\n".join(lines) + "\n" + LOIHI_TEXT)
    with pytest.raises(ConfigError, match=f"more than {MAX_YAML_NODES} values"):
        load_profile(f)


def test_rewiring_that_cannot_keep_a_budget_raises_the_toolkits_error():
    from deepr_neuro.training.rewiring import rewire_global, sample_dormant

    core = CoreSpec(0, 2, 6, 6, 64)
    with pytest.raises(InvariantError, match=r"post-neurons 0\.\.1: 0 dormant connections left, 1 needed"):
        sample_dormant(np.random.default_rng(0), 3, core, np.arange(6), 1)
    rng = np.random.default_rng(0)
    layer = init_layer(rng, 3, 2, [CoreSpec(0, 2, 6, 4, 64)])  # capacity below the live count
    layer.theta[0] = -1.0
    with pytest.raises(InvariantError, match="no core has room") as ei:
        rewire_global(rng, [layer], [np.array([6])])
    assert isinstance(ei.value, RuntimeError)
