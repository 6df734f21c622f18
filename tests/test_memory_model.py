"""hardware/memory.py on its own: the chunk arithmetic for any chunk format, not only Loihi's."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepr_neuro.errors import ConfigError
from deepr_neuro.hardware import memory

formats = st.builds(lambda w, c, h: SimpleNamespace(word_bits=w, chunk_max_synapses=c, chunk_header_bits=h),
                    st.integers(1, 128), st.integers(1, 80), st.integers(0, 64))


def brute_bits(mem, counts, bps):
    """Row by row, chunk by chunk, each rounded up to whole words."""
    total = 0
    for n in counts:
        while n > 0:
            m = min(n, mem.chunk_max_synapses)
            total += math.ceil((m * bps + mem.chunk_header_bits) / mem.word_bits) * mem.word_bits
            n -= m
    return total


@settings(max_examples=150, deadline=None)
@given(mem=formats, bps=st.integers(1, 40), counts=st.lists(st.integers(0, 400), max_size=30))
def test_memory_bits_is_the_sum_of_rounded_chunks(mem, bps, counts):
    c = memory.axon_counts(counts)
    got = 0 if c.size == 0 else memory.memory_bits(mem, c, bps)
    assert got == brute_bits(mem, counts, bps)


@settings(max_examples=150, deadline=None)
@given(mem=formats, bps=st.integers(1, 40), n_neurons=st.integers(1, 300), words=st.integers(1, 400))
def test_best_capacity_fits_packed_and_one_more_does_not(mem, bps, n_neurons, words):
    M = words * mem.word_bits
    k = memory.capacity_best(mem, M, bps, n_neurons)
    row = min(mem.chunk_max_synapses, n_neurons)

    def packed(total):  # rows of full chunks, then the rest in one chunk
        return [row] * (total // row) + ([total % row] if total % row else [])
    assert brute_bits(mem, packed(k), bps) <= M
    assert brute_bits(mem, packed(k + 1), bps) > M


@settings(max_examples=100, deadline=None)
@given(data=st.data(), mem=formats, bps=st.integers(1, 40), n_neurons=st.integers(1, 200),
       n_axons=st.integers(1, 300), words=st.integers(1, 400))
def test_guaranteed_capacity_fits_random_layouts(data, mem, bps, n_neurons, n_axons, words):
    M = words * mem.word_bits
    # the profile caps the figure at the wiring limit n_axons x n_neurons (synapse_capacity)
    k = min(memory.capacity_guaranteed(mem, M, bps, n_neurons, n_axons), n_axons * n_neurons)
    if k == 0:
        return
    # a random layout of k synapses over at most n_axons axons, each row <= n_neurons
    rows = [0] * n_axons
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    left = k
    while left:
        i = int(rng.integers(n_axons))
        if rows[i] < n_neurons:
            rows[i] += 1
            left -= 1
    assert brute_bits(mem, rows, bps) <= M


def test_guaranteed_capacity_is_conservative_but_not_above_the_worst_layout():
    """With many axons the worst layout is one synapse per axon (one 64-bit word
    each: 100 fit in 100 words); the guaranteed figure never exceeds it."""
    mem = SimpleNamespace(word_bits=64, chunk_max_synapses=64, chunk_header_bits=10)
    k = memory.capacity_guaranteed(mem, 64 * 100, 18, 1024, 4096)
    assert 0 < k <= 100
    assert brute_bits(mem, [1] * 101, 18) > 64 * 100


@pytest.mark.parametrize("counts", [[-1], [3, -2, 5], np.array([[1, -1]])])
def test_negative_counts_are_refused(counts):
    with pytest.raises(ConfigError, match="must be >= 0"):
        memory.axon_counts(counts)


@pytest.mark.parametrize("n, need", [(1, 0), (2, 1), (3, 2), (64, 6), (65, 7), (1024, 10), (1025, 11)])
def test_index_bits_needed(n, need):
    assert memory.index_bits_needed(n) == need


@pytest.mark.parametrize("allowed, need, width", [([0, 6, 7, 8], 0, 0), ([8, 6, 7], 7, 7), ([6, 7], 8, None),
                                                  (None, 1, None), ([], 0, None)])
def test_index_width_is_the_narrowest_that_holds(allowed, need, width):
    assert memory.index_width(allowed, need) == width
