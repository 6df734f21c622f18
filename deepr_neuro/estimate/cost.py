"""What one inference would cost on the chip: operations, energy, latency, the bottleneck core.

These are ESTIMATES from published per-operation figures (for Loihi: Davies et al., IEEE Micro
2018, Table 2, pre-silicon), applied to the spikes the bit-exact emulator produces; nothing here
is measured on a chip. Counting rules (per inference = per test sample, averaged):

* synaptic operations: per projection, every spike of a pre neuron costs one operation per
  stored synapse it has in that projection (its fan-out, zero weights included: the chip reads
  them), as Loihi's synapse stage does;
* neuron updates: every neuron is updated at every step. An update is *active* when the neuron
  receives a synaptic event at that step, spikes at that step or has a non-zero bias (its state
  changes); every other update is *inactive*. (Our reading of Table 2's active / inactive.);
* spike messages: a spike travels once to every *core* that holds synapses of its neuron; one
  within the source core's tile costs ``spike_within_tile``, one to another tile |dx| east-west
  and |dy| north-south hops (see :mod:`deepr_neuro.hardware.energy` for the tile model);
* time per step: the slowest core's work (its synaptic operations x ``synaptic_op_ns`` +
  its active / inactive updates x their ns) plus the barrier over the tiles in use; message
  routing is taken to overlap with that work. Latency per inference = the sum over its steps;
  inferences per second = 1 / latency (one sample at a time, no pipelining).

Recurrent runs (spike-source input, samples of different lengths n_i * S run in padded
batches): every count above is taken over each sample's own steps only (``n_steps``; the
network keeps spiking after a sample's input ends, and that padding is not the sample's
cost); latency is the sum over its own steps; per-inference figures are means over samples.
The spike-source input is not a neuron compartment: no updates, no encoding layer in the
NeuroBench footprint / dense ops, no MACs (every input is a spike: ACs only).

NeuroBench-style metrics follow NeuroBench's definitions (``neurobench/metrics/``) on the
network as NIR readers build it (:mod:`deepr_neuro.interop.nir_io`): footprint = bytes of the
dense float32 parameters of every Affine node (input encoding included) plus three float32
scalars per population; connection sparsity = zero / all weights of the projections (the
diagonal input encoding is not a chip synapse layer and is left out); activation sparsity =
1 - spikes / (neurons x steps) over every population; synaptic operations: effective ACs = spike
inputs x non-zero weights, effective MACs = non-zero (non-spike) inputs x non-zero weights of the
input encoding, dense = every weight of every layer at every step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp

from deepr_neuro.errors import ConfigError
from deepr_neuro.interop.nir_io import chip_weight_matrix
from deepr_neuro.network.integer_network import IntegerGraph, as_graph

PRESILICON_NOTE = ("ESTIMATES from published pre-silicon per-operation figures ({source}), applied to the "
                   "emulator's spike counts; not measured on a chip")


def _cores(graph: IntegerGraph, profile) -> List[np.ndarray]:
    """Core of every neuron: the graph's placement, else contiguous ``neurons_per_core`` blocks."""
    out, nxt = [], 0
    for p in graph.populations:
        if p.core is not None:
            out.append(np.asarray(p.core, np.int64))
            nxt = max(nxt, int(np.max(p.core, initial=-1)) + 1)
    if len(out) == len(graph.populations):
        return out
    out, nxt = [], 0
    for p in graph.populations:
        if p.core is not None:
            out.append(np.asarray(p.core, np.int64))
        else:
            out.append(nxt + np.arange(p.n, dtype=np.int64) // int(profile.neurons_per_core))
        nxt = max(nxt, int(np.max(out[-1], initial=-1)) + 1)
    return out


@dataclass
class Estimate:
    """Per-inference figures (means over the samples) and their breakdowns."""

    samples: int
    steps: float  # steps per inference (a spike-source run: the mean of each sample's own n_i * S)
    synaptic_ops: float
    neuron_updates_active: float
    neuron_updates_inactive: float
    messages_within_tile: float
    hops_east_west: float
    hops_north_south: float
    spikes: float
    cores_used: int
    tiles_used: Optional[int]
    energy_pj: Optional[Dict[str, float]]
    step_ns: Optional[float]
    latency_us: Optional[float]
    inferences_per_s: Optional[float]
    bottleneck_core: Optional[int]
    bottleneck_share: Optional[float]
    neurobench: Dict[str, float]
    source: Optional[str]
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict:
        d = {k: getattr(self, k) for k in (
            "samples", "steps", "synaptic_ops", "neuron_updates_active", "neuron_updates_inactive",
            "messages_within_tile", "hops_east_west", "hops_north_south", "spikes", "cores_used", "tiles_used",
            "energy_pj", "step_ns", "latency_us", "inferences_per_s", "bottleneck_core", "bottleneck_share",
            "neurobench", "source", "notes")}
        d["per"] = "inference (one test sample), mean over the samples"
        d["estimate"] = (PRESILICON_NOTE.format(source=self.source) if self.source else
                         "no energy model in the profile: operation counts and NeuroBench metrics only")
        return d


def estimate(graph, result, profile, steps: int, x_uint8: Optional[np.ndarray] = None,
             n_steps: Optional[np.ndarray] = None) -> Estimate:
    """Costs of one inference from an emulator result recorded with ``record_spikes=True``.

    ``x_uint8`` (the samples simulated) gives NeuroBench's MACs of the input encoding.
    ``n_steps`` (spike-source graphs: each sample's own length, a batch ran ``steps`` =
    max of them) restricts every count to each sample's own steps: spikes, updates and
    step times after a sample's end (batch padding) are not counted; its latency is the
    sum over its own steps. A spike-source input is not a neuron compartment (the chip
    receives its spikes): it has no neuron updates; its spikes cost messages and synaptic
    operations as any other."""
    g = as_graph(graph)
    source = getattr(g, "input_kind", "bias") == "spikes"
    if result.spikes is None:
        raise ConfigError("estimate: the simulation result has no spike trains; run the backend with "
                          "record_spikes=True")
    steps = int(steps)
    spikes = [np.asarray(s, bool) for s in result.spikes]
    n_s = spikes[0].shape[0] if spikes else 0
    if n_s == 0 or steps == 0:
        raise ConfigError("estimate: no samples or no steps were simulated; nothing to estimate")
    for p, s in zip(g.populations, spikes):
        if s.shape != (n_s, steps, p.n):
            raise ConfigError(f"estimate: spikes of population {p.name!r} have shape {s.shape}, expected "
                              f"({n_s}, {steps}, {p.n}); simulate this graph with these steps")
    if n_steps is None:
        valid = None
        own = np.full(n_s, steps, np.int64)
    else:
        own = np.asarray(n_steps, np.int64).reshape(-1)
        if own.shape != (n_s,) or own.min() < 1 or own.max() > steps:
            raise ConfigError(f"estimate: n_steps must give each of the {n_s} samples a length in 1..{steps} "
                              f"(got shape {own.shape})")
        valid = np.arange(steps)[None, :] < own[:, None]          # (n_s, steps): the sample's own steps
        spikes = [s & valid[:, :, None] for s in spikes]
    em = getattr(profile, "energy", None)
    cores = _cores(g, profile)
    used = np.unique(np.concatenate([c for c in cores if c.size] or [np.zeros(0, np.int64)]))
    n_cores = int(used.max()) + 1 if used.size else 0
    # per population: which neurons change each step (arrivals), work per core per step
    syn_core = np.zeros((n_s, steps, n_cores))       # synaptic ops done by each core
    active = [s.copy() for s in spikes]              # (n_s, steps, n): spiked, received or biased
    messages_in, hops_x, hops_y = 0.0, 0.0, 0.0
    synops_total = 0.0
    acs_total = 0.0  # NeuroBench: spike inputs x non-zero (effective) weights
    dest_by_pop: Dict[str, sp.csr_matrix] = {}
    for q in g.projections:
        i_pre, i_post = g.index(q.pre), g.index(q.post)
        pre_n, post_n = g.populations[i_pre].n, g.populations[i_post].n
        rows, cols = np.asarray(q.rows, np.int64), np.asarray(q.cols, np.int64)  # every stored synapse
        s_pre = spikes[i_pre].reshape(n_s * steps, pre_n)
        nz_fanout = (chip_weight_matrix(q, pre_n, post_n) != 0).sum(axis=0)
        acs_total += float(spikes[i_pre].sum(axis=(0, 1)).astype(np.float64) @ nz_fanout)
        mask = sp.csr_matrix((np.ones(rows.size), (cols, rows)), shape=(pre_n, post_n))
        mask.data[:] = 1.0
        s_csr = sp.csr_matrix(s_pre.astype(np.float32))
        # events arriving at step t come from spikes at t - 1 (one step of delay per projection)
        arr = (s_csr @ mask).toarray().reshape(n_s, steps, post_n)
        got = np.zeros((n_s, steps, post_n), bool)
        got[:, 1:] = arr[:, :-1] > 0
        active[i_post] |= got
        per_core = sp.csr_matrix((np.ones(rows.size), (cols, cores[i_post][rows])), shape=(pre_n, n_cores))
        ops = (s_csr @ per_core).toarray().reshape(n_s, steps, n_cores)
        synops_total += float(ops.sum())
        syn_core[:, 1:] += ops[:, :-1]  # the work happens at the core when the events arrive
        dest = per_core.copy()
        dest.data[:] = 1.0
        prev = dest_by_pop.get(q.pre)
        dest_by_pop[q.pre] = dest if prev is None else prev.maximum(dest)
    for name, dest in dest_by_pop.items():
        i = g.index(name)
        counts = spikes[i].sum(axis=(0, 1)).astype(np.float64)  # spikes per neuron over all samples
        src = cores[i]
        coo = dest.tocoo()
        n_spk = counts[coo.row]
        if em is not None:
            ts, td = src[coo.row] // em.cores_per_tile, coo.col // em.cores_per_tile
            dx = np.abs(ts % em.mesh_tiles_x - td % em.mesh_tiles_x)
            dy = np.abs(ts // em.mesh_tiles_x - td // em.mesh_tiles_x)
            same = ts == td
            messages_in += float(n_spk[same].sum())
            hops_x += float((n_spk * dx).sum())
            hops_y += float((n_spk * dy).sum())
        else:
            messages_in += float(n_spk.sum())
    for i, p in enumerate(g.populations):
        bias = np.asarray(p.neurons.bias_mant) != 0
        if i == 0:
            if source:
                active[i][:] = False                     # a spike source: no neuron compartments
            else:
                active[i] |= True if x_uint8 is None else (np.asarray(g.encode(x_uint8)) != 0)[:, None, :]
        else:
            active[i] |= bias[None, None, :]
        if valid is not None:
            active[i] &= valid[:, :, None]
    n_total = sum(p.n for p in g.populations)
    n_updated = n_total - (g.populations[0].n if source else 0)
    act = float(sum(a.sum() for a in active))
    updates = float(n_updated) * float(own.sum())
    spikes_total = float(sum(s.sum() for s in spikes))
    per = 1.0 / n_s
    nb = neurobench(g, spikes_total * per, acs_total * per, steps if valid is None else float(own.mean()),
                    None if source else x_uint8)
    notes = []
    energy = step_ns = latency = ips = None
    bottleneck = share = None
    tiles = None
    if em is not None:
        tiles = int(np.unique(used // em.cores_per_tile).size)
        energy = {
            "synaptic_ops": synops_total * per * em.synaptic_op_pj,
            "neuron_updates": (act * em.neuron_update_active_pj + (updates - act) * em.neuron_update_inactive_pj) * per,
            "spike_messages": (messages_in * em.spike_within_tile_pj + hops_x * em.hop_east_west_pj
                               + hops_y * em.hop_north_south_pj) * per,
        }
        energy["total"] = sum(energy.values())
        act_core = np.zeros((n_s, steps, n_cores))
        n_core = np.zeros(n_cores)
        for i, p in enumerate(g.populations):
            if source and i == 0:
                continue
            c = cores[i]
            np.add.at(n_core, c, 1.0)
            a = active[i].reshape(n_s * steps, p.n).astype(np.float64)
            act_core += (sp.csr_matrix(a) @ sp.csr_matrix((np.ones(p.n), (np.arange(p.n), c)),
                                                         shape=(p.n, n_cores))).toarray().reshape(n_s, steps, n_cores)
        work = (syn_core * em.synaptic_op_ns + act_core * em.neuron_update_active_ns
                + (n_core[None, None, :] - act_core) * em.neuron_update_inactive_ns)
        barrier = em.barrier_ns(tiles)
        if valid is None:
            per_step = work.max(axis=2) + barrier              # (n_s, steps)
            step_ns = float(per_step.mean())
            latency = float(per_step.sum(axis=1).mean()) / 1000.0
            mean_work = work.mean(axis=(0, 1))
            bottleneck = int(np.argmax(mean_work))
            slowest = work.argmax(axis=2)
            share = float(np.mean(slowest == bottleneck))
        else:                                                   # each sample's own steps only
            per_step = np.where(valid, work.max(axis=2) + barrier, 0.0)
            step_ns = float(per_step.sum() / own.sum())
            latency = float(per_step.sum(axis=1).mean()) / 1000.0
            mean_work = work[valid].mean(axis=0)
            bottleneck = int(np.argmax(mean_work))
            share = float(np.mean(work[valid].argmax(axis=1) == bottleneck))
        ips = 1e6 / latency if latency > 0 else None
    else:
        notes.append(f"{getattr(profile, 'source', 'the profile')}: no 'energy:' block (no published "
                     "per-operation figures): operation counts and NeuroBench metrics only")
    return Estimate(samples=n_s, steps=steps if valid is None else float(own.mean()), synaptic_ops=synops_total * per,
                    neuron_updates_active=act * per, neuron_updates_inactive=(updates - act) * per,
                    messages_within_tile=messages_in * per, hops_east_west=hops_x * per,
                    hops_north_south=hops_y * per, spikes=spikes_total * per, cores_used=int(used.size),
                    tiles_used=tiles, energy_pj=energy, step_ns=step_ns, latency_us=latency, inferences_per_s=ips,
                    bottleneck_core=bottleneck, bottleneck_share=share, neurobench=nb,
                    source=" ".join(em.source.split()) if em is not None else None, notes=notes)


def neurobench(g: IntegerGraph, spikes: float, synops: float, steps: int,
               x_uint8: Optional[np.ndarray] = None) -> Dict[str, float]:
    """NeuroBench's metrics of one inference (definitions in the module docstring)."""
    n_in = g.n_inputs
    enc = 0 if getattr(g, "input_kind", "bias") == "spikes" else n_in   # a spike source has no encoding layer
    dense_proj = float(sum(g.n_in(q) * g.n_out(q) for q in g.projections))
    nnz = float(sum(int(np.count_nonzero(chip_weight_matrix(q, g.n_in(q), g.n_out(q)))) for q in g.projections))
    footprint = 4 * (enc * enc + enc + sum(g.n_in(q) * g.n_out(q) + g.n_out(q) for q in g.projections)) \
        + 4 * 3 * len(g.populations)
    macs = None
    if x_uint8 is not None:
        macs = float(steps * np.count_nonzero(np.atleast_2d(x_uint8)) / max(np.atleast_2d(x_uint8).shape[0], 1))
    n_total = sum(p.n for p in g.populations)
    return {
        "footprint_bytes": float(footprint),
        "connection_sparsity": 1.0 - nnz / dense_proj if dense_proj else 0.0,
        "activation_sparsity": 1.0 - spikes / (n_total * steps) if n_total and steps else 0.0,
        "synaptic_operations_effective_acs": synops,
        "synaptic_operations_effective_macs": macs,
        "synaptic_operations_dense": float(steps * (dense_proj + enc * enc)),
    }


def combine(parts: List[Estimate]) -> Estimate:
    """One Estimate from several chunks of samples: per-inference means weighted by samples; the
    bottleneck core is the one slowest in most chunks' steps."""
    if not parts:
        raise ConfigError("estimate: no samples were simulated; nothing to combine")
    if len(parts) == 1:
        return parts[0]
    w = np.array([p.samples for p in parts], float)
    w /= w.sum()

    def mean(attr):
        vals = [getattr(p, attr) for p in parts]
        return None if any(v is None for v in vals) else float(np.dot(w, vals))

    def mean_dict(attr):
        dicts = [getattr(p, attr) for p in parts]
        if any(d is None for d in dicts):
            return None
        return {k: (None if any(d[k] is None for d in dicts) else float(np.dot(w, [d[k] for d in dicts])))
                for k in dicts[0]}

    first = parts[0]
    bn = None
    if first.bottleneck_core is not None:
        votes: Dict[int, float] = {}
        for p, wi in zip(parts, w):
            votes[p.bottleneck_core] = votes.get(p.bottleneck_core, 0.0) + wi * (p.bottleneck_share or 0.0)
        bn = max(votes, key=votes.get)
    latency = mean("latency_us")
    step_ns = mean("step_ns")
    if len({p.steps for p in parts}) > 1 and step_ns is not None:   # variable lengths: mean over all steps
        ws = np.array([p.samples * p.steps for p in parts], float)
        step_ns = float(np.dot(ws / ws.sum(), [p.step_ns for p in parts]))
    steps = first.steps if len({p.steps for p in parts}) == 1 else float(np.dot(w, [p.steps for p in parts]))
    return Estimate(samples=int(sum(p.samples for p in parts)), steps=steps,
                    synaptic_ops=mean("synaptic_ops"), neuron_updates_active=mean("neuron_updates_active"),
                    neuron_updates_inactive=mean("neuron_updates_inactive"),
                    messages_within_tile=mean("messages_within_tile"), hops_east_west=mean("hops_east_west"),
                    hops_north_south=mean("hops_north_south"), spikes=mean("spikes"), cores_used=first.cores_used,
                    tiles_used=first.tiles_used, energy_pj=mean_dict("energy_pj"), step_ns=step_ns,
                    latency_us=latency, inferences_per_s=(1e6 / latency if latency else None),
                    bottleneck_core=bn, bottleneck_share=(float(np.dot(w, [p.bottleneck_share or 0.0 for p in parts
                                                                           if True])) if bn is not None else None),
                    neurobench=mean_dict("neurobench"), source=first.source, notes=first.notes)
