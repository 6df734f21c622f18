"""Place each layer's post-neurons on cores and give every core its budget.

A core c holds a contiguous range of one layer's post-neurons. Its synapse
budget K_c is its share of the layer's budget K_l (proportional to its neuron
count, largest-remainder rounding so the shares add up to K_l exactly) and
must not exceed the core's capacity; its input-axon limit A_c bounds the
distinct presynaptic neurons it may listen to. A layer gets more cores than
``neurons_per_core`` alone asks for when its synapses would not fit otherwise
(a dense 784x300 layer needs several Loihi cores).

The deployed network also puts its input neurons on cores (DESIGN.md
section 5): they use cores with no synapses, listed as layer ``input``.

Pure NumPy / Python: no Lava, no Brian2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Union

import numpy as np

from deepr_neuro.errors import BudgetError


@dataclass(frozen=True)
class CorePlan:
    """One physical core: which neurons of which layer, and its limits."""

    core_id: int
    layer: int  # weight-layer index; -1 for the input layer
    layer_name: str
    post_start: int
    post_stop: int
    budget: int  # K_c: exact active connections DEEP R keeps on this core
    capacity: int  # synapses the core can hold at this weight format
    axon_limit: int  # A_c: distinct presynaptic neurons allowed

    @property
    def n_neurons(self) -> int:
        return self.post_stop - self.post_start


@dataclass
class LayerPlan:
    name: str
    n_in: int
    n_out: int
    budget: int  # K_l
    cores: List[CorePlan] = field(default_factory=list)

    @property
    def core_of_post(self) -> np.ndarray:
        """Global core id of every post-neuron (length n_out)."""
        out = np.empty(self.n_out, dtype=np.int32)
        for c in self.cores:
            out[c.post_start:c.post_stop] = c.core_id
        return out

    @property
    def core_budgets(self) -> np.ndarray:
        return np.array([c.budget for c in self.cores], dtype=np.int64)


@dataclass
class NetworkPlan:
    """The whole mapping: input cores, then each weight layer's cores."""

    input_cores: List[CorePlan]
    layers: List[LayerPlan]
    total_cores: int  # cores the chip has
    profile_name: str = "profile"  # the profile file, for messages naming a limit's source

    @property
    def cores_used(self) -> int:
        return len(self.input_cores) + sum(len(layer.cores) for layer in self.layers)

    @property
    def all_cores(self) -> List[CorePlan]:
        return list(self.input_cores) + [c for layer in self.layers for c in layer.cores]

    @property
    def total_budget(self) -> int:
        return int(sum(layer.budget for layer in self.layers))


def split_evenly(total: int, parts: int) -> List[int]:
    """``total`` split into ``parts`` integers differing by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def split_proportional(total: int, weights: Sequence[int]) -> List[int]:
    """Largest-remainder split of ``total`` in proportion to ``weights`` (exact sum)."""
    w = np.asarray(weights, dtype=np.float64)
    raw = total * w / w.sum()
    out = np.floor(raw).astype(np.int64)
    rest = int(total - out.sum())
    if rest:
        order = np.argsort(-(raw - out), kind="stable")
        out[order[:rest]] += 1
    return [int(v) for v in out]


def _fit_problem(plan_rows: List[str]) -> BudgetError:
    return BudgetError("the network does not fit the hardware profile:\n" + "\n".join(plan_rows))


def plan_network(
    input_size: int,
    layer_sizes: Sequence[int],
    layer_names: Sequence[str],
    layer_budgets: Sequence[Optional[int]],
    *,
    neurons_per_core: int,
    cores: int,
    synapse_capacity: Union[int, Callable[[int, int], int]],
    axon_limit: int,
    profile_name: str = "profile",
) -> NetworkPlan:
    """Map a chain of layers to cores.

    layer_budgets[l] is K_l, or None for "fill the budget" (every core of the
    layer holds as many synapses as it can). Raises :class:`BudgetError` with a
    table when the chip cannot hold the network.
    """
    if len(layer_sizes) != len(layer_budgets) or len(layer_sizes) != len(layer_names):
        raise ValueError("layer_sizes, layer_names and layer_budgets must have one entry a layer")
    _check_totals(input_size, layer_sizes, layer_names, neurons_per_core, cores, profile_name)
    problems: List[str] = []
    raw_capacity = synapse_capacity if callable(synapse_capacity) else (lambda n, n_in: synapse_capacity)
    cap_memo: dict = {}

    def capacity_of(n: int, n_in_: int) -> int:
        # a layer's cores have at most two sizes: ask the profile once per size
        key = (n, n_in_)
        if key not in cap_memo:
            cap_memo[key] = raw_capacity(n, n_in_)
        return cap_memo[key]

    # cores still free for each layer: the chip's, minus the fewest every other part needs
    min_cores = [max(1, -(-input_size // neurons_per_core))] + [-(-n // neurons_per_core) for n in layer_sizes]
    next_core = 0
    input_cores = []
    for start, n in _ranges(input_size, max(1, -(-input_size // neurons_per_core))):
        input_cores.append(CorePlan(next_core, -1, "input", start, start + n, 0, 0, axon_limit))
        next_core += 1
    layers: List[LayerPlan] = []
    n_in = input_size
    for li, (n_out, name, k_l) in enumerate(zip(layer_sizes, layer_names, layer_budgets)):
        per_neuron_max = min(n_in, axon_limit)  # a neuron can listen to at most this many pres
        potential = n_out * n_in
        if k_l is not None and not (0 < k_l <= potential):
            problems.append(f"layer '{name}': budget {k_l} is outside 1..{potential} (n_in x n_out)")
            k_l = max(1, min(int(k_l), potential))
        # Fewest cores such that neurons and every core's share of K_l fit.
        n_cores = -(-n_out // neurons_per_core)
        room = cores - next_core - sum(min_cores[li + 2:])  # most cores this layer could get
        if k_l is not None:
            # skip, in O(1) a try, the core counts whose largest share cannot fit
            n_cores = _first_feasible_cores(int(k_l), n_out, n_in, n_cores, max(n_cores, room), capacity_of)
        while True:
            sizes = split_evenly(n_out, n_cores)
            caps = [capacity_of(s, n_in) for s in sizes]
            if k_l is None:
                budgets = [min(c, s * per_neuron_max) for c, s in zip(caps, sizes)]
            else:
                budgets = split_proportional(int(k_l), sizes)
            if all(b <= c for b, c in zip(budgets, caps)) or n_cores >= n_out or n_cores >= room:
                break  # fits; or cannot get more cores (the chip's count is checked below)
            n_cores += 1
        if k_l is None:
            k_l = int(sum(budgets))
        plan = LayerPlan(name, n_in, n_out, int(k_l))
        start = 0
        for s, b, cap in zip(sizes, budgets, caps):
            core = CorePlan(next_core, li, name, start, start + s, int(b), int(cap), axon_limit)
            if b > cap:
                problems.append(
                    f"layer '{name}' core {next_core}: {b} synapses > capacity {cap} "
                    f"({profile_name}: synapse memory / synapses_per_core)")
            if b > s * per_neuron_max:
                problems.append(
                    f"layer '{name}' core {next_core}: {b} synapses cannot be placed on {s} neurons "
                    f"with {per_neuron_max} inputs each ({profile_name}: input_axons_per_core={axon_limit}, n_in={n_in})")
            plan.cores.append(core)
            next_core += 1
            start += s
        layers.append(plan)
        n_in = n_out
    result = NetworkPlan(input_cores, layers, cores, profile_name)
    if result.cores_used > cores:
        problems.append(
            f"needs {result.cores_used} cores > {cores} on the chip ({profile_name}: cores); "
            "lower the connectivity, raise max_neurons_per_core, or use a larger profile")
    if problems:
        raise _fit_problem(problems + ["", plan_table(result)])
    return result


# What a mapping can be asked to place (bounds the work before any loop runs):
# a profile has at most 2**20 cores (profile.MAX_CORES), so a plan is never longer.
def _check_totals(input_size: int, layer_sizes: Sequence[int], layer_names: Sequence[str],
                  neurons_per_core: int, cores: int, profile_name: str) -> None:
    """Refuse, before the per-core loops, a network whose neurons alone need
    more cores than the chip has (a layer of 10^8 neurons is refused at once,
    not after minutes of planning)."""
    if neurons_per_core < 1 or cores < 1:
        raise BudgetError(f"{profile_name}: neurons_per_core and cores must be >= 1 "
                          f"(got {neurons_per_core}, {cores})")
    need = max(1, -(-int(input_size) // neurons_per_core))
    parts = [f"input: {input_size} neurons -> {need} cores"]
    for n, name in zip(layer_sizes, layer_names):
        k = -(-int(n) // neurons_per_core)
        need += k
        parts.append(f"layer '{name}': {n} neurons -> {k} cores")
    if need > cores:
        raise BudgetError(
            f"the network does not fit the hardware profile: its neurons alone need {need} cores "
            f"> {cores} on the chip ({profile_name}: cores; at most {neurons_per_core} neurons a "
            f"core: {'; '.join(parts)[:400]}); use smaller layers, raise max_neurons_per_core, or "
            f"a larger profile")


def _first_feasible_cores(k_l: int, n_out: int, n_in: int, start: int, stop: int, capacity_of) -> int:
    """Skip, at O(1) a try, the core counts in start..stop that certainly cannot
    hold K_l: split_evenly gives at most two core sizes, and every core of size
    s gets at least floor(K_l * s / n_out) of split_proportional's shares (the
    same float64 arithmetic), so a count where that floor exceeds the size's
    capacity fails the exact list check too. Returns the first count that may
    fit (the exact loop of plan_network decides), or ``stop``."""
    n = start
    stop = min(stop, n_out)
    while n < stop:
        base, extra = divmod(n_out, n)
        sizes = [s for s, m in ((base + 1, extra), (base, n - extra)) if m > 0 and s > 0]
        floors = [int(np.floor(np.float64(k_l) * np.float64(s) / np.float64(n_out))) for s in sizes]
        if all(f <= capacity_of(s, n_in) for f, s in zip(floors, sizes)):
            return n
        n += 1
    return max(start, stop)


def plan_table(plan: NetworkPlan) -> str:
    """Fixed-width table of the mapping: one row a core, with its limits."""
    head = f"{'core':>5} {'layer':<10} {'neurons':>8} {'budget K_c':>11} {'capacity':>9} {'axon limit':>10}  fits"
    lines = [head, "-" * len(head)]
    for c in plan.all_cores:
        n_in = None
        if c.layer >= 0:
            n_in = plan.layers[c.layer].n_in
        placeable = c.n_neurons * min(n_in, c.axon_limit) if n_in is not None else 0
        ok = c.budget <= c.capacity and (c.layer < 0 or c.budget <= placeable)
        lines.append(f"{c.core_id:>5} {c.layer_name:<10} {c.n_neurons:>8} {c.budget:>11} {c.capacity:>9} "
                     f"{c.axon_limit:>10}  {'yes' if ok else 'NO'}")
    lines.append(f"cores used: {plan.cores_used} of {plan.total_cores}"
                 + ("" if plan.cores_used <= plan.total_cores else "  NO"))
    return "\n".join(lines)


def _ranges(total: int, parts: int):
    start = 0
    for n in split_evenly(total, parts):
        yield start, n
        start += n
