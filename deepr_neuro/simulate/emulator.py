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

Per-step ordering (Lava's LoihiProtocol): at step t the Sparse process first
sends ``a_buff`` computed at t - 1 and then computes a new one from the spikes
of step t, so layer l at step t receives W . s_{l-1}(t-1): one step of delay
per synapse layer, nothing at a sample's first step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import scipy.sparse as sp

from deepr_neuro.simulate.backends import Backend, SimResult
from deepr_neuro.errors import BackendError
from deepr_neuro.network.integer_network import IntegerNetwork, NeuronParams, SynapseLayer

# --- constants of AbstractPyLifModelFixed (lava/proc/lif/models.py) ---------
DECAY_SHIFT = 12            # decays are MSB-aligned to 12 bits
DECAY_UNITY = 1 << DECAY_SHIFT
DS_OFFSET = 1               # added to du ("ds_offset = 1")
DM_OFFSET = 0               # added to dv ("dm_offset = 0")
ACT_SHIFT = 6               # synaptic input is left-shifted by 6
VTH_SHIFT = 6               # threshold is left-shifted by 6
MAX_UV = 1 << 23            # "max_uv_val = 2 ** (uv_bitwidth - 1)"
V_MAX = MAX_UV - 1          # v is clipped to [-(2**23 - 1), 2**23 - 1]

# --- value ranges of the Lava fixed-point models (their declared precisions)
LAVA_LIMITS = {
    "du": (0, 4095),            # uint16, precision 12
    "dv": (0, 4095),            # uint16, precision 12
    "vth": (0, 131071),         # precision 17
    "bias_mant": (-4096, 4095),  # int16, precision 13 (signed)
    "bias_exp": (0, 7),         # precision 3
    "weight": (-256, 255),      # 8-bit magnitude + sign (Sparse clips to this)
    "num_weight_bits": (1, 8),
    "weight_exp": (-8, 7),      # Lava shifts by any amount; the range the agreement tests cover
}

# Lava's SignMode values (lava.utils.weightutils), without importing Lava.
EXCITATORY, INHIBITORY, MIXED = "excitatory", "inhibitory", "mixed"


# ---------------------------------------------------------------------------
# Validation: refuse what Lava would silently wrap or what the chip cannot hold
# ---------------------------------------------------------------------------

def _check_range(where: str, field: str, values,
                 hint: str = "re-run quantization with that limit") -> None:
    lo, hi = LAVA_LIMITS[field]
    arr = np.asarray(values)
    if arr.size == 0:
        return
    vmin, vmax = int(arr.min()), int(arr.max())
    if vmin < lo or vmax > hi:
        bad = vmin if vmin < lo else vmax
        raise BackendError(
            f"{where}.{field}: value {bad} outside the Lava fixed-point range "
            f"[{lo}, {hi}]; {hint}")


def check_network(net: IntegerNetwork) -> None:
    """Raise BackendError naming layer, field, value and limit for out-of-range integers.

    Lava's Python models do not check these; beyond them it silently wraps
    (int16 bias storage) or computes something no chip does.
    """
    def neurons(where: str, p: NeuronParams) -> None:
        for field in ("du", "dv", "vth", "bias_exp"):
            _check_range(where, field, getattr(p, field))
        _check_range(where, "bias_mant", p.bias_mant)

    def integers(where: str, field: str, values) -> None:
        arr = np.asarray(values)
        if arr.dtype.kind not in "iu":
            raise BackendError(f"{where}.{field}: dtype {arr.dtype} is not an integer type; the "
                               "network must hold integers (values are never cast)")

    integers("input", "bias_mant", net.input_neurons.bias_mant)
    for field in ("vth", "du", "dv", "bias_exp"):
        if not isinstance(getattr(net.input_neurons, field), (int, np.integer)):
            raise BackendError(f"input.{field}: {getattr(net.input_neurons, field)!r} is not an integer")
    gain, shift = net.encoding.gain, net.encoding.shift
    if not isinstance(gain, (int, np.integer)) or not isinstance(shift, (int, np.integer)) \
            or gain < 0 or not 0 <= shift <= 31:
        raise BackendError(f"input encoding: gain {gain!r} must be an integer >= 0 and shift {shift!r} "
                           "an integer in 0..31")
    neurons("input", net.input_neurons)
    prev = net.n_inputs
    for i, layer in enumerate(net.layers):
        where = f"layer {i} {layer.name!r}"
        if layer.n_in != prev:
            raise BackendError(
                f"{where}: n_in = {layer.n_in} but the layer before has {prev} neurons")
        if layer.neurons.n != layer.n_out:
            raise BackendError(
                f"{where}: {layer.neurons.n} bias_mant values for n_out = {layer.n_out}")
        rows, cols = np.asarray(layer.rows), np.asarray(layer.cols)
        for field, values in (("rows", rows), ("cols", cols), ("weights", layer.weights),
                              ("bias_mant", layer.neurons.bias_mant)):
            integers(where, field, values)
        for field in ("weight_exp", "num_weight_bits"):
            if not isinstance(getattr(layer, field), (int, np.integer)):
                raise BackendError(f"{where}.{field}: {getattr(layer, field)!r} is not an integer")
        if not (rows.shape == cols.shape == np.shape(layer.weights)):
            raise BackendError(f"{where}: rows, cols and weights differ in length")
        if rows.size and (rows.min() < 0 or rows.max() >= layer.n_out
                          or cols.min() < 0 or cols.max() >= layer.n_in):
            raise BackendError(f"{where}: a (row, col) index lies outside "
                               f"({layer.n_out}, {layer.n_in})")
        _check_range(where, "weight", layer.weights)
        _check_range(where, "num_weight_bits", layer.num_weight_bits)
        _check_range(where, "weight_exp", layer.weight_exp)
        neurons(where, layer.neurons)
        prev = layer.n_out


def check_inputs(net: IntegerNetwork, x_uint8: np.ndarray, steps: int) -> np.ndarray:
    """Validate a batch and return its input-layer bias_mant (n_samples, n_inputs)."""
    x = np.asarray(x_uint8)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != net.n_inputs:
        raise BackendError(
            f"inputs: expected shape (n_samples, {net.n_inputs}), got {np.shape(x_uint8)}")
    if x.size and (not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() > 255):
        if not (np.all(x == np.round(x)) and x.min() >= 0 and x.max() <= 255):
            raise BackendError(
                f"inputs: expected integer features 0..255 (uint8), got {x.dtype} values in "
                f"[{x.min()}, {x.max()}]; scale them with the bundle's input encoding first")
    if int(steps) != steps or steps < 0:
        raise BackendError(f"steps: must be a non-negative integer (got {steps!r})")
    bias = net.encode(x)
    _check_range("input (encoded sample)", "bias_mant", bias,
                 hint="lower the input encoding's gain or raise its shift")
    return bias.astype(np.int32)


# ---------------------------------------------------------------------------
# Lava's arithmetic, one piece at a time
# ---------------------------------------------------------------------------

def sign_mode(weights: np.ndarray) -> str:
    """Lava's ``determine_sign_mode``: min >= 0 -> excitatory, max <= 0 -> inhibitory.

    Lava takes min/max over the csr matrix including its implicit zeros, which
    only matters for the signs, so: mixed iff some weight > 0 and some < 0.
    """
    w = np.asarray(weights)
    if not (w < 0).any():
        return EXCITATORY
    if not (w > 0).any():
        return INHIBITORY
    return MIXED


def layer_csr(layer: SynapseLayer) -> sp.csr_matrix:
    """The (n_out, n_in) csr matrix handed to Lava's Sparse (duplicates summed)."""
    return sp.csr_matrix(
        (np.asarray(layer.weights, dtype=np.int32),
         (np.asarray(layer.rows, dtype=np.int64), np.asarray(layer.cols, dtype=np.int64))),
        shape=(layer.n_out, layer.n_in), dtype=np.int32)


def effective_weights(layer: SynapseLayer) -> sp.csr_matrix:
    """Weights as Lava's Sparse uses them after its first-step clip and truncation.

    Sign mode is Lava's automatic one: mixed iff some weight > 0 and some < 0.
    Mixed: clip to [-256, 255], drop 9 - b low bits by arithmetic shift (floors
    negatives). Excitatory: clip to [0, 255], drop 8 - b bits. Inhibitory
    (no positive weight): negate, clip to [0, 255], drop 8 - b bits, negate
    back, so -256 becomes -255 and negatives round toward zero.
    """
    w = layer_csr(layer)
    w.sum_duplicates()
    data = w.data.astype(np.int32)
    mode = sign_mode(data)
    b = int(layer.num_weight_bits)
    if mode == MIXED:
        n = 8 - b + 1
        data = np.clip(data, -256, 255)
        data = (data >> n) << n
    elif mode == EXCITATORY:
        n = 8 - b
        data = np.clip(data, 0, 255)
        data = (data >> n) << n
    else:
        n = 8 - b
        data = np.clip(-data, 0, 255)
        data = -((data >> n) << n)
    out = sp.csr_matrix((data.astype(np.int32), w.indices.copy(), w.indptr.copy()),
                        shape=w.shape)
    out.eliminate_zeros()
    return out


def shift_weight_exp(a: np.ndarray, weight_exp: int) -> np.ndarray:
    """Sparse's ``a_buff``: left shift if weight_exp > 0 else arithmetic right shift."""
    if weight_exp > 0:
        return np.left_shift(a, weight_exp)
    return np.right_shift(a, -weight_exp)


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


def effective_bias(bias_mant: np.ndarray, bias_exp: int) -> np.ndarray:
    """bias_mant (stored as int16 by Lava) << bias_exp, int32."""
    b = np.asarray(bias_mant).astype(np.int16).astype(np.int32)
    e = int(bias_exp)
    return np.left_shift(b, e) if e >= 0 else np.right_shift(b, -e)


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
    """Bit-exact, batched NumPy emulator of the Lava fixed_pt network.

    State is kept as (neurons, samples) int32 arrays and advanced one step at
    a time for the whole chunk; synaptic input is ``W @ spikes`` with W the
    scipy csr matrix of Lava's effective weights (cost nnz(W) per sample and
    step, independent of how busy the network is; measured faster than
    event lists, whose construction in NumPy costs more than it saves).
    ``chunk`` samples are simulated together (memory ~ chunk x neurons).
    """

    name = "emulator"

    def __init__(self, chunk: int = 1000):
        if chunk < 1:
            raise BackendError(f"EmulatorBackend.chunk: must be >= 1 (got {chunk})")
        self.chunk = int(chunk)

    def run(self, net: IntegerNetwork, x_uint8: np.ndarray, steps: int,
            record_spikes: bool = False) -> SimResult:
        check_network(net)
        bias_all = check_inputs(net, x_uint8, steps)
        steps = int(steps)
        n_samples = bias_all.shape[0]
        sizes = net.sizes
        counts = [np.zeros((n_samples, n), np.int32) for n in sizes]
        spikes = ([np.zeros((n_samples, steps, n), bool) for n in sizes]
                  if record_spikes else None)
        if steps == 0 or n_samples == 0:
            return SimResult(counts=counts, spikes=spikes, steps=steps)
        weights = [effective_weights(layer) for layer in net.layers]
        biases = [effective_bias(layer.neurons.bias_mant, layer.neurons.bias_exp)[:, None]
                  for layer in net.layers]
        for lo in range(0, n_samples, self.chunk):
            hi = min(lo + self.chunk, n_samples)
            self._run_chunk(net, bias_all[lo:hi], steps, weights, biases,
                            counts, spikes, lo, hi)
        return SimResult(counts=counts, spikes=spikes, steps=steps)

    @staticmethod
    def _run_chunk(net, bias_mant, steps, weights, biases, counts, spikes, lo, hi):
        batch = hi - lo
        p0 = net.input_neurons
        table, index = _input_table(effective_bias(bias_mant, p0.bias_exp).T, p0, steps)
        counts[0][lo:hi] = table.sum(axis=1, dtype=np.int32)[index].T
        n_layers = len(net.layers)
        u = [np.zeros((layer.n_out, batch), np.int32) for layer in net.layers]
        v = [np.zeros((layer.n_out, batch), np.int32) for layer in net.layers]
        cnt = [np.zeros((layer.n_out, batch), np.int32) for layer in net.layers]
        # pending[l]: what layer l receives at the next step (Sparse's a_buff), None = 0
        pending = [None] * n_layers
        for t in range(steps):
            s = table[:, t][index]                       # input spikes (n_in, batch)
            if spikes is not None:
                spikes[0][lo:hi, t] = s.T
            arriving = pending
            pending = [None] * n_layers
            for li, layer in enumerate(net.layers):
                if s.any():
                    a = weights[li] @ s.astype(np.int32)
                    if layer.weight_exp:
                        a = shift_weight_exp(a, int(layer.weight_exp))
                    pending[li] = a
                s = lif_step(u[li], v[li], arriving[li], biases[li], layer.neurons)
                cnt[li] += s
                if spikes is not None:
                    spikes[li + 1][lo:hi, t] = s.T
        for li in range(n_layers):
            counts[li + 1][lo:hi] = cnt[li].T


# ---------------------------------------------------------------------------
# Activity: what an inference costs on a chip
# ---------------------------------------------------------------------------

@dataclass
class Activity:
    """Mean per-inference spikes and synaptic operations, per layer (l = 0 is input).

    synops[l] counts the synaptic events that layer l's spikes trigger: each
    spike of neuron i costs fan_out(i) operations (stored connections out of
    i into layer l + 1, zero weights included: the chip still reads them).
    The output layer triggers none.
    """

    spikes: np.ndarray   # float (n_layers,)
    synops: np.ndarray   # float (n_layers,)

    @property
    def total_spikes(self) -> float:
        return float(self.spikes.sum())

    @property
    def total_synops(self) -> float:
        return float(self.synops.sum())


def fan_out(layer: SynapseLayer) -> np.ndarray:
    """Stored connections leaving each pre-neuron of ``layer`` (length n_in)."""
    return np.bincount(np.asarray(layer.cols, dtype=np.int64), minlength=layer.n_in)


def synops(net: IntegerNetwork, result: SimResult) -> Activity:
    """Per-inference spike totals and synaptic operations of a backend's result."""
    n = max(result.counts[0].shape[0], 1)
    spikes = np.array([c.sum() / n for c in result.counts], dtype=float)
    ops = np.zeros(len(result.counts), dtype=float)
    for li, layer in enumerate(net.layers):
        ops[li] = float(result.counts[li].astype(np.int64).sum(axis=0) @ fan_out(layer)) / n
    return Activity(spikes=spikes, synops=ops)
