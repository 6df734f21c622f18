"""One small interface for every simulator of an integer graph.

:class:`Backend` does what every simulator shares, once: it turns a chain
network into a graph, validates the graph and the batch
(:mod:`deepr_neuro.network.checks`), allocates the result and returns early
for an empty batch or zero steps; a backend implements only
:meth:`Backend._simulate`. ``Backend.exact`` says whether a backend is
integer-exact (spike-identical to Lava) or an approximate reading.
Lava is optional (lava-nc 0.10.0 needs numpy <2, so it is absent on
Python 3.13+ unless numpy 1.x is built there):
:func:`deepr_neuro.simulate.registry.unavailable_reason` says why a backend
cannot be created here, and ``get_backend("lava")`` raises that as a
:class:`BackendError`.

The registry here is only the mechanism (names -> factories); the built-in
backends (``emulator``, ``lava``, ``brian2``, ``brian2-float``) are registered
by :mod:`deepr_neuro.simulate.registry`, which the ``deepr_neuro.simulate``
package imports, so this module imports no backend and no backend imports
anything above it. Lava / Brian2 themselves are imported only when their
backend runs.

Every backend follows the semantics in :mod:`deepr_neuro.network.integer_network`:
each sample starts from zero state and runs ``steps`` steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from deepr_neuro.errors import BackendError
from deepr_neuro.network.checks import check_graph, check_inputs, check_spike_inputs
from deepr_neuro.network.integer_network import IntegerGraph


@dataclass
class SimResult:
    """What a backend returns for ``n`` samples.

    counts[k]: int32 (n_samples, n_k) spikes per neuron of population k, in
    graph order (k = 0 is the input population; for a chain, k is the layer).
    spikes[k]: bool (n_samples, steps, n_k), only when the run was asked to
    record full spike trains (``record_spikes=True``), else None.
    ``populations``: the population names in that order; ``readout``: the
    population whose counts give the class (None: the last one).
    ``readout_v``: (n_samples, n_readout) v of the readout population at each
    sample's own last step (int64 for integer backends, float for brian2-float),
    filled when the graph's ``readout_kind`` is ``"final_v"``;
    ``readout_kind`` then makes :meth:`predictions` use it.
    """

    counts: List[np.ndarray]
    spikes: Optional[List[np.ndarray]] = None
    steps: int = 0
    populations: Optional[Sequence[str]] = None
    readout: Optional[str] = None
    readout_v: Optional[np.ndarray] = None
    readout_kind: str = "spike_count"

    @property
    def output_counts(self) -> np.ndarray:
        if self.readout is not None and self.populations is not None:
            return self.counts[list(self.populations).index(self.readout)]
        return self.counts[-1]

    def predictions(self) -> np.ndarray:
        """Class = readout neuron with most spikes (``spike_count``) or largest final v
        (``final_v``); ties go to the lowest index."""
        if self.readout_kind == "final_v":
            return np.argmax(self.readout_v, axis=1)
        return np.argmax(self.output_counts, axis=1)


class Backend:
    """Base class: ``run(net_or_graph, x_uint8, steps, record_spikes)`` -> SimResult.

    Subclasses set ``name`` and ``exact`` and implement :meth:`_simulate`.
    """

    name = "base"
    #: True when the backend computes the chip's integer arithmetic and so must give the
    #: emulator's spikes bit for bit; False for an approximate reading (compared, never
    #: required to be identical). Tools decide by this attribute, never by a name.
    exact: bool = False

    def run(self, net, x_uint8: np.ndarray, steps: int, record_spikes: bool = False,
            n_steps=None) -> SimResult:
        """Validate, allocate, simulate: the same opening for every backend.

        For a graph with a spike-source input (``input_kind == "spikes"``),
        ``x_uint8`` is the spike trains (n_samples, steps, n_inputs) and
        ``n_steps`` each sample's own length (default ``steps``): a batch runs
        ``steps`` steps and a final-v readout is read at step ``n_steps - 1``.
        """
        graph = check_graph(net)
        if graph.input_kind == "spikes":
            inputs, last = check_spike_inputs(graph, x_uint8, steps, n_steps)
        else:
            if n_steps is not None:
                raise BackendError("n_steps: only a spike-source input (input_kind 'spikes') takes "
                                   "per-sample lengths; a bias-driven input runs every sample for steps")
            inputs = check_inputs(graph, x_uint8, steps)
            last = np.full(inputs.shape[0], int(steps) - 1, np.int64)
        steps = int(steps)
        n_samples = inputs.shape[0]
        counts = [np.zeros((n_samples, p.n), np.int32) for p in graph.populations]
        spikes = ([np.zeros((n_samples, steps, p.n), bool) for p in graph.populations]
                  if record_spikes else None)
        final_v = graph.readout_kind == "final_v"
        readout_v = (np.zeros((n_samples, graph.population(graph.readout).n),
                              np.int64 if self.exact else np.float64) if final_v else None)
        if n_samples > 0 and steps > 0:
            if graph.input_kind == "bias" and not final_v:
                self._simulate(graph, inputs, steps, counts, spikes)   # the MLP path, unchanged
            else:
                self._simulate(graph, inputs, steps, counts, spikes, last=last, readout_v=readout_v)
        return SimResult(counts=counts, spikes=spikes, steps=steps, populations=tuple(graph.names),
                         readout=graph.readout, readout_v=readout_v, readout_kind=graph.readout_kind)

    def _simulate(self, graph: IntegerGraph, bias: np.ndarray, steps: int, counts: List[np.ndarray],
                  spikes: Optional[List[np.ndarray]], last=None, readout_v=None) -> None:  # pragma: no cover
        """Fill ``counts`` (and ``spikes`` unless None) in place; ``bias`` is the input
        population's per-sample bias_mant (n_samples, n_inputs), already validated, or
        for a spike-source input the bool spike trains (n_samples, steps, n_inputs).
        With a final-v readout, fill ``readout_v[i]`` with the readout's v after step
        ``last[i]``."""
        raise NotImplementedError


_REGISTRY: Dict[str, Callable[[], Backend]] = {}


def register(name: str, factory: Callable[[], Backend]) -> None:
    _REGISTRY[name] = factory


def available() -> List[str]:
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise BackendError(
            f"unknown backend {str(name)[:100]!r}; choose one of: {', '.join(available())}")
    return _REGISTRY[name]()


