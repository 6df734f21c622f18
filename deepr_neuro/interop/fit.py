"""Does an integer graph (e.g. one imported from NIR) fit a hardware profile, core by core?

Per core (DESIGN.md section 8): neurons <= neurons_per_core; synapses into its neurons from every
projection <= the profile's synapse capacity at that many neurons; distinct presynaptic neurons
over every source <= input_axons_per_core; synapse memory (nengo-loihi's chunk model, one row per
presynaptic neuron and projection) <= synapse_memory_bits_per_core; core ids < cores. Chip formats
(decays, threshold, bias, weights, weight exponents and bits) are checked against the profile too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from deepr_neuro.errors import ConfigError
from deepr_neuro.network.integer_network import IntegerGraph


@dataclass
class CoreLoad:
    core: int
    populations: List[str]
    neurons: int
    synapses: int
    capacity: int
    axons: int
    memory_bits: int

    def problems(self, profile) -> List[str]:
        out = []
        if self.core >= profile.cores:
            out.append(f"core {self.core}: the chip has {profile.cores} cores")
        if self.neurons > profile.neurons_per_core:
            out.append(f"core {self.core}: {self.neurons} neurons > neurons_per_core {profile.neurons_per_core}")
        if self.synapses > self.capacity:
            out.append(f"core {self.core}: {self.synapses} synapses > capacity {self.capacity}")
        if self.axons > profile.input_axons_per_core:
            out.append(f"core {self.core}: {self.axons} input axons > input_axons_per_core "
                       f"{profile.input_axons_per_core}")
        mem = profile.synapse_memory_bits_per_core
        if mem is not None and self.memory_bits > mem:
            out.append(f"core {self.core}: {self.memory_bits} synapse memory bits > {mem}")
        return out


@dataclass
class FitReport:
    cores: List[CoreLoad]
    problems: List[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    def to_table(self, profile) -> str:
        mem = profile.synapse_memory_bits_per_core
        lines = [f"{'core':>5} {'populations':<24} {'neurons':>10} {'synapses':>9} {'capacity':>9} "
                 f"{'axons':>11} {'memory bits':>21}"]
        for c in self.cores:
            lines.append(f"{c.core:>5} {','.join(c.populations)[:24]:<24} "
                         f"{f'{c.neurons}/{profile.neurons_per_core}':>10} {c.synapses:>9} {c.capacity:>9} "
                         f"{f'{c.axons}/{profile.input_axons_per_core}':>11} "
                         f"{(f'{c.memory_bits}/{mem}' if mem is not None else '-'):>21}")
        lines.append("FITS" if self.fits else "DOES NOT FIT: " + "; ".join(self.problems[:5])
                     + (f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""))
        return "\n".join(lines)

    def to_json(self) -> Dict:
        return {"fits": self.fits, "problems": self.problems,
                "cores": [c.__dict__ for c in self.cores]}


def _format_problems(g: IntegerGraph, profile) -> List[str]:
    out = []
    dmax = (1 << profile.decay_bits) - 1
    vmax = (1 << profile.threshold_mant_bits) - 1
    bmax = (1 << (profile.bias_mant_bits - 1)) - 1
    for p in g.populations:
        n = p.neurons
        for f, v, lo, hi in (("du", n.du, 0, dmax), ("dv", n.dv, 0, dmax), ("vth", n.vth, 0, vmax),
                             ("bias_exp", n.bias_exp, 0, profile.bias_exp_max)):
            if not lo <= int(v) <= hi:
                out.append(f"population {p.name!r}: {f} = {int(v)} outside the profile's {lo}..{hi}")
        b = np.asarray(n.bias_mant)
        if b.size and (b.min() < -bmax - 1 or b.max() > bmax):
            out.append(f"population {p.name!r}: bias_mant outside the profile's {bmax + 1}-magnitude "
                       f"({profile.bias_mant_bits}-bit) range")
    for q in g.projections:
        if int(q.num_weight_bits) not in profile.weight_bits_allowed:
            out.append(f"projection {q.name!r}: {int(q.num_weight_bits)}-bit weights not in weight_bits_allowed "
                       f"{profile.weight_bits_allowed}")
        if not profile.weight_exp_min <= int(q.weight_exp) <= profile.weight_exp_max:
            out.append(f"projection {q.name!r}: weight_exp {int(q.weight_exp)} outside "
                       f"{profile.weight_exp_min}..{profile.weight_exp_max}")
        w = np.asarray(q.weights)
        if w.size and (w.min() < profile.weight_min or w.max() > profile.weight_max):
            out.append(f"projection {q.name!r}: weights outside {profile.weight_min}..{profile.weight_max}")
    return out


def check_fit(g: IntegerGraph, profile) -> FitReport:
    """Per-core loads of ``g`` (every population placed: ``core`` set) against ``profile``."""
    for p in g.populations:
        if p.core is None:
            raise ConfigError(f"population {p.name!r}: no core placement; place it first (nir_to_graph with a "
                              "profile places imported populations)")
    loads: Dict[int, Dict] = {}
    for p in g.populations:
        for c in np.unique(p.core):
            d = loads.setdefault(int(c), {"pops": [], "neurons": 0, "synapses": 0, "axons": set(), "rows": []})
            d["pops"].append(p.name)
            d["neurons"] += int(np.count_nonzero(p.core == c))
    for q in g.projections:
        post_core = np.asarray(g.population(q.post).core)[np.asarray(q.rows, np.int64)]
        cols = np.asarray(q.cols, np.int64)
        for c in np.unique(post_core):
            sel = post_core == c
            d = loads[int(c)]
            d["synapses"] += int(sel.sum())
            pre = cols[sel]
            d["axons"].update((q.pre, int(i)) for i in np.unique(pre))
            d["rows"].append((np.bincount(pre), int(q.num_weight_bits)))
    cores = []
    problems = _format_problems(g, profile)
    for c in sorted(loads):
        d = loads[c]
        n = max(1, min(d["neurons"], profile.neurons_per_core))
        wb = max([b for _, b in d["rows"]] or [profile.weight_bits])
        try:
            cap = profile.synapse_capacity(weight_bits=wb if wb in profile.weight_bits_allowed else None,
                                           n_neurons=n)
        except ConfigError:
            cap = 0
        mem = 0
        if profile.synapse_memory_bits_per_core is not None:
            for counts, bits in d["rows"]:
                try:
                    mem += profile.synapse_memory_bits(counts[counts > 0], weight_bits=bits, n_neurons=n)
                except ConfigError:
                    mem += profile.synapse_memory_bits(counts[counts > 0], n_neurons=n)
        load = CoreLoad(core=c, populations=d["pops"], neurons=d["neurons"], synapses=d["synapses"],
                        capacity=int(cap), axons=len(d["axons"]), memory_bits=int(mem))
        problems += load.problems(profile)
        cores.append(load)
    return FitReport(cores=cores, problems=problems)
