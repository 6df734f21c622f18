"""Lava and Brian2 are installed and run; the Python 3.11 compatibility layer works."""
import sys

import numpy as np
import pytest

from deepr_neuro.simulate import lava_compat


def test_patch_rewrites_only_mutable_bytencoder_defaults():
    src = ("from dataclasses import dataclass\n@dataclass\nclass A:\n"
           "    x: ByteEncoder = ByteEncoder()\n    y: int = 3\n")
    out = lava_compat.patch_source(src)
    assert "x: ByteEncoder = _dc_field(default_factory=ByteEncoder)" in out
    assert "y: int = 3" in out and out.startswith(lava_compat._HEADER)
    assert lava_compat.patch_source("a = 1\n") == "a = 1\n"


def test_lava_imports_and_runs_fixed_point():
    lava_compat.install()
    from lava.magma.compiler.var_model import LoihiAddress  # the module the patch fixes
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.lif.process import LIF
    from lava.proc.sparse.process import Sparse
    import scipy.sparse as sp

    assert LoihiAddress is not None
    src = LIF(shape=(2,), bias_mant=np.array([300, 0]), vth=1, du=4095, dv=0)
    syn = Sparse(weights=sp.csr_matrix(np.array([[100, 0]])))
    dst = LIF(shape=(1,), vth=10_000, du=4095, dv=0)
    src.s_out.connect(syn.s_in)
    syn.a_out.connect(dst.a_in)
    try:
        dst.run(condition=RunSteps(num_steps=5), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        v = dst.v.get()
    finally:
        dst.stop()
    assert v[0] > 0  # spikes from src crossed the synapse into dst


@pytest.mark.skipif(sys.version_info < (3, 11), reason="patch only needed on 3.11+")
def test_compat_finder_is_installed_on_311():
    lava_compat.install()
    assert any(isinstance(f, lava_compat._Finder) for f in sys.meta_path)


def test_brian2_runs_integer_state_with_numpy_target():
    import brian2 as b2

    b2.prefs.codegen.target = "numpy"
    net = b2.Network()
    g = b2.NeuronGroup(3, "v : integer", dtype={"v": np.int64}, clock=b2.Clock(dt=1 * b2.ms))
    g.run_regularly("v = v + 2**30", dt=1 * b2.ms)
    net.add(g)
    net.run(4 * b2.ms)
    assert g.v[:].dtype == np.int64 and int(g.v[0]) == 4 * 2**30
