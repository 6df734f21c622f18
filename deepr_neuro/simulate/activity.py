"""Activity: what an inference costs on a chip, per population and per projection.

Spikes are counted per population; a synaptic operation is one stored
connection read because its presynaptic neuron spiked, so the synops of a
projection are (spikes of each pre neuron) x (that neuron's fan-out in this
projection), zero weights included (the chip still reads them). A population's
synops are those its spikes trigger over all projections leaving it; the
readout of a feed-forward chain triggers none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from deepr_neuro.network.integer_network import IntegerGraph, as_graph
from deepr_neuro.simulate.backends import SimResult


@dataclass
class Activity:
    """Mean per-inference spikes and synaptic operations.

    spikes[k], synops[k]: population k in graph order (k = 0 is the input; for
    a chain, layer k); ``synops[k]`` sums the projections leaving population k.
    ``projection_synops``: per projection name.
    """

    spikes: np.ndarray   # float (n_populations,)
    synops: np.ndarray   # float (n_populations,)
    projection_synops: Dict[str, float]

    @property
    def total_spikes(self) -> float:
        return float(self.spikes.sum())

    @property
    def total_synops(self) -> float:
        return float(self.synops.sum())


def fan_out(q, n_pre: int = None) -> np.ndarray:
    """Stored connections of projection (or chain layer) ``q`` leaving each pre neuron."""
    n = int(n_pre) if n_pre is not None else int(q.n_in)
    return np.bincount(np.asarray(q.cols, dtype=np.int64), minlength=n)


def synops(net, result: SimResult) -> Activity:
    """Per-inference spike totals and synaptic operations of a backend's result
    (``net``: the graph or chain network that ran)."""
    graph: IntegerGraph = as_graph(net)
    n = max(result.counts[0].shape[0], 1)
    spikes = np.array([c.sum() / n for c in result.counts], dtype=float)
    ops = np.zeros(len(result.counts), dtype=float)
    per_projection: Dict[str, float] = {}
    for q in graph.projections:
        k = graph.index(q.pre)
        cost = float(result.counts[k].astype(np.int64).sum(axis=0) @ fan_out(q, graph.sizes[k])) / n
        per_projection[q.name] = cost
        ops[k] += cost
    return Activity(spikes=spikes, synops=ops, projection_synops=per_projection)
