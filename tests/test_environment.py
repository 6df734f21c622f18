"""The environment: Lava runs where it is installed (Python 3.10-3.12, with the
compatibility layer), is absent with a clean, explained error where it cannot
run (Python 3.13+: numpy 2 only), and Brian2 runs everywhere."""
import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from deepr_neuro.simulate import lava_compat
from deepr_neuro.simulate.backends import get_backend
from deepr_neuro.simulate.registry import lava_unavailable_reason, unavailable_reason
from deepr_neuro.cli import main
from deepr_neuro.errors import BackendError, DeeprError

ROOT = Path(__file__).resolve().parents[1]
PY = ".".join(map(str, sys.version_info[:3]))
LAVA_REASON = lava_unavailable_reason()
NUMPY_MAJOR = int(np.__version__.split(".")[0])

lava_absent_here = pytest.mark.skipif(
    LAVA_REASON is None,
    reason="Lava runs in this interpreter; the Lava-absent path runs for real on Python 3.13 "
           "(CI's second pass, numpy 2) and through an import blocker in the test below")


def lava_nc_installed() -> bool:
    try:
        metadata.version("lava-nc")
    except metadata.PackageNotFoundError:
        return False
    return True


# ------------------------------------------------------------------ Lava present

def test_patch_rewrites_only_mutable_bytencoder_defaults():
    src = ("from dataclasses import dataclass\n@dataclass\nclass A:\n"
           "    x: ByteEncoder = ByteEncoder()\n    y: int = 3\n")
    out = lava_compat.patch_source(src)
    assert "x: ByteEncoder = _dc_field(default_factory=ByteEncoder)" in out
    assert "y: int = 3" in out and out.startswith(lava_compat._HEADER)
    assert lava_compat.patch_source("a = 1\n") == "a = 1\n"


@pytest.mark.lava
def test_lava_imports_and_runs_fixed_point():
    lava_compat.install()
    from lava.magma.compiler.var_model import LoihiAddress  # the module the patch fixes

    assert LoihiAddress is not None
    # the same two-layer Sparse + LIF run scripts/setup.sh requires before keeping Lava
    assert lava_compat.selfcheck() is None


@pytest.mark.lava
@pytest.mark.skipif(sys.version_info < (3, 11), reason="patch only needed on 3.11+")
def test_compat_finder_is_installed_on_311_and_later():
    lava_compat.install()
    lava_compat.install()  # idempotent
    assert sum(isinstance(f, lava_compat._Finder) for f in sys.meta_path) == 1


def test_an_installed_lava_is_a_working_lava():
    """setup.sh removes a lava-nc that fails its run check, so installed means usable."""
    if not lava_nc_installed():
        pytest.skip(f"lava-nc is not installed on Python {PY} (numpy {np.__version__})")
    assert NUMPY_MAJOR < 2, "lava-nc 0.10.0 needs numpy <2; pip check should have refused this"
    assert LAVA_REASON is None, LAVA_REASON


def test_lava_is_in_every_environment_where_numpy_1_exists_under_ci():
    """CI's main pass sets DEEPR_NEURO_REQUIRE_LAVA=1: there Lava must really be present."""
    if os.environ.get("DEEPR_NEURO_REQUIRE_LAVA") != "1":
        pytest.skip("DEEPR_NEURO_REQUIRE_LAVA is not 1 (only CI's main pass requires Lava)")
    assert LAVA_REASON is None, LAVA_REASON


# ------------------------------------------------------------------ Lava absent

@lava_absent_here
def test_get_backend_lava_is_a_clean_error_naming_python_and_fix():
    with pytest.raises(BackendError) as info:
        get_backend("lava")
    msg = str(info.value)
    assert isinstance(info.value, DeeprError) and isinstance(info.value, RuntimeError)
    assert f"Python {PY}" in msg and "scripts/setup.sh" in msg and "Fix:" in msg
    assert "\n" not in msg and len(msg) < 700
    if NUMPY_MAJOR >= 2:
        assert f"numpy {np.__version__}" in msg and "numpy <2" in msg
    assert unavailable_reason("lava") == msg
    assert all(unavailable_reason(n) is None for n in ("emulator", "brian2", "brian2-float"))
    assert lava_compat.selfcheck() is not None  # and the run check says no too


@lava_absent_here
@pytest.mark.brian2
def test_crosscheck_defaults_skip_lava_and_still_compare_emulator_and_brian2():
    from deepr_neuro.simulate.crosscheck import crosscheck
    from test_crosscheck import random_net

    net, x, y = random_net(5, sizes=(6, 5, 3))
    report = crosscheck(net, x[:2], y[:2], 25)
    assert list(report.runs) == ["emulator", "brian2", "brian2-float"]
    assert report.skipped == {"lava": LAVA_REASON}
    assert report.integer_backends_agree, report.to_table()
    assert [a.identical for a in report.agreement("brian2")] == [True] * len(net.sizes)
    table = report.to_table()
    assert "lava" in table and "skipped: " + LAVA_REASON in table
    assert json.loads(json.dumps(report.to_json()))["skipped"] == {"lava": LAVA_REASON}
    # named explicitly, Lava must run: a clean error, not a silent skip
    for backends in (("emulator", "lava"), ("lava",), ("lava", "brian2")):
        with pytest.raises(BackendError, match=f"Python {PY}"):
            crosscheck(net, x[:2], y[:2], 25, backends=backends)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tmp_path_factory.mktemp("env") / "digits"
    assert main(["train", "--profile", str(ROOT / "hardware_profiles/loihi.yaml"),
                 "--model", str(ROOT / "models/digits_mlp.yaml"), "--out", str(run),
                 "--no-progress", "--epochs", "1"]) == 0
    # small export (20 steps, 50 calibration samples): these tests are about Lava's absence
    assert main(["export", str(run), "--steps", "20", "--calibration-samples", "50"]) == 0
    return run


@lava_absent_here
@pytest.mark.brian2
@pytest.mark.parametrize("argv, code", [
    (["simulate", "{run}", "--backend", "lava", "--samples", "3"], 2),
    (["crosscheck", "{run}", "--samples", "2", "--backends", "emulator,lava"], 2),
    (["crosscheck", "{run}", "--samples", "2", "--backends", "lava"], 2),
    (["crosscheck", "{run}", "--samples", "2"], 0),
    (["crosscheck", "{run}", "--samples", "2", "--json"], 0),
    (["simulate", "{run}", "--backend", "emulator", "--samples", "3"], 0),
])
def test_cli_without_lava(exported, capsys, argv, code):
    capsys.readouterr()
    assert main([a.format(run=exported) for a in argv]) == code
    out, err = capsys.readouterr()
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: Lava backend: not available on Python ")
        assert PY in lines[0] and "scripts/setup.sh" in lines[0]
    elif "crosscheck" in argv and "--json" in argv:
        report = json.loads(out)
        assert report["skipped"] == {"lava": LAVA_REASON} and "lava" not in report["backends"]
        assert report["integer_backends_agree"] is True
    elif "crosscheck" in argv:
        assert "skipped: Lava backend: not available" in out
        assert "integer backends agree: yes" in out
    else:
        assert "accuracy" in out and err == ""


BLOCKER = textwrap.dedent("""
    import sys
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name == "lava" or name.startswith("lava."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Blocker())
""")


@pytest.mark.parametrize("probe, expect", [
    ("from deepr_neuro.simulate.backends import get_backend\n"
     "try:\n    get_backend('lava')\nexcept Exception as e:\n    print(type(e).__name__, e)",
     "BackendError Lava backend: not available on Python {py}: lava-nc is not installed"),
    ("from deepr_neuro.simulate.lava_compat import selfcheck\nprint(selfcheck())",
     "ModuleNotFoundError"),
    ("from deepr_neuro.simulate.crosscheck import crosscheck, DEFAULT_BACKENDS\n"
     "from deepr_neuro.simulate.registry import unavailable_reason\n"
     "print(sorted(n for n in DEFAULT_BACKENDS if unavailable_reason(n)))",
     "['lava']"),
])
def test_lava_missing_on_a_numpy_1_python_points_to_setup(probe, expect):
    """lava-nc not installed where it could be (a plain pip install): the message says
    to run scripts/setup.sh. Only this branch needs the import blocker; the numpy-2
    branch runs for real on Python 3.13."""
    out = subprocess.run([sys.executable, "-c", BLOCKER + probe], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert expect.format(py=PY) in out.stdout, out.stdout
    if "BackendError" in expect:
        assert "scripts/setup.sh" in out.stdout and "Traceback" not in out.stderr


# ------------------------------------------------------------------ setup.sh refusals

@pytest.mark.parametrize("python, says", [
    ("/nonexistent/python3", "no such interpreter"),
    ("/root/.pyenv/versions/3.9.18/bin/python", "is Python 3.9, deepr-neuro needs 3.10 or newer"),
    ("/root/.pyenv/versions/2.7.18/bin/python", "needs 3.10 or newer"),
    ("/bin/false", "does not run as a Python interpreter"),
    ("/bin/echo", "does not run as a Python interpreter"),
    ("/root/.pyenv/versions/3.13.0/bin/pydoc3", "does not run as a Python interpreter"),
])
def test_setup_refuses_an_unsuitable_python_before_touching_a_venv(tmp_path, python, says):
    if python.startswith("/root/.pyenv") and not Path(python).exists():
        pytest.skip(f"{python} is not on this machine")
    venv = tmp_path / "venv"
    out = subprocess.run(["bash", str(ROOT / "scripts/setup.sh")], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHON=python, VENV=str(venv)))
    assert out.returncode == 1
    assert says in out.stderr and f"PYTHON={python}" in out.stderr
    assert not venv.exists()


# ------------------------------------------------------------------ Brian2

def test_brian2_runs_integer_state_with_numpy_target():
    import brian2 as b2

    b2.prefs.codegen.target = "numpy"
    net = b2.Network()
    g = b2.NeuronGroup(3, "v : integer", dtype={"v": np.int64}, clock=b2.Clock(dt=1 * b2.ms))
    g.run_regularly("v = v + 2**30", dt=1 * b2.ms)
    net.add(g)
    net.run(4 * b2.ms)
    assert g.v[:].dtype == np.int64 and int(g.v[0]) == 4 * 2**30
