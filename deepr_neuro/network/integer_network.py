"""The deployed network as plain integer data: what every simulator backend runs.

Two shapes of the same data: :class:`IntegerGraph` (populations and
projections, NIR's nodes and edges: recurrent projections and several
projections into one population are first-class) is what backends run;
:class:`IntegerNetwork` is the feed-forward chain that the MLP conversion
produces, turned into a graph by :func:`chain_to_graph`.

A deployed network is a chain of layers of Loihi-style current-based LIF
neurons (Lava's ``PyLifModelBitAcc`` arithmetic, DESIGN.md section 4):

* layer 0 is the *input layer*: ``n_inputs`` chip neurons with no synapses,
  driven by an integer bias current per neuron that encodes one sample
  (``bias_mant`` given per sample, see :meth:`IntegerNetwork.encode`);
* each further layer ``l`` receives a sparse integer weight matrix from layer
  ``l - 1`` (one step of synaptic delay per layer, as Lava's Sparse process).

This module holds only what the network *is*. Backends (NumPy emulator, Lava,
Brian2) turn it into something that runs; they must all produce the same
spikes for the same network and inputs.

Run semantics shared by all backends: every sample starts from zero state
(u = v = 0 in every neuron, no synaptic input in flight) and runs
``steps`` time steps; the result is, per layer (input layer included), a
boolean array ``spikes[sample, step, neuron]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class NeuronParams:
    """Integer LIF parameters of one layer, in Lava's units.

    du, dv: 12-bit decays (0..4095); vth: threshold mantissa (compared as
    v > vth << 6); bias_exp: bias exponent (0..7); bias_mant: int per neuron
    (for the input layer this is the *base* bias, to which the per-sample
    encoded bias is added).
    """

    vth: int
    du: int
    dv: int
    bias_exp: int
    bias_mant: np.ndarray  # int32, shape (n,)

    @property
    def n(self) -> int:
        return int(self.bias_mant.shape[0])


@dataclass(frozen=True)
class SynapseLayer:
    """Sparse integer synapses from layer l-1 (size n_in) into layer l (size n_out).

    ``weights`` are the integers handed to Lava's Sparse process (already in
    [-256, 255]; Lava itself truncates them to ``num_weight_bits``), one per
    (rows[k], cols[k]) = (post, pre) pair, sorted by (row, col).
    """

    name: str
    n_in: int
    n_out: int
    rows: np.ndarray  # int32 post indices
    cols: np.ndarray  # int32 pre indices
    weights: np.ndarray  # int32
    weight_exp: int
    num_weight_bits: int
    neurons: NeuronParams


@dataclass(frozen=True)
class InputEncoding:
    """How a sample (uint8 features 0..255) becomes input-layer bias currents.

    bias_mant[i] = (x[i] * gain) >> shift   (integer, deterministic).
    """

    gain: int
    shift: int

    def encode(self, x_uint8: np.ndarray) -> np.ndarray:
        x = np.asarray(x_uint8, dtype=np.int64)
        return ((x * int(self.gain)) >> int(self.shift)).astype(np.int32)


@dataclass(frozen=True)
class IntegerNetwork:
    """Input layer + chain of sparse LIF layers, all integers."""

    input_neurons: NeuronParams
    encoding: InputEncoding
    layers: List[SynapseLayer] = field(default_factory=list)

    @property
    def n_inputs(self) -> int:
        return self.input_neurons.n

    @property
    def sizes(self) -> List[int]:
        return [self.n_inputs] + [layer.n_out for layer in self.layers]

    def encode(self, x_uint8: np.ndarray) -> np.ndarray:
        """Per-sample input-layer bias_mant, shape (n_samples, n_inputs), int32."""
        x = np.atleast_2d(np.asarray(x_uint8))
        return self.input_neurons.bias_mant[None, :] + self.encoding.encode(x)


# ---------------------------------------------------------------------------
# The network as a graph: populations and projections (NIR's nodes and edges)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Population:
    """A group of chip neurons with one set of LIF parameters (one Lava LIF process).

    ``core``: global core id of every neuron (int32, length n), or None where
    the network was built without a placement (random test graphs).
    """

    name: str
    neurons: NeuronParams
    core: Optional[np.ndarray] = None

    @property
    def n(self) -> int:
        return self.neurons.n


@dataclass(frozen=True)
class Projection:
    """Sparse integer synapses from population ``pre`` into population ``post``
    (one Lava Sparse process): ``weights[k]`` connects pre neuron ``cols[k]`` to
    post neuron ``rows[k]``, sorted by (row, col). One step of delay, as Lava's
    Sparse has: what ``pre`` fires at step t reaches ``post`` at step t + 1.
    ``weight_exp`` shifts this projection's own summed output (Lava floors the
    shift per Sparse), so a population fed by several projections receives the
    sum of separately shifted inputs. ``pre == post`` (or a later population
    onto an earlier one) is a recurrent projection.
    """

    name: str
    pre: str
    post: str
    rows: np.ndarray  # int32 post indices
    cols: np.ndarray  # int32 pre indices
    weights: np.ndarray  # int32 in [-256, 255]
    weight_exp: int
    num_weight_bits: int


INPUT_KINDS = ("bias", "spikes")
READOUT_KINDS = ("spike_count", "final_v")


@dataclass(frozen=True)
class IntegerGraph:
    """Populations and projections, all integers: what every backend runs.

    ``populations[0]`` is the input population: no projection may enter it.
    ``input_kind`` says how a sample drives it:

    * ``"bias"`` (MLPs): per sample its bias_mant is the base bias plus
      ``encoding`` (an :class:`InputEncoding`) of the sample (:meth:`encode`);
    * ``"spikes"`` (recurrent networks): it is a spike source replaying given
      integer spike trains (n_samples, steps, n_inputs), made by ``encoding``
      (a :class:`~deepr_neuro.network.frame_encoding.FrameEncoding`) from the
      frames; its LIF parameters are unused (Lava: a ``RingBuffer``).

    ``readout`` names the population that decides the class; ``readout_kind``
    how: ``"spike_count"`` (most spikes) or ``"final_v"`` (largest v at each
    sample's own last step, the integrator readout of a recurrent network);
    ties go to the lowest index either way.
    """

    populations: Tuple[Population, ...]
    projections: Tuple[Projection, ...]
    encoding: object
    readout: str
    input_kind: str = "bias"
    readout_kind: str = "spike_count"

    @property
    def input(self) -> Population:
        return self.populations[0]

    @property
    def n_inputs(self) -> int:
        return self.populations[0].n

    @property
    def names(self) -> List[str]:
        return [p.name for p in self.populations]

    @property
    def sizes(self) -> List[int]:
        return [p.n for p in self.populations]

    def index(self, name: str) -> int:
        """Position of population ``name`` (results are indexed the same way)."""
        for i, p in enumerate(self.populations):
            if p.name == name:
                return i
        raise KeyError(name)

    def population(self, name: str) -> Population:
        return self.populations[self.index(name)]

    def incoming(self, name: str) -> List[Projection]:
        """Projections into population ``name``, in graph order."""
        return [q for q in self.projections if q.post == name]

    def n_in(self, q: Projection) -> int:
        return self.population(q.pre).n

    def n_out(self, q: Projection) -> int:
        return self.population(q.post).n

    @property
    def is_chain(self) -> bool:
        """A feed-forward chain: projection i runs from population i to i + 1."""
        names = self.names
        return (len(self.projections) == len(names) - 1
                and all(q.pre == names[i] and q.post == names[i + 1] for i, q in enumerate(self.projections)))

    def encode(self, x_uint8: np.ndarray) -> np.ndarray:
        """Per-sample input bias_mant, shape (n_samples, n_inputs), int32."""
        x = np.atleast_2d(np.asarray(x_uint8))
        return self.populations[0].neurons.bias_mant[None, :] + self.encoding.encode(x)


def chain_to_graph(net: "IntegerNetwork", cores: Optional[Sequence[Optional[np.ndarray]]] = None) -> IntegerGraph:
    """The graph of a chain network: populations input, layer 0, layer 1, ...;
    projection i (named after layer i) from population i to population i + 1.

    A chain may repeat a layer name (or call a layer "input"); a graph's names
    are unique, so a repeated name gets the suffix ``#i`` (i = its layer index).
    """
    cores = list(cores) if cores is not None else [None] * (len(net.layers) + 1)
    pops = [Population("input", net.input_neurons, cores[0])]
    projs = []
    for i, layer in enumerate(net.layers):
        name = layer.name
        while any(p.name == name for p in pops):
            name = f"{name}#{i}"
        pops.append(Population(name, layer.neurons, cores[i + 1]))
        projs.append(Projection(name=name, pre=pops[i].name, post=name, rows=layer.rows,
                                cols=layer.cols, weights=layer.weights, weight_exp=int(layer.weight_exp),
                                num_weight_bits=int(layer.num_weight_bits)))
    return IntegerGraph(populations=tuple(pops), projections=tuple(projs), encoding=net.encoding,
                        readout=pops[-1].name)


def as_graph(net) -> IntegerGraph:
    """Backends run graphs; a chain network is turned into one on the way in."""
    if isinstance(net, IntegerGraph):
        return net
    if isinstance(net, IntegerNetwork):
        return chain_to_graph(net)
    raise TypeError(f"expected an IntegerGraph or IntegerNetwork, got {type(net).__name__}")
