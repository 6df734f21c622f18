"""Make lava-nc 0.10.0 importable on Python 3.11 without editing site-packages.

lava-nc 0.10.0 declares Requires-Python <3.11. On 3.11 exactly one thing
breaks: ``lava/magma/compiler/var_model.py`` gives dataclass fields a mutable
default (``x: ByteEncoder = ByteEncoder()``), which Python 3.11's dataclasses
reject at import time. This module installs a meta-path finder that loads that
one module from a patched copy of its source (``field(default_factory=...)``)
and leaves every other module alone.

The patch is compiled in ``get_code``: pip precompiles ``.pyc`` files at
install time, and a loader that only patched ``get_data`` of the ``.py`` file
would be bypassed by that cached bytecode.

Call :func:`install` (idempotent) before the first ``import lava``; every
deepr-neuro module that uses Lava does so. On Python 3.10 it is a no-op. The
same patch is all Python 3.12 and 3.13 need (checked with numpy 1.26.4; 3.13
has no numpy 1.x wheels, so lava-nc, which needs numpy <2, is only installed
there when numpy is built from source). scripts/setup.sh keeps Lava in an
environment only when :func:`selfcheck` passes.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys

TARGET = "lava.magma.compiler.var_model"

# `name: ByteEncoder = ByteEncoder()` -> `name: ByteEncoder = _dc_field(default_factory=ByteEncoder)`
_MUTABLE_DEFAULT = re.compile(r"^(\s+\w+\s*:\s*ByteEncoder\s*=\s*)ByteEncoder\(\)\s*$", re.M)
_HEADER = "from dataclasses import field as _dc_field\n"


def patch_source(source: str) -> str:
    """Return var_model.py's source with mutable dataclass defaults made factories."""
    patched, count = _MUTABLE_DEFAULT.subn(r"\1_dc_field(default_factory=ByteEncoder)", source)
    if count == 0:
        return source
    # Insert the import after any `from __future__` line so it stays legal.
    lines = patched.splitlines(keepends=True)
    insert_at = 0
    for i, line in enumerate(lines):
        if line.startswith("from __future__"):
            insert_at = i + 1
    lines.insert(insert_at, _HEADER)
    return "".join(lines)


class _PatchedLoader(importlib.machinery.SourceFileLoader):
    """SourceFileLoader that compiles the patched source and never uses cached bytecode."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        source = self.get_data(path).decode("utf-8")
        return compile(patch_source(source), path, "exec", dont_inherit=True)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        loader = _PatchedLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=loader,
            submodule_search_locations=spec.submodule_search_locations)


def needed() -> bool:
    return sys.version_info >= (3, 11)


def install() -> None:
    """Install the finder once (no-op on Python < 3.11 or if already installed)."""
    if not needed():
        return
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    if TARGET in sys.modules:
        return  # already imported (then it was importable as is)
    sys.meta_path.insert(0, _Finder())


def selfcheck() -> "str | None":
    """Run a two-layer fixed_pt Sparse+LIF network; None if it spikes, else why not.

    scripts/setup.sh keeps lava-nc only where this passes, so an installed
    Lava is one that runs (not just one that imports).
    """
    try:
        install()
        import numpy as np
        import scipy.sparse as sp
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.lif.process import LIF
        from lava.proc.sparse.process import Sparse

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
    except Exception as exc:  # any failure means "Lava does not run here"
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    if not v[0] > 0:
        return f"fixed_pt run gave no synaptic input (v = {v!r})"
    return None


install()
