"""Run an :class:`IntegerNetwork` in Lava's own bit-accurate simulator.

This is the reference every other backend is checked against, so it uses
only stock Lava processes, as a user deploying the bundle would:

    input LIFReset --Sparse--> LIFReset --Sparse--> ... LIFReset
         |                         |                      |
     Extractor                 Extractor              Extractor   (spikes to the host)

run with ``Loihi2SimCfg(select_tag="fixed_pt")``. The network is compiled
once per ``run`` call and every sample goes through it:

* sample k occupies global time steps k*steps + 1 .. (k+1)*steps;
* ``LIFReset(reset_interval=steps, reset_offset=1)`` zeroes u and v at the
  first step of every sample, in every layer, *before* that step's update;
  the same offset serves all layers because of the next point;
* between samples the runtime pauses and the host sets the input layer's
  ``bias_mant`` to the next sample's encoding and zeroes every Sparse
  process's ``a_buff`` (the activation computed from the previous sample's
  last step, which Sparse would otherwise deliver at the next step). With
  that, layer l at a sample's first step receives nothing, exactly like a
  fresh network: the emulator's "each sample starts from zero state".

Spikes leave through ``Extractor`` processes (one message per step and layer)
because ``Var.get`` moves values one at a time and would dominate the run.
"""
from __future__ import annotations

import sys

import numpy as np

from deepr_neuro.simulate import lava_compat
from deepr_neuro.simulate.backends import Backend, SimResult
from deepr_neuro.simulate.emulator import check_inputs, check_network, layer_csr
from deepr_neuro.errors import BackendError
from deepr_neuro.network.integer_network import IntegerNetwork, NeuronParams


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
    except Exception as exc:  # ImportError, or a Lava module that fails at import
        raise BackendError(absent_message(exc)) from exc
    return RunSteps, Loihi2SimCfg, Extractor, PyLoihiExtractorModel, LIFReset, Sparse


class LavaBackend(Backend):
    """Lava fixed_pt simulation; slow (~1.7 ms per step for 784-300-100-10)."""

    name = "lava"

    def run(self, net: IntegerNetwork, x_uint8: np.ndarray, steps: int,
            record_spikes: bool = False) -> SimResult:
        check_network(net)
        bias = check_inputs(net, x_uint8, steps)
        steps = int(steps)
        n_samples = bias.shape[0]
        sizes = net.sizes
        trains = [np.zeros((n_samples, steps, n), bool) for n in sizes]
        if steps > 0 and n_samples > 0:
            self._simulate(net, bias, steps, trains)
        counts = [t.sum(axis=1, dtype=np.int32) for t in trains]
        return SimResult(counts=counts, spikes=trains if record_spikes else None,
                         steps=steps)

    def _simulate(self, net: IntegerNetwork, bias: np.ndarray, steps: int, trains) -> None:
        (RunSteps, Loihi2SimCfg, Extractor, PyLoihiExtractorModel,
         LIFReset, Sparse) = _import_lava()

        def lif(p: NeuronParams, bias_mant: np.ndarray, name: str):
            return LIFReset(shape=(p.n,), du=int(p.du), dv=int(p.dv), vth=int(p.vth),
                            bias_mant=np.asarray(bias_mant, dtype=np.int32),
                            bias_exp=int(p.bias_exp), reset_interval=steps,
                            reset_offset=1, name=name)

        neurons = [lif(net.input_neurons, bias[0], "input")]
        synapses = []
        for i, layer in enumerate(net.layers):
            syn = Sparse(weights=layer_csr(layer), weight_exp=int(layer.weight_exp),
                         num_weight_bits=int(layer.num_weight_bits),
                         name=f"sparse{i}_{layer.name}")
            post = lif(layer.neurons, layer.neurons.bias_mant, f"lif{i}_{layer.name}")
            neurons[-1].s_out.connect(syn.s_in)
            syn.a_out.connect(post.a_in)
            synapses.append(syn)
            neurons.append(post)
        taps = []
        for pop in neurons:
            tap = Extractor(shape=(pop.a_in.shape[0],), buffer_size=steps)  # one slot per step
            pop.s_out.connect(tap.in_port)
            taps.append(tap)

        cfg = Loihi2SimCfg(select_tag="fixed_pt",
                           exception_proc_model_map={Extractor: PyLoihiExtractorModel})
        head = neurons[0]
        try:
            for k in range(bias.shape[0]):
                if k > 0:
                    head.bias_mant.set(bias[k].astype(np.int32))
                    for syn in synapses:
                        syn.a_buff.set(np.zeros(syn.a_buff.shape, dtype=np.int32))
                head.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
                for li, tap in enumerate(taps):
                    for t in range(steps):
                        trains[li][k, t] = tap.receive() != 0
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"Lava backend: simulation failed: {exc!r}") from exc
        finally:
            try:
                head.stop()
            except Exception:  # runtime may never have started
                pass
