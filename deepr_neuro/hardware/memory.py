"""The chunked synapse memory model: how many bits a core's synapses cost.

Pure functions over a ``synapse_memory`` block (anything with ``word_bits``,
``chunk_max_synapses``, ``chunk_header_bits``: a
:class:`~deepr_neuro.hardware.profile.SynapseMemory`) and the bits one
synapse costs; :class:`~deepr_neuro.hardware.profile.HardwareProfile`
validates its arguments and delegates here, so the arithmetic can be read
(and tested) apart from the schema.

Synapse memory model
--------------------
The memory formula is nengo-loihi's (``SynapseConfig.bits_per_axon`` in
``nengo_loihi/block.py``; ``Synapse.bits`` sums it over the weight rows of a
synapse block). Our reading of it:

* Synapses are stored **per input axon**: the synapses that one presynaptic
  neuron (one input axon of the core) makes onto neurons of the core form one
  row. A row of ``n`` synapses is split into chunks of at most
  ``chunk_max_synapses`` (64 on Loihi: ``n_synapses = 63`` plus one).
* A chunk of ``m`` synapses costs ``m * (weight_bits + delay_bits + tag_bits
  [+ index_bits when sparse]) + chunk_header_bits`` (10 on Loihi: a 4-bit
  synapse-format index and a 6-bit synapse count), rounded **up** to a whole
  memory word (``word_bits`` = 64).
* ``index_bits`` addresses the post-neuron (compartment) on the core: nengo-
  loihi takes ``ceil(log2(max_index + 1))`` and rounds it up to the next width
  the chip offers (``index_bits_allowed``: 0, 6, 7, ..., 12 on Loihi). A core
  whose highest used neuron index is 1023 therefore pays 10 index bits per
  sparse synapse; one with 64 neurons pays 6.
* Dense storage (``sparse=False``) stores one weight for every neuron of the
  core in each row (zeros included) and no index bits.

So the memory one core uses depends on how its synapses spread over input
axons, not only on their number: 64 synapses from one axon cost one chunk
(1216 bits with 8-bit weights and 10 index bits), the same 64 synapses from 64
different axons cost 64 one-synapse chunks (64 x 64 = 4096 bits).
:meth:`HardwareProfile.synapse_memory_bits` (via :func:`memory_bits`) computes the exact figure for a
given layout; :meth:`HardwareProfile.synapse_capacity` gives the best case
(rows packed into full chunks) or, with ``n_axons``, a count that fits *every*
layout over at most that many axons (what a rewiring loop needs, since it moves
synapses between axons at every step).
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

from deepr_neuro.errors import ConfigError

__all__ = ["index_bits_needed", "index_width", "chunk_bits", "axon_counts", "memory_bits",
           "capacity_best", "capacity_guaranteed"]


def index_bits_needed(n_neurons: int) -> int:
    """Bits that address ``n_neurons`` post-neurons: ceil(log2(max index + 1))."""
    return math.ceil(math.log2(n_neurons)) if n_neurons > 1 else 0


def index_width(allowed: Optional[Sequence[int]], need: int) -> Optional[int]:
    """The narrowest width in ``allowed`` that holds ``need`` bits; None if none does."""
    for b in sorted(allowed or []):
        if b >= need:
            return b
    return None


def chunk_bits(mem, m, bits_per_synapse: int):
    """Memory of chunks of ``m`` synapses (int or array; 0 synapses cost 0):
    ``m * bits_per_synapse + chunk_header_bits``, rounded up to whole words."""
    m = np.asarray(m, dtype=np.int64)
    raw = m * bits_per_synapse + mem.chunk_header_bits
    words = -(-raw // mem.word_bits)
    out = np.where(m > 0, words * mem.word_bits, 0)
    return int(out) if out.ndim == 0 else out


def axon_counts(counts) -> np.ndarray:
    """Synapses per input axon as a flat int64 array; negative counts refused."""
    c = np.asarray(list(counts) if not isinstance(counts, np.ndarray) else counts)
    if c.size == 0:
        return c
    c = c.astype(np.int64).ravel()
    if (c < 0).any():
        raise ConfigError("synapse counts per axon must be >= 0")
    return c


def memory_bits(mem, counts: np.ndarray, bits_per_synapse: int) -> int:
    """Memory (bits) of rows with ``counts`` synapses each (from :func:`axon_counts`):
    each row split into full chunks of chunk_max_synapses plus one partial chunk."""
    C = mem.chunk_max_synapses
    full, rest = np.divmod(counts, C)
    total = int(full.sum()) * chunk_bits(mem, C, bits_per_synapse)
    if (rest > 0).any():
        total += int(np.sum(chunk_bits(mem, rest, bits_per_synapse)))
    return int(total)


def capacity_best(mem, memory_bits_per_core: int, bits_per_synapse: int, n_neurons: int) -> int:
    """Most synapses the memory holds with every axon's row packed in full
    chunks of min(chunk_max_synapses, n_neurons) synapses."""
    M = memory_bits_per_core
    L = min(mem.chunk_max_synapses, n_neurons)
    F = chunk_bits(mem, L, bits_per_synapse)
    full, rem = divmod(M, F)
    extra = 0
    for m in range(L - 1, 0, -1):
        if chunk_bits(mem, m, bits_per_synapse) <= rem:
            extra = m
            break
    return full * L + extra


def capacity_guaranteed(mem, memory_bits_per_core: int, bits_per_synapse: int,
                        n_neurons: int, n_axons: int) -> int:
    """Largest K such that ANY layout of K synapses over at most ``n_axons``
    axons (each with <= n_neurons synapses) fits. Uses the exact identity
    bits(row of n) = n*F/C + h(n mod C), h(r) = chunk(r) - r*F/C, and bounds
    the sum of h over axons by min(n_axons, K) * max h (conservative)."""
    M = Fraction(memory_bits_per_core)
    C = mem.chunk_max_synapses
    F = Fraction(chunk_bits(mem, C, bits_per_synapse))
    rate = F / C
    rmax = min(C - 1, n_neurons)
    hmax = max([Fraction(chunk_bits(mem, r, bits_per_synapse)) - r * rate
                for r in range(1, rmax + 1)] or [Fraction(0)])
    hmax = max(hmax, Fraction(0))
    A = n_axons
    best = 0
    k1 = math.floor(M / (rate + hmax)) if rate + hmax > 0 else 0  # K <= A branch
    best = max(best, min(k1, A))
    if M >= A * hmax:  # K > A branch
        k2 = math.floor((M - A * hmax) / rate)
        if k2 > A:
            best = max(best, k2)
    return int(best)
