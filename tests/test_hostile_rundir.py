"""Hostile cases for run and sweep directories: nothing a user had is lost.

--overwrite replaces only a deepr-neuro run (or sweep) and only once the new
one is complete; --out that is a file, the current directory or an ancestor
is refused; one process at a time writes a directory (flock, two real
processes); --resume refuses every changed setting, profile and model, and a
damaged checkpoint, before anything is written; kill -9 during an overwrite
keeps the old run and the next command cleans up; a sweep's workers die with
their parent; stray files in results/ do not crash; OSError and Ctrl-C end in
one clear line.
"""
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from deepr_neuro.store import rundir
from deepr_neuro.cli import main
from deepr_neuro.training.datasets import load_dataset
from deepr_neuro.errors import BundleError, ConfigError
from deepr_neuro.training.model_spec import load_model_spec
from deepr_neuro.hardware.profile import load_profile
from deepr_neuro.training.trainer import TrainSettings, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "hardware_profiles" / "tiny_test.yaml"
DIGITS = ROOT / "models" / "digits_mlp.yaml"
EXE = Path(sys.executable).parent / "deepr-neuro"


def _train_argv(out, *extra, epochs=1):
    return ["train", "--profile", str(TINY), "--model", str(DIGITS), "--out", str(out), "--epochs", str(epochs),
            "--no-progress", *extra]


def _snapshot(d: Path):
    """Every file under d (relative path -> sha256), to prove nothing changed."""
    d = Path(d)
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _one_error_line(err: str, *needles):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _leftovers(out: Path):
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and
                  not p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One complete 1-epoch run on the tiny chip (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(_train_argv(out, "--seed", "3")) == 0
    return out


@pytest.fixture()
def run(finished_run, tmp_path):
    out = tmp_path / "runs" / "r"
    shutil.copytree(finished_run, out)
    return out


# ------------------------------------------------------------------ what --out may be
USER_CONTENT = {
    "notes": {"notes.txt": "my notes"},
    "source tree": {"src/main.py": "print(1)", "README.md": "# mine"},
    "foreign manifest": {"manifest.json": json.dumps({"format": "something-else"})},
    "foreign checkpoint": {"checkpoint.npz": "PK not ours"},
    "hidden only": {".git/config": "[core]"},
    "history only": {"history.json": "{}"},
}


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("case", sorted(USER_CONTENT))
def test_a_directory_that_is_no_run_is_never_written_or_deleted(tmp_path, capsys, case, overwrite):
    out = tmp_path / "mine"
    for rel, text in USER_CONTENT[case].items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    before = _snapshot(out)
    rc = main(_train_argv(out, *(["--overwrite"] if overwrite else [])))
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err, str(out), "not a deepr-neuro run", "new or empty")
    assert next(iter(USER_CONTENT[case])).split("/")[0] in line  # names what is there
    assert _snapshot(out) == before and not (out / rundir.MARKER).exists()
    assert _leftovers(out) == []


@pytest.mark.parametrize("extra", ["notes.md", "plots/fig.png", "export/"])
def test_overwrite_refuses_a_run_holding_files_deepr_neuro_did_not_write(run, capsys, extra):
    path = run / extra
    if extra.endswith("/"):
        path.mkdir()
    else:
        path.parent.mkdir(exist_ok=True)
        path.write_text("user's")
    before = _snapshot(run)
    assert main(_train_argv(run, "--overwrite")) == 2
    _one_error_line(capsys.readouterr().err, "--overwrite would delete", extra.split("/")[0], "move them out")
    assert _snapshot(run) == before


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("where", [".", "..", "project", "project-parent", "home"])
def test_out_that_is_the_current_directory_an_ancestor_or_the_project_is_refused(
        tmp_path, monkeypatch, capsys, where, overwrite):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (work / "source.py").write_text("keep me")
    monkeypatch.chdir(work)
    out = {".": ".", "..": "..", "project": str(ROOT), "project-parent": str(ROOT.parent),
           "home": str(Path.home())}[where]
    before = _snapshot(work)
    assert main(_train_argv(out, *(["--overwrite"] if overwrite else []))) == 2
    _one_error_line(capsys.readouterr().err, "a run needs a directory of its own")
    assert _snapshot(work) == before and not (work / rundir.MARKER).exists()


@pytest.mark.parametrize("command", ["train", "sweep"])
@pytest.mark.parametrize("shape", ["file", "under-file", "under-file-deep"])
def test_out_that_is_a_file_or_under_one_is_a_clean_error(tmp_path, capsys, shape, command):
    f = tmp_path / "afile"
    f.write_text("data")
    out = {"file": f, "under-file": f / "run", "under-file-deep": f / "x" / "y"}[shape]
    argv = _train_argv(out) if command == "train" else [
        "sweep", "--profile", str(TINY), "--model", str(DIGITS), "--out", str(out), "--connectivity", "0.1",
        "--epochs", "1", "--workers", "1", "--no-progress"]
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err, "file", "not a directory")
    assert f.read_text() == "data"


def test_an_empty_directory_is_used(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(_train_argv(out, "--overwrite")) == 0
    assert (out / "manifest.json").exists() and (out / rundir.MARKER).exists()


# ------------------------------------------------------------------ failing overwrites keep the old run
def _bad_profile(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(TINY.read_text().replace("cores: 16", "cores: 0"))
    return p


FAILING_OVERWRITES = {
    "bad profile": lambda t: ["--profile", str(_bad_profile(t))],
    "model does not fit": lambda t: ["--model", str(ROOT / "models/lenet300_100.yaml")],
    "bad connectivity": lambda t: ["--connectivity", "1.5"],
    "missing data": lambda t: ["--dataset", "mnist", "--data-dir", str(t / "nowhere")],
    "bad method for dense": lambda t: ["--method", "dense", "--connectivity", "0.1"],
}


@pytest.mark.parametrize("cause", sorted(FAILING_OVERWRITES))
def test_a_failing_overwrite_keeps_the_old_run(run, tmp_path, capsys, cause):
    before = _snapshot(run)
    argv = _train_argv(run, "--overwrite")
    extra = FAILING_OVERWRITES[cause](tmp_path)
    for i in range(0, len(extra), 2):  # later flags win in argparse
        argv += extra[i:i + 2]
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err)
    assert _snapshot(run) == before
    assert _leftovers(run) == []


@pytest.mark.parametrize("failure", ["KeyboardInterrupt", "ENOSPC", "ValueError"])
def test_an_overwrite_failing_while_training_keeps_the_old_run(run, monkeypatch, capsys, failure):
    """A failure in the middle of training (Ctrl-C, disk full, any bug) discards the new run only."""
    from deepr_neuro.training import trainer as train_mod

    real = train_mod.Trainer.run_epoch

    def epoch_then_fail(self, bar=None):
        record = real(self, bar)  # one checkpoint written into the new directory first
        if failure == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if failure == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device", str(self.out_dir / "checkpoint.npz"))
        raise ValueError("a bug")
    monkeypatch.setattr(train_mod.Trainer, "run_epoch", epoch_then_fail)
    before = _snapshot(run)
    if failure == "ValueError":
        with pytest.raises(ValueError):
            main(_train_argv(run, "--overwrite", epochs=2))
    else:
        rc = main(_train_argv(run, "--overwrite", epochs=2))
        err = capsys.readouterr().err
        if failure == "KeyboardInterrupt":
            assert rc == 130 and "untouched" in err and "--resume" not in err
        else:
            assert rc == 2
            _one_error_line(err, "checkpoint.npz", "ENOSPC", "kept")
    assert _snapshot(run) == before
    assert _leftovers(run) == []


def test_a_successful_overwrite_replaces_the_run_and_leaves_nothing_beside_it(run, capsys):
    old = json.loads((run / "manifest.json").read_text())
    assert main(_train_argv(run, "--overwrite", "--seed", "7")) == 0
    new = json.loads((run / "manifest.json").read_text())
    assert old["training"]["seed"] == 3 and new["training"]["seed"] == 7
    assert _leftovers(run) == []
    assert "bundle written to" in capsys.readouterr().out


def test_write_enospc_keeps_the_old_checkpoint_on_resume(run, monkeypatch, capsys):
    """Disk full while the checkpoint is written: one error line naming the file; the old files stay."""
    import io

    from deepr_neuro.store import bundle

    real = os.fdopen

    class Full(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundle.os, "fdopen", lambda fd, mode="r", *a, **k:
                        Full(fd, "wb") if "w" in mode else real(fd, mode, *a, **k))
    before = _snapshot(run)
    assert main(_train_argv(run, "--resume", "--seed", "3", epochs=2)) == 2
    _one_error_line(capsys.readouterr().err, "checkpoint.npz", "ENOSPC")
    assert _snapshot(run) == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_unreadable_file_is_one_error_line(run, monkeypatch, capsys):
    """Permission denied (simulated: the tests may run as root) names the file, no traceback."""
    real = Path.read_text

    def denied(self, *a, **k):
        if self.name == "tiny_test.yaml":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **k)
    monkeypatch.setattr(Path, "read_text", denied)
    real_open = open

    def denied_open(file, *a, **k):
        if str(file).endswith("tiny_test.yaml"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *a, **k)
    monkeypatch.setattr("builtins.open", denied_open)
    before = _snapshot(run)
    rc = main(_train_argv(run, "--overwrite"))
    err = capsys.readouterr().err
    assert rc == 2
    _one_error_line(err, "tiny_test.yaml")
    assert _snapshot(run) == before


def test_read_only_parent_is_one_error_line(tmp_path, monkeypatch, capsys):
    real = os.open

    def ro(path, flags, *a, **k):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *a, **k)
    monkeypatch.setattr(rundir.os, "open", ro)
    assert main(_train_argv(tmp_path / "ro" / "r")) == 2
    _one_error_line(capsys.readouterr().err, ".r.lock", "EROFS")


# ------------------------------------------------------------------ kill -9 during an overwrite
def _wait_for(cond, timeout=60.0, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_during_overwrite_keeps_the_old_run_and_the_rerun_cleans_up(run, capsys):
    before = _snapshot(run)
    proc = subprocess.Popen([str(EXE), *_train_argv(run, "--overwrite", epochs=200)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: any((run.parent / n / "checkpoint.npz").exists() for n in _leftovers(run)),
                  what="a checkpoint in the new directory")
    finally:
        proc.kill()
        proc.wait()
    assert _snapshot(run) == before
    assert len(_leftovers(run)) == 1  # the half-built new run
    assert main(_train_argv(run, "--resume", "--seed", "3")) == 0  # any command on the run cleans up
    assert "left by a killed overwrite" in capsys.readouterr().err
    assert _leftovers(run) == []
    assert json.loads((run / "manifest.json").read_text())["training"]["seed"] == 3


def test_kill_between_the_two_renames_restores_the_old_run(run, capsys):
    """Where renameat2 cannot swap, a kill between 'old aside' and 'new in' leaves no run at --out:
    the next command puts the old one back."""
    before = _snapshot(run)
    aside = run.parent / f".{run.name}.old-99999"
    os.rename(run, aside)
    half = run.parent / f".{run.name}.new-99999"
    half.mkdir()
    (half / "checkpoint.npz").write_bytes(b"half")
    assert main(_train_argv(run, "--resume", "--seed", "3")) == 0
    err = capsys.readouterr().err
    assert "restored" in err and "left by a killed overwrite" in err
    assert _leftovers(run) == []
    after = _snapshot(run)
    assert after["network.npz"] == before["network.npz"]


def test_swap_fallback_without_renameat2(run, tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "_exchange", lambda a, b: False)
    assert main(_train_argv(run, "--overwrite", "--seed", "8")) == 0
    assert json.loads((run / "manifest.json").read_text())["training"]["seed"] == 8
    assert _leftovers(run) == []


# ------------------------------------------------------------------ the lock
def test_a_second_train_into_the_same_out_refuses_at_once(tmp_path):
    """Two real processes: the second refuses in well under a second, naming the first's pid."""
    out = tmp_path / "busy"
    first = subprocess.Popen([str(EXE), *_train_argv(out, epochs=200)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    lock = tmp_path / ".busy.lock"
    try:
        _wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), what="the lock")
        for extra in ([], ["--overwrite"], ["--resume"]):
            t0 = time.time()
            second = subprocess.run([str(EXE), *_train_argv(out, *extra)], capture_output=True, text=True,
                                    timeout=60)
            assert second.returncode == 2, second.stderr
            _one_error_line(second.stderr, str(out), f"pid {first.pid}", "another deepr-neuro process")
            assert time.time() - t0 < 15
        assert first.poll() is None  # the first one goes on
    finally:
        first.kill()
        first.wait()
    # kill -9 released the lock: the next command runs at once
    with rundir.DirLock(out):
        pass
    assert main(_train_argv(out, "--resume", epochs=1)) in (0, 2)  # 2 only if killed before a checkpoint


@pytest.mark.parametrize("command", ["train", "train-overwrite", "train-resume", "sweep", "sweep-overwrite"])
def test_a_held_lock_refuses_every_writer(run, capsys, command):
    before = _snapshot(run)
    with rundir.DirLock(run):
        if command.startswith("train"):
            extra = {"train": [], "train-overwrite": ["--overwrite"], "train-resume": ["--resume"]}[command]
            rc = main(_train_argv(run, *extra))
        else:
            rc = main(["sweep", "--profile", str(TINY), "--model", str(DIGITS), "--out", str(run),
                       "--connectivity", "0.1", "--epochs", "1", "--workers", "1", "--no-progress",
                       *(["--overwrite"] if command == "sweep-overwrite" else [])])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, f"pid {os.getpid()}", "another deepr-neuro process")
    assert _snapshot(run) == before


def test_lock_is_shared_by_every_spelling_of_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with rundir.DirLock(Path("runs/x")):
        for spelling in ("runs/x/", "./runs/x", str(tmp_path / "runs" / "x"), "runs/../runs/x"):
            with pytest.raises(rundir.LockedError):
                rundir.DirLock(Path(spelling)).acquire()


# ------------------------------------------------------------------ --resume checks before writing
@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, digits):
    """A run killed after 2 of 3 epochs (checkpoint, no bundle), made as the CLI would."""
    out = tmp_path_factory.mktemp("ckpt") / "c"
    spec = load_model_spec(DIGITS).with_overrides(epochs=3)
    train(load_profile(TINY), spec, TrainSettings.from_spec(spec), digits, out, progress=False,
          stop_after_epochs=2)
    return out


@pytest.fixture()
def ckpt(checkpointed, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(checkpointed, out)
    return out


CHANGED = [
    (["--lr", "0.2"], "'lr'"), (["--lr-decay", "0.5"], "'lr_decay'"), (["--optimizer", "sgd"], "'optimizer'"),
    (["--method", "soft-deepr"], "'method'"), (["--alpha", "0.001"], "'alpha'"), (["--noise", "0.001"], "'noise'"),
    (["--seed", "5"], "'seed'"), (["--batch-size", "8"], "'batch_size'"), (["--val-fraction", "0.2"], "'val_fraction'"),
    (["--connectivity", "0.1"], "'connectivity'"), (["--weight-bits", "4"], "'weight_bits'"),
    (["--theta-min", "-0.01"], "'theta_min'"), (["--qat-epochs", "1"], "'qat_epochs'"),
    (["--dense-lr", "0.1"], "'dense_lr'"), (["--l1-alpha", "0.01"], "'l1_alpha'"),
    (["--prune-epoch-fraction", "0.3"], "'prune_epoch_fraction'"),
]


@pytest.mark.parametrize("flags,field", CHANGED, ids=[c[0][0] for c in CHANGED])
def test_resume_with_a_changed_setting_is_refused_before_writing(ckpt, capsys, flags, field):
    before = _snapshot(ckpt)
    assert main(_train_argv(ckpt, "--resume", *flags, epochs=3)) == 2
    _one_error_line(capsys.readouterr().err, "checkpoint.npz", "--resume", field, "in the checkpoint")
    assert _snapshot(ckpt) == before


def _edited(tmp_path, src: Path, old: str, new: str) -> Path:
    text = src.read_text()
    assert old in text
    path = tmp_path / src.name
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("which,old,new,field", [
    ("profile", "cores: 16", "cores: 15", "profile field 'cores'"),
    ("profile", "input_axons_per_core: 128", "input_axons_per_core: 127", "profile field 'input_axons_per_core'"),
    ("model", "size: 128", "size: 120", "model field 'layers'"),
    ("model", "connectivity: 0.15", "connectivity: 0.14", "model field 'layers'"),
    ("model", "name: digits_mlp", "name: digits_mlp_v2", "model field 'name'"),
    ("model", "input_size: 64", "input_size: 64\n", None),  # same model, other file: accepted
    ("model", "64-128-64-10 ReLU", "A ReLU", None),  # free-text description only: accepted
    ("profile", "Fictional 16-core", "Made-up 16-core", None),
])
def test_resume_with_another_profile_or_model_is_refused(ckpt, tmp_path, capsys, which, old, new, field):
    src = TINY if which == "profile" else DIGITS
    path = _edited(tmp_path, src, old, new)
    argv = _train_argv(ckpt, "--resume", epochs=3)
    argv[argv.index("--" + which) + 1] = str(path)
    before = _snapshot(ckpt)
    rc = main(argv)
    err = capsys.readouterr().err
    if field is None:
        assert rc == 0, err
        return
    assert rc == 2
    _one_error_line(err, "--resume", field, f"--{which}")
    assert _snapshot(ckpt) == before


@pytest.mark.parametrize("epochs,ok", [(1, False), (2, True), (3, True), (5, True)])
def test_resume_with_fewer_epochs_than_done_is_refused(ckpt, capsys, epochs, ok):
    """2 epochs done: --epochs 1 refused; 2 writes the bundle as it is; more continues. The manifest never
    says fewer epochs than it has done."""
    before = _snapshot(ckpt)
    rc = main(_train_argv(ckpt, "--resume", epochs=epochs))
    err = capsys.readouterr().err
    if not ok:
        assert rc == 2
        _one_error_line(err, "2 epochs done", "--epochs 2 or more")
        assert _snapshot(ckpt) == before
        return
    assert rc == 0, err
    m = json.loads((ckpt / "manifest.json").read_text())["training"]
    assert m["epochs"] == epochs == m["epochs_done"]


def test_resume_accepts_a_checkpoint_written_before_profile_and_model_were_recorded(ckpt, capsys):
    path = ckpt / "checkpoint.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta_json"]).decode())
    del meta["profile"], meta["model"]
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    assert main(_train_argv(ckpt, "--resume", epochs=3)) == 0
    # ... but an old checkpoint of another model is refused by its arrays, not an AssertionError
    np.savez(path, **arrays)
    other = _edited(ckpt.parent, DIGITS, "size: 128", "size: 120")
    argv = _train_argv(ckpt, "--resume", epochs=3)
    argv[argv.index("--model") + 1] = str(other)
    capsys.readouterr()
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err, "checkpoint.npz", "l0_")


def _rewrite(path: Path, change):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta_json"]).decode())
    change(arrays, meta)
    if "meta_json" in arrays and not isinstance(arrays["meta_json"], bytes):
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def _drop(key):
    return lambda a, m: a.pop(key)


def _meta_drop(key):
    return lambda a, m: m.pop(key)


def _short(key):
    def f(a, m):
        a[key] = a[key][:-1]
    return f


def _set(key, value):
    def f(a, m):
        a[key] = np.asarray(value)
    return f


TAMPER = {
    "no meta_json": (_drop("meta_json"), "'meta_json'"),
    "no adam_t": (_drop("adam_t"), "'adam_t'"),
    "no l0_signs": (_drop("l0_signs"), "'l0_signs'"),
    "no l1_slot_rows": (_drop("l1_slot_rows"), "'l1_slot_rows'"),
    "no l2_adam_m": (_drop("l2_adam_m"), "'l2_adam_m'"),
    "no rewired_per_step": (_drop("rewired_per_step"), "'rewired_per_step'"),
    "no rewired_epoch_lengths": (_drop("rewired_epoch_lengths"), "'rewired_epoch_lengths'"),
    "short slot_rows": (_short("l0_slot_rows"), "'l0_slot_rows'"),
    "short slot_theta": (_short("l1_slot_theta"), "'l1_slot_rows'"),
    "short adam_v": (_short("l0_adam_v"), "'l0_adam_v'"),
    "short signs": (_short("l0_signs"), "'l0_signs'"),
    "2-D slot_cols": (lambda a, m: a.__setitem__("l0_slot_cols", a["l0_slot_cols"].reshape(1, -1)), "'l0_slot_"),
    "float slot_rows": (lambda a, m: a.__setitem__("l0_slot_rows", a["l0_slot_rows"] + 0.5), "'l0_slot_rows'"),
    "row out of range": (lambda a, m: a["l0_slot_rows"].__setitem__(0, 10 ** 6), "'l0_slot_rows'"),
    "negative col": (lambda a, m: a["l2_slot_cols"].__setitem__(0, -1), "'l2_slot_rows'"),
    "adam_t array": (_set("adam_t", [1, 2]), "'adam_t'"),
    "short rewired": (_short("rewired_per_step"), "'rewired_per_step'"),
    "meta no epoch": (_meta_drop("epoch"), "'epoch'"),
    "meta no history": (_meta_drop("history"), "'history'"),
    "meta no settings": (_meta_drop("settings"), "'settings'"),
    "meta no init_rng": (_meta_drop("init_rng"), "'init_rng'"),
    "meta epoch string": (lambda a, m: m.__setitem__("epoch", "1"), "'epoch'"),
    "meta epoch vs history": (lambda a, m: m.__setitem__("epoch", 1), "'epoch'"),
    "meta rng garbage": (lambda a, m: m.__setitem__("data_rng", {"bit_generator": "nope"}), "restored"),
    "meta settings list": (lambda a, m: m.__setitem__("settings", []), "'settings'"),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_a_damaged_checkpoint_is_refused_naming_file_and_key(ckpt, capsys, case):
    change, needle = TAMPER[case]
    _rewrite(ckpt / "checkpoint.npz", change)
    before = _snapshot(ckpt)
    assert main(_train_argv(ckpt, "--resume", epochs=3)) == 2
    _one_error_line(capsys.readouterr().err, "checkpoint.npz", needle)
    assert _snapshot(ckpt) == before


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a zip", "meta not json", "meta a list"])
def test_an_unreadable_checkpoint_is_refused(ckpt, capsys, damage):
    path = ckpt / "checkpoint.npz"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not a zip":
        path.write_text("hello")
    else:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        text = b"{not json" if damage == "meta not json" else b"[1, 2]"
        arrays["meta_json"] = np.frombuffer(text, dtype=np.uint8)
        np.savez(path, **arrays)
    before = _snapshot(ckpt)
    assert main(_train_argv(ckpt, "--resume", epochs=3)) == 2
    _one_error_line(capsys.readouterr().err, "checkpoint.npz")
    assert _snapshot(ckpt) == before


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key_index=st.integers(0, 100), kind=st.sampled_from(["int8", "int32", "int64", "float64", "bool"]),
       shape=st.lists(st.integers(0, 5), min_size=0, max_size=2), fill=st.integers(-3, 300))
def test_property_any_array_swap_is_refused_or_resumes(checkpointed, digits, tmp_path_factory, key_index, kind,
                                                       shape, fill):
    """Replacing any checkpoint array by an arbitrary small array either resumes to a valid run or is
    refused with the toolkit's own error; never another exception."""
    out = tmp_path_factory.mktemp("prop") / "c"
    shutil.copytree(checkpointed, out)
    path = out / "checkpoint.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    keys = sorted(k for k in arrays if k != "meta_json")
    key = keys[key_index % len(keys)]
    arrays[key] = np.full(shape, fill).astype(kind)
    np.savez(path, **arrays)
    spec = load_model_spec(DIGITS).with_overrides(epochs=2)
    try:
        tr = train(load_profile(TINY), spec, TrainSettings.from_spec(spec), digits, out, progress=False,
                   resume=True)
    except (BundleError, ConfigError):
        return
    from deepr_neuro.training.trainer import check_invariants
    check_invariants(tr.deepr, tr.plan, "deepr")


# ------------------------------------------------------------------ sweeps
def _sweep_argv(out, *extra, conns="0.1"):
    return ["sweep", "--profile", str(TINY), "--model", str(DIGITS), "--out", str(out), "--connectivity", conns,
            "--epochs", "1", "--workers", "1", "--no-progress", *extra]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    assert main(_sweep_argv(out, "--seed", "1")) == 0
    return out


@pytest.fixture()
def sweep_dir(finished_sweep, tmp_path):
    out = tmp_path / "sw" / "s"
    shutil.copytree(finished_sweep, out)
    return out


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("case", ["notes", "source tree", "a run"])
def test_sweep_never_writes_or_deletes_a_directory_that_is_no_sweep(tmp_path, finished_run, capsys, case,
                                                                    overwrite):
    out = tmp_path / "mine"
    if case == "a run":
        shutil.copytree(finished_run, out)
    else:
        for rel, text in USER_CONTENT[case].items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text(text)
    before = _snapshot(out)
    assert main(_sweep_argv(out, *(["--overwrite"] if overwrite else []))) == 2
    _one_error_line(capsys.readouterr().err, "not a deepr-neuro sweep", "new or empty")
    assert _snapshot(out) == before and _leftovers(out) == []


@pytest.mark.parametrize("extra", ["notes.txt", "results/my.csv", "results/notes.json", "plots/mine.png",
                                   "cells/deepr_c0.1_s1/notes.txt", "cells/deepr_c0.1_s1/sub/", "mine/"])
def test_sweep_overwrite_refuses_a_sweep_holding_user_files(sweep_dir, capsys, extra):
    path = sweep_dir / extra
    if extra.endswith("/"):
        path.mkdir()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("user's")
    before = _snapshot(sweep_dir)
    assert main(_sweep_argv(sweep_dir, "--overwrite")) == 2
    _one_error_line(capsys.readouterr().err, "--overwrite would delete", extra.rstrip("/"))
    assert _snapshot(sweep_dir) == before


@pytest.mark.parametrize("cause", ["bad profile", "unknown method", "bad connectivity", "missing data",
                                   "seeds 0", "workers 0"])
def test_a_failing_sweep_overwrite_keeps_the_old_sweep(sweep_dir, tmp_path, capsys, cause):
    extra = {"bad profile": ["--profile", str(_bad_profile(tmp_path))], "unknown method": ["--methods", "deepR"],
             "bad connectivity": ["--connectivity", "0"], "missing data": ["--dataset", "mnist", "--data-dir",
                                                                         str(tmp_path / "none")],
             "seeds 0": ["--seeds", "0"], "workers 0": ["--workers", "0"]}[cause]
    before = _snapshot(sweep_dir)
    assert main(_sweep_argv(sweep_dir, "--overwrite", *extra)) == 2
    _one_error_line(capsys.readouterr().err)
    assert _snapshot(sweep_dir) == before and _leftovers(sweep_dir) == []


def test_sweep_overwrite_interrupted_keeps_the_old_sweep(sweep_dir, monkeypatch, capsys):
    from deepr_neuro.experiments import sweep as sweep_mod

    def interrupted(task):
        raise KeyboardInterrupt
    monkeypatch.setattr(sweep_mod, "run_cell", interrupted)
    before = _snapshot(sweep_dir)
    assert main(_sweep_argv(sweep_dir, "--overwrite", "--seed", "2")) == 130
    assert "untouched" in capsys.readouterr().err
    assert _snapshot(sweep_dir) == before and _leftovers(sweep_dir) == []


def test_sweep_overwrite_replaces_a_sweep(sweep_dir, capsys):
    assert main(["plot", str(sweep_dir)]) == 0  # its own plots do not block a replacement
    assert main(_sweep_argv(sweep_dir, "--overwrite", "--seed", "4")) == 0
    assert [p.name for p in (sweep_dir / "results").iterdir()] == ["deepr_c0.1_s4.json"]
    assert _leftovers(sweep_dir) == []


STRAY = {
    "empty object": "{}", "list": "[1, 2]", "null": "null", "not json": "hello", "number": "3",
    "wrong cell name": None, "grid cell missing fields": "grid", "status weird": "status",
}


@pytest.mark.parametrize("case", sorted(STRAY))
def test_a_stray_file_in_results_does_not_crash_sweep_summary_or_plot(sweep_dir, tmp_path, capsys, case):
    from deepr_neuro.experiments.summary import load_results

    good = json.loads((sweep_dir / "results" / "deepr_c0.1_s1.json").read_text())
    text = STRAY[case]
    name = "stray.json"
    if case == "wrong cell name":
        text = json.dumps(good)
    elif text == "grid":
        name, text = "deepr_c0.1_s2.json", json.dumps({"cell": "deepr_c0.1_s2"})
    elif text == "status":
        name, text = "deepr_c0.1_s2.json", json.dumps({**good, "cell": "deepr_c0.1_s2", "seed": 2, "status": "??"})
    (sweep_dir / "results" / name).write_text(text)
    assert len(load_results(sweep_dir)) == 1
    assert "not a result record of this sweep" in capsys.readouterr().err
    rc = main(_sweep_argv(sweep_dir, "--seed", "1", "--seeds", "2"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Traceback" not in err
    assert json.loads((sweep_dir / "summary.json").read_text())["cells_done"] == 2
    assert main(["plot", str(sweep_dir), "--to", str(tmp_path / "plots")]) == 0


def _children(pid):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_kill_9_of_a_sweep_leaves_no_worker_running(tmp_path):
    """A real sweep with 2 worker processes; kill -9 of the parent ends the workers within seconds."""
    import psutil

    out = tmp_path / "s"
    argv = [str(EXE), *_sweep_argv(out, "--seeds", "4", conns="0.1,0.2")]
    argv[argv.index("--workers") + 1] = "2"
    argv[argv.index("--epochs") + 1] = "100"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        def two_workers():
            workers[:] = [c for c in _children(proc.pid)
                          if "spawn_main" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())]
            return len(workers) >= 2
        _wait_for(two_workers, timeout=90, what="two worker processes")
        _wait_for(lambda: any(out.glob("cells/*/checkpoint.npz")), timeout=90, what="a cell training")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    for p in alive:
        p.kill()
    assert not alive, f"workers still running after the parent's kill -9: {[p.pid for p in alive]}"
    # the next run takes the lock at once and continues
    with rundir.DirLock(out, what="sweep"):
        pass


def test_worker_exits_when_its_parent_is_already_gone():
    """The initializer's fallback: a worker whose parent pid is not its parent ends at once."""
    code = ("import os; from deepr_neuro.experiments.sweep import die_with_parent; die_with_parent(os.getppid() + 12345); "
            "print('still here')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "still here" not in done.stdout


# ------------------------------------------------------------------ Ctrl-C advice per command
@pytest.mark.parametrize("command,target,resume_advice", [
    ("export", "deepr_neuro.pipeline.export_run", False),
    ("simulate", "deepr_neuro.pipeline.simulate_run", False),
    ("crosscheck", "deepr_neuro.pipeline.crosscheck_run", False),
    ("report", "deepr_neuro.store.bundle.load_bundle", False),
    ("train", "deepr_neuro.training.trainer.Trainer.run_epoch", True),
])
def test_ctrl_c_advice_depends_on_the_command(tmp_path, monkeypatch, capsys, command, target, resume_advice):
    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(target, interrupt)
    argv = _train_argv(tmp_path / "r") if command == "train" else [command, str(tmp_path / "r")]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and ("--resume" in err) == resume_advice


@pytest.mark.parametrize("lr", ["1e300", "inf", "10"])
def test_a_diverging_overwrite_never_costs_the_old_run(run, capsys, lr):
    """Whatever a diverging run ends in (a finished bundle that records the divergence, or a refusal),
    the old run is only replaced by a complete new one and nothing is left beside it."""
    before = _snapshot(run)
    try:
        rc = main(_train_argv(run, "--overwrite", "--lr", lr, "--optimizer", "sgd", epochs=2))
    except Exception:  # the invariant check's own error type is helper C's part of issue 9
        rc = None
    if rc == 0:
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["training"]["lr"] == float(lr) and manifest["training"]["epochs_done"] == 2
    else:
        assert _snapshot(run) == before
    assert _leftovers(run) == []


def test_overwrite_through_a_symlink_replaces_the_run_it_points_to(run, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(run)
    assert main(_train_argv(link, "--overwrite", "--seed", "9")) == 0
    assert link.is_symlink() and json.loads((run / "manifest.json").read_text())["training"]["seed"] == 9
    assert _leftovers(run) == []


def test_a_name_too_long_for_the_lock_file_is_one_error_line(tmp_path, capsys):
    assert main(_train_argv(tmp_path / ("x" * 254))) == 2
    _one_error_line(capsys.readouterr().err, "ENAMETOOLONG")


def test_export_refuses_while_another_process_holds_the_run(tmp_path, capsys):
    """export takes the same lock as train: it never races a --resume or --overwrite of that run."""
    from deepr_neuro.store.rundir import DirLock

    run = tmp_path / "run"
    run.mkdir()
    with DirLock(run, what="run"):
        rc = main(["export", str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "another deepr-neuro process" in err and str(os.getpid()) in err
