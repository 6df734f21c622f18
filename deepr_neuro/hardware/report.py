"""Per-core budget report of a run: neurons, synapses, input axons, memory vs the profile.

Reads only the bundle (manifest + arrays), so it works on any finished run,
and exits non-zero (via ``ReportResult.fits``) when anything exceeds the
profile: nothing should go to a chip before this table says "fits".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

import numpy as np


@dataclass
class CoreUse:
    core: int
    layer: str
    neurons: int
    neuron_limit: int
    synapses: int
    budget: int
    capacity: int
    axons: int
    axon_limit: int
    memory_bits: int
    memory_limit_bits: int
    # synapses / budget K_c share of each projection into the core, when several
    # projections share it (a recurrent population: in_rec and rec_rec, or every projection into it); empty otherwise
    by_projection: Dict[str, List[int]] = field(default_factory=dict)

    @property
    def problems(self) -> List[str]:
        out = []
        if self.neurons > self.neuron_limit:
            out.append(f"{self.neurons} neurons > {self.neuron_limit} (neurons_per_core)")
        if self.synapses > self.capacity:
            out.append(f"{self.synapses} synapses > capacity {self.capacity}")
        if self.axons > self.axon_limit:
            out.append(f"{self.axons} input axons > {self.axon_limit} (input_axons_per_core)")
        if self.memory_limit_bits and self.memory_bits > self.memory_limit_bits:
            out.append(f"{self.memory_bits} bits of synapse memory > {self.memory_limit_bits} "
                       "(synapse_memory_bits_per_core)")
        return out


@dataclass
class ReportResult:
    profile_name: str
    cores: List[CoreUse] = field(default_factory=list)
    chip_cores: int = 0
    weight_bits: int = 8

    @property
    def cores_used(self) -> int:
        return len(self.cores)

    @property
    def problems(self) -> List[str]:
        out = [f"layer '{c.layer}' core {c.core}: {p} ({self.profile_name})" for c in self.cores for p in c.problems]
        if self.cores_used > self.chip_cores:
            out.append(f"{self.cores_used} cores used > {self.chip_cores} on the chip ({self.profile_name}: cores)")
        return out

    @property
    def fits(self) -> bool:
        return not self.problems

    def to_json(self) -> Dict[str, Any]:
        return {"profile": self.profile_name, "fits": self.fits, "cores_used": self.cores_used,
                "chip_cores": self.chip_cores, "weight_bits": self.weight_bits,
                "problems": self.problems,
                "cores": [dict({k: v for k, v in vars(c).items() if k != "by_projection" or v},
                               fits=not c.problems) for c in self.cores]}

    def to_table(self) -> str:
        head = (f"{'core':>5} {'layer':<8} {'neurons':>12} {'synapses':>9} {'budget':>7} {'capacity':>8} "
                f"{'axons':>11} {'memory bits':>21}  fits")
        lines = [head, "-" * len(head)]
        for c in self.cores:
            mem = f"{c.memory_bits}/{c.memory_limit_bits}" if c.memory_limit_bits else f"{c.memory_bits}/-"
            lines.append(f"{c.core:>5} {c.layer:<8} {f'{c.neurons}/{c.neuron_limit}':>12} {c.synapses:>9} "
                         f"{c.budget:>7} {c.capacity:>8} {f'{c.axons}/{c.axon_limit}':>11} {mem:>21}  "
                         f"{'yes' if not c.problems else 'NO'}")
        shared = [c for c in self.cores if c.by_projection]
        if shared:
            lines.append("synapses now / initial share of K_c, per projection into a shared core (DEEP R moves "
                         "connections between them; K_c holds over their union):")
            for c in shared:
                lines.append(f"{c.core:>5} {c.layer:<8} " + "  ".join(
                    f"{q} {n}/{k if k is not None else '-'}" for q, (n, k) in c.by_projection.items()))
        total_syn = sum(c.synapses for c in self.cores)
        lines.append(f"cores used: {self.cores_used} of {self.chip_cores}; synapses: {total_syn}; "
                     f"weights: {self.weight_bits}-bit; profile: {self.profile_name}")
        lines.append("FITS" if self.fits else "DOES NOT FIT:\n  " + "\n  ".join(self.problems))
        return "\n".join(lines)


def network_weight_bits(manifest: Dict[str, Any], arrays: Dict[str, np.ndarray], profile) -> int:
    """The weight width a bundle is measured at: the exported width (the widest projection),
    else the run's ``--weight-bits`` (manifest ``training.weight_bits``), else the profile's default."""
    bits = [int(np.asarray(v).reshape(())) for k, v in arrays.items()
            if k.startswith("proj/") and k.endswith("/num_weight_bits")]
    if bits:
        return max(bits)
    wb = (manifest.get("training") or {}).get("weight_bits")
    return int(wb) if wb is not None else int(profile.weight_bits)


def core_report(manifest: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> ReportResult:
    """Measure every core of a bundle (as :func:`deepr_neuro.store.bundle.load_bundle` returns it:
    manifest ``graph``, arrays named per population / projection) against its profile.

    A core holds neurons of one population; it is measured over EVERY projection
    into that population: its synapses from all sources (compared with K_c and
    the capacity), its input axons = distinct presynaptic neurons across all
    sources, its synapse memory. For an MLP (a chain) this is the per-layer
    table of version 1. Every limit is recomputed from the manifest's profile
    block at the network's weight width; the capacities stored in the manifest
    are never used. The bundle is assumed checked
    (:func:`deepr_neuro.store.bundle.load_bundle` does it).
    """
    from deepr_neuro.hardware.profile import HardwareProfile

    profile = HardwareProfile.from_dict(manifest["profile"], source=manifest.get("profile_path") or "manifest profile")
    wb = network_weight_bits(manifest, arrays, profile)
    mem_limit = profile.synapse_memory_bits_per_core or 0
    result = ReportResult(profile_name=manifest.get("profile_path") or profile.name, chip_cores=profile.cores,
                          weight_bits=wb)
    g = manifest["graph"]
    size = {p["name"]: p["size"] for p in g["populations"]}
    inp = g["populations"][0]["name"]
    for p in g["populations"]:
        name = p["name"]
        if name == inp:
            for c in p["cores"]:
                result.cores.append(CoreUse(c["core"], "input", c["stop"] - c["start"], profile.neurons_per_core,
                                            0, 0, 0, 0, profile.input_axons_per_core, 0, mem_limit))
            continue
        incoming = [q for q in g["projections"] if q["post"] == name]
        core_of_post = np.asarray(arrays[f"pop/{name}/core"])
        srcs = []  # per projection: post core of each synapse, global axon id of each synapse, weight bits
        offset, axon_base = 0, {}
        for q in incoming:  # axons: (source population, pre neuron), numbered over all sources
            if q["pre"] not in axon_base:
                axon_base[q["pre"]] = offset
                offset += size[q["pre"]]
        for q in incoming:
            rows = np.asarray(arrays[f"proj/{q['name']}/rows"], dtype=np.int64)
            cols = np.asarray(arrays[f"proj/{q['name']}/cols"], dtype=np.int64)
            kb = f"proj/{q['name']}/num_weight_bits"
            lb = int(np.asarray(arrays[kb]).reshape(())) if kb in arrays else wb
            srcs.append((core_of_post[rows], cols + axon_base[q["pre"]], lb))
        n_axons_all = offset
        for c in p["cores"]:
            n_neurons = c["stop"] - c["start"]
            synapses, axons, lbs = 0, [], []
            by_projection = {}
            shares = c.get("budget_by_projection") if isinstance(c.get("budget_by_projection"), dict) else {}
            for q, (post_core, axon, lb) in zip(incoming, srcs):
                on = post_core == c["core"]
                synapses += int(on.sum())
                if len(incoming) > 1:
                    by_projection[q["name"]] = [int(on.sum()), shares.get(q["name"])]
                axons.append(axon[on])
                lbs.append(lb)
            per_axon = np.bincount(np.concatenate(axons) if axons else np.zeros(0, np.int64),
                                   minlength=n_axons_all)
            axon_counts = per_axon[per_axon > 0]
            lb = max(lbs) if lbs else wb  # several widths into one core: measured at the widest
            mem = int(profile.synapse_memory_bits(axon_counts, weight_bits=lb, sparse=True, n_neurons=n_neurons)) \
                if mem_limit else 0
            capacity = profile.synapse_capacity(
                weight_bits=lb, sparse=True, n_neurons=min(n_neurons, profile.neurons_per_core),
                n_axons=min(max(n_axons_all, 1), profile.input_axons_per_core))
            result.cores.append(CoreUse(
                c["core"], name, n_neurons, profile.neurons_per_core, synapses, c["budget"],
                capacity, int(len(axon_counts)), profile.input_axons_per_core, mem, mem_limit, by_projection))
    return result
