"""The deployed integer graph as NIR (Neuromorphic Intermediate Representation) and back.

NIR (PyPI ``nir`` 1.0.x) is read by SpiNNaker2's tools, Rockpool, Sinabs,
snnTorch, Norse, Nengo and Lava-DL's scripts, so a network written here is not
locked into Lava. :func:`graph_to_nir` writes, :func:`nir_to_graph` reads back;
:func:`simulate_nir` runs a NIR graph from its fields alone (the continuous-time
reading that outside tools make).

Node layout (one NIR node per population and per projection)::

    input (Input, the sample's features 0..255, the same value at every step)
      -> input_encoding (Affine, diagonal)      -> pop_<input population> (CubaLIF)
    pop_<pre> -> proj_<projection> (Affine)     -> pop_<post> (CubaLIF)
    pop_<readout> -> output (Output)

A recurrent projection is just an edge back to an earlier node (NIR allows cycles).

A recurrent run (``input_kind="spikes"``, ``readout_kind="final_v"``; metadata ``format`` 2) is
laid out as::

    input (Input: the input spike trains, one channel per input neuron, 0 or 1 per step)
      -> proj_<in projection> (Affine)          -> pop_<recurrent population> (CubaLIF)
    pop_<pre> -> proj_<projection> (Affine)     -> pop_<post> (CubaLIF; edges back for recurrence)
    pop_<pre> -> proj_<readout projection>      -> pop_out (CubaLI: the non-spiking readout) -> output

The toolkit, not the chip, makes the spikes from frames (``network/frame_encoding.py``); the
Input node's metadata holds what an outside reader needs to make them: ``steps_per_frame``,
``scale``, ``signed``, the rule in words, and (from ``export --to nir`` of a run) the run's
normalisation ``norm_mean`` / ``norm_std`` and data set. The input population's own integers
(unused by the chip, a spike source) and cores ride there too. **Class** = argmax over the
readout's ``v`` after each sample's last step (``n_frames * steps_per_frame - 1``; ties to the
lowest index), as the graph metadata's ``class_rule`` says.

Why ``CubaLI`` for the readout: the chip's readout is a Lava LIF whose threshold
(``vth = 131071``) is never reached, i.e. the same two-state update (current u with du,
voltage v with dv) without spikes; NIR's CubaLI is exactly that pair of equations, so it takes
the CubaLIF mapping below unchanged for any du, dv. ``LI`` (no synaptic current) or ``I`` (no
current, no leak) would carry only the special case du = 4095 (and dv = 0); for that case (the
shipped readout) CubaLI with ``tau_syn = dt``, ``w_in = 1`` reduces to ``I <- S`` and
``v <- v + I`` under forward Euler, the same numbers, so nothing is gained by switching node
type with the parameters.

Parameter mapping (Lava's integer LIF -> NIR's continuous-time CubaLIF), dt = 1e-4 s
------------------------------------------------------------------------------------
NIR's CubaLIF is ``tau_syn dI/dt = -I + w_in S``, ``tau_mem dv/dt = (v_leak - v) + r I``,
spike when ``v > v_threshold``, then ``v = v_reset``. Lava's fixed-point LIF per step:
``u <- u (1 - (du + 1)/4096) + 64 a``, ``v <- v (1 - dv/4096) + u + bias``, spike when
``v > vth * 64``, then ``v = 0``. The NIR numbers are chosen so that the *forward-Euler*
discretisation at dt = 1e-4 s (snnTorch's fixed dt and the one of NIR's Lava scripts) is
the chip's update with the chip's own decay factors:

* ``tau_syn = dt * 4096 / (du + 1)``, ``w_in = tau_syn / dt``  (Euler: I <- I (1 - (du+1)/4096) + S;
  Lava's ``ds_offset`` of 1 is included, NIR's Lava scripts drop it);
* ``tau_mem = dt * 4096 / dv`` and ``r = tau_mem / dt``; dv = 0 (no leak) is written
  ``tau_mem = r = inf`` (read ``r dt / tau_mem`` = 1 in the limit; snnTorch takes it as beta = 1);
* ``v_leak = 0``, ``v_reset = 0``, ``v_threshold = vth * 64`` (one value per population, as Lava);
* state units are the chip's: v in Lava's 24-bit v units, I in u units;
* projection weights (dense, zeros where no synapse): the chip's effective weights (Lava's
  clip and truncation to ``num_weight_bits``) times ``2 ** (6 + weight_exp)``;
* the bias ``bias_mant << bias_exp`` enters v directly on the chip but I in NIR (Affine bias),
  so it is written times ``(du + 1) / 4096``: the same steady drive, exact when du = 4095;
* the input encoding ``bias_mant = base + (x * gain) >> shift`` becomes the diagonal Affine
  ``x * gain / 2**shift * 2**bias_exp * (du + 1)/4096`` (+ base the same way).

Exact: every integer (du, dv, vth, bias_mant, bias_exp, rows, cols, weights, weight_exp,
num_weight_bits, core of every neuron, encoding gain and shift) is also stored in node
metadata, so :func:`nir_to_graph` gives back the identical graph (``nir.write`` -> ``nir.read``
round trip). Approximate in the NIR fields: Lava rounds every decay toward zero (integer
``>> 12``), floors the input encoding and negative ``weight_exp`` shifts, wraps u at 2**23 and
clips v; NIR's equations are real-valued; the bias transient when du < 4095 (above); and each
Lava projection delays by one step while NIR edges carry no delay (a reader that runs layer
after layer within one step sees the output layer ``depth`` steps earlier). An exact-exponential
reader (nengo-loihi's ``decay = -expm1(-dt / tau)``) sees decays 1 - exp(-(du+1)/4096) instead.

For a recurrent run, exact: every integer and the frame encoding (metadata; :func:`nir_to_graph`
gives the identical graph, spikes and final v). Approximate, in the NIR fields: the same rounding
as above, and the delays. On the chip each projection delays one step; a reader that runs the
graph in order within a step (recurrent edges one step late, as :func:`simulate_nir` and snnTorch
do) sees a population that hears the input directly one step earlier, which for a chain of
recurrent populations is only a shift in time, but (i) the readout's final v misses none of the
last steps' spikes that the chip's has not yet received, and (ii) a loop through several
populations (``r1 -> r2 -> r1``) closes in one step instead of two. Measured (``simulate_nir`` on the
fields alone vs the emulator, spoken-digits test set, 600 sequences): the shipped 256-LIF DEEP R
10 % run 99.7 % of classes agree; a stacked two-population run 96.7 %; a small two-population run
with feedback ``r2 -> r1`` 81.7 % (tests/test_nir_recurrent.py prints the figures). Import from the
NIR fields alone (no deepr-neuro metadata) of such a graph is refused (the CubaLI readout node is
named): it is read from the metadata only.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Tuple

import numpy as np

from deepr_neuro.errors import ConfigError
from deepr_neuro.network.integer_network import (InputEncoding, IntegerGraph, NeuronParams, Population,
                                                 Projection, as_graph)

DT = 1e-4            # seconds per chip step in the NIR reading (snnTorch's and NIR's Lava scripts' dt)
ACT_SHIFT = 6        # Lava: synaptic input enters u as a << 6, thresholds compare with vth << 6
FORMAT = 1           # version of the metadata layout below (bias-encoded input, spike-count readout)
FORMAT_SPIKES = 2    # the layout of a spike-source input with a final-v readout (older readers refuse it)
GENERATOR = "deepr-neuro"
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
INPUT, OUTPUT, ENCODING = "input", "output", "input_encoding"
NEURON_NODES = ("CubaLIF", "LIF", "IF")
INTEGRATOR_NODES = ("CubaLI", "LI", "I")  # non-spiking: a final-v readout
WEIGHT_NODES = ("Affine", "Linear")
HEADROOM_VTH = 1 << 16  # imported thresholds stay <= 2**22 in v units: room below the 2**23 clip and wrap
LAVA = {"du": (0, 4095), "dv": (0, 4095), "vth": (0, 131071), "bias_mant": (-4096, 4095), "bias_exp": (0, 7),
        "weights": (-256, 255), "num_weight_bits": (1, 8), "weight_exp": (-8, 7)}


def _nir():
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - nir is a dependency
        raise ConfigError(f"NIR support needs the 'nir' package (pip install 'nir>=1.0,<1.1'): {exc}") from None
    return nir


def pop_key(name: str) -> str:
    return f"pop_{name}"


def proj_key(name: str) -> str:
    return f"proj_{name}"


def _cut(value, n: int = 200) -> str:
    text = str(value)
    return text if len(text) <= n else text[:n] + "..."


# ---------------------------------------------------------------------------
# Lava's effective weights (what the chip multiplies with), for the NIR fields
# ---------------------------------------------------------------------------

def chip_weight_matrix(q: Projection, n_pre: int, n_post: int) -> np.ndarray:
    """Dense (n_post, n_pre) int64 matrix of Lava's effective weights: duplicates summed,
    sign mode from the values (mixed iff some > 0 and some < 0), clip and truncation to
    ``num_weight_bits`` as Lava's Sparse does (lava/utils/weightutils.py)."""
    w = np.zeros((n_post, n_pre), np.int64)
    np.add.at(w, (np.asarray(q.rows, np.int64), np.asarray(q.cols, np.int64)), np.asarray(q.weights, np.int64))
    b = int(q.num_weight_bits)
    if (w > 0).any() and (w < 0).any():
        n = 8 - b + 1
        return (np.clip(w, -256, 255) >> n) << n
    n = 8 - b
    if (w < 0).any():
        return -((np.clip(-w, 0, 255) >> n) << n)
    return (np.clip(w, 0, 255) >> n) << n


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------

def _taus(p: NeuronParams) -> Tuple[float, float]:
    tau_syn = DT * 4096.0 / (int(p.du) + 1)
    tau_mem = math.inf if int(p.dv) == 0 else DT * 4096.0 / int(p.dv)
    return tau_syn, tau_mem


def _bias_eff(p: NeuronParams) -> np.ndarray:
    b = np.asarray(p.bias_mant).astype(np.int16).astype(np.int64)
    return b << int(p.bias_exp)


def _cuba_fields(pop: Population, kind: str, **extra_meta):
    """What NIR's CubaLIF and CubaLI share for a population: the time constants, r and w_in of
    the mapping above, v_leak 0, and the chip integers (and cores) in metadata."""
    p, n = pop.neurons, pop.n
    tau_syn, tau_mem = _taus(p)
    ones = np.ones(n)
    meta = {"kind": kind, "name": pop.name, "du": int(p.du), "dv": int(p.dv), "vth": int(p.vth),
            "bias_exp": int(p.bias_exp), "bias_mant": np.asarray(p.bias_mant, np.int32), **extra_meta}
    if pop.core is not None:
        meta["core"] = np.asarray(pop.core, np.int32)
    return dict(tau_syn=tau_syn * ones, tau_mem=tau_mem * ones, r=(tau_mem / DT) * ones,
                v_leak=np.zeros(n), w_in=(tau_syn / DT) * ones, metadata=meta)


def _lif_node(pop: Population):
    p, n = pop.neurons, pop.n
    return _nir().CubaLIF(v_threshold=float(int(p.vth) << ACT_SHIFT) * np.ones(n), v_reset=np.zeros(n),
                          **_cuba_fields(pop, "population"))


def _li_node(pop: Population):
    """The final-v readout as NIR's CubaLI: the chip's two-state update without a threshold."""
    return _nir().CubaLI(**_cuba_fields(
        pop, "readout", **{"class": "argmax of v after each sample's last step (n_frames * steps_per_frame - 1); "
                                    "ties to the lowest index; the chip's v never reaches vth << 6 (no spikes)"}))


def _spike_input_node(g: IntegerGraph, input_meta: Optional[dict]):
    """The Input of a spike-source graph: one channel per input neuron, 0/1 per step; the frame
    encoding (and what the caller adds: normalisation, data set) in its metadata."""
    nir = _nir()
    p0, enc = g.input, g.encoding
    if not all(hasattr(enc, f) for f in ("steps_per_frame", "scale", "signed")):
        raise ConfigError(f"population {p0.name!r}: a spike-source input needs a frame encoding "
                          f"(steps_per_frame, scale, signed); got {type(enc).__name__}")
    p = p0.neurons
    meta = {"kind": "spike_source", "name": p0.name,
            "values": "input spike trains: 0 or 1 per channel (one per input population neuron) and step",
            "encoding": "frame-rate", "steps_per_frame": int(enc.steps_per_frame), "scale": float(enc.scale),
            "signed": bool(enc.signed),
            "rule": "frames normalised (x - norm_mean) / norm_std per feature; level q = clip(rint(x*scale), 0, S) "
                    "(signed: ON channel 2i from x, OFF channel 2i+1 from -x); a frame lasts S = steps_per_frame "
                    "steps, a channel at level q spikes at step k (0..S-1) iff floor((k+1)q/S) > floor(kq/S); "
                    "a sample of n frames runs n*S steps (deepr_neuro/network/frame_encoding.py)",
            "du": int(p.du), "dv": int(p.dv), "vth": int(p.vth), "bias_exp": int(p.bias_exp),
            "bias_mant": np.asarray(p.bias_mant, np.int32)}
    if p0.core is not None:
        meta["core"] = np.asarray(p0.core, np.int32)
    for k, v in (input_meta or {}).items():
        if k in meta:
            raise ConfigError(f"NIR input metadata: {k!r} is written by deepr-neuro itself")
        meta[k] = v
    return nir.Input(input_type={"input": np.array([p0.n])}, metadata=meta)


def graph_to_nir(graph, input_meta: Optional[dict] = None) -> "nir.NIRGraph":  # noqa: F821
    """The integer graph (or chain network) as a NIR graph; see the module docstring for the mapping.
    ``input_meta``: extra metadata of a spike-source graph's Input node (the run's normalisation
    ``norm_mean`` / ``norm_std``, data set name), so that an outside reader can make the spikes.
    Refuses (ConfigError naming the population or projection) what NIR cannot carry."""
    g = as_graph(graph)
    kinds = (getattr(g, "input_kind", "bias"), getattr(g, "readout_kind", "spike_count"))
    if kinds not in (("bias", "spike_count"), ("spikes", "final_v")):
        raise ConfigError(f"--to nir: input kind {kinds[0]!r} with readout kind {kinds[1]!r}: NIR export writes a "
                          "bias-encoded input with a spike-count readout (MLPs) or a spike-source input with a "
                          "final-v readout (recurrent runs); deploy it with --to lava")
    spikes = kinds[0] == "spikes"
    nir = _nir()
    names = [p.name for p in g.populations] + [q.name for q in g.projections]
    for name in names:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(f"population/projection name {_cut(repr(name), 80)}: NIR node names here use "
                              "letters, digits, '_' and '-' (1-100 characters); rename it")
    for kind, group in (("population", [p.name for p in g.populations]), ("projection", [q.name for q in g.projections])):
        if len(set(group)) != len(group):
            raise ConfigError(f"{kind} names must be unique for NIR (got {_cut(group)})")
    nodes: Dict[str, object] = {}
    edges: List[Tuple[str, str]] = []
    p0 = g.input
    n_in = p0.n
    key_of = {p.name: pop_key(p.name) for p in g.populations}
    if spikes:
        if g.readout == p0.name:
            raise ConfigError(f"population {p0.name!r}: the spike-source input cannot be the final-v readout")
        for q in g.projections:
            if q.pre == g.readout:
                raise ConfigError(f"projection {q.name!r}: it leaves the final-v readout {g.readout!r}; the "
                                  "readout is a non-spiking integrator (NIR CubaLI), nothing may leave it")
        key_of[p0.name] = INPUT
        nodes[INPUT] = _spike_input_node(g, input_meta)
        for pop in g.populations[1:]:
            nodes[pop_key(pop.name)] = _li_node(pop) if pop.name == g.readout else _lif_node(pop)
        bias_done = set()
    else:
        if input_meta:
            raise ConfigError("NIR input metadata: only a spike-source (recurrent) graph takes it")
        drive0 = (int(p0.neurons.du) + 1) / 4096.0
        enc = g.encoding
        gain = float(enc.gain) / float(2 ** int(enc.shift)) * float(2 ** int(p0.neurons.bias_exp)) * drive0
        nodes[INPUT] = nir.Input(input_type={"input": np.array([n_in])},
                                 metadata={"kind": "input", "values": "features 0..255 (uint8), the same at every step"})
        nodes[ENCODING] = nir.Affine(weight=np.eye(n_in) * gain, bias=_bias_eff(p0.neurons).astype(float) * drive0,
                                     metadata={"kind": "encoding", "gain": int(enc.gain), "shift": int(enc.shift)})
        edges += [(INPUT, ENCODING), (ENCODING, pop_key(p0.name))]
        for pop in g.populations:
            nodes[pop_key(pop.name)] = _lif_node(pop)
        bias_done = {p0.name}
    for q in g.projections:
        pre, post = g.population(q.pre), g.population(q.post)
        w = chip_weight_matrix(q, pre.n, post.n).astype(float) * 2.0 ** (ACT_SHIFT + int(q.weight_exp))
        bias = np.zeros(post.n)
        if post.name not in bias_done:  # the post population's bias rides on its first incoming projection
            bias = _bias_eff(post.neurons).astype(float) * (int(post.neurons.du) + 1) / 4096.0
            bias_done.add(post.name)
        meta = {"kind": "projection", "name": q.name, "pre": q.pre, "post": q.post,
                "rows": np.asarray(q.rows, np.int32), "cols": np.asarray(q.cols, np.int32),
                "weights": np.asarray(q.weights, np.int32), "weight_exp": int(q.weight_exp),
                "num_weight_bits": int(q.num_weight_bits), "delay_steps": 1}
        nodes[proj_key(q.name)] = nir.Affine(weight=w, bias=bias, metadata=meta)
        edges += [(key_of[q.pre], proj_key(q.name)), (proj_key(q.name), key_of[q.post])]
    for pop in g.populations[1:]:
        if pop.name not in bias_done and np.any(_bias_eff(pop.neurons)):
            raise ConfigError(f"population {pop.name!r}: it has a bias but no incoming projection, and NIR has "
                              "no constant source to carry it; give it an incoming projection or a zero bias")
    ro = g.population(g.readout)
    nodes[OUTPUT] = nir.Output(output_type={"output": np.array([ro.n])}, metadata={"kind": "output"})
    edges.append((pop_key(g.readout), OUTPUT))
    meta = {"generator": GENERATOR, "format": FORMAT, "dt": DT, "readout": g.readout,
            "populations": ",".join(p.name for p in g.populations),
            "projections": ",".join(q.name for q in g.projections)}
    if spikes:
        meta.update({"format": FORMAT_SPIKES, "input_kind": "spikes", "readout_kind": "final_v",
                     "class_rule": f"class = argmax over {ro.n} of the readout {pop_key(g.readout)!r}'s v after "
                                   "each sample's last step; ties to the lowest index",
                     "note": "deepr-neuro integer graph (spike-source input, final-v readout): exact chip integers "
                             "in node metadata, the frame encoding in the input's; NIR fields are the forward-Euler "
                             "reading at dt = 1e-4 s; each projection delays one step on the chip "
                             "(deepr_neuro/interop/nir_io.py)"})
    else:
        meta.update({"encoding_gain": int(g.encoding.gain), "encoding_shift": int(g.encoding.shift),
                     "note": "deepr-neuro integer graph: exact chip integers in node metadata; NIR fields are the "
                             "forward-Euler reading at dt = 1e-4 s (deepr_neuro/interop/nir_io.py)"})
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def write_nir(graph, path, input_meta: Optional[dict] = None) -> int:
    """Write ``graph`` as a NIR (HDF5) file atomically; return its size in bytes."""
    import os
    import tempfile
    from pathlib import Path

    nir = _nir()
    ng = graph_to_nir(graph, input_meta)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent or "."))
    os.close(fd)
    try:
        nir.write(tmp, ng)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path.stat().st_size


# ---------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------

def read_nir(path) -> "nir.NIRGraph":  # noqa: F821
    """``nir.read`` with every failure (missing file, not HDF5, unknown node type) as a ConfigError."""
    from pathlib import Path

    nir = _nir()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{_cut(p)}: NIR file not found (or not a regular file); check the path")
    try:
        return nir.read(str(p))
    except Exception as exc:  # h5py / nir raise OSError, KeyError, ValueError, AssertionError...
        raise ConfigError(f"{_cut(p)}: not a readable NIR file ({type(exc).__name__}: {_cut(exc)}); "
                          "write it with nir.write (nir 1.0.x)") from None


def _type(node) -> str:
    return type(node).__name__


def nir_to_graph(nir_graph, profile=None) -> IntegerGraph:
    """A NIR graph as an integer graph.

    A graph written by :func:`graph_to_nir` is rebuilt from its metadata: identical integers
    (after checking that its fields still say what the metadata says). Any other graph is
    converted from its NIR fields (CubaLIF / LIF / IF neurons, Affine / Linear weights, the
    Input feeding one diagonal Affine, the input encoding): weights and thresholds are
    quantized to the chip's integers (``profile`` gives weight bits, exponent range and the
    neurons per core for placement). What cannot be mapped is refused naming the node.
    """
    nir = _nir()
    if not isinstance(nir_graph, nir.NIRGraph):
        raise ConfigError(f"expected a nir.NIRGraph, got {type(nir_graph).__name__}")
    meta = dict(getattr(nir_graph, "metadata", None) or {})
    if str(meta.get("generator", "")) == GENERATOR:
        return _from_metadata(nir_graph, meta)
    return _from_fields(nir_graph, profile)


class _Meta:
    """Typed reads of one node's metadata; errors name the node and the field."""

    def __init__(self, node_name: str, meta: dict):
        self.node, self.meta = node_name, meta

    def fail(self, field: str, why: str) -> ConfigError:
        return ConfigError(f"NIR node {self.node!r}: metadata field {field!r}: {why}; export the network again "
                           "with deepr-neuro, or remove the deepr-neuro metadata to import from the NIR fields")

    def get(self, field: str):
        if field not in self.meta:
            raise self.fail(field, "missing")
        return self.meta[field]

    def integer(self, field: str, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
        v = self.get(field)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) and not (
                isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu"):
            raise self.fail(field, f"must be an integer (got {_cut(repr(v), 80)})")
        v = int(v)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.fail(field, f"value {v} outside {lo}..{hi}")
        return v

    def number(self, field: str) -> float:
        v = self.get(field)
        if isinstance(v, np.ndarray) and v.ndim == 0:
            v = v.item()
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(v)):
            raise self.fail(field, f"must be a finite number (got {_cut(repr(v), 80)})")
        return float(v)

    def boolean(self, field: str) -> bool:
        v = self.get(field)
        if isinstance(v, np.ndarray) and v.ndim == 0:
            v = v.item()
        if not isinstance(v, (bool, np.bool_)):
            raise self.fail(field, f"must be true or false (got {_cut(repr(v), 80)})")
        return bool(v)

    def text(self, field: str) -> str:
        v = self.get(field)
        if isinstance(v, bytes):
            v = v.decode("utf8", "replace")
        if not isinstance(v, str):
            raise self.fail(field, f"must be a string (got {_cut(repr(v), 80)})")
        return v

    def array(self, field: str, n: Optional[int] = None, lo: Optional[int] = None, hi: Optional[int] = None):
        v = self.get(field)
        if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype.kind not in "iu":
            raise self.fail(field, f"must be a 1-D integer array (got {_cut(repr(v), 80)})")
        if n is not None and v.size != n:
            raise self.fail(field, f"has {v.size} values for {n} neurons/synapses")
        if v.size and ((lo is not None and v.min() < lo) or (hi is not None and v.max() > hi)):
            raise self.fail(field, f"values outside {lo}..{hi} (min {v.min()}, max {v.max()})")
        return v.astype(np.int32)


def _node(nir_graph, key: str, want: str):
    node = nir_graph.nodes.get(key)
    if node is None:
        raise ConfigError(f"NIR node {key!r}: missing (the graph's metadata lists it); export the network again")
    if _type(node) != want:
        raise ConfigError(f"NIR node {key!r}: is a {_type(node)}, expected {want}")
    return node


def _close(a, b) -> bool:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and bool(np.all((a == b) | np.isclose(a, b, rtol=1e-9, atol=1e-9)))


def _neurons(m: "_Meta", n: int) -> NeuronParams:
    return NeuronParams(vth=m.integer("vth", *LAVA["vth"]), du=m.integer("du", *LAVA["du"]),
                        dv=m.integer("dv", *LAVA["dv"]), bias_exp=m.integer("bias_exp", *LAVA["bias_exp"]),
                        bias_mant=m.array("bias_mant", n, *LAVA["bias_mant"]))


def _check_fields(key: str, node, fresh, fields) -> None:
    for field in fields:
        if not _close(getattr(node, field), getattr(fresh, field)):
            raise ConfigError(f"NIR node {key!r}: field {field!r} disagrees with the node's deepr-neuro "
                              "metadata (edited after export?); export again, or remove the metadata to "
                              "import from the NIR fields")


def _spike_input_from_metadata(ng, name: str):
    """(input Population, FrameEncoding) of a spike-source graph, from its Input node."""
    from deepr_neuro.network.frame_encoding import FrameEncoding

    node = _node(ng, INPUT, "Input")
    m = _Meta(INPUT, dict(node.metadata or {}))
    if m.text("kind") != "spike_source":
        raise m.fail("kind", "a spike-source graph's Input has kind 'spike_source'")
    if m.text("name") != name:
        raise m.fail("name", f"names {_cut(m.text('name'), 80)!r}, the graph's first population is {name!r}")
    shape = np.asarray(node.input_type.get("input", []), np.int64).ravel()
    if shape.size != 1 or shape[0] < 1:
        raise ConfigError(f"NIR node {INPUT!r}: input_type {_cut(node.input_type)} is not one channel vector")
    n = int(shape[0])
    p = _neurons(m, n)
    core = m.array("core", n, 0, 2 ** 31 - 1) if "core" in m.meta else None
    if m.text("encoding") != "frame-rate":
        raise m.fail("encoding", "the one spike encoding is 'frame-rate'")
    try:
        enc = FrameEncoding(steps_per_frame=m.integer("steps_per_frame"), scale=m.number("scale"),
                            signed=m.boolean("signed"))
    except ConfigError as exc:
        raise ConfigError(f"NIR node {INPUT!r}: metadata {exc}") from None
    return Population(name, p, core), enc


def _from_metadata(ng, meta: dict) -> IntegerGraph:
    top = _Meta("(graph)", meta)
    fmt = top.integer("format")
    if fmt not in (FORMAT, FORMAT_SPIKES):
        raise top.fail("format", f"version {fmt} is not one this deepr-neuro reads ({FORMAT}, {FORMAT_SPIKES})")
    spikes = fmt == FORMAT_SPIKES
    if spikes and (top.text("input_kind"), top.text("readout_kind")) != ("spikes", "final_v"):
        raise top.fail("input_kind", f"format {FORMAT_SPIKES} is a spike-source input with a final-v readout "
                                     f"(got {_cut(top.text('input_kind'), 40)!r}, "
                                     f"{_cut(top.text('readout_kind'), 40)!r})")
    pop_names = [s for s in top.text("populations").split(",") if s]
    proj_names = [s for s in top.text("projections").split(",") if s]
    if not pop_names:
        raise top.fail("populations", "lists no population")
    if len(set(pop_names)) != len(pop_names) or len(set(proj_names)) != len(proj_names):
        raise top.fail("populations", "names repeat")
    readout = top.text("readout")
    if readout not in pop_names:
        raise top.fail("readout", f"{_cut(readout, 80)!r} is not a listed population")
    pops: List[Population] = []
    key_of = {name: pop_key(name) for name in pop_names}
    if spikes:
        if readout == pop_names[0]:
            raise top.fail("readout", "the spike-source input cannot be the readout")
        p0, encoding = _spike_input_from_metadata(ng, pop_names[0])
        pops.append(p0)
        key_of[pop_names[0]] = INPUT
    else:
        encoding = InputEncoding(gain=top.integer("encoding_gain", 0, 2 ** 31 - 1),
                                 shift=top.integer("encoding_shift", 0, 31))
    for name in pop_names[len(pops):]:
        key = pop_key(name)
        li = spikes and name == readout
        node = _node(ng, key, "CubaLI" if li else "CubaLIF")
        m = _Meta(key, dict(node.metadata or {}))
        n = int(np.asarray(node.tau_syn).size)
        p = _neurons(m, n)
        core = m.array("core", n, 0, 2 ** 31 - 1) if "core" in m.meta else None
        pop = Population(name, p, core)
        if li:
            _check_fields(key, node, _li_node(pop), ("tau_syn", "tau_mem", "r", "v_leak", "w_in"))
        else:
            _check_fields(key, node, _lif_node(pop),
                          ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"))
        pops.append(pop)
    by_name = {p.name: p for p in pops}
    projs: List[Projection] = []
    for name in proj_names:
        key = proj_key(name)
        node = _node(ng, key, "Affine")
        m = _Meta(key, dict(node.metadata or {}))
        pre, post = m.text("pre"), m.text("post")
        for field, v in (("pre", pre), ("post", post)):
            if v not in by_name:
                raise m.fail(field, f"{_cut(v, 80)!r} is not a listed population")
        if post == pop_names[0]:
            raise m.fail("post", "no projection may enter the input population")
        if spikes and pre == readout:
            raise m.fail("pre", f"nothing may leave the final-v readout {readout!r}")
        rows = m.array("rows", None, 0, by_name[post].n - 1)
        cols = m.array("cols", rows.size, 0, by_name[pre].n - 1)
        weights = m.array("weights", rows.size, *LAVA["weights"])
        order = np.lexsort((cols, rows))
        if not np.array_equal(order, np.arange(rows.size)):
            raise m.fail("rows", "synapses are not sorted by (row, col)")
        q = Projection(name=name, pre=pre, post=post, rows=rows, cols=cols, weights=weights,
                       weight_exp=m.integer("weight_exp", *LAVA["weight_exp"]),
                       num_weight_bits=m.integer("num_weight_bits", *LAVA["num_weight_bits"]))
        want = chip_weight_matrix(q, by_name[pre].n, by_name[post].n).astype(float) * 2.0 ** (ACT_SHIFT + q.weight_exp)
        if not _close(node.weight, want):
            raise ConfigError(f"NIR node {key!r}: field 'weight' disagrees with the node's deepr-neuro metadata "
                              "(edited after export?); export again, or remove the metadata to import from the "
                              "NIR fields")
        if (key_of[pre], key) not in ng.edges or (key, key_of[post]) not in ng.edges:
            raise ConfigError(f"NIR node {key!r}: the edges {key_of[pre]} -> {key} -> {key_of[post]} that its "
                              "metadata names are missing; export the network again")
        projs.append(q)
    if spikes:
        return IntegerGraph(populations=tuple(pops), projections=tuple(projs), encoding=encoding, readout=readout,
                            input_kind="spikes", readout_kind="final_v")
    return IntegerGraph(populations=tuple(pops), projections=tuple(projs), encoding=encoding, readout=readout)


# --------------------------------------------------------------- from the fields

def _uniform(key: str, field: str, values) -> float:
    v = np.asarray(values, float).ravel()
    if v.size == 0:
        raise ConfigError(f"NIR node {key!r}: field {field!r} is empty")
    if not np.all((v == v[0]) | np.isclose(v, v[0], rtol=1e-6)):
        raise ConfigError(f"NIR node {key!r}: field {field!r} differs between neurons; Lava's LIF takes one "
                          "value per population: split the node")
    return float(v[0])


def _neuron_reading(key: str, node) -> Tuple[int, int, float, float]:
    """(du, dv, input scale, threshold) of a neuron node read at dt = DT, forward Euler."""
    kind = _type(node)
    for field in ("v_leak", "v_reset"):
        if hasattr(node, field) and np.any(np.asarray(getattr(node, field), float) != 0):
            raise ConfigError(f"NIR node {key!r}: field {field!r} is non-zero; the chip's LIF has no leak "
                              "voltage and resets to 0")
    theta = _uniform(key, "v_threshold", node.v_threshold)
    if not math.isfinite(theta) or theta <= 0:
        raise ConfigError(f"NIR node {key!r}: field 'v_threshold' must be a positive finite number (got {theta})")

    def decay(field: str, tau: float, offset: int) -> int:
        if tau == math.inf:
            return 0 if offset == 0 else -1
        if not math.isfinite(tau) or tau <= 0:
            raise ConfigError(f"NIR node {key!r}: field {field!r} must be a positive time constant (got {tau})")
        d = int(round(4096.0 * DT / tau)) - offset
        lo, hi = LAVA["du"]
        if not lo <= d <= hi:
            raise ConfigError(f"NIR node {key!r}: field {field!r} = {tau:g} s gives a decay of {d} per "
                              f"{DT:g} s step, outside the chip's {lo}..{hi}; time constants must be >= dt")
        return d

    if kind == "CubaLIF":
        tau_syn, tau_mem = _uniform(key, "tau_syn", node.tau_syn), _uniform(key, "tau_mem", node.tau_mem)
        r, w_in = _uniform(key, "r", node.r), _uniform(key, "w_in", node.w_in)
        du = decay("tau_syn", tau_syn, 1)
        if du < 0:
            raise ConfigError(f"NIR node {key!r}: field 'tau_syn' is infinite (a current that never decays); "
                              "the chip's du cannot hold it")
        dv = decay("tau_mem", tau_mem, 0)
        r_scale = 1.0 if (math.isinf(r) and math.isinf(tau_mem)) else r * DT / tau_mem
        scale = w_in * DT / tau_syn * r_scale
    elif kind == "LIF":
        tau, r = _uniform(key, "tau", node.tau), _uniform(key, "r", node.r)
        du, dv = 4095, decay("tau", tau, 0)
        scale = 1.0 if (math.isinf(r) and math.isinf(tau)) else r * DT / tau
    else:  # IF
        du, dv, scale = 4095, 0, _uniform(key, "r", node.r) * DT
    if not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"NIR node {key!r}: its input scale (w_in, r and the time constants) is {scale:g}; "
                          "it must be a positive finite number")
    return du, dv, scale, theta


def _edges_from(ng, key: str) -> List[str]:
    return [b for a, b in ng.edges if a == key]


def _edges_to(ng, key: str) -> List[str]:
    return [a for a, b in ng.edges if b == key]


def _from_fields(ng, profile) -> IntegerGraph:
    nodes = dict(ng.nodes)
    for key, node in nodes.items():
        kind = _type(node)
        if kind in INTEGRATOR_NODES:
            raise ConfigError(f"NIR node {key!r}: a non-spiking {kind} (an integrator readout, as a recurrent "
                              "network's final-v readout) is imported only from deepr-neuro's own metadata; from "
                              "the NIR fields, graphs of spiking nodes (Input, Affine/Linear, "
                              f"{', '.join(NEURON_NODES)}, Output) are mapped")
        if kind not in NEURON_NODES + WEIGHT_NODES + ("Input", "Output"):
            raise ConfigError(f"NIR node {key!r}: type {kind} cannot be mapped onto the chip's LIF populations "
                              f"and sparse projections (supported: Input, Output, {', '.join(WEIGHT_NODES)}, "
                              f"{', '.join(NEURON_NODES)})")
    inputs = [k for k, n in nodes.items() if _type(n) == "Input"]
    outputs = [k for k, n in nodes.items() if _type(n) == "Output"]
    if len(inputs) != 1:
        raise ConfigError(f"NIR graph: {len(inputs)} Input nodes ({_cut(inputs)}); exactly one is mapped")
    if len(outputs) != 1:
        raise ConfigError(f"NIR graph: {len(outputs)} Output nodes ({_cut(outputs)}); exactly one (the readout) "
                          "is mapped")
    wb = int(profile.weight_bits) if profile is not None else 8
    e_lo, e_hi = LAVA["weight_exp"]
    if profile is not None:
        e_lo, e_hi = max(e_lo, int(profile.weight_exp_min)), min(e_hi, int(profile.weight_exp_max))
    # the input: Input -> one diagonal weight node -> one neuron node
    (inp,) = inputs
    nxt = _edges_from(ng, inp)
    if len(nxt) != 1 or _type(nodes[nxt[0]]) not in WEIGHT_NODES:
        raise ConfigError(f"NIR node {inp!r}: must feed exactly one Affine/Linear (the input encoding: the chip "
                          "drives its input neurons with bias currents); got " + _cut(nxt))
    enc_key = nxt[0]
    enc = nodes[enc_key]
    enc_out = _edges_from(ng, enc_key)
    if len(enc_out) != 1 or _type(nodes[enc_out[0]]) not in NEURON_NODES or len(_edges_to(ng, enc_key)) != 1:
        raise ConfigError(f"NIR node {enc_key!r}: the input encoding must run from the Input into exactly one "
                          "neuron node (CubaLIF, LIF or IF)")
    w_enc = np.asarray(enc.weight, float)
    if w_enc.ndim != 2 or w_enc.shape[0] != w_enc.shape[1] or np.any(w_enc - np.diag(np.diag(w_enc))):
        raise ConfigError(f"NIR node {enc_key!r}: the weight from the Input must be square and diagonal (one "
                          "input neuron per feature, driven by a bias current); got shape "
                          f"{_cut(w_enc.shape)}")
    d_in = _uniform(enc_key, "weight (diagonal)", np.diag(w_enc))
    if d_in < 0:
        raise ConfigError(f"NIR node {enc_key!r}: a negative input gain cannot be encoded (features are 0..255)")
    c_in = np.asarray(getattr(enc, "bias", np.zeros(w_enc.shape[0])), float).reshape(-1)
    neuron_keys = [k for k, n in nodes.items() if _type(n) in NEURON_NODES]
    order = [enc_out[0]] + [k for k in neuron_keys if k != enc_out[0]]
    readings = {k: _neuron_reading(k, nodes[k]) for k in order}
    out_key = outputs[0]
    src = _edges_to(ng, out_key)
    if len(src) != 1 or src[0] not in readings:
        raise ConfigError(f"NIR node {out_key!r}: must have exactly one incoming edge, from a neuron node "
                          "(the readout population)")
    # projections
    links = []
    for key, node in nodes.items():
        if _type(node) not in WEIGHT_NODES or key == enc_key:
            continue
        pre, post = _edges_to(ng, key), _edges_from(ng, key)
        if len(pre) != 1 or len(post) != 1 or pre[0] not in readings or post[0] not in readings:
            raise ConfigError(f"NIR node {key!r}: a weight node must run from exactly one neuron node to exactly "
                              f"one neuron node (got from {_cut(pre)} to {_cut(post)})")
        if post[0] == order[0]:
            raise ConfigError(f"NIR node {key!r}: no projection may enter the input population {order[0]!r}")
        w = np.asarray(node.weight, float)
        n_pre, n_post = np.asarray(nodes[pre[0]].v_threshold).size, np.asarray(nodes[post[0]].v_threshold).size
        if w.shape != (n_post, n_pre):
            raise ConfigError(f"NIR node {key!r}: weight shape {w.shape} does not connect {pre[0]!r} "
                              f"({n_pre} neurons) to {post[0]!r} ({n_post})")
        if not np.all(np.isfinite(w)):
            raise ConfigError(f"NIR node {key!r}: weight holds non-finite values")
        bias = np.asarray(getattr(node, "bias", np.zeros(n_post)), float).reshape(-1) \
            if _type(node) == "Affine" else np.zeros(n_post)
        links.append((key, pre[0], post[0], w, bias))
    for a, b in ng.edges:
        if a in readings and b in readings:
            raise ConfigError(f"NIR edge {a!r} -> {b!r}: neuron nodes connect only through Affine/Linear nodes "
                              "(one projection each)")
    # quantize, one population at a time (normalised units: threshold 1)
    pops: List[Population] = []
    projs: List[Projection] = []
    vth_of: Dict[str, int] = {}
    biases: Dict[str, np.ndarray] = {k: np.zeros(np.asarray(nodes[k].v_threshold).size) for k in order}
    for key, pre, post, w, bias in links:
        biases[post] = biases[post] + bias
    for key in order:
        du, dv, scale, theta = readings[key]
        incoming = [lk for lk in links if lk[2] == key]
        m = max([float(np.abs(lk[3]).max()) * scale / theta for lk in incoming if lk[3].size] + [0.0])
        vth = HEADROOM_VTH if m == 0 else int(min(HEADROOM_VTH, max(1, math.floor(255 * 2 ** e_hi / m))))
        rows = sum((np.abs(lk[3]).sum(axis=1) for lk in incoming if lk[3].size), np.zeros(1))
        worst = float(np.max(rows)) * scale / theta / (1.0 - _alpha(du) if du != 4095 else 1.0)
        if worst > 0:  # every input spiking at once must not wrap u (24 bits): keep it below 2**22
            vth = max(1, min(vth, math.floor(2.0 ** 22 / (64.0 * worst))))
        b = float(np.abs(biases[key]).max(initial=0.0)) * scale / theta / (1.0 - _alpha(du) if du != 4095 else 1.0)
        if b > 0:  # the bias, in thresholds per step, must fit 13 bits << 7 in v units
            vth = max(1, min(vth, math.floor(LAVA["bias_mant"][1] * 2 ** LAVA["bias_exp"][1] / (b * 64.0))))
        vth_of[key] = vth
    for key, pre, post, w, bias in links:
        du, dv, scale, theta = readings[post]
        vth = vth_of[post]
        wn = w * scale / theta * vth  # in units of 2**0 chip weight at weight_exp 0 (64 v-units each)
        mx = float(np.abs(wn).max()) if wn.size else 0.0
        e = e_lo if mx == 0 else int(min(e_hi, max(e_lo, math.ceil(math.log2(mx / 255.0)))))
        mixed = bool((wn > 0).any() and (wn < 0).any())
        step = 2 ** (8 - wb + int(mixed))
        wi = np.clip(np.round(wn / 2.0 ** e / step) * step, -256, 255).astype(np.int64)
        rows, cols = np.nonzero(wi)
        projs.append(Projection(name=key, pre=pre, post=post, rows=rows.astype(np.int32),
                                cols=cols.astype(np.int32), weights=wi[rows, cols].astype(np.int32),
                                weight_exp=e, num_weight_bits=wb))
    # input encoding: drive per step = (d_in * x + c_in) * scale / theta, in v units vth * 64
    du0, dv0, scale0, theta0 = readings[order[0]]
    g_v = d_in * scale0 / theta0  # threshold fractions per unit of x, per step
    if du0 != 4095:
        g_v = g_v / (1.0 - _alpha(du0))
    c_max = float(np.abs(c_in).max(initial=0.0)) * scale0 / theta0
    top = 255 * g_v + c_max  # largest drive, in thresholds per step
    vth0 = LAVA["vth"][1] if top == 0 else int(min(LAVA["vth"][1], max(1, math.floor(
        LAVA["bias_mant"][1] * 2 ** LAVA["bias_exp"][1] / (top * 64.0)))))
    vth_of[order[0]] = vth0
    per_x = g_v * vth0 * 64.0
    bias_exp0 = 0
    while bias_exp0 < LAVA["bias_exp"][1] and top * vth0 * 64.0 > LAVA["bias_mant"][1] * 2 ** bias_exp0:
        bias_exp0 += 1
    shift = 16
    gain = int(round(per_x / 2 ** bias_exp0 * 2 ** shift))
    if (255 * gain >> shift) + c_max * vth0 * 64.0 / 2 ** bias_exp0 > LAVA["bias_mant"][1] + 1:
        raise ConfigError(f"NIR node {enc_key!r}: the input gain {d_in:g} is too strong for the chip's 13-bit bias "
                          "at the input population's threshold; lower it")
    for key in order:
        du, dv, scale, theta = readings[key]
        vth = vth_of[key]
        b_v = biases[key] * scale / theta * vth * 64.0
        if key == order[0]:
            b_v = c_in * scale / theta * vth * 64.0
        if du != 4095:
            b_v = b_v / (1.0 - _alpha(du))
        bexp = int(bias_exp0) if key == order[0] else 0
        while bexp < LAVA["bias_exp"][1] and np.abs(b_v).max(initial=0) > LAVA["bias_mant"][1] * 2 ** bexp:
            bexp += 1
        mant = np.round(b_v / 2 ** bexp)
        if np.abs(mant).max(initial=0) > LAVA["bias_mant"][1]:
            raise ConfigError(f"NIR node {key!r}: its bias exceeds the chip's 13-bit mantissa with exponent 7 at "
                              "this threshold; lower the bias")
        if key == order[0] and bexp != bias_exp0:
            raise ConfigError(f"NIR node {enc_key!r}: the input bias and gain need different bias exponents; "
                              "lower the bias")
        p = NeuronParams(vth=vth, du=du, dv=dv, bias_exp=bexp, bias_mant=mant.astype(np.int32))
        pops.append(Population(name=key, neurons=p, core=None))
    if profile is not None:
        pops = place(pops, profile)
    return IntegerGraph(populations=tuple(pops), projections=tuple(projs),
                        encoding=InputEncoding(gain=gain, shift=shift), readout=src[0])


def _alpha(du: int) -> float:
    return 1.0 - (int(du) + 1) / 4096.0


def place(pops: List[Population], profile) -> List[Population]:
    """Contiguous placement: each population on its own cores, ``neurons_per_core`` at a time."""
    out, core = [], 0
    for pop in pops:
        idx = np.arange(pop.n)
        cores = (core + idx // int(profile.neurons_per_core)).astype(np.int32)
        core += -(-pop.n // int(profile.neurons_per_core)) if pop.n else 0
        out.append(Population(pop.name, pop.neurons, cores))
    return out


# ---------------------------------------------------------------------------
# A reader of the NIR fields alone: forward Euler at dt, as snnTorch runs a graph
# ---------------------------------------------------------------------------

def _exec_order(ng) -> Tuple[List[str], set]:
    """Nodes in execution order from the Input (depth-first); edges that close a cycle are
    'recurrent': they carry the previous step's value, as snnTorch's RSynaptic does."""
    keys = list(ng.nodes)
    start = [k for k in keys if _type(ng.nodes[k]) == "Input"]
    order: List[str] = []
    state: Dict[str, int] = {}
    back: set = set()

    def visit(k):
        state[k] = 1
        for a, b in ng.edges:
            if a != k:
                continue
            if state.get(b) == 1:
                back.add((a, b))
            elif b not in state:
                visit(b)
        state[k] = 2
        order.append(k)

    for s in start:
        visit(s)
    for k in keys:
        if k not in state:
            visit(k)
    order.reverse()
    # a reverse post-order is a topological order of the forward edges
    return order, back


def simulate_nir(ng, x, steps: int, dt: float = DT, n_steps=None) -> Dict[str, np.ndarray]:
    """Run the NIR graph's own equations from its fields (no metadata), per node key:

    * spiking neuron nodes (CubaLIF, LIF, IF): spike counts, shape (samples, n);
    * non-spiking integrators (CubaLI, LI, I; a final-v readout): the state ``v`` after each
      sample's last step, shape (samples, n).

    ``x`` is (samples, features), the Input's value at every step (a bias-encoded graph), or
    (samples, steps, channels), the Input's value at each step (spike trains of a spike-source
    graph). ``n_steps`` (samples,): each sample's own number of steps (default ``steps``); counts
    cover those steps and v is read at step ``n_steps - 1``. Affine/Linear are ``W x + b``,
    neuron nodes are integrated with forward Euler at ``dt`` (the discretisation snnTorch uses),
    values pass along forward edges within the step and along recurrent edges one step later.
    ``r dt / tau`` with r = tau = inf (no leak) is read as 1."""
    x = np.asarray(x, float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim not in (2, 3):
        raise ConfigError(f"simulate_nir: x must be (samples, features) or (samples, steps, channels), "
                          f"got shape {x.shape}")
    steps = int(steps)
    if x.ndim == 3 and x.shape[1] < steps:
        raise ConfigError(f"simulate_nir: x holds {x.shape[1]} steps, fewer than steps = {steps}")
    order, back = _exec_order(ng)
    n_s = x.shape[0]
    last = np.full(n_s, steps - 1, np.int64) if n_steps is None else np.asarray(n_steps, np.int64) - 1
    if last.shape != (n_s,) or (n_s and (last.min() < 0 or last.max() >= steps)):
        raise ConfigError(f"simulate_nir: n_steps must be {n_s} values in 1..{steps}")
    state: Dict[str, Dict[str, np.ndarray]] = {}
    out: Dict[str, np.ndarray] = {}
    for k in order:
        kind = _type(ng.nodes[k])
        if kind in NEURON_NODES + INTEGRATOR_NODES:
            n = _node_size(ng.nodes[k])
            state[k] = {"v": np.zeros((n_s, n)), "i": np.zeros((n_s, n))}
            out[k] = np.zeros((n_s, n), np.int64 if kind in NEURON_NODES else float)
    prev: Dict[str, np.ndarray] = {}

    def ratio(r, tau):
        r, tau = np.asarray(r, float), np.asarray(tau, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            q = r * dt / tau
        return np.where(np.isinf(r) & np.isinf(tau), 1.0, q)

    def leak(tau):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.isinf(tau), 0.0, dt / np.asarray(tau, float))

    for t in range(steps):
        live = t <= last
        cur: Dict[str, np.ndarray] = {}
        for k in order:
            node = ng.nodes[k]
            kind = _type(node)
            ins = [(prev.get(a) if (a, k) in back else cur.get(a)) for a, b in ng.edges if b == k]
            ins = [v for v in ins if v is not None]
            total = sum(ins) if ins else 0.0
            if kind == "Input":
                cur[k] = x[:, t] if x.ndim == 3 else x
            elif kind == "Affine":
                cur[k] = total @ np.asarray(node.weight, float).T + np.asarray(node.bias, float) \
                    if ins else np.broadcast_to(np.asarray(node.bias, float), (n_s, len(node.bias)))
            elif kind == "Linear":
                cur[k] = total @ np.asarray(node.weight, float).T if ins else \
                    np.zeros((n_s, np.asarray(node.weight).shape[0]))
            elif kind in NEURON_NODES + INTEGRATOR_NODES:
                s = state[k]
                if kind in ("CubaLIF", "CubaLI"):
                    s["i"] = s["i"] + dt / np.asarray(node.tau_syn, float) * (-s["i"] + np.asarray(node.w_in, float) * total)
                    s["v"] = s["v"] + leak(node.tau_mem) * (np.asarray(node.v_leak, float) - s["v"]) \
                        + ratio(node.r, node.tau_mem) * s["i"]
                elif kind in ("LIF", "LI"):
                    s["v"] = s["v"] + leak(node.tau) * (np.asarray(node.v_leak, float) - s["v"]) \
                        + ratio(node.r, node.tau) * total
                else:  # IF, I
                    s["v"] = s["v"] + dt * np.asarray(node.r, float) * total
                if kind in NEURON_NODES:
                    z = s["v"] > np.asarray(node.v_threshold, float)
                    s["v"] = np.where(z, np.asarray(node.v_reset, float), s["v"])
                    out[k] += z & live[:, None]
                    cur[k] = z.astype(float)
                else:
                    done = last == t
                    out[k][done] = s["v"][done]
                    cur[k] = s["v"]
            elif kind == "Output":
                cur[k] = total
            else:
                raise ConfigError(f"NIR node {k!r}: type {kind} is not run by this reader")
        prev = cur
    return out


def _node_size(node) -> int:
    for field in ("v_threshold", "tau_syn", "tau", "r"):
        if hasattr(node, field):
            return int(np.asarray(getattr(node, field)).size)
    raise ConfigError(f"NIR node of type {_type(node)}: no per-neuron field to size it")
