"""DEEP R connection state and rewiring, with per-core budgets (pure NumPy).

Each potential connection (post j, pre i) of a layer has a fixed random sign
s_ji and a parameter theta_ji; it is *active* when theta > 0 and then has the
weight w = s * theta. Following the authors' reference code
(guillaumeBellec/deep_rewiring):

* DEEP R keeps exactly K active connections. After every parameter update,
  connections whose theta went <= 0 become dormant and as many dormant ones are
  activated uniformly at random, at theta = 1e-12.
* soft-DEEP R puts noise on every theta (dormant ones too), L1 on active ones,
  clips theta at theta_min and makes no promise of an exact count.
* the global-budget variant keeps the network's total K exact, the refill being
  split over layers by a categorical draw weighted by the initial budgets.

This project's extension: the post-neurons are mapped to cores. The refill
for a core draws only dormant connections into neurons on that core, and,
when the core already listens to its input-axon limit of presynaptic neurons,
only from those. So DEEP R keeps exactly K_c active connections on every core
after every step, and never more than A_c distinct presynaptic neurons.

Graphs (DESIGN.md section 8): a post population fed by several projections
is one layer whose pre space is the concatenation of its sources, so K_c
and A_c hold over the union. A recurrent projection without
self-connections gives *forbidden* entries (a bitmap over the flat keys):
dormant forever, never drawn by a refill, never counted. A layer without
forbidden entries takes exactly the code paths (and random draws) it took
before graphs existed.

Active connections are stored as *slots*: arrays rows/cols/theta of length
K (DEEP R replaces dead slots in place, so per-core counts cannot drift).
Dormant thetas are not stored (DEEP R never reads them: a revived connection
starts at 1e-12). soft-DEEP R needs every theta and keeps a dense matrix.

No Lava or Brian2 import here.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from deepr_neuro.errors import InvariantError
from deepr_neuro.hardware.mapping import CorePlan, rewiring_core

REVIVE_THETA = 1e-12
# Largest usable theta: the bundle stores weights as float32, so a larger one
# (only a diverging run gets there) would be exported as inf.
THETA_MAX = float(np.finfo(np.float32).max)


def dead_slots(theta: np.ndarray) -> np.ndarray:
    """Indices of slots whose theta is not a usable positive number: <= 0
    (DEEP R's dormant) and also NaN, inf or beyond THETA_MAX, which only a
    diverging update produces. Counting those as dead keeps every core's count
    exact (the slot is refilled like any other dead one) and keeps NaN/inf out
    of the weights; for thetas in (-inf, THETA_MAX] this is exactly
    ``theta <= 0``, so the random draws of a normal run are unchanged."""
    return np.flatnonzero(~((theta > 0) & (theta <= THETA_MAX)))


# A core is the mapping's CorePlan (one type): the rewiring reads start / stop
# (post-neurons, population-local), budget K_c, capacity and axon_limit A_c.
# CoreSpec(start, stop, budget, capacity, axon_limit) makes one by hand.
CoreSpec = rewiring_core


class LayerConnections:
    """Active connections of one weight layer, as slots, plus the fixed signs."""

    def __init__(self, n_in: int, n_out: int, cores: Sequence[CorePlan], signs: np.ndarray,
                 rows: np.ndarray, cols: np.ndarray, theta: np.ndarray,
                 theta_dense: Optional[np.ndarray] = None, free_sign: bool = False,
                 forbidden: Optional[np.ndarray] = None):
        self.n_in = int(n_in)
        # bitmap over flat keys of entries that may never be active (no-self mask), or None
        self.forbidden = _forbidden_bitmap(forbidden, int(n_in) * int(n_out))
        self.n_potential = int(n_in) * int(n_out) - (0 if self.forbidden is None
                                                     else int(np.count_nonzero(self.forbidden)))
        # Baselines (dense, fixed sparse, pruning, L1) train ordinary signed
        # weights: every slot is a connection and its weight is theta itself.
        self.free_sign = bool(free_sign)
        self.n_out = int(n_out)
        self.cores = list(cores)
        self.signs = signs.astype(np.int8, copy=False)  # (n_out, n_in), fixed
        self.local_core_of_post = np.empty(self.n_out, dtype=np.int32)
        for ci, c in enumerate(self.cores):
            self.local_core_of_post[c.start:c.stop] = ci
        self.theta_dense = theta_dense  # soft-DEEP R only
        self.core_start = np.array([c.start for c in self.cores], dtype=np.int64)
        self.core_n_post = np.array([c.stop - c.start for c in self.cores], dtype=np.int64)
        # Refill can be vectorised over cores when no axon limit can bind and
        # every core is sparse enough for rejection sampling.
        self.simple_refill = self.forbidden is None and all(
            self.n_in <= c.axon_limit and c.budget <= 0.25 * (c.stop - c.start) * self.n_in
            for c in self.cores)
        self.set_slots(rows, cols, theta)

    # -- slot bookkeeping -------------------------------------------------
    def set_slots(self, rows: np.ndarray, cols: np.ndarray, theta: np.ndarray,
                  occupied: Optional[np.ndarray] = None) -> None:
        """Replace the slots; ``occupied`` (the caller's bitmap of exactly
        these keys, all active) saves rebuilding it."""
        self.rows = np.asarray(rows, dtype=np.int32)
        self.cols = np.asarray(cols, dtype=np.int32)
        self.theta = np.asarray(theta, dtype=np.float64)
        self._full_checked = None
        if self.free_sign:
            self.slot_sign = np.ones(len(self.theta))
        else:
            self.slot_sign = self.signs[self.rows, self.cols].astype(np.float64)
        if occupied is not None:
            self.occupied = occupied
            return
        self.occupied = np.zeros(self.n_out * self.n_in, dtype=bool)
        self.occupied[self.keys()[self.active_mask()]] = True

    def is_full_row_major(self) -> bool:
        """One slot per potential connection, in (row, col) order: the slot
        weights are the weight matrix itself (dense baselines, DEEP R at 1.0)."""
        if len(self.theta) != self.n_in * self.n_out:
            return False
        if self._full_checked is None or self._full_checked[0] is not self.rows:
            ordered = bool(np.array_equal(self.keys(), np.arange(self.n_in * self.n_out)))
            self._full_checked = (self.rows, ordered)
        return self._full_checked[1]

    def active_mask(self) -> np.ndarray:
        """Which slots hold a connection: theta > 0 (DEEP R), every slot (baselines)."""
        if self.free_sign:
            return np.ones(len(self.theta), dtype=bool)
        return self.theta > 0

    @property
    def n_active(self) -> int:
        return int(np.count_nonzero(self.active_mask()))

    def weights(self) -> np.ndarray:
        """Weight of every slot (DEEP R: s * theta, 0 where theta <= 0; baselines: theta)."""
        if self.free_sign:
            return self.theta.copy()
        return self.slot_sign * np.maximum(self.theta, 0.0)

    def core_counts(self) -> np.ndarray:
        """Active connections per core (local core order)."""
        active = self.active_mask()
        return np.bincount(self.local_core_of_post[self.rows[active]], minlength=len(self.cores))

    def core_axons(self) -> np.ndarray:
        """Distinct presynaptic neurons per core among active connections."""
        active = self.active_mask()
        core = self.local_core_of_post[self.rows[active]].astype(np.int64)
        pairs = np.unique(core * self.n_in + self.cols[active])
        return np.bincount(pairs // self.n_in, minlength=len(self.cores))

    def sorted_arrays(self):
        """(rows, cols, weight) of active connections, sorted by (row, col)."""
        active = self.active_mask()
        r, c, w = self.rows[active], self.cols[active], self.weights()[active]
        order = np.lexsort((c, r))
        return r[order].astype(np.int32), c[order].astype(np.int32), w[order]

    def keys(self) -> np.ndarray:
        return self.rows.astype(np.int64) * self.n_in + self.cols

    def core_room(self, core: CorePlan) -> int:
        """Connections the core can always place, whichever min(n_in, A_c) pres it
        listens to: the sum of the smallest per-pre counts of allowed entries into
        its neurons (n_post * min(n_in, A_c) without forbidden entries)."""
        n_post = core.stop - core.start
        k = min(self.n_in, core.axon_limit)
        if self.forbidden is None:
            return n_post * k
        blocked = self.forbidden[core.start * self.n_in:core.stop * self.n_in].reshape(n_post, self.n_in)
        allowed = np.sort(n_post - blocked.sum(axis=0))
        return int(allowed[:k].sum())


def _forbidden_bitmap(forbidden: Optional[np.ndarray], size: int) -> Optional[np.ndarray]:
    """None, or a boolean bitmap of ``size`` flat keys (from a bitmap or a key list)."""
    if forbidden is None:
        return None
    f = np.asarray(forbidden)
    if f.dtype == bool:
        bitmap = f.reshape(-1).copy()
    else:
        bitmap = np.zeros(size, dtype=bool)
        bitmap[f.astype(np.int64)] = True
    if len(bitmap) != size:
        raise InvariantError(f"forbidden-entry mask has {len(bitmap)} entries for {size} connections")
    return bitmap if bitmap.any() else None


def random_signs(rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    return np.where(rng.random((n_out, n_in)) < 0.5, -1, 1).astype(np.int8)


# ---------------------------------------------------------------------------
# Sampling dormant connections on one core
# ---------------------------------------------------------------------------

def sample_dormant(rng: np.random.Generator, n_in: int, core: CorePlan,
                   active_keys: np.ndarray, need: int,
                   occupied: Optional[np.ndarray] = None,
                   forbidden: Optional[np.ndarray] = None) -> np.ndarray:
    """Draw ``need`` distinct dormant keys (post * n_in + pre) for one core.

    Uniform over the dormant connections into the core's neurons while the
    core listens to fewer than A_c presynaptic neurons; once it is at its
    axon limit, uniform over dormant connections from the presynaptic
    neurons it already listens to. ``active_keys`` are the core's active keys
    (not including the ones being replaced). ``occupied``, when given, is the
    layer's bitmap of exactly those active keys: it makes enumerating a dense
    core's dormant set a scan instead of a set difference (same result).
    ``forbidden`` (a bitmap over the layer's keys) marks entries never drawn.
    """
    if need <= 0:
        return np.empty(0, dtype=np.int64)
    active_keys = np.sort(np.asarray(active_keys, dtype=np.int64))
    if n_in <= core.axon_limit:
        return _sample_free(rng, n_in, core, active_keys, need, allowed_pre=None, occupied=occupied,
                            forbidden=forbidden)
    pre_used = np.unique(active_keys % n_in)
    if len(pre_used) + need <= core.axon_limit:
        return _sample_free(rng, n_in, core, active_keys, need, allowed_pre=None, occupied=occupied,
                            forbidden=forbidden)
    # Axon limit may bind: draw one at a time so the pre set never exceeds A_c.
    out = np.empty(need, dtype=np.int64)
    used = set(int(p) for p in pre_used)
    keys = active_keys
    for i in range(need):
        allowed = None if len(used) < core.axon_limit else np.fromiter(sorted(used), dtype=np.int64)
        k = _sample_free(rng, n_in, core, keys, 1, allowed_pre=allowed, forbidden=forbidden)[0]
        out[i] = k
        used.add(int(k % n_in))
        keys = np.insert(keys, np.searchsorted(keys, k), k)
    return out


def _sample_free(rng, n_in, core, active_sorted, need, allowed_pre, occupied=None, n_active=None,
                 forbidden=None):
    """Uniform draw of ``need`` distinct keys outside the core's active set.

    The active set is ``active_sorted``, or (with ``allowed_pre`` None) the
    layer's ``occupied`` bitmap holding ``n_active`` keys on this core; both
    give the same draws.
    """
    n_post = core.stop - core.start
    pres = np.arange(n_in, dtype=np.int64) if allowed_pre is None else np.asarray(allowed_pre, np.int64)
    space = n_post * len(pres)
    use_bitmap = allowed_pre is None and occupied is not None
    if n_active is None:
        n_active = len(active_sorted)
    n_dormant = space - n_active if allowed_pre is None else None
    if forbidden is not None and n_dormant is not None:
        n_dormant -= int(np.count_nonzero(forbidden[core.start * n_in:core.stop * n_in]))
    if allowed_pre is None and n_dormant >= 4 * need and n_active <= 0.5 * space:
        # Rejection sampling: cheap when most of the space is dormant.
        chosen = np.empty(0, dtype=np.int64)
        while len(chosen) < need:
            m = 2 * (need - len(chosen)) + 8
            cand = (core.start + rng.integers(0, n_post, m)).astype(np.int64) * n_in + rng.integers(0, n_in, m)
            _, first = np.unique(cand, return_index=True)
            cand = cand[np.sort(first)]  # distinct, in draw order
            if use_bitmap:
                taken = occupied[cand]
            else:
                pos = np.searchsorted(active_sorted, cand)
                pos = np.minimum(pos, max(len(active_sorted) - 1, 0))
                taken = (active_sorted[pos] == cand) if len(active_sorted) else np.zeros(len(cand), bool)
            if forbidden is not None:
                taken = taken | forbidden[cand]
            cand = cand[~taken]
            cand = cand[~np.isin(cand, chosen)]
            chosen = np.concatenate([chosen, cand[:need - len(chosen)]])
        return chosen
    # Enumerate the dormant set explicitly (dense core or restricted pres), in key order.
    if use_bitmap:
        lo = core.start * n_in
        free = ~occupied[lo:core.stop * n_in]
        if forbidden is not None:
            free &= ~forbidden[lo:core.stop * n_in]
        dormant = np.flatnonzero(free) + lo
    else:
        posts = np.arange(core.start, core.stop, dtype=np.int64)
        allk = (posts[:, None] * n_in + pres[None, :]).ravel()
        if forbidden is not None:
            allk = allk[~forbidden[allk]]
        dormant = allk[~np.isin(allk, active_sorted)]
    if len(dormant) < need:
        raise InvariantError(
            f"core with post-neurons {core.start}..{core.stop - 1}: {len(dormant)} dormant "
            f"connections left, {need} needed to keep its budget {core.budget} exact "
            f"(axon limit {core.axon_limit}); the core's budget exceeds what its neurons "
            f"and axons can hold: lower the connectivity")
    return rng.choice(dormant, size=need, replace=False)


# ---------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------

def init_layer(rng: np.random.Generator, n_in: int, n_out: int, cores: Sequence[CorePlan],
               soft_theta_min: Optional[float] = None,
               forbidden: Optional[np.ndarray] = None) -> LayerConnections:
    """K_c random active connections on every core, theta = |N(0,1)| / sqrt(n_in).

    With ``soft_theta_min`` (soft-DEEP R) every dormant theta is stored too,
    drawn uniformly in [theta_min, 0) as in the reference code. ``forbidden``
    (flat keys or a bitmap) are entries never made active.
    """
    forbid = _forbidden_bitmap(forbidden, n_in * n_out)
    signs = random_signs(rng, n_out, n_in)
    rows, cols = [], []
    for core in cores:
        lo, hi = core.start * n_in, core.stop * n_in
        n_forbidden = 0 if forbid is None else int(np.count_nonzero(forbid[lo:hi]))
        if core.budget == (core.stop - core.start) * n_in - n_forbidden:
            # A full core has one choice: every allowed connection. Row-major order
            # lets a full layer run as a plain matrix (sparse_mlp ``full``).
            keys = np.arange(lo, hi, dtype=np.int64)
            if forbid is not None:
                keys = keys[~forbid[lo:hi]]
        else:
            keys = sample_dormant(rng, n_in, core, np.empty(0, np.int64), core.budget, forbidden=forbid)
        rows.append(keys // n_in)
        cols.append(keys % n_in)
    rows = np.concatenate(rows) if rows else np.empty(0, np.int64)
    cols = np.concatenate(cols) if cols else np.empty(0, np.int64)
    theta = np.abs(rng.standard_normal(len(rows))) / np.sqrt(n_in)
    dense = None
    if soft_theta_min is not None:
        dense = rng.random((n_out, n_in)) * float(soft_theta_min)
        dense[rows, cols] = theta
    return LayerConnections(n_in, n_out, cores, signs, rows, cols, theta, theta_dense=dense, forbidden=forbid)


def init_free_layer(rng: np.random.Generator, n_in: int, n_out: int, cores: Sequence[CorePlan],
                    dense: bool, forbidden: Optional[np.ndarray] = None) -> LayerConnections:
    """Baseline layer with signed weights: every allowed connection (``dense``)
    or K_c random ones per core (fixed sparse), w = s |N(0,1)| / sqrt(n_in)."""
    forbid = _forbidden_bitmap(forbidden, n_in * n_out)
    if dense:
        signs = random_signs(rng, n_out, n_in)
        keys = np.arange(n_out * n_in, dtype=np.int64)
        if forbid is not None:
            keys = keys[~forbid]
        rows, cols = keys // n_in, keys % n_in
        theta = np.abs(rng.standard_normal(len(keys))) / np.sqrt(n_in)
    else:
        layer = init_layer(rng, n_in, n_out, cores, forbidden=forbid)
        signs, rows, cols, theta = layer.signs, layer.rows, layer.cols, layer.theta
    theta = theta * signs[rows, cols]
    return LayerConnections(n_in, n_out, cores, signs, rows, cols, theta, free_sign=True, forbidden=forbid)


def prune_to_budget(layer: LayerConnections) -> np.ndarray:
    """Keep the K_c largest-magnitude connections of every core (within its axon limit).

    Returns the indices of the kept slots (the caller keeps optimiser state
    in step). Where a core's axon limit could bind, connections are taken in
    order of magnitude, skipping those from a new presynaptic neuron once the
    core listens to A_c of them.
    """
    keep = []
    slot_core = layer.local_core_of_post[layer.rows]
    mag = np.abs(layer.theta)
    for ci, core in enumerate(layer.cores):
        on = np.flatnonzero(slot_core == ci)
        order = on[np.argsort(-mag[on], kind="stable")]
        if layer.n_in <= core.axon_limit:
            keep.append(order[:core.budget])
            continue
        pres, chosen = set(), []
        for k in order:
            if len(chosen) == core.budget:
                break
            pre = int(layer.cols[k])
            if pre in pres or len(pres) < core.axon_limit:
                pres.add(pre)
                chosen.append(k)
        keep.append(np.array(chosen, dtype=np.int64))
    kept = np.sort(np.concatenate(keep)) if keep else np.empty(0, np.int64)
    layer.set_slots(layer.rows[kept], layer.cols[kept], layer.theta[kept])
    return kept


# ---------------------------------------------------------------------------
# Rewiring
# ---------------------------------------------------------------------------

def rewire_deepr(rng: np.random.Generator, layer: LayerConnections,
                 reset: Optional[List[np.ndarray]] = None) -> int:
    """Replace every dead slot (theta <= 0, or not finite: see :func:`dead_slots`)
    by a random dormant connection on the same core.

    Returns the number of connections that moved (a dead one drawn again
    counts as none). Arrays in ``reset`` (optimizer
    moments, one value per slot) are zeroed at replaced slots, so momentum
    cannot carry over to (or revive) a different connection.
    """
    dead = dead_slots(layer.theta)
    if len(dead) == 0:
        return 0
    if len(layer.theta) == layer.n_potential:
        # Every allowed connection holds a slot (connectivity 1.0): the
        # dormant set is exactly the dead, so they restart where they are.
        layer.theta[dead] = REVIVE_THETA
        for arr in reset or ():
            arr[dead] = 0.0
        return 0
    keys = layer.keys()
    slot_core = layer.local_core_of_post[layer.rows]
    dead_core = slot_core[dead]
    alive = np.ones(len(keys), dtype=bool)
    alive[dead] = False
    if layer.simple_refill:
        new = _refill_all_cores(rng, layer, keys[dead], dead_core)
        layer.rows[dead] = new // layer.n_in
        layer.cols[dead] = new % layer.n_in
    else:
        layer.occupied[keys[dead]] = False  # the dead are dormant now (and may be drawn again)
        alive_per_core = np.bincount(slot_core[alive], minlength=len(layer.cores))
        for ci in np.unique(dead_core):
            slots = dead[dead_core == ci]
            core = layer.cores[ci]
            if layer.n_in <= core.axon_limit:  # no axon limit: the bitmap is the whole active set
                new = _sample_free(rng, layer.n_in, core, None, len(slots), None,
                                   occupied=layer.occupied, n_active=int(alive_per_core[ci]),
                                   forbidden=layer.forbidden)
            else:
                core_alive = keys[alive & (slot_core == ci)]
                new = sample_dormant(rng, layer.n_in, core, core_alive, len(slots), occupied=layer.occupied,
                                     forbidden=layer.forbidden)
            layer.rows[slots] = new // layer.n_in
            layer.cols[slots] = new % layer.n_in
            layer.occupied[new] = True
    layer.theta[dead] = REVIVE_THETA
    layer.slot_sign[dead] = layer.signs[layer.rows[dead], layer.cols[dead]]
    layer._full_checked = None  # rows were written in place
    for arr in reset or ():
        arr[dead] = 0.0
    # A dead connection redrawn onto itself (always so at connectivity 1.0) did not move.
    return int(np.count_nonzero(layer.keys()[dead] != keys[dead]))


def _refill_all_cores(rng: np.random.Generator, layer: LayerConnections, dead_keys: np.ndarray,
                      dead_core: np.ndarray) -> np.ndarray:
    """Vectorised refill of every core of a layer at once (no axon limit can bind, cores sparse).

    Each dead slot draws a (post on its core, any pre) pair uniformly; draws that
    hit an active connection or an earlier draw are redrawn. That is uniform
    sampling without replacement from each core's dormant set, as in
    :func:`sample_dormant`, at a fraction of the per-core cost.
    """
    n_in = layer.n_in
    occupied = layer.occupied  # bitmap of active keys, kept in step with the slots
    occupied[dead_keys] = False  # the dead are dormant now (and may be drawn again)
    start = layer.core_start[dead_core]
    n_post = layer.core_n_post[dead_core]
    out = np.full(len(dead_core), -1, dtype=np.int64)
    pending = np.arange(len(dead_core))
    while len(pending):
        cand = (start[pending] + rng.integers(0, n_post[pending])) * n_in + rng.integers(0, n_in, len(pending))
        reject = occupied[cand]
        if len(cand) > 1:
            _, first = np.unique(cand, return_index=True)
            dup = np.ones(len(cand), dtype=bool)
            dup[first] = False
            reject |= dup
        accepted = cand[~reject]
        occupied[accepted] = True
        out[pending[~reject]] = accepted
        pending = pending[reject]
    return out


def rewire_global(rng: np.random.Generator, layers: Sequence[LayerConnections],
                  initial_budgets: Sequence[np.ndarray],
                  states: Optional[Sequence[Dict[str, np.ndarray]]] = None) -> int:
    """Global-budget DEEP R: the network's total stays exact, cores stay <= capacity.

    Dead slots are dropped; the refill count is split over all cores of all
    layers by a categorical draw weighted by each core's initial budget,
    redrawn where a core is full.
    """
    n_dead = 0
    for li, layer in enumerate(layers):
        keep = np.ones(len(layer.theta), dtype=bool)
        keep[dead_slots(layer.theta)] = False  # NaN / inf count as dead (see dead_slots)
        n_dead += int((~keep).sum())
        if not keep.all():
            layer.set_slots(layer.rows[keep], layer.cols[keep], layer.theta[keep])
            if states is not None:
                for name, arr in states[li].items():
                    states[li][name] = arr[keep]
    if n_dead == 0:
        return 0
    weights = np.concatenate([np.asarray(b, dtype=np.float64) for b in initial_budgets])
    counts = np.concatenate([layer.core_counts() for layer in layers])
    caps = np.concatenate([[min(c.capacity, layer.core_room(c))
                            for c in layer.cores] for layer in layers]).astype(np.int64)
    room = caps - counts
    add = np.zeros(len(weights), dtype=np.int64)
    left = n_dead
    while left > 0:
        p = np.where(room - add > 0, weights, 0.0)
        if p.sum() <= 0:
            raise InvariantError(
                f"global DEEP R: {left} connections to refill but no core has room left "
                f"(every core at its capacity or axon limit); lower the connectivity")
        draw = rng.multinomial(left, p / p.sum())
        draw = np.minimum(draw, room - add)
        add += draw
        left -= int(draw.sum())
    offset = 0
    for li, layer in enumerate(layers):
        n_c = len(layer.cores)
        layer_add = add[offset:offset + n_c]
        offset += n_c
        if layer_add.sum() == 0:
            continue
        keys = layer.keys()
        slot_core = layer.local_core_of_post[layer.rows]
        new_keys = [sample_dormant(rng, layer.n_in, layer.cores[ci], keys[slot_core == ci], int(a),
                                   forbidden=layer.forbidden)
                    for ci, a in enumerate(layer_add) if a > 0]
        new = np.concatenate(new_keys)
        layer.set_slots(np.concatenate([layer.rows, new // layer.n_in]),
                        np.concatenate([layer.cols, new % layer.n_in]),
                        np.concatenate([layer.theta, np.full(len(new), REVIVE_THETA)]))
        if states is not None:
            for name, arr in states[li].items():
                states[li][name] = np.concatenate([arr, np.zeros(len(new))])
    return n_dead


def soft_update_active(rng: np.random.Generator, layer: LayerConnections) -> int:
    """soft-DEEP R: rebuild slots from the dense theta, enforcing core budgets and axon limits.

    Connections that crossed above zero this step are refused (theta set to
    just below zero) in random order where they would push a core over its
    budget K_c (and so its capacity) or its input-axon limit. Without that cap
    the reference rule of thumb for theta_min lets soft-DEEP R settle at
    several times the connectivity asked for. Returns the number of new
    connections.

    Works on flat keys (post * n_in + pre) and the layer's occupancy bitmap
    (the slots before the update); cores without a connection that crossed
    above zero are not looked at. Slots stay in key (row-major) order.
    """
    n_in = layer.n_in
    flat = layer.theta_dense.reshape(-1)  # a view: writes reach theta_dense
    if layer.forbidden is not None:  # forbidden entries stay dormant whatever the noise did
        flat[layer.forbidden] = np.minimum(flat[layer.forbidden], -REVIVE_THETA)
    now = flat > 0
    new_keys = np.flatnonzero(now & ~layer.occupied)
    bounds = np.append(layer.core_start, layer.core_start[-1] + layer.core_n_post[-1]) * n_in  # key range per core
    new_at = np.searchsorted(new_keys, bounds)
    n_new = len(new_keys)
    for ci, core in enumerate(layer.cores):
        blk_new = new_keys[new_at[ci]:new_at[ci + 1]]
        if len(blk_new) == 0:
            continue
        lo, hi = bounds[ci], bounds[ci + 1]
        # at most the core's budget K_c (never above its capacity): the
        # connectivity asked for is the one soft-DEEP R is compared at
        excess = int(np.count_nonzero(now[lo:hi])) - min(core.capacity, core.budget)
        order = rng.permutation(len(blk_new))
        drop = set()
        if excess > 0:
            drop.update(order[:excess].tolist())
        if n_in > core.axon_limit:  # axon limit: distinct pres of the connections kept
            kept_old = np.flatnonzero(now[lo:hi] & layer.occupied[lo:hi])
            pres = set(np.unique(kept_old % n_in).tolist())
            for j in order:
                if j in drop:
                    continue
                pre = int(blk_new[j] % n_in)
                if pre in pres:
                    continue
                if len(pres) < core.axon_limit:
                    pres.add(pre)
                else:
                    drop.add(j)
        if drop:
            refused = blk_new[sorted(drop)]
            flat[refused] = -REVIVE_THETA
            now[refused] = False
            n_new -= len(refused)
    keys = np.flatnonzero(now)
    layer.set_slots(keys // n_in, keys % n_in, flat[keys], occupied=now)
    return int(n_new)
