"""The deployed network as plain integer data: what every simulator backend runs.

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
from typing import List

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
