"""Place each population's post-neurons on cores and give every core its budget.

The network is a training graph (DESIGN.md section 8): populations and
projections between them; an MLP is the chain input -> h1 -> ... -> out. A
core c holds a contiguous range of one population's post-neurons, and its
pre space is the concatenation of every source projecting into that
population (in projection order). Its synapse budget K_c is the sum, over
the projections into it, of its share of that projection's budget
(proportional to its neuron count, largest-remainder rounding so the shares
add up to each projection's K exactly) and
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
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from deepr_neuro.errors import BudgetError, ConfigError


@dataclass(frozen=True)
class CorePlan:
    """One physical core: which neurons of which population, and its limits.

    The one core type of the toolkit: the mapping makes it, the rewiring
    reads ``start`` / ``stop`` (post-neurons, population-local), ``budget``,
    ``capacity`` and ``axon_limit`` from it. ``budget`` and ``axon_limit``
    count every projection into the core (its pre space is the
    concatenation of all its sources)."""

    core_id: int
    layer: int  # index of the post population among the non-input ones; -1 for the input
    layer_name: str
    post_start: int
    post_stop: int
    budget: int  # K_c: exact active connections DEEP R keeps on this core
    capacity: int  # synapses the core can hold at this weight format
    axon_limit: int  # A_c: distinct presynaptic neurons allowed (over every source)
    # K_c split by projection (projection order of the post population), for reports
    budget_by_projection: Tuple[int, ...] = ()

    @property
    def n_neurons(self) -> int:
        return self.post_stop - self.post_start

    @property
    def start(self) -> int:
        return self.post_start

    @property
    def stop(self) -> int:
        return self.post_stop


def rewiring_core(start: int, stop: int, budget: int, capacity: int, axon_limit: int) -> CorePlan:
    """A core known only by what the rewiring needs (tests, hand-made layers)."""
    return CorePlan(-1, -1, "", int(start), int(stop), int(budget), int(capacity), int(axon_limit))


# ---------------------------------------------------------------------------
# The training graph: populations and projections (DESIGN.md section 8)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PopulationSpec:
    """Neurons of one population; ``max_per_core`` caps how many share a core."""

    name: str
    size: int
    max_per_core: Optional[int] = None


@dataclass(frozen=True)
class ProjectionSpec:
    """Connections pre -> post with a budget K (None: fill the cores).

    ``allow_self`` False forbids the diagonal of a recurrent projection
    (pre == post): neuron j never connects to itself."""

    name: str
    pre: str
    post: str
    budget: Optional[int]
    allow_self: bool = True

    @property
    def masks_self(self) -> bool:
        return self.pre == self.post and not self.allow_self


@dataclass(frozen=True)
class TrainingGraph:
    """Populations (populations[0] is the input, no projection enters it) and
    projections between them. Every other population has at least one
    projection into it; its pre space is the concatenation of its sources'
    neurons in projection order."""

    populations: Tuple[PopulationSpec, ...]
    projections: Tuple[ProjectionSpec, ...]

    def __post_init__(self):
        object.__setattr__(self, "populations", tuple(self.populations))
        object.__setattr__(self, "projections", tuple(self.projections))
        if not self.populations:
            raise ConfigError("training graph: no populations; the first one is the input")
        names = [p.name for p in self.populations]
        for what, seq in (("population", names), ("projection", [q.name for q in self.projections])):
            dup = sorted({n for n in seq if seq.count(n) > 1})
            if dup:
                raise ConfigError(f"training graph: {what} name {dup[0]!r} used twice; names must be unique")
        for p in self.populations:
            if int(p.size) < 1 or (p.max_per_core is not None and int(p.max_per_core) < 1):
                raise ConfigError(f"training graph: population {p.name!r}: size and max_per_core must be >= 1 "
                                  f"(got {p.size}, {p.max_per_core})")
        pairs = set()
        for q in self.projections:
            for end in (q.pre, q.post):
                if end not in names:
                    raise ConfigError(f"training graph: projection {q.name!r}: unknown population {end!r} "
                                      f"(known: {', '.join(names)[:300]})")
            if q.post == names[0]:
                raise ConfigError(f"training graph: projection {q.name!r} enters the input population "
                                  f"{names[0]!r}; the input is driven by the data only")
            if (q.pre, q.post) in pairs:
                raise ConfigError(f"training graph: projection {q.name!r} repeats {q.pre!r} -> {q.post!r}; "
                                  "merge it into one projection")
            pairs.add((q.pre, q.post))
        for p in self.populations[1:]:
            if not self.sources(p.name):
                raise ConfigError(f"training graph: population {p.name!r} has no projection into it")

    @classmethod
    def chain(cls, input_size: int, sizes: Sequence[int], names: Sequence[str],
              budgets: Sequence[Optional[int]], max_per_core: Optional[int] = None) -> "TrainingGraph":
        """An MLP: input -> names[0] -> ... ; projection i (named after layer i) feeds layer i."""
        # a layer may itself be called "input": the input population is then "<input>"
        pops = [PopulationSpec("input" if "input" not in names else "<input>", int(input_size), max_per_core)]
        pops += [PopulationSpec(n, int(s), max_per_core) for n, s in zip(names, sizes)]
        projs = [ProjectionSpec(n, pops[i].name, n, b) for i, (n, b) in enumerate(zip(names, budgets))]
        return cls(tuple(pops), tuple(projs))

    @property
    def input(self) -> PopulationSpec:
        return self.populations[0]

    def population(self, name: str) -> PopulationSpec:
        return next(p for p in self.populations if p.name == name)

    def sources(self, post: str) -> List[ProjectionSpec]:
        """Projections into ``post``, in projection order (the order of its pre space)."""
        return [q for q in self.projections if q.post == post]


@dataclass(frozen=True)
class SourceSlice:
    """Where one projection's pre-neurons sit in its post population's pre space."""

    projection: str
    pre: str
    offset: int
    size: int
    budget: int  # K of this projection
    masks_self: bool = False


@dataclass
class LayerPlan:
    """The cores of one post population; its pre space concatenates every source."""

    name: str
    n_in: int
    n_out: int
    budget: int  # K_l: sum of the budgets of the projections into it
    cores: List[CorePlan] = field(default_factory=list)
    sources: List[SourceSlice] = field(default_factory=list)

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

    @property
    def masked_per_post(self) -> int:
        """Forbidden pre entries of every post-neuron (one per no-self projection)."""
        return sum(1 for s in self.sources if s.masks_self)

    @property
    def per_neuron_max(self) -> int:
        """Pre-neurons one post-neuron may listen to, before the axon limit."""
        return self.n_in - self.masked_per_post

    def core_room(self, n_post: int, axon_limit: int) -> int:
        """Connections a core of ``n_post`` neurons can hold whichever min(n_in, A_c)
        pres it ends up listening to (the rewiring may reach any such set). Without
        a mask that is n_post * min(n_in, A_c); a no-self projection makes the
        core's own neurons, as pres, worth one connection fewer each."""
        return worst_core_room(n_post, self.n_in, axon_limit, n_post * self.masked_per_post)

    def forbidden_keys(self) -> Optional[np.ndarray]:
        """Sorted flat keys (post * n_in + pre) that may never be active
        (self-connections of no-self projections); None when there are none."""
        parts = [np.arange(self.n_out, dtype=np.int64) * self.n_in + s.offset + np.arange(self.n_out)
                 for s in self.sources if s.masks_self]
        if not parts:
            return None
        return np.sort(np.concatenate(parts))

    def split_by_source(self, rows: np.ndarray, cols: np.ndarray, *values: np.ndarray):
        """{projection: (rows, local cols, *values)}: the entries of the concatenated
        matrix that belong to each source (cols made local to that source)."""
        rows, cols = np.asarray(rows), np.asarray(cols)
        out = {}
        for s in self.sources:
            on = (cols >= s.offset) & (cols < s.offset + s.size)
            out[s.projection] = (rows[on], cols[on] - s.offset) + tuple(np.asarray(v)[on] for v in values)
        return out


@dataclass
class NetworkPlan:
    """The whole mapping: input cores, then each post population's cores."""

    input_cores: List[CorePlan]
    layers: List[LayerPlan]
    total_cores: int  # cores the chip has
    profile_name: str = "profile"  # the profile file, for messages naming a limit's source
    graph: Optional[TrainingGraph] = None

    @property
    def cores_used(self) -> int:
        return len(self.input_cores) + sum(len(layer.cores) for layer in self.layers)

    @property
    def all_cores(self) -> List[CorePlan]:
        return list(self.input_cores) + [c for layer in self.layers for c in layer.cores]

    @property
    def total_budget(self) -> int:
        return int(sum(layer.budget for layer in self.layers))


def worst_core_room(n_post: int, n_in: int, axon_limit: int, short_pres: int) -> int:
    """Sum of the min(n_in, A) smallest per-pre column counts of a core: ``short_pres``
    pres allow n_post - 1 connections into it (a masked self-connection), the rest n_post."""
    k = min(n_in, axon_limit)
    short = min(k, short_pres)
    return (n_post - 1) * short + n_post * (k - short)


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
    """Map a chain of layers to cores (the MLP's graph: see :func:`plan_graph`).

    layer_budgets[l] is K_l, or None for "fill the budget" (every core of the
    layer holds as many synapses as it can). Raises :class:`BudgetError` with a
    table when the chip cannot hold the network.
    """
    if len(layer_sizes) != len(layer_budgets) or len(layer_sizes) != len(layer_names):
        raise ValueError("layer_sizes, layer_names and layer_budgets must have one entry a layer")
    _check_totals(input_size, layer_sizes, layer_names, neurons_per_core, cores, profile_name)
    graph = TrainingGraph.chain(input_size, layer_sizes, layer_names, layer_budgets)
    return plan_graph(graph, neurons_per_core=neurons_per_core, cores=cores, synapse_capacity=synapse_capacity,
                      axon_limit=axon_limit, profile_name=profile_name)


def plan_graph(
    graph: TrainingGraph,
    *,
    neurons_per_core: int,
    cores: int,
    synapse_capacity: Union[int, Callable[[int, int], int]],
    axon_limit: int,
    profile_name: str = "profile",
) -> NetworkPlan:
    """Map a training graph to cores: the input population first, then each
    other population's post-neurons in population order (at most
    ``neurons_per_core`` / its ``max_per_core`` a core, more cores where its
    synapses need them). A core's K_c is the sum over the projections into it
    of that projection's share (proportional to neurons); capacity and axon
    limit hold over the union of its sources. For a chain this is exactly the
    MLP mapping. Raises :class:`BudgetError` with a table when the chip
    cannot hold the network."""
    npcs = [_npc(p, neurons_per_core) for p in graph.populations]
    _check_totals(graph.input.size, [p.size for p in graph.populations[1:]],
                  [p.name for p in graph.populations[1:]], neurons_per_core, cores, profile_name, npcs=npcs)
    problems: List[str] = []
    raw_capacity = synapse_capacity if callable(synapse_capacity) else (lambda n, n_in: synapse_capacity)
    cap_memo: dict = {}

    def capacity_of(n: int, n_in_: int) -> int:
        # a population's cores have at most two sizes: ask the profile once per size
        key = (n, n_in_)
        if key not in cap_memo:
            cap_memo[key] = raw_capacity(n, n_in_)
        return cap_memo[key]

    input_size = graph.input.size
    # cores still free for each population: the chip's, minus the fewest every other part needs
    min_cores = [max(1, -(-p.size // npc)) for p, npc in zip(graph.populations, npcs)]
    next_core = 0
    input_cores = []
    for start, n in _ranges(input_size, min_cores[0]):
        input_cores.append(CorePlan(next_core, -1, "input", start, start + n, 0, 0, axon_limit))
        next_core += 1
    layers: List[LayerPlan] = []
    for li, pop in enumerate(graph.populations[1:]):
        name, n_out, npc = pop.name, pop.size, npcs[li + 1]
        sources, offset = [], 0
        for q in graph.sources(name):
            n_pre = graph.population(q.pre).size
            potential_q = n_pre * n_out - (n_out if q.masks_self else 0)
            k_q = q.budget
            if k_q is not None and not (0 < k_q <= potential_q):
                problems.append(f"projection '{q.name}' ({q.pre} -> {q.post}): budget {k_q} is outside "
                                f"1..{potential_q} (n_pre x n_post{' minus self-connections' if q.masks_self else ''})")
                k_q = max(1, min(int(k_q), max(1, potential_q)))
            sources.append(SourceSlice(q.name, q.pre, offset, n_pre, -1 if k_q is None else int(k_q),
                                       q.masks_self))
            offset += n_pre
        n_in = offset
        fill = any(s.budget < 0 for s in sources)
        if fill and not all(s.budget < 0 for s in sources):
            problems.append(f"population '{name}': some projections into it have a budget and some fill "
                            "the cores; give every one a budget, or none")
            fill = False
            sources = [s if s.budget >= 0 else SourceSlice(s.projection, s.pre, s.offset, s.size, 1, s.masks_self)
                       for s in sources]
        k_l = None if fill else sum(s.budget for s in sources)
        plan = LayerPlan(name, n_in, n_out, 0, sources=sources)
        per_neuron_max = min(plan.per_neuron_max, axon_limit)  # a neuron can listen to at most this many pres
        room_of = {}  # connections a core of s neurons can always place (see LayerPlan.core_room)
        # Fewest cores such that neurons and every core's share of K_l fit.
        n_cores = -(-n_out // npc)
        room = cores - next_core - sum(min_cores[li + 2:])  # most cores this population could get
        if k_l is not None:
            # skip, in O(1) a try, the core counts whose largest share cannot fit
            n_cores = _first_feasible_cores(int(k_l), n_out, n_in, n_cores, max(n_cores, room), capacity_of)
        while True:
            sizes = split_evenly(n_out, n_cores)
            caps = [capacity_of(s, n_in) for s in sizes]
            for s in sizes:
                room_of.setdefault(s, plan.core_room(s, axon_limit))
            if k_l is None:
                budgets = [min(c, room_of[s]) for c, s in zip(caps, sizes)]
                shares = [(b,) for b in budgets]
            else:
                # each projection's K split over the cores by neurons; a core's K_c sums them
                per_q = [split_proportional(s.budget, sizes) for s in sources]
                shares = list(zip(*per_q))
                budgets = [int(sum(sh)) for sh in shares]
            if all(b <= c for b, c in zip(budgets, caps)) or n_cores >= n_out or n_cores >= room:
                break  # fits; or cannot get more cores (the chip's count is checked below)
            n_cores += 1
        if k_l is None:
            k_l = int(sum(budgets))
        plan.budget = int(k_l)
        start = 0
        for s, b, cap, sh in zip(sizes, budgets, caps, shares):
            core = CorePlan(next_core, li, name, start, start + s, int(b), int(cap), axon_limit,
                            tuple(int(v) for v in sh))
            if b > cap:
                problems.append(
                    f"layer '{name}' core {next_core}: {b} synapses > capacity {cap} "
                    f"({profile_name}: synapse memory / synapses_per_core)")
            if b > room_of[s]:
                masked = (f", {plan.masked_per_post} self-connection(s) a neuron masked"
                          if plan.masked_per_post else "")
                problems.append(
                    f"layer '{name}' core {next_core}: {b} synapses cannot be placed on {s} neurons "
                    f"with {per_neuron_max} inputs each ({profile_name}: input_axons_per_core={axon_limit}, "
                    f"n_in={n_in}{masked})")
            plan.cores.append(core)
            next_core += 1
            start += s
        layers.append(plan)
    result = NetworkPlan(input_cores, layers, cores, profile_name, graph)
    if result.cores_used > cores:
        problems.append(
            f"needs {result.cores_used} cores > {cores} on the chip ({profile_name}: cores); "
            "lower the connectivity, raise max_neurons_per_core, or use a larger profile")
    if problems:
        raise _fit_problem(problems + ["", plan_table(result)])
    return result


def _npc(pop: PopulationSpec, neurons_per_core: int) -> int:
    return neurons_per_core if pop.max_per_core is None else min(neurons_per_core, int(pop.max_per_core))


# What a mapping can be asked to place (bounds the work before any loop runs):
# a profile has at most 2**20 cores (profile.MAX_CORES), so a plan is never longer.
def _check_totals(input_size: int, layer_sizes: Sequence[int], layer_names: Sequence[str],
                  neurons_per_core: int, cores: int, profile_name: str,
                  npcs: Optional[Sequence[int]] = None) -> None:
    """Refuse, before the per-core loops, a network whose neurons alone need
    more cores than the chip has (a layer of 10^8 neurons is refused at once,
    not after minutes of planning)."""
    if neurons_per_core < 1 or cores < 1:
        raise BudgetError(f"{profile_name}: neurons_per_core and cores must be >= 1 "
                          f"(got {neurons_per_core}, {cores})")
    npcs = list(npcs) if npcs is not None else [neurons_per_core] * (len(layer_sizes) + 1)
    need = max(1, -(-int(input_size) // npcs[0]))
    parts = [f"input: {input_size} neurons -> {need} cores"]
    for n, name, npc in zip(layer_sizes, layer_names, npcs[1:]):
        k = -(-int(n) // npc)
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
        placeable = plan.layers[c.layer].core_room(c.n_neurons, c.axon_limit) if c.layer >= 0 else 0
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
