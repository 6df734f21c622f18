"""Brian2 backend: an independent simulator of an integer graph (or chain network).

Two readings of the same network:

``mode="integer"`` (backend name ``brian2``)
    Lava's fixed-point arithmetic (``PyLifModelBitAcc`` + ``PySparseModelBitAcc``,
    lava-nc 0.10.0) written as Brian2 abstract code on int64 state variables.
    It must give the same spikes as Lava and the emulator, bit for bit. It is
    written from Lava's source, not from ``brian2-loihi`` (whose weight rounding
    differs for negative weights). Per step and neuron, in this order:

    1. synaptic input: one accumulator ``acc_k`` per projection k into the
       population holds the sum of the chip weights of every presynaptic
       neuron of that projection that spiked on the previous step (Brian2
       delivers spikes after thresholds, so the next step's update reads
       them: Lava's one-step Sparse delay; a recurrent projection is a
       Synapses object from a group onto itself); ``a_k = acc_k << weight_exp_k``
       (arithmetic right shift if negative, applied to the *sum*, as each
       Sparse does), cast to int32 as Lava's int32 ``a_out`` port does, and
       ``a = sum_k a_k`` in int32, as the LIF's InPort adds its connections;
    2. ``u = trunc(u * (4096 - (du + 1)) / 4096)`` (Lava's ``ds_offset`` = 1;
       sign * (|x| >> 12), i.e. rounding toward zero), then
       ``u += a << 6`` in int32, then Lava's one-shot 24-bit wrap (above
       2**23 it loses 2**24; at or below -2**23 it gains 2**24);
    3. ``v = clip(trunc(v * (4096 - dv) / 4096) + u + bias, -(2**23 - 1),
       2**23 - 1)`` (the sum in int32 as in Lava), with
       ``bias = int16(bias_mant) << bias_exp``;
    4. spike where ``v > vth << 6``; ``v = 0`` where spiked.

    Chip weights are the network's integers after Lava's per-layer sign mode
    (from the weight matrix, implicit zeros included), 8-bit clip (mixed
    [-256, 255], excitatory [0, 255], inhibitory [-255, 0]) and truncation to
    ``num_weight_bits`` (``(w >> n) << n``, n = 8 - bits + mixed; inhibitory
    weights are truncated in magnitude), see :func:`chip_weights`.

``mode="float"`` (backend name ``brian2-float``)
    A continuous-time, real-valued current-based LIF reading of the same
    network: how far is the chip's integer model from an ideal neuron? Its
    agreement is reported, never required to be exact. Between steps::

        du/dt = -u / tau_u
        dv/dt = -v / tau_v + (g * u + bias) / dt
        spike when v > vth * 2**6 (checked once a step), then v = 0

    with ``exp(-dt / tau_u) = 1 - (du + 1) / 4096`` and
    ``exp(-dt / tau_v) = 1 - dv / 4096`` (the chip's decay per step; no leak
    when dv = 0), and the gain ``g = (dt / tau_u) / (1 - exp(-dt / tau_u))``
    chosen so that one synaptic event delivers to v, step after step, exactly
    the charge the chip's decaying u does (w, f*w, f**2*w, ...). A spike adds
    ``w * 2**(6 + weight_exp)`` (that projection's weight_exp) to u at the
    start of the next step (the chip's one-step delay; ``w`` = the chip weights above, so quantization is
    not part of the difference). du = 4095 gives tau_u = 0: a delta current
    that puts w into v within the step. Integrated exactly
    (:func:`float_propagator`); no wrap, no clip, no rounding. So an
    integrate-and-fire network (du = 4095, dv = 0) agrees with the integer
    model except where the chip wraps or clips; leaky ones show the effect of
    rounding and of the chip's "decay, then add" discretisation.

Run semantics (:mod:`deepr_neuro.network.integer_network`): every sample starts from
zero state. Samples run in batches as independent copies of the network in
one Brian2 ``Network`` (copy ``s`` of neuron ``i`` is neuron ``s * n + i``);
each ``run`` builds fresh objects and passes an explicit namespace and
``codeobj_class``, so no Brian2 global state (magic network, ``prefs``) is
read or changed.

Code generation: numpy only (every object gets ``NumpyCodeObject``). Brian2
2.9's Cython target does not compile the int64 update here ("Invalid use of
fused types" in the generated .pyx), so it is not offered.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepr_neuro.errors import BackendError, ConfigError
from deepr_neuro.network.integer_network import IntegerGraph, NeuronParams
from deepr_neuro.simulate.backends import Backend

MODES = ("integer", "float")

_INT32_OFFSET = 2 ** 31
_INT32_MOD = 2 ** 32
_UV_MAX = 2 ** 23  # Lava: max_uv_val for 24-bit u and v


# --------------------------------------------------------------------------
# Parameter compilation (pure NumPy): what Lava does once, before step 1.
# --------------------------------------------------------------------------

def _coalesced(layer, n_in: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, weights) with duplicate (row, col) pairs summed, as scipy's
    csr_matrix (the form Lava's Sparse holds) does; sorted by (row, col)."""
    rows = np.asarray(layer.rows, np.int64)
    cols = np.asarray(layer.cols, np.int64)
    w = np.asarray(layer.weights, np.int64)
    n_in = max(int(n_in), 1)
    key = rows * n_in + cols
    uniq, inverse = np.unique(key, return_inverse=True)
    summed = np.zeros(uniq.size, np.int64)
    np.add.at(summed, inverse, w)
    return uniq // n_in, uniq % n_in, summed


def sign_mode(weights: np.ndarray, n_in: int, n_out: int) -> str:
    """Lava's ``determine_sign_mode`` on the layer's sparse weight matrix.

    ``np.min`` / ``np.max`` of a scipy sparse matrix include the implicit
    zeros whenever the matrix is not full, so a sparse layer whose stored
    weights are all negative is "inhibitory", and an empty one "excitatory".
    """
    values = np.asarray(weights, dtype=np.int64)
    if values.size < n_in * n_out:  # implicit zeros count
        values = np.append(values, 0)
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0:
        return "excitatory"
    if hi <= 0:
        return "inhibitory"
    return "mixed"


def chip_weights(layer, n_in: Optional[int] = None,
                 n_out: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The synapses Lava's fixed-point Sparse model uses: (rows, cols, weights).

    ``layer``: a Projection (give n_in, n_out: its pre and post sizes) or a
    chain's SynapseLayer. Duplicates summed (csr), then Lava's
    ``clip_weights(num_bits=8)`` and ``truncate_weights`` with the
    projection's sign mode. Zero weights are kept (they add nothing).
    """
    n_in = int(layer.n_in if n_in is None else n_in)
    n_out = int(layer.n_out if n_out is None else n_out)
    rows, cols, w = _coalesced(layer, n_in)
    mode = sign_mode(w, n_in, n_out)
    if mode == "inhibitory":
        w = -w
    mixed = int(mode == "mixed")
    w = np.clip(w, -(2 ** 8) * mixed, 2 ** 8 - 1)
    n = 8 - int(layer.num_weight_bits) + mixed
    w = np.left_shift(np.right_shift(w, n), n)
    if mode == "inhibitory":
        w = -w
    return rows, cols, w


def effective_bias(bias_mant: np.ndarray, bias_exp: int) -> np.ndarray:
    """Lava's ``scale_bias``: int16 bias_mant (as stored), promoted to int32, shifted."""
    b = np.asarray(bias_mant).astype(np.int16).astype(np.int32)
    e = int(bias_exp)
    b = np.left_shift(b, e) if e >= 0 else np.right_shift(b, -e)
    return b.astype(np.int64)


# --------------------------------------------------------------------------
# Brian2 model text
# --------------------------------------------------------------------------

def _wrap32(expr: str) -> str:
    """Two's-complement int32 cast of an int64 expression (Lava's int32 arrays)."""
    return f"((({expr}) + {_INT32_OFFSET}) % {_INT32_MOD} - {_INT32_OFFSET})"


def _integer_update_code(p: NeuronParams, weight_exps: Sequence[int]) -> str:
    """One step of PyLifModelBitAcc (+ the Sparse outputs feeding it), as Brian2 code.

    ``weight_exps[k]``: weight_exp of the projection accumulated in ``acc_k``.
    """
    lines = []
    terms = []
    for k, weight_exp in enumerate(weight_exps):
        if weight_exp > 0:
            shifted = f"acc_{k} * {2 ** weight_exp}"
        elif weight_exp < 0:
            shifted = f"acc_{k} // {2 ** (-weight_exp)}"  # floor == arithmetic >>
        else:
            shifted = f"acc_{k}"
        terms.append(_wrap32(shifted))                 # each Sparse's int32 a_out
    if not terms:  # no projection enters (the input population)
        lines.append("a = 0")
    else:
        lines.append(f"a = {_wrap32(' + '.join(terms))}")  # the InPort's int32 sum
        lines += [f"acc_{k} = 0" for k in range(len(terms))]
    lines += [
        f"xu = u * {4096 - (int(p.du) + 1)}",
        f"c = {_wrap32('sign(xu) * (abs(xu) // 4096) + a * 64')}",
        f"u = c - {2 * _UV_MAX} * int(c > {_UV_MAX}) + {2 * _UV_MAX} * int(c <= {-_UV_MAX})",
        f"xv = v * {4096 - int(p.dv)}",
        f"v = clip({_wrap32('sign(xv) * (abs(xv) // 4096) + u + bias')}, "
        f"{-_UV_MAX + 1}, {_UV_MAX - 1})",
    ]
    return "\n".join(lines)


def float_propagator(p: NeuronParams) -> Dict[str, float]:
    """Exact one-step solution of the float-mode ODEs over dt = 1 step.

    alpha = dt / tau_u, beta = dt / tau_v (beta = 0 without leak); u has
    already received this step's input. Over the step, with bias b constant::

        v <- Ev * v + Cu * u + Cb * b;   u <- Eu * u

    Eu = exp(-alpha), Ev = exp(-beta), Cb = (1 - Ev) / beta (1 when beta = 0),
    Cu = g * (exp(-alpha) - exp(-beta)) / (beta - alpha) (g * exp(-alpha)
    when equal), g = alpha / (1 - exp(-alpha)); tau_u = 0 (du = 4095) is the
    limit Eu = 0, Cu = Ev. Returned as plain numbers: Brian2's symbolic
    ``exact`` solver rejects the no-leak case and divides by zero when
    tau_u == tau_v.
    """
    f_u = 1.0 - (int(p.du) + 1) / 4096.0
    beta = 0.0 if int(p.dv) == 0 else -math.log(1.0 - int(p.dv) / 4096.0)
    ev = math.exp(-beta)
    cb = 1.0 if beta == 0.0 else -math.expm1(-beta) / beta
    if f_u <= 0.0:  # tau_u = 0: delta current
        return {"Eu": 0.0, "Ev": ev, "Cu": ev, "Cb": cb}
    alpha = -math.log(f_u)
    g = alpha / -math.expm1(-alpha)
    if abs(beta - alpha) < 1e-12:
        cu = g * math.exp(-alpha)
    else:
        cu = g * (math.exp(-alpha) - math.exp(-beta)) / (beta - alpha)
    return {"Eu": math.exp(-alpha), "Ev": ev, "Cu": cu, "Cb": cb}


def _float_update_code(p: NeuronParams, has_input: bool) -> str:
    c = float_propagator(p)
    lines = ["u = u + inp", "inp = 0"] if has_input else []
    lines += [
        f"v = {c['Ev']!r} * v + {c['Cu']!r} * u + {c['Cb']!r} * bias",
        f"u = {c['Eu']!r} * u",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Backend
# --------------------------------------------------------------------------

class Brian2Backend(Backend):
    """Run an integer graph in Brian2 (integer-exact or float reading).

    Parameters
    ----------
    mode: "integer" (bit-exact with Lava) or "float" (continuous-time LIF).
    batch_size: samples simulated together as independent copies in one
        Brian2 network (memory grows linearly with it).
    """

    exact = True  # per instance: False in float mode

    def __init__(self, mode: str = "integer", batch_size: int = 256):
        if mode not in MODES:
            raise ConfigError(
                f"Brian2Backend.mode: must be one of {', '.join(MODES)} (got {str(mode)[:100]!r})")
        if int(batch_size) < 1:
            raise ConfigError(
                f"Brian2Backend.batch_size: must be >= 1 (got {batch_size})")
        self.mode = mode
        self.batch_size = int(batch_size)
        self.name = "brian2" if mode == "integer" else "brian2-float"
        self.exact = mode == "integer"

    def _simulate(self, graph: IntegerGraph, bias_in: np.ndarray, steps: int, counts, spikes,
                  last=None, readout_v=None) -> None:
        sizes = graph.sizes
        index = {name: k for k, name in enumerate(graph.names)}
        weights = [chip_weights(q, sizes[index[q.pre]], sizes[index[q.post]]) for q in graph.projections]
        for start in range(0, bias_in.shape[0], self.batch_size):
            stop = min(start + self.batch_size, bias_in.shape[0])
            c, s, v_end = self._run_batch(graph, weights, bias_in[start:stop], steps, spikes is not None,
                                          readout_v is not None)
            if readout_v is not None:      # v_end (batch, steps, n_out): v after each step
                rows = np.arange(stop - start)
                readout_v[start:stop] = v_end[rows, last[start:stop]]
            for k in range(len(sizes)):
                counts[k][start:stop] = c[k]
                if spikes is not None:
                    spikes[k][start:stop] = s[k]

    # --------------------------------------------------------------- private
    @staticmethod
    def _codeobj_class():
        try:
            from brian2.codegen.runtime.numpy_rt import NumpyCodeObject
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(
                f"Brian2 backend: cannot import brian2 ({exc}); install brian2>=2.7") from exc
        return NumpyCodeObject

    def _neuron_group(self, p: NeuronParams, n_total: int, bias: np.ndarray,
                      weight_exps: Sequence[int], name: str):
        import brian2 as b2
        cls = self._codeobj_class()
        dt = 1.0 * b2.ms
        if self.mode == "integer":
            accs = [f"acc_{k}" for k in range(len(weight_exps))]
            model = "\n".join(["u : integer", "v : integer"] + [f"{a} : integer" for a in accs]
                               + ["bias : integer (constant)"])
            group = b2.NeuronGroup(
                n_total, model, threshold=f"v > {int(p.vth) << 6}", reset="v = 0",
                dtype={**{"u": np.int64, "v": np.int64, "bias": np.int64}, **{a: np.int64 for a in accs}},
                dt=dt, codeobj_class=cls, namespace={}, name=name + "*")
            group.run_regularly(_integer_update_code(p, weight_exps), when="groups",
                                codeobj_class=cls, name=group.name + "_lif_step*")
            group.bias = bias.astype(np.int64)
        else:
            group = b2.NeuronGroup(
                n_total, "u : 1\nv : 1\ninp : 1\nbias : 1 (constant)",
                threshold=f"v > {float(int(p.vth) * 64)!r}", reset="v = 0",
                dt=dt, codeobj_class=cls, namespace={}, name=name + "*")
            group.run_regularly(_float_update_code(p, len(weight_exps) > 0), when="groups",
                                codeobj_class=cls, name=group.name + "_lif_step*")
            group.bias = bias.astype(np.float64)
        return group

    def _run_batch(self, graph: IntegerGraph, weights: List[Tuple[np.ndarray, np.ndarray, np.ndarray]],
                   bias_in: np.ndarray, steps: int, record_spikes: bool, record_v: bool = False):
        import brian2 as b2
        cls = self._codeobj_class()
        n_batch = bias_in.shape[0]
        sizes = graph.sizes
        index = {name: k for k, name in enumerate(graph.names)}
        # acc slot of each projection in its post group: its position among the post's incoming
        slot, incoming = {}, [[] for _ in sizes]
        for j, q in enumerate(graph.projections):
            post = index[q.post]
            slot[j] = len(incoming[post])
            incoming[post].append(int(q.weight_exp))
        objects = []
        groups = []
        for k, pop in enumerate(graph.populations):
            p = pop.neurons
            if k == 0 and graph.input_kind == "spikes":   # a spike source replaying the trains
                smp, t, ch = np.nonzero(bias_in)
                group = b2.SpikeGeneratorGroup(
                    sizes[0] * n_batch, (smp * sizes[0] + ch).astype(np.int64),
                    t.astype(np.float64) * b2.ms, dt=1.0 * b2.ms, codeobj_class=cls, name="source*")
                groups.append(group)
                objects.append(group)
                continue
            if k == 0:
                bias = effective_bias(bias_in.reshape(-1), p.bias_exp)
            else:
                bias = np.tile(effective_bias(p.bias_mant, p.bias_exp), n_batch)
            group = self._neuron_group(p, sizes[k] * n_batch, bias, incoming[k], f"layer{k}")
            groups.append(group)
            objects.append(group)
        for j, q in enumerate(graph.projections):
            rows, cols, w = weights[j]
            if w.size == 0:
                continue
            pre_k, post_k = index[q.pre], index[q.post]
            copies = np.arange(n_batch, dtype=np.int64)[:, None]
            pre = (cols[None, :] + copies * sizes[pre_k]).ravel()
            post = (rows[None, :] + copies * sizes[post_k]).ravel()
            if self.mode == "integer":
                syn = b2.Synapses(groups[pre_k], groups[post_k], "w : integer (constant)",
                                  on_pre=f"acc_{slot[j]}_post += w", dtype={"w": np.int64},
                                  dt=groups[pre_k].clock.dt, codeobj_class=cls, namespace={},
                                  name=f"syn{j}*")
                wv = np.tile(w, n_batch)
            else:
                syn = b2.Synapses(groups[pre_k], groups[post_k], "w : 1 (constant)",
                                  on_pre="inp_post += w", dt=groups[pre_k].clock.dt, codeobj_class=cls,
                                  namespace={}, name=f"syn{j}*")
                wv = np.tile(w.astype(np.float64) * 2.0 ** (6 + int(q.weight_exp)), n_batch)
            syn.connect(i=pre, j=post)
            # Brian2 keeps synapses in creation order; check rather than assume.
            if not (np.array_equal(np.asarray(syn.i[:]), pre)
                    and np.array_equal(np.asarray(syn.j[:]), post)):
                order = np.lexsort((post, pre))
                got = np.lexsort((np.asarray(syn.j[:]), np.asarray(syn.i[:])))
                perm = np.empty_like(order)
                perm[got] = order
                wv = wv[perm]
            syn.w = wv
            objects.append(syn)
        monitors = [b2.SpikeMonitor(g, record=record_spikes, codeobj_class=cls,
                                    name=f"spikes{k}*")
                    for k, g in enumerate(groups)]
        objects += monitors
        k_out = graph.index(graph.readout)
        if record_v:   # v after each step's update (the readout never spikes, so after reset too)
            vmon = b2.StateMonitor(groups[k_out], "v", record=True, when="end", codeobj_class=cls,
                                   name="readout_v*")
            objects.append(vmon)
        network = b2.Network(*objects)
        network.run(steps * b2.ms, namespace={}, level=0)
        counts = []
        trains = [] if record_spikes else None
        for k, mon in enumerate(monitors):
            n = sizes[k]
            counts.append(np.asarray(mon.count[:], np.int64).reshape(n_batch, n)
                          .astype(np.int32))
            if record_spikes:
                train = np.zeros((n_batch, steps, n), bool)
                i = np.asarray(mon.i[:], np.int64)
                t = np.rint(np.asarray(mon.t_[:]) / 1e-3).astype(np.int64)
                train[i // n, t, i % n] = True
                trains.append(train)
        v_end = None
        if record_v:
            n = sizes[k_out]
            v_end = np.asarray(vmon.v[:]).reshape(n_batch, n, steps).transpose(0, 2, 1)
            v_end = v_end.astype(np.int64) if self.mode == "integer" else v_end.astype(np.float64)
        return counts, trains, v_end
