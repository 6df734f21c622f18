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
from deepr_neuro.network.checks import check_graph, check_inputs
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
    """

    counts: List[np.ndarray]
    spikes: Optional[List[np.ndarray]] = None
    steps: int = 0
    populations: Optional[Sequence[str]] = None
    readout: Optional[str] = None

    @property
    def output_counts(self) -> np.ndarray:
        if self.readout is not None and self.populations is not None:
            return self.counts[list(self.populations).index(self.readout)]
        return self.counts[-1]

    def predictions(self) -> np.ndarray:
        """Class = readout neuron with most spikes; ties go to the lowest index."""
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

    def run(self, net, x_uint8: np.ndarray, steps: int, record_spikes: bool = False) -> SimResult:
        """Validate, allocate, simulate: the same opening for every backend."""
        graph = check_graph(net)
        bias = check_inputs(graph, x_uint8, steps)
        steps = int(steps)
        n_samples = bias.shape[0]
        counts = [np.zeros((n_samples, p.n), np.int32) for p in graph.populations]
        spikes = ([np.zeros((n_samples, steps, p.n), bool) for p in graph.populations]
                  if record_spikes else None)
        if n_samples > 0 and steps > 0:
            self._simulate(graph, bias, steps, counts, spikes)
        return SimResult(counts=counts, spikes=spikes, steps=steps, populations=tuple(graph.names),
                         readout=graph.readout)

    def _simulate(self, graph: IntegerGraph, bias: np.ndarray, steps: int, counts: List[np.ndarray],
                  spikes: Optional[List[np.ndarray]]) -> None:  # pragma: no cover
        """Fill ``counts`` (and ``spikes`` unless None) in place; ``bias`` is the input
        population's per-sample bias_mant (n_samples, n_inputs), already validated."""
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


