"""Vectorised NumPy emulator of Lava's bit-accurate fixed-point dynamics.

Lava's fixed_pt simulator costs ~1.7 ms per time step for a 784-300-100-10
network; whole test sets need something a few hundred times faster that
still gives *the same spikes*. This module reproduces, operation for
operation and in the same integer widths, what lava-nc 0.10.0 does in
``PySparseModelBitAcc`` (lava/proc/sparse/models.py), ``PyLifModelBitAcc``
(lava/proc/lif/models.py) and ``clip_weights`` / ``truncate_weights``
(lava/utils/weightutils.py). The Lava source is the reference; every quirk
copied here is named where it is copied.

Speed comes from exact rewrites, not approximations:

* a chunk of samples is one (neurons, samples) int32 array per state
  variable, advanced step by step for all samples at once;
* the input layer has no synapses, so its current u stays 0 and each neuron's
  spike train depends only on its effective bias: it is simulated once per
  distinct bias value and gathered;
* synaptic input is one scipy ``csr @ dense`` product per layer and step
  (measured faster than building event lists in NumPy for these sizes);
* a decay constant du = 4095 (with Lava's ds_offset 1) multiplies by 0 and
  dv = 0 multiplies by 4096 >> 12 = 1, so those integrate-and-fire cases skip
  the 64-bit products.

Per-step ordering (Lava's LoihiProtocol): at step t every Sparse process
first sends ``a_buff`` computed at t - 1 and then computes a new one from the
spikes of step t, so a population at step t receives, from each projection
into it, W . s_pre(t-1) shifted by that projection's weight_exp: one step of
delay per projection, nothing at a sample's first step. Several projections
into one population are summed in int32, as Lava's InPort adds the messages
of its connections (``PyInPortVectorDense.recv``: int32 ``a_out`` messages
added onto zeros). Recurrent projections need nothing special: every input
comes from the previous step.

Lava's numbers and weight rules come from :mod:`deepr_neuro.network.fixed_point`;
validation from :mod:`deepr_neuro.network.checks` (via ``Backend.run``);
activity counts from :mod:`deepr_neuro.simulate.activity`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp

from deepr_neuro.errors import BackendError
from deepr_neuro.network.fixed_point import (ACT_SHIFT, DECAY_SHIFT, DECAY_UNITY, DM_OFFSET, DS_OFFSET,  # noqa: F401
                                             MAX_UV, V_MAX, VTH_SHIFT, effective_bias, shift_weight_exp,
                                             truncate_weights)
from deepr_neuro.network.integer_network import IntegerGraph, NeuronParams
from deepr_neuro.simulate.backends import Backend


# ---------------------------------------------------------------------------
# Lava's arithmetic, one piece at a time
# ---------------------------------------------------------------------------

def projection_csr(q, shape: Optional[Sequence[int]] = None) -> sp.csr_matrix:
    """The (n_post, n_pre) csr matrix handed to Lava's Sparse (duplicates summed).

    ``q`` is a Projection (give ``shape``) or a chain's SynapseLayer (shape
    from its n_out, n_in).
    """
    if shape is None:
        shape = (q.n_out, q.n_in)
    return sp.csr_matrix(
        (np.asarray(q.weights, dtype=np.int32),
         (np.asarray(q.rows, dtype=np.int64), np.asarray(q.cols, dtype=np.int64))),
        shape=tuple(int(n) for n in shape), dtype=np.int32)



def effective_weights(q, shape: Optional[Sequence[int]] = None) -> sp.csr_matrix:
    """Weights as Lava's Sparse uses them after its first-step clip and truncation
    (:func:`deepr_neuro.network.fixed_point.truncate_weights`, sign mode from the
    summed matrix: mixed iff some weight > 0 and some < 0)."""
    w = projection_csr(q, shape)
    w.sum_duplicates()
    data = truncate_weights(w.data.astype(np.int32), int(q.num_weight_bits))
    out = sp.csr_matrix((data.astype(np.int32), w.indices.copy(), w.indptr.copy()), shape=w.shape)
    out.eliminate_zeros()
    return out


def decay(x: np.ndarray, d: int, offset: int) -> np.ndarray:
    """sign(y) * (|y| >> 12) with y = x * (4096 - (d + offset)), as int32.

    Factor 0 (du = 4095 with ds_offset 1) gives 0 and factor 4096 (dv = 0)
    gives x itself: exact shortcuts, no int64 product needed.
    """
    factor = DECAY_UNITY - (int(d) + offset)
    if factor == 0:
        return np.zeros_like(x, dtype=np.int32)
    if factor == DECAY_UNITY:
        return x.astype(np.int32, copy=True)
    y = x.astype(np.int64) * factor
    # y >= 0: y >> 12;  y < 0: -((-y) >> 12) == (y + 4095) >> 12
    y += (y >> 63) & (DECAY_UNITY - 1)
    y >>= DECAY_SHIFT
    return y.astype(np.int32)


def wrap_u(dc: np.ndarray) -> np.ndarray:
    """Lava's one-time wrap of u (int32, in place).

    Lava: ``w = where(dc > 2**23, dc - 2**24, dc)`` then
    ``where(w <= -2**23, dc + 2**24, w)``. Since the second test can only
    hold when the first did not, this is a single wrap, not a modulo: values
    beyond +-2**24 are not brought back into 24 bits (and int32 wraps on top).
    """
    if dc.size and dc.max() > MAX_UV:
        dc[dc > MAX_UV] -= 2 * MAX_UV
    if dc.size and dc.min() <= -MAX_UV:
        dc[dc <= -MAX_UV] += 2 * MAX_UV
    return dc


def lif_step(u: np.ndarray, v: np.ndarray, a_in: Optional[np.ndarray], bias: np.ndarray,
             p: NeuronParams) -> np.ndarray:
    """One PyLifModelBitAcc step on int32 state (updated in place); returns spikes.

    a_in is the int32 synaptic input as the LIF receives it (None = no input).
    Order of Lava's run_spk: u = wrap(decay(u) + (a_in << 6)); v = clip(decay(v)
    + u + bias); spike where v > vth << 6; v = 0 where spiked.
    """
    if DECAY_UNITY - (int(p.du) + DS_OFFSET) == 0:     # du = 4095: u forgets at once
        if a_in is None:
            u.fill(0)
        else:
            np.left_shift(a_in, ACT_SHIFT, out=u)      # int32, wraps like Lava's
    else:
        dc = decay(u, p.du, DS_OFFSET)
        if a_in is not None:
            dc += np.left_shift(a_in, ACT_SHIFT)
        u[...] = dc
    wrap_u(u)
    if DECAY_UNITY - (int(p.dv) + DM_OFFSET) != DECAY_UNITY:  # dv = 0: v unchanged
        v[...] = decay(v, p.dv, DM_OFFSET)
    v += u                                              # int32 sums wrap like Lava's
    v += bias
    np.clip(v, -V_MAX, V_MAX, out=v)
    spikes = v > (int(p.vth) << VTH_SHIFT)
    np.copyto(v, 0, where=spikes)
    return spikes


# ---------------------------------------------------------------------------
# The batched simulation
# ---------------------------------------------------------------------------

def _distinct(values: np.ndarray):
    """(sorted distinct values, index of each element): np.unique without the sort when
    the range is small (input biases come from 8-bit pixels)."""
    flat = values.ravel()
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo > (1 << 22):
        return np.unique(flat, return_inverse=True)
    present = np.bincount(flat - lo, minlength=hi - lo + 1) > 0
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present) + lo, rank[flat - lo]


def _input_table(bias_eff: np.ndarray, p: NeuronParams, steps: int):
    """Spike trains of the input layer: one simulated neuron per distinct bias value.

    The input layer has no synapses, so u stays 0 and a neuron's train depends
    only on its effective bias. Returns (table (n_values, steps) bool, index of
    each element of bias_eff into table, same shape as bias_eff).
    """
    values, inverse = _distinct(bias_eff)
    u = np.zeros(values.shape, np.int32)
    v = np.zeros(values.shape, np.int32)
    table = np.zeros((values.size, steps), dtype=bool)
    vals = values.astype(np.int32)
    for t in range(steps):
        table[:, t] = lif_step(u, v, None, vals, p)
    return table, inverse.reshape(bias_eff.shape)


class EmulatorBackend(Backend):
    """Bit-exact, batched NumPy emulator of the Lava fixed_pt network, on any graph.

    State is kept as (neurons, samples) int32 arrays and advanced one step at
    a time for the whole chunk; a projection's input is ``W @ spikes`` with W
    the scipy csr matrix of Lava's effective weights (cost nnz(W) per sample
    and step, skipped when the pre population is silent; measured faster than
    event lists, whose construction in NumPy costs more than it saves).
    ``chunk`` samples are simulated together (memory ~ chunk x neurons).
    """

    name = "emulator"
    exact = True

    def __init__(self, chunk: int = 1000):
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise BackendError(f"EmulatorBackend.chunk: must be an integer >= 1 (got {chunk!r})")
        self.chunk = int(chunk)

    def _simulate(self, graph: IntegerGraph, bias: np.ndarray, steps: int, counts, spikes,
                  last=None, readout_v=None) -> None:
        sizes = graph.sizes
        index = {name: k for k, name in enumerate(graph.names)}
        projections = [(index[q.pre], index[q.post], effective_weights(q, (sizes[index[q.post]],
                                                                             sizes[index[q.pre]])),
                        int(q.weight_exp)) for q in graph.projections]
        biases = [None] + [effective_bias(p.neurons.bias_mant, p.neurons.bias_exp)[:, None]
                           for p in graph.populations[1:]]
        for lo in range(0, bias.shape[0], self.chunk):
            hi = min(lo + self.chunk, bias.shape[0])
            self._run_chunk(graph, bias[lo:hi], steps, projections, biases, counts, spikes, lo, hi,
                            None if last is None else last[lo:hi], readout_v)

    @staticmethod
    def _run_chunk(graph, bias_mant, steps, projections, biases, counts, spikes, lo, hi,
                   last=None, readout_v=None):
        batch = hi - lo
        pops = graph.populations
        n_pops = len(pops)
        p0 = pops[0].neurons
        source = graph.input_kind == "spikes"    # bias_mant holds the spike trains (batch, steps, n_in)
        if source:
            counts[0][lo:hi] = bias_mant.sum(axis=1, dtype=np.int32)
        else:
            table, index = _input_table(effective_bias(bias_mant, p0.bias_exp).T, p0, steps)
            counts[0][lo:hi] = table.sum(axis=1, dtype=np.int32)[index].T
        k_out = graph.index(graph.readout) if readout_v is not None else None
        u = [None] + [np.zeros((p.n, batch), np.int32) for p in pops[1:]]
        v = [None] + [np.zeros((p.n, batch), np.int32) for p in pops[1:]]
        cnt = [None] + [np.zeros((p.n, batch), np.int32) for p in pops[1:]]
        incoming = [[j for j, pr in enumerate(projections) if pr[1] == k] for k in range(n_pops)]
        # pending[j]: what projection j delivers at the next step (Sparse's a_buff), None = 0
        pending = [None] * len(projections)
        s = [None] * n_pops
        for t in range(steps):
            s[0] = bias_mant[:, t].T if source else table[:, t][index]   # input spikes (n_in, batch)
            if spikes is not None:
                spikes[0][lo:hi, t] = s[0].T
            arriving = pending
            for k in range(1, n_pops):                   # every neuron updates from step t - 1's input
                a_in = None
                for j in incoming[k]:
                    if arriving[j] is not None:
                        a_in = arriving[j] if a_in is None else a_in + arriving[j]  # int32, wraps as Lava
                s[k] = lif_step(u[k], v[k], a_in, biases[k], pops[k].neurons)
                if k == k_out:                           # final v: after each sample's own last step
                    done = np.flatnonzero(last == t)
                    if done.size:
                        readout_v[lo + done] = v[k][:, done].T
                cnt[k] += s[k]
                if spikes is not None:
                    spikes[k][lo:hi, t] = s[k].T
            pending = [None] * len(projections)
            as_int = [None] * n_pops
            for j, (pre, _, w, weight_exp) in enumerate(projections):   # then every Sparse computes
                if as_int[pre] is None:
                    if not s[pre].any():
                        as_int[pre] = False
                        continue
                    as_int[pre] = s[pre].astype(np.int32)
                elif as_int[pre] is False:
                    continue
                a = w @ as_int[pre]
                if weight_exp:
                    a = shift_weight_exp(a, weight_exp)
                pending[j] = a
        for k in range(1, n_pops):
            counts[k][lo:hi] = cnt[k].T

