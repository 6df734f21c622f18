"""Validation of an integer graph and of a batch of inputs, before any backend runs.

Lava's Python models check none of this; beyond these limits Lava silently
wraps (int16 bias storage) or computes something no chip does, and a
malformed graph (a projection into the input, a dangling name, an index past
the end) would fail deep inside a simulator. Every backend calls these once,
through :meth:`deepr_neuro.simulate.backends.Backend.run`. Each error names the
population or projection, the field, the value and the limit.
"""
from __future__ import annotations

from typing import Union

import numpy as np

from deepr_neuro.errors import BackendError
from deepr_neuro.network.fixed_point import LAVA_LIMITS
from deepr_neuro.network.frame_encoding import FrameEncoding
from deepr_neuro.network.integer_network import (INPUT_KINDS, READOUT_KINDS, IntegerGraph, IntegerNetwork,
                                                 NeuronParams, Population, Projection, as_graph,
                                                 chain_to_graph)

_MAX_REPR = 200


def _cut(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + "..."


def check_range(where: str, field: str, values, hint: str = "re-run quantization with that limit") -> None:
    """Refuse any value of ``field`` outside :data:`LAVA_LIMITS` (names the value and the range)."""
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


def _integer_array(where: str, field: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise BackendError(f"{where}.{field}: dtype {arr.dtype} is not an integer type; the "
                           "network must hold integers (values are never cast)")
    if arr.ndim != 1:
        raise BackendError(f"{where}.{field}: expected a 1-d array, got shape {arr.shape}")
    return arr


def _integer_scalar(where: str, field: str, value) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise BackendError(f"{where}.{field}: {_cut(value)} is not an integer")


def _check_neurons(where: str, p: NeuronParams) -> None:
    if not isinstance(p, NeuronParams):
        raise BackendError(f"{where}.neurons: expected NeuronParams, got {type(p).__name__}")
    for field in ("vth", "du", "dv", "bias_exp"):
        _integer_scalar(where, field, getattr(p, field))
        check_range(where, field, getattr(p, field))
    _integer_array(where, "bias_mant", p.bias_mant)
    check_range(where, "bias_mant", p.bias_mant)


def _check_projection(where: str, q: Projection, n_pre: int, n_post: int) -> None:
    rows = _integer_array(where, "rows", q.rows)
    cols = _integer_array(where, "cols", q.cols)
    weights = _integer_array(where, "weights", q.weights)
    for field in ("weight_exp", "num_weight_bits"):
        _integer_scalar(where, field, getattr(q, field))
    if not (rows.shape == cols.shape == weights.shape):
        raise BackendError(f"{where}: rows, cols and weights differ in length "
                           f"({rows.size}, {cols.size}, {weights.size})")
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= n_post):
        bad = int(rows.min()) if int(rows.min()) < 0 else int(rows.max())
        raise BackendError(f"{where}.rows: index {bad} outside post population {q.post!r} "
                           f"(0..{n_post - 1})")
    if cols.size and (int(cols.min()) < 0 or int(cols.max()) >= n_pre):
        bad = int(cols.min()) if int(cols.min()) < 0 else int(cols.max())
        raise BackendError(f"{where}.cols: index {bad} outside pre population {q.pre!r} "
                           f"(0..{n_pre - 1})")
    check_range(where, "weight", weights)
    check_range(where, "num_weight_bits", q.num_weight_bits)
    check_range(where, "weight_exp", q.weight_exp)


def check_graph(graph: Union[IntegerGraph, IntegerNetwork]) -> IntegerGraph:
    """Raise BackendError for a malformed graph or an integer outside Lava's limits;
    return the graph (a chain network is turned into one first).

    Checks: at least the input population; unique population and projection
    names; every projection's pre/post exists; nothing projects into the input
    population; the readout exists; integer dtypes, equal lengths and index
    ranges of every projection; every integer within :data:`LAVA_LIMITS`; the
    input encoding's gain and shift.
    """
    pop_label, proj_label = {}, {}
    if isinstance(graph, IntegerNetwork):   # errors speak of layers, as the chain's user knows them
        for i, layer in enumerate(graph.layers):   # what chain_to_graph cannot see
            where = f"layer {i} {layer.name!r}"
            prev = graph.sizes[i]
            if layer.n_in != prev:
                raise BackendError(f"{where}: n_in = {layer.n_in} but the layer before has {prev} neurons")
            if layer.neurons.n != layer.n_out:
                raise BackendError(f"{where}: {layer.neurons.n} bias_mant values for n_out = {layer.n_out}")
        chain = chain_to_graph(graph)
        pop_label[chain.populations[0].name] = "input"
        for i, layer in enumerate(graph.layers):
            pop_label[chain.populations[i + 1].name] = proj_label[chain.projections[i].name] = \
                f"layer {i} {layer.name!r}"
        graph = chain
    try:
        graph = as_graph(graph)
    except TypeError as exc:
        raise BackendError(f"network: {exc}") from exc
    pops = graph.populations
    if not pops:
        raise BackendError("graph.populations: empty; the first population is the input population")
    names = set()
    for p in pops:
        if not isinstance(p, Population):
            raise BackendError(f"graph.populations: expected Population, got {type(p).__name__}")
        if p.name in names:
            raise BackendError(f"population {p.name!r}: the name is used twice; population names "
                               "must be unique")
        names.add(p.name)
        _check_neurons(pop_label.get(p.name, f"population {p.name!r}"), p.neurons)
        if p.core is not None:
            core = _integer_array(f"population {p.name!r}", "core", p.core)
            if core.size != p.n:
                raise BackendError(f"population {p.name!r}.core: {core.size} entries for {p.n} neurons")
    input_kind = getattr(graph, "input_kind", "bias")
    readout_kind = getattr(graph, "readout_kind", "spike_count")
    if input_kind not in INPUT_KINDS:
        raise BackendError(f"graph.input_kind: {_cut(input_kind)} is not one of {', '.join(INPUT_KINDS)}")
    if readout_kind not in READOUT_KINDS:
        raise BackendError(f"graph.readout_kind: {_cut(readout_kind)} is not one of "
                           f"{', '.join(READOUT_KINDS)}")
    enc = graph.encoding
    if input_kind == "spikes":
        if not isinstance(enc, FrameEncoding):
            raise BackendError(f"graph.encoding: a spike-source input needs a FrameEncoding (how frames "
                               f"become spike trains), got {type(enc).__name__}")
    else:
        gain, shift = getattr(enc, "gain", None), getattr(enc, "shift", None)
        if isinstance(gain, (bool, np.bool_)) or isinstance(shift, (bool, np.bool_)) \
                or not isinstance(gain, (int, np.integer)) or not isinstance(shift, (int, np.integer)) \
                or gain < 0 or not 0 <= shift <= 31:
            raise BackendError(f"input encoding: gain {_cut(gain)} must be an integer >= 0 and shift "
                               f"{_cut(shift)} an integer in 0..31")
    seen = set()
    sizes = {p.name: p.n for p in pops}
    for q in graph.projections:
        if not isinstance(q, Projection):
            raise BackendError(f"graph.projections: expected Projection, got {type(q).__name__}")
        where = proj_label.get(q.name, f"projection {q.name!r}")
        if q.name in seen:
            raise BackendError(f"{where}: the name is used twice; projection names must be unique")
        seen.add(q.name)
        for end in ("pre", "post"):
            if getattr(q, end) not in sizes:
                raise BackendError(f"{where}.{end}: no population named {_cut(getattr(q, end))} "
                                   f"(populations: {', '.join(sorted(sizes))})"[:400])
        if q.post == pops[0].name:
            raise BackendError(f"{where}.post: {q.post!r} is the input population, driven only by "
                               "its encoded bias; no projection may enter it")
        _check_projection(where, q, sizes[q.pre], sizes[q.post])
    if graph.readout not in sizes:
        raise BackendError(f"graph.readout: no population named {_cut(graph.readout)}")
    if readout_kind == "final_v" and graph.readout == pops[0].name:
        raise BackendError(f"graph.readout: {graph.readout!r} is the input population; a final_v readout "
                           "reads the v of a LIF population, choose a population a projection enters")
    return graph


def check_network(net: Union[IntegerGraph, IntegerNetwork]) -> None:
    """Chain-era name of :func:`check_graph` (validates a chain or a graph)."""
    check_graph(net)


def check_inputs(graph: Union[IntegerGraph, IntegerNetwork], x_uint8: np.ndarray, steps: int) -> np.ndarray:
    """Validate a batch and ``steps``; return the input population's per-sample
    bias_mant (n_samples, n_inputs), int32, within Lava's bias range."""
    x = np.asarray(x_uint8)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != graph.n_inputs:
        raise BackendError(
            f"inputs: expected shape (n_samples, {graph.n_inputs}), got {np.shape(x_uint8)}")
    if x.size and not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise BackendError(
            f"inputs: expected integer features 0..255 (uint8), got dtype {x.dtype}; "
            f"complex, string, object or boolean arrays are never cast")
    if x.size and (not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() > 255):
        if not (np.issubdtype(x.dtype, np.number) and np.all(x == np.round(x))
                and x.min() >= 0 and x.max() <= 255):
            lo, hi = (x.min(), x.max()) if np.issubdtype(x.dtype, np.number) else ("?", "?")
            raise BackendError(
                f"inputs: expected integer features 0..255 (uint8), got {x.dtype} values in "
                f"[{lo}, {hi}]; scale them with the bundle's input encoding first")
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer, float, np.floating)) \
            or not np.isfinite(steps) or int(steps) != steps or steps < 0:
        raise BackendError(f"steps: must be a non-negative integer (got {_cut(steps)})")
    bias = graph.encode(x)
    check_range("input (encoded sample)", "bias_mant", bias,
                hint="lower the input encoding's gain or raise its shift")
    return bias.astype(np.int32)


def check_spike_inputs(graph: IntegerGraph, spikes, steps: int, n_steps=None):
    """Validate a batch for a spike-source input; return (spikes bool (n, steps, n_inputs),
    last step index of each sample (n,) int64).

    ``spikes``: 0/1 (bool or integer) trains, one row per chip step; ``n_steps``:
    each sample's own length in steps (1..steps; default: all ``steps``). Steps
    at or after a sample's length must be silent (padding).
    """
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer, float, np.floating)) \
            or not np.isfinite(steps) or int(steps) != steps or steps < 0:
        raise BackendError(f"steps: must be a non-negative integer (got {_cut(steps)})")
    steps = int(steps)
    x = np.asarray(spikes)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != steps or x.shape[2] != graph.n_inputs:
        raise BackendError(f"inputs: a spike-source input expects spike trains of shape (n_samples, "
                           f"{steps} steps, {graph.n_inputs} channels), got {np.shape(spikes)}")
    if x.dtype != bool:
        if x.dtype.kind not in "iu":
            raise BackendError(f"inputs: spike trains must be bool or integer 0/1, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise BackendError(f"inputs: spike trains must be 0 or 1, got values in [{x.min()}, {x.max()}]")
        x = x.astype(bool)
    n = x.shape[0]
    if n_steps is None:
        last = np.full(n, steps - 1, np.int64)
    else:
        L = np.asarray(n_steps)
        if L.shape != (n,) or L.dtype.kind not in "iu" or (n and (L.min() < 1 or L.max() > steps)):
            raise BackendError(f"n_steps: expected {n} integer sample lengths in 1..{steps} "
                               f"(got {_cut(L)})")
        L = L.astype(np.int64)
        pad = np.arange(steps)[None, :] >= L[:, None]
        if x.size and np.any(x & pad[:, :, None]):
            raise BackendError("inputs: spikes after a sample's length (n_steps); padding steps must be silent")
        last = L - 1
    return x, last
