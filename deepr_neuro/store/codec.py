"""The bundle's npz codec: the network graph <-> ``network.npz`` arrays, and bundle format versions.

Format version 2 (written from now on) keys every array by the NAME of its
population or projection, so a recurrent projection (``pre == post``) or
several projections into one population need no new keys:

* ``pop/<population>/core``        int32 per neuron: global core id (trained)
* ``pop/<population>/vth|du|dv|bias_exp``  int64 scalars (export)
* ``pop/<population>/bias_mant``   int32 per neuron (export; for the input
  population the base bias, to which the encoded sample is added)
* ``proj/<projection>/rows|cols``  int32, sorted by (row, col): post / pre index
* ``proj/<projection>/weight``     float32 trained weight (trained)
* ``proj/<projection>/qweight``    int32 chip weight (export)
* ``proj/<projection>/weight_exp|num_weight_bits``  int64 scalars (export)
* ``input/gain``, ``input/shift``  int64 scalars of the input encoding (export; 0 and 0 for a
  spike-source input, whose FrameEncoding is the manifest's ``snn.input`` block)
* ``rewired_per_step``             int32 training record (optional)

The manifest's ``graph`` block names the populations (size, role, core
ranges with the per-core budget K_c, capacity and axon limit over ALL
projections into the core), the projections (pre, post, budget) and the
readout population. Version 1 (``l<i>_*`` / ``in_*`` arrays, manifest
``layers`` + ``input_cores``) is a chain; :func:`v1_to_v2` turns it into the
same in-memory form, so every reader sees one shape.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from deepr_neuro.errors import BundleError
from deepr_neuro.network.integer_network import (InputEncoding, IntegerGraph, IntegerNetwork, NeuronParams,
                                                 Population, Projection, SynapseLayer)

INPUT = "input"  # name of the input population of a chain (version-1 bundles, MLPs)

POP_TRAINED = ("core",)
POP_EXPORT = ("vth", "du", "dv", "bias_exp", "bias_mant")
PROJ_TRAINED = ("rows", "cols", "weight")
PROJ_EXPORT = ("qweight", "weight_exp", "num_weight_bits")
ENCODING_KEYS = ("input/gain", "input/shift")
OPTIONAL_KEYS = ("rewired_per_step",)

_V2_EXPORT_RE = re.compile(r"^(pop/.+/(vth|du|dv|bias_exp|bias_mant)|proj/.+/(qweight|weight_exp|num_weight_bits)"
                           r"|input/(gain|shift))$")
_V1_EXPORT_RE = re.compile(r"^(in_(vth|du|dv|bias_exp|bias_mant|gain|shift)|"
                           r"l\d+_(qweight|weight_exp|num_weight_bits|vth|du|dv|bias_exp|bias_mant))$")


def pop_key(name: str, field: str) -> str:
    return f"pop/{name}/{field}"


def proj_key(name: str, field: str) -> str:
    return f"proj/{name}/{field}"


def is_export_key(key: str) -> bool:
    """An array written by ``export`` (the integer network), not by ``train`` (either format)."""
    return bool(_V2_EXPORT_RE.match(key) or _V1_EXPORT_RE.match(key))


# --------------------------------------------------------------------------
# version 1 (a chain) -> version 2 (the graph), in memory
# --------------------------------------------------------------------------

def chain_graph_block(layers: Sequence[Mapping], input_cores: Optional[Sequence[Mapping]],
                      n_inputs: int) -> Dict[str, Any]:
    """The manifest ``graph`` block of a chain: populations input, layer names...; projection i
    named after layer i, from population i to i + 1; the readout is the last layer."""
    names = {layer["name"] for layer in layers}
    inp = INPUT
    while inp in names:  # a layer may be called "input" in a version-1 bundle
        inp += "_"
    pops = [{"name": inp, "size": int(n_inputs), "role": "input",
             "cores": [{"core": c["core"], "start": c["post_start"], "stop": c["post_stop"]}
                       for c in (input_cores or [])]}]
    projs = []
    for i, layer in enumerate(layers):
        pops.append({"name": layer["name"], "size": layer["n_out"],
                     "role": "readout" if i == len(layers) - 1 else "hidden",
                     "cores": [{"core": c["core"], "start": c["post_start"], "stop": c["post_stop"],
                                **{k: c[k] for k in ("budget", "capacity", "axon_limit") if k in c}}
                               for c in layer["cores"]]})
        projs.append({"name": layer["name"], "pre": pops[i]["name"], "post": layer["name"],
                      **({"budget": layer["budget"]} if "budget" in layer else {})})
    return {"populations": pops, "projections": projs, "readout": pops[-1]["name"]}


def v1_key_map(layer_names: Sequence[str], input_name: str = INPUT) -> Dict[str, str]:
    """Version-1 array name -> version-2 array name, for a chain with these layer names."""
    out = {f"in_{f}": pop_key(input_name, f) for f in POP_EXPORT}
    out.update({"in_gain": "input/gain", "in_shift": "input/shift", "input_core": pop_key(input_name, "core"),
                "rewired_per_step": "rewired_per_step"})
    for i, name in enumerate(layer_names):
        out.update({f"l{i}_{f}": proj_key(name, f) for f in PROJ_TRAINED + PROJ_EXPORT})
        out.update({f"l{i}_{f}": pop_key(name, f) for f in POP_TRAINED + POP_EXPORT})
    return out


def v1_to_v2(manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
             ) -> Tuple[Dict[str, Any], Dict[str, np.ndarray], Dict[str, str]]:
    """A version-1 bundle (checked ``layers``) in the version-2 in-memory form.

    Returns the manifest (``graph`` instead of ``layers`` / ``input_cores``),
    the arrays renamed (unknown names are kept as they are, so the checks
    refuse them by their own name) and the map version-2 name -> version-1
    name, so that an error about a version-1 bundle names the array in its file.
    """
    layers = manifest["layers"]
    m = {k: v for k, v in manifest.items() if k not in ("layers", "input_cores")}
    m["graph"] = chain_graph_block(layers, manifest.get("input_cores"), layers[0]["n_in"])
    m["version"] = 2
    kmap = v1_key_map([layer["name"] for layer in layers], m["graph"]["populations"][0]["name"])
    shown = {v: k for k, v in kmap.items()}
    out = {}
    for k, v in arrays.items():
        new = kmap.get(k, "unknown:" + k)  # never mistaken for a version-2 name
        out[new] = v
        shown.setdefault(new, k)
    return m, out, shown


def graph_layers_view(manifest: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The projections of a (normalised) manifest as a list of {name, pre, post, n_in, n_out, budget}:
    what sweep records and reports list per projection."""
    g = manifest["graph"]
    size = {p["name"]: p["size"] for p in g["populations"]}
    return [{"name": q["name"], "pre": q["pre"], "post": q["post"], "n_in": size[q["pre"]],
             "n_out": size[q["post"]], "budget": q.get("budget")} for q in g["projections"]]


# --------------------------------------------------------------------------
# the integer graph <-> arrays
# --------------------------------------------------------------------------

def integer_graph_to_arrays(graph: IntegerGraph) -> Dict[str, np.ndarray]:
    """The export arrays of an integer graph (version 2 names). The populations'
    ``core`` arrays are the trained placement and are not written here."""
    spikes = getattr(graph, "input_kind", "bias") == "spikes"
    # a spike-source input has no bias encoding: gain 0, shift 0 (its FrameEncoding is in the
    # manifest's ``snn.input`` block)
    out: Dict[str, np.ndarray] = {"input/gain": np.int64(0 if spikes else graph.encoding.gain),
                                  "input/shift": np.int64(0 if spikes else graph.encoding.shift)}
    for p in graph.populations:
        n = p.neurons
        out.update({pop_key(p.name, "vth"): np.int64(n.vth), pop_key(p.name, "du"): np.int64(n.du),
                    pop_key(p.name, "dv"): np.int64(n.dv), pop_key(p.name, "bias_exp"): np.int64(n.bias_exp),
                    pop_key(p.name, "bias_mant"): np.asarray(n.bias_mant, dtype=np.int32)})
    for q in graph.projections:
        out.update({proj_key(q.name, "rows"): np.asarray(q.rows, dtype=np.int32),
                    proj_key(q.name, "cols"): np.asarray(q.cols, dtype=np.int32),
                    proj_key(q.name, "qweight"): np.asarray(q.weights, dtype=np.int32),
                    proj_key(q.name, "weight_exp"): np.int64(q.weight_exp),
                    proj_key(q.name, "num_weight_bits"): np.int64(q.num_weight_bits)})
    return out


def _integer_array(arrays: Mapping, key: str) -> np.ndarray:
    """``arrays[key]`` if present and of an integer dtype (values are never cast)."""
    if key not in arrays:
        raise BundleError(f"network.npz: key {key!r} is missing; re-run the export")
    a = np.asarray(arrays[key])
    if a.dtype.kind not in "iu":
        raise BundleError(f"network.npz: {key!r} has dtype {a.dtype}, not an integer type "
                          "(values are never cast); re-run the export")
    return a


def _scalar(arrays: Mapping, key: str) -> int:
    a = _integer_array(arrays, key)
    if a.size != 1:
        raise BundleError(f"network.npz: {key!r} must be a scalar (got shape {a.shape})")
    return int(a.reshape(()))


_I32 = np.iinfo(np.int32)


def _vector(arrays: Mapping, key: str) -> np.ndarray:
    """A 1-D integer array as int32; float/complex/bool arrays or values beyond
    int32 are refused, never cast (a cast would silently change the network)."""
    a = _integer_array(arrays, key)
    if a.ndim != 1:
        raise BundleError(f"network.npz: {key!r} must be 1-D (got shape {a.shape}); re-run the export")
    if a.size and (a.min() < _I32.min or a.max() > _I32.max):
        raise BundleError(f"network.npz: {key!r} holds values beyond 32-bit integers "
                          f"({a.min()}..{a.max()}); re-run the export")
    return a.astype(np.int32)


def integer_graph_from_arrays(arrays: Mapping[str, np.ndarray], graph: Mapping[str, Any]) -> IntegerGraph:
    """Rebuild the :class:`IntegerGraph` from version-2 arrays and the manifest's ``graph``
    block. Integer arrays must have an integer dtype (never cast); the full checks against
    the manifest and profile are :func:`deepr_neuro.store.bundle.load_bundle`'s."""
    if "input/gain" not in arrays:
        raise BundleError("network.npz: key 'input/gain' is missing: the bundle has no SNN export; "
                          "run `deepr-neuro export` first")
    enc = InputEncoding(gain=_scalar(arrays, "input/gain"), shift=_scalar(arrays, "input/shift"))
    if enc.gain < 0 or not 0 <= enc.shift <= 31:
        raise BundleError(f"network.npz: input/gain {enc.gain} / input/shift {enc.shift}: the gain must be "
                          ">= 0 and the shift in 0..31; re-run the export")
    pops, size = [], {}
    for p in graph["populations"]:
        name = p["name"]
        bias = _vector(arrays, pop_key(name, "bias_mant"))
        neurons = NeuronParams(vth=_scalar(arrays, pop_key(name, "vth")), du=_scalar(arrays, pop_key(name, "du")),
                               dv=_scalar(arrays, pop_key(name, "dv")),
                               bias_exp=_scalar(arrays, pop_key(name, "bias_exp")), bias_mant=bias)
        core = _vector(arrays, pop_key(name, "core")) if pop_key(name, "core") in arrays else None
        pops.append(Population(name, neurons, core))
        size[name] = bias.size
    projs = []
    for q in graph["projections"]:
        name = q["name"]
        rows, cols = _vector(arrays, proj_key(name, "rows")), _vector(arrays, proj_key(name, "cols"))
        qw = _vector(arrays, proj_key(name, "qweight"))
        if not (rows.shape == cols.shape == qw.shape):
            raise BundleError(f"network.npz: proj/{name}/rows|cols|qweight differ in length")
        n_post, n_pre = size[q["post"]], size[q["pre"]]
        if rows.size and (rows.max() >= n_post or cols.max() >= n_pre or rows.min() < 0 or cols.min() < 0):
            raise BundleError(f"network.npz: projection {name!r} indices out of range "
                              f"({n_post} post, {n_pre} pre neurons)")
        projs.append(Projection(name=name, pre=q["pre"], post=q["post"], rows=rows, cols=cols, weights=qw,
                                weight_exp=_scalar(arrays, proj_key(name, "weight_exp")),
                                num_weight_bits=_scalar(arrays, proj_key(name, "num_weight_bits"))))
    return IntegerGraph(populations=tuple(pops), projections=tuple(projs), encoding=enc,
                        readout=graph["readout"])


def graph_to_chain(graph: IntegerGraph) -> IntegerNetwork:
    """The chain IntegerNetwork of a chain graph (what the conversion and today's backends use)."""
    if not graph.is_chain:
        raise BundleError("network.npz: the graph is not a feed-forward chain (a projection enters a "
                          "population other than the next one); this command needs a chain network")
    layers = []
    for i, q in enumerate(graph.projections):
        post = graph.populations[i + 1]
        layers.append(SynapseLayer(name=q.name, n_in=graph.populations[i].n, n_out=post.n, rows=q.rows,
                                   cols=q.cols, weights=q.weights, weight_exp=q.weight_exp,
                                   num_weight_bits=q.num_weight_bits, neurons=post.neurons))
    return IntegerNetwork(input_neurons=graph.populations[0].neurons, encoding=graph.encoding, layers=layers)


def float_projections_from_arrays(arrays: Mapping[str, np.ndarray], graph: Mapping[str, Any]) -> List[Dict]:
    """Trained float weights per projection: dicts {name, pre, post, rows, cols, weight, n_in, n_out}.

    Refuses (naming the projection) index arrays that are not integers, weights
    that are not real floats or not finite (NaN/inf: a diverged run), and
    arrays of different lengths: conversion would otherwise quantize garbage.
    """
    size = {p["name"]: p["size"] for p in graph["populations"]}
    out = []
    for q in graph["projections"]:
        name = q["name"]
        for k in PROJ_TRAINED:
            if proj_key(name, k) not in arrays:
                raise BundleError(f"network.npz: key {proj_key(name, k)!r} is missing")
        rows, cols = _vector(arrays, proj_key(name, "rows")), _vector(arrays, proj_key(name, "cols"))
        w = np.asarray(arrays[proj_key(name, "weight")])
        if w.dtype.kind != "f":
            raise BundleError(f"network.npz: {proj_key(name, 'weight')!r} has dtype {w.dtype}, not a real float type")
        if not (rows.shape == cols.shape == w.shape):
            raise BundleError(f"network.npz: proj/{name}/rows|cols|weight differ in length "
                              f"({rows.shape}, {cols.shape}, {w.shape})")
        bad = np.flatnonzero(~np.isfinite(w))
        if bad.size:
            raise BundleError(f"network.npz: {proj_key(name, 'weight')!r} index {int(bad[0])}: weight "
                              f"{w[bad[0]]} is not finite; the run diverged: train it again with a smaller --lr")
        out.append(dict(rows=rows, cols=cols, weight=w.astype(np.float32), n_in=int(size[q["pre"]]),
                        n_out=int(size[q["post"]]), name=name, pre=q["pre"], post=q["post"]))
    return out


def chain_cores(graph_block: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> List[Optional[np.ndarray]]:
    """Each population's core array (None where the bundle has none), in population order."""
    return [np.asarray(arrays[pop_key(p["name"], "core")], dtype=np.int32)
            if pop_key(p["name"], "core") in arrays else None for p in graph_block["populations"]]
