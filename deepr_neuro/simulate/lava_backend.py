"""Run an integer graph in Lava's own bit-accurate simulator.

This is the reference every other backend is checked against, so it uses
only stock Lava processes, as a user deploying the bundle would: one
``LIFReset`` per population, one ``Sparse`` per projection
(``pre.s_out -> Sparse.s_in``, ``Sparse.a_out -> post.a_in``; a recurrent
projection runs from a LIF's ``s_out`` back into its own ``a_in``; several
Sparse processes may feed one ``a_in``, whose InPort adds their int32
messages), and one ``Extractor`` per population (spikes to the host)::

    input LIFReset --Sparse--> LIFReset --Sparse--> ... LIFReset
                                 ^   |
                                 +---+ Sparse (recurrent)

run with ``Loihi2SimCfg(select_tag="fixed_pt")``. The network is compiled
once per ``run`` call and every sample goes through it:

* sample k occupies global time steps k*steps + 1 .. (k+1)*steps;
* ``LIFReset(reset_interval=steps, reset_offset=1)`` zeroes u and v at the
  first step of every sample, in every population, *before* that step's
  update;
* between samples the runtime pauses and the host sets the input
  population's ``bias_mant`` to the next sample's encoding and zeroes every
  Sparse process's ``a_buff`` (the activation computed from the previous
  sample's last step, which Sparse would otherwise deliver at the next step).
  With that, every population at a sample's first step receives nothing,
  exactly like a fresh network: "each sample starts from zero state".

A graph with a spike-source input (``input_kind == "spikes"``) has a
``RingBuffer`` (lava.proc.io.source, fixed_pt model: int32 data) instead of
the input LIF, holding every sample's trains back to back, (n_inputs,
n_samples * steps): it sends column ``time_step - 1`` at each step, so sample
k's step t at global step k*steps + t + 1, into the first Sparse exactly as an
input LIF's spikes would (one step of delay: spikes of step t reach ``rec`` at
t + 1). A final-v readout is read with ``v.get()`` after running each sample
exactly to its own last step; the rest of the sample's ``steps`` (silent
padding) then runs so every sample still spans ``steps`` global steps.

Spikes leave through ``Extractor`` processes (one message per step and
population) because ``Var.get`` moves values one at a time and would dominate
the run.
"""
from __future__ import annotations

import functools
import sys
import time
from typing import Optional

import numpy as np

import deepr_neuro.simulate.lava_compat as lava_compat
from deepr_neuro.errors import BackendError
from deepr_neuro.network.integer_network import IntegerGraph, NeuronParams
from deepr_neuro.simulate.backends import Backend


def projection_csr(q, shape):
    """The (n_post, n_pre) int32 csr matrix handed to Sparse (duplicates summed by scipy)."""
    import scipy.sparse as sp
    return sp.csr_matrix(
        (np.asarray(q.weights, dtype=np.int32),
         (np.asarray(q.rows, dtype=np.int64), np.asarray(q.cols, dtype=np.int64))),
        shape=tuple(int(n) for n in shape), dtype=np.int32)


def absent_message(exc: BaseException) -> str:
    """Why Lava cannot be used in this interpreter, and the fix, in one sentence."""
    py = ".".join(map(str, sys.version_info[:3]))
    numpy_major = int(np.__version__.split(".")[0])
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "lava":
        what = "lava-nc is not installed in this environment"
    else:
        what = f"lava-nc does not import ({type(exc).__name__}: {str(exc)[:200]})"
    if numpy_major >= 2:
        why = (f"; lava-nc 0.10.0 needs numpy <2, this environment has numpy {np.__version__}"
               + (" (numpy 1.x has no wheels for Python 3.13+)" if sys.version_info >= (3, 13) else ""))
        fix = ("make an environment with Python 3.10-3.12 for Lava, e.g. "
               "`PYTHON=python3.11 bash scripts/setup.sh`, or build numpy 1.26.4 from source "
               "with `NUMPY1_FROM_SOURCE=1 bash scripts/setup.sh`")
    else:
        why = ""
        fix = ("run `bash scripts/setup.sh` with this Python (it installs lava-nc 0.10.0 with "
               "--no-deps --ignore-requires-python where it runs)")
    return (f"Lava backend: not available on Python {py}: {what}{why}. Fix: {fix}; "
            "the emulator and brian2 backends give the same integer spikes without Lava")


def _import_lava():
    try:
        lava_compat.install()
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
        from lava.proc.lif.process import LIFReset
        from lava.proc.sparse.process import Sparse
        from lava.proc.io.source import RingBuffer  # noqa: F401 (checked here, used by _simulate)
    except Exception as exc:  # ImportError, or a Lava module that fails at import
        raise BackendError(absent_message(exc)) from exc
    return RunSteps, Loihi2SimCfg, Extractor, PyLoihiExtractorModel, LIFReset, Sparse


@functools.lru_cache(maxsize=None)
def lava_unavailable_reason() -> Optional[str]:
    """None when Lava imports in this interpreter, else why not and the fix (cached)."""
    try:
        _import_lava()
    except BackendError as exc:
        return str(exc)
    return None


class LavaBackend(Backend):
    """Lava fixed_pt simulation; slow (~1.7 ms per step for 784-300-100-10)."""

    name = "lava"
    exact = True

    def __init__(self):
        #: wall-clock seconds of each sample of the last run (the first includes Lava's compile)
        self.sample_seconds = []

    def _simulate(self, graph: IntegerGraph, bias: np.ndarray, steps: int, counts, spikes,
                  last=None, readout_v=None) -> None:
        (RunSteps, Loihi2SimCfg, Extractor, PyLoihiExtractorModel,
         LIFReset, Sparse) = _import_lava()
        from lava.proc.io.source import PySendModelFixed, RingBuffer
        source = graph.input_kind == "spikes"

        def lif(p: NeuronParams, bias_mant: np.ndarray, name: str):
            return LIFReset(shape=(p.n,), du=int(p.du), dv=int(p.dv), vth=int(p.vth),
                            bias_mant=np.asarray(bias_mant, dtype=np.int32),
                            bias_exp=int(p.bias_exp), reset_interval=steps,
                            reset_offset=1, name=name)

        pops = graph.populations
        if source:   # all samples back to back: column k*steps + t is sample k's step t
            data = np.ascontiguousarray(bias.transpose(2, 0, 1).reshape(pops[0].n, -1)).astype(np.int32)
            neurons = {pops[0].name: RingBuffer(data=data)}
        else:
            neurons = {pops[0].name: lif(pops[0].neurons, bias[0], "input")}
        for k, pop in enumerate(pops[1:], start=1):
            neurons[pop.name] = lif(pop.neurons, pop.neurons.bias_mant, f"lif{k}_{pop.name}")
        synapses = []
        for j, q in enumerate(graph.projections):
            shape = (graph.population(q.post).n, graph.population(q.pre).n)
            syn = Sparse(weights=projection_csr(q, shape), weight_exp=int(q.weight_exp),
                         num_weight_bits=int(q.num_weight_bits), name=f"sparse{j}_{q.name}")
            neurons[q.pre].s_out.connect(syn.s_in)
            syn.a_out.connect(neurons[q.post].a_in)
            synapses.append(syn)
        taps = []
        for pop in pops:
            tap = Extractor(shape=(pop.n,), buffer_size=steps)  # one slot per step
            neurons[pop.name].s_out.connect(tap.in_port)
            taps.append(tap)

        exceptions = {Extractor: PyLoihiExtractorModel}
        if source:
            exceptions[RingBuffer] = PySendModelFixed
        cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=exceptions)
        head = neurons[pops[1].name] if source and len(pops) > 1 else neurons[pops[0].name]
        out = neurons[graph.readout] if readout_v is not None else None
        train = [np.zeros((steps, pop.n), bool) for pop in pops]
        self.sample_seconds = []
        try:
            for s in range(bias.shape[0]):
                t0 = time.perf_counter()
                if s > 0:
                    if not source:
                        head.bias_mant.set(bias[s].astype(np.int32))
                    for syn in synapses:
                        syn.a_buff.set(np.zeros(syn.a_buff.shape, dtype=np.int32))
                if out is None:
                    head.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
                else:
                    first = int(last[s]) + 1     # run exactly to the sample's last step, read v
                    head.run(condition=RunSteps(num_steps=first), run_cfg=cfg)
                    readout_v[s] = np.asarray(out.v.get()).astype(np.int64)
                    if first < steps:
                        head.run(condition=RunSteps(num_steps=steps - first), run_cfg=cfg)
                for k, tap in enumerate(taps):
                    for t in range(steps):
                        train[k][t] = tap.receive() != 0
                    counts[k][s] = train[k].sum(axis=0, dtype=np.int32)
                    if spikes is not None:
                        spikes[k][s] = train[k]
                self.sample_seconds.append(time.perf_counter() - t0)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"Lava backend: simulation failed: {str(exc)[:300]!r}") from exc
        finally:
            try:
                head.stop()
            except Exception:  # runtime may never have started
                pass
