"""The product's promise: exact per-core budgets and axon limits after every step."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepr_neuro.training.deepr import DeepR, DeepRConfig
from deepr_neuro.hardware.mapping import plan_network
from deepr_neuro.training.rewiring import CoreSpec, sample_dormant
from deepr_neuro.training.sparse_mlp import loss_and_grads, SparseLayer
from deepr_neuro.training.trainer import core_specs


@st.composite
def networks(draw, full_ok=False):
    n_layers = draw(st.integers(1, 3))
    sizes = [draw(st.integers(2, 30)) for _ in range(n_layers + 1)]
    npc = draw(st.integers(1, 12))
    axon_limit = draw(st.integers(1, 40))
    budgets = []
    for i in range(n_layers):
        n_in, n_out = sizes[i], sizes[i + 1]
        max_k = n_out * min(n_in, axon_limit)
        # keep cores from being completely full so rewiring has room to move
        # (unless full cores are what is tested: connectivity 1.0)
        top = max_k if full_ok else max(1, max_k - 1)
        budgets.append(draw(st.one_of(st.integers(1, top), st.just(top))))
    return sizes, npc, axon_limit, budgets


def _plan(sizes, npc, axon_limit, budgets):
    return plan_network(sizes[0], sizes[1:], [f"l{i}" for i in range(len(sizes) - 1)], budgets,
                        neurons_per_core=npc, cores=10_000, synapse_capacity=10_000, axon_limit=axon_limit)


def _check(deepr, plan, exact=True):
    for layer, lp in zip(deepr.layers, plan.layers):
        keys = layer.keys()[layer.active_mask()]
        assert len(np.unique(keys)) == len(keys), "a connection is active twice"
        assert np.array_equal(np.flatnonzero(layer.occupied), np.sort(keys)), "occupancy bitmap out of step"
        assert np.all((layer.rows >= 0) & (layer.rows < lp.n_out))
        assert np.all((layer.cols >= 0) & (layer.cols < lp.n_in))
        counts = layer.core_counts()
        axons = layer.core_axons()
        for c, n, a in zip(lp.cores, counts, axons):
            if exact:
                assert n == c.budget, f"core {c.core_id}: {n} != {c.budget}"
            assert n <= c.capacity
            assert a <= c.axon_limit, f"core {c.core_id}: {a} axons > {c.axon_limit}"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(full_ok=True), seed=st.integers(0, 2**31 - 1),
       optimizer=st.sampled_from(["sgd", "adam", "adam-per-connection"]), kill=st.floats(0.0, 1.0))
def test_deepr_keeps_exact_core_budgets_and_axon_limits(net, seed, optimizer, kill):
    sizes, npc, axon_limit, budgets = net
    plan = _plan(*net)
    rng = np.random.default_rng(seed)
    shapes = [(lp.n_in, lp.n_out) for lp in plan.layers]
    per_conn = optimizer == "adam-per-connection"
    dr = DeepR(rng, shapes, core_specs(plan), DeepRConfig(method="deepr", optimizer="adam" if per_conn else optimizer,
                                                         alpha=1e-3, noise=1e-2, adam_per_connection=per_conn),
               lr=0.1)
    _check(dr, plan)
    for _ in range(15):
        # random gradients, large enough to kill a share `kill` of connections each step
        grads = [rng.standard_normal(len(layer.theta)) * kill * 50 for layer in dr.layers]
        dr.step(grads, lr=0.1)
        _check(dr, plan)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), seed=st.integers(0, 2**31 - 1))
def test_global_deepr_keeps_total_and_capacity(net, seed):
    sizes, npc, axon_limit, budgets = net
    plan = _plan(*net)
    rng = np.random.default_rng(seed)
    shapes = [(lp.n_in, lp.n_out) for lp in plan.layers]
    dr = DeepR(rng, shapes, core_specs(plan), DeepRConfig(method="global-deepr", optimizer="adam",
                                                         alpha=1e-3, noise=1e-2), lr=0.1)
    total = plan.total_budget
    for _ in range(15):
        grads = [rng.standard_normal(len(layer.theta)) * 20 for layer in dr.layers]
        dr.step(grads, lr=0.1)
        assert sum(layer.n_active for layer in dr.layers) == total
        assert all(len(m["m"]) == len(layer.theta) for m, layer in zip(dr.moments, dr.layers))
        _check(dr, plan, exact=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), seed=st.integers(0, 2**31 - 1))
def test_soft_deepr_stays_within_capacity_and_axons(net, seed):
    sizes, npc, axon_limit, budgets = net
    plan = _plan(*net)
    rng = np.random.default_rng(seed)
    shapes = [(lp.n_in, lp.n_out) for lp in plan.layers]
    dr = DeepR(rng, shapes, core_specs(plan), DeepRConfig(method="soft-deepr", alpha=1e-4, noise=0.5,
                                                         theta_min=-0.05), lr=0.1)
    for _ in range(10):
        grads = [rng.standard_normal(len(layer.theta)) for layer in dr.layers]
        dr.step(grads, lr=0.1)
        for layer in dr.layers:
            assert np.all(layer.theta_dense >= -0.05 - 1e-12)
            assert np.array_equal(np.sort(layer.keys()),
                                  np.sort(np.flatnonzero(layer.theta_dense.ravel() > 0)))
        _check(dr, plan, exact=False)
        for layer, lp in zip(dr.layers, plan.layers):
            assert np.all(layer.core_counts() <= [c.budget for c in lp.cores])


@settings(max_examples=200, deadline=None)
@given(n_in=st.integers(1, 20), n_post=st.integers(1, 10), axon_limit=st.integers(1, 25),
       seed=st.integers(0, 2**31 - 1), data=st.data())
def test_sample_dormant_draws_distinct_dormant_within_limits(n_in, n_post, axon_limit, seed, data):
    rng = np.random.default_rng(seed)
    space = n_post * n_in
    n_active = data.draw(st.integers(0, space - 1))
    core = CoreSpec(3, 3 + n_post, n_active, space, axon_limit)
    # active set respecting the axon limit
    pres = rng.permutation(n_in)[:min(axon_limit, n_in)]
    allowed = (np.arange(3, 3 + n_post)[:, None] * n_in + pres[None, :]).ravel()
    n_active = min(n_active, len(allowed) - 1) if len(allowed) > 1 else 0
    active = rng.choice(allowed, n_active, replace=False) if n_active else np.empty(0, np.int64)
    max_need = n_post * min(n_in, axon_limit) - n_active
    need = data.draw(st.integers(0, max(0, min(max_need, 30))))
    new = sample_dormant(rng, n_in, core, active, need)
    assert len(new) == need
    assert len(np.unique(new)) == need
    assert not np.isin(new, active).any()
    assert np.all((new // n_in >= 3) & (new // n_in < 3 + n_post))
    assert len(np.unique(np.concatenate([active, new]) % n_in)) <= max(axon_limit, 0) or need == 0


def test_rewiring_moves_connections_and_loss_falls():
    """Not a frozen mask: many connections are replaced, and training still learns."""
    rng = np.random.default_rng(0)
    x = rng.random((400, 20))
    w_true = rng.standard_normal((20, 4))
    y = np.argmax(x @ w_true, axis=1)
    plan = plan_network(20, [16, 4], ["h", "out"], [60, 40], neurons_per_core=8, cores=100,
                        synapse_capacity=1000, axon_limit=100)
    dr = DeepR(rng, [(20, 16), (16, 4)], core_specs(plan), DeepRConfig(alpha=1e-4, noise=1e-3), lr=0.1)
    start_keys = [set(layer.keys().tolist()) for layer in dr.layers]
    losses, replaced = [], 0
    for epoch in range(30):
        total = 0.0
        for s in range(0, 400, 10):
            loss, grads, _ = loss_and_grads(x[s:s + 10], y[s:s + 10], dr.sparse_layers())
            replaced += sum(dr.step(grads, lr=0.1))
            total += loss
        losses.append(total / 40)
        _check(dr, plan)
    assert replaced > 50
    moved = sum(len(k - set(layer.keys().tolist())) for k, layer in zip(start_keys, dr.layers))
    assert moved > 10
    assert np.mean(losses[-3:]) < 0.7 * losses[0]


def test_sparse_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    layers = []
    for n_in, n_out, k in [(7, 5, 12), (5, 3, 15)]:  # second layer dense enough for the BLAS path
        keys = rng.choice(n_in * n_out, k, replace=False)
        layers.append(SparseLayer(n_in, n_out, (keys // n_in).astype(np.int32), (keys % n_in).astype(np.int32),
                                  rng.standard_normal(k)))
    x = rng.random((4, 7))
    y = np.array([0, 1, 2, 1])
    loss, grads, _ = loss_and_grads(x, y, layers)
    eps = 1e-6
    for li, layer in enumerate(layers):
        for k in range(len(layer.w)):
            layer.w[k] += eps
            lp, _, _ = loss_and_grads(x, y, layers)
            layer.w[k] -= 2 * eps
            lm, _, _ = loss_and_grads(x, y, layers)
            layer.w[k] += eps
            assert grads[li][k] == pytest.approx((lp - lm) / (2 * eps), abs=1e-6)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), seed=st.integers(0, 2**31 - 1))
def test_pruning_baselines_land_exactly_on_core_budgets_within_axon_limits(net, seed):
    plan = _plan(*net)
    rng = np.random.default_rng(seed)
    shapes = [(lp.n_in, lp.n_out) for lp in plan.layers]
    dr = DeepR(rng, shapes, core_specs(plan), DeepRConfig(method="prune-retrain", optimizer="adam"), lr=0.01)
    for layer, (n_in, n_out) in zip(dr.layers, shapes):
        assert layer.n_active == n_in * n_out  # dense phase
    grads = [rng.standard_normal(len(layer.theta)) for layer in dr.layers]
    dr.step(grads, lr=0.01)
    dr.prune()
    _check(dr, plan)
    assert all(len(m["m"]) == len(layer.theta) for m, layer in zip(dr.moments, dr.layers))
    dr.step([rng.standard_normal(len(layer.theta)) for layer in dr.layers], lr=0.01)
    _check(dr, plan)  # the mask stays fixed while retraining


def test_full_row_major_layers_give_the_same_loss_and_gradients_as_slots():
    rng = np.random.default_rng(2)
    n_in, n_out = 6, 4
    keys = np.arange(n_in * n_out)
    w = rng.standard_normal(n_in * n_out)
    full = SparseLayer(n_in, n_out, (keys // n_in).astype(np.int32), (keys % n_in).astype(np.int32), w, full=True)
    perm = rng.permutation(len(keys))  # same connections, slots in another order
    slots = SparseLayer(n_in, n_out, full.rows[perm], full.cols[perm], w[perm])
    x, y = rng.random((5, n_in)), np.array([0, 1, 2, 3, 1])
    la, ga, _ = loss_and_grads(x, y, [full])
    lb, gb, _ = loss_and_grads(x, y, [slots])
    assert la == pytest.approx(lb)
    np.testing.assert_allclose(ga[0][perm], gb[0])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_deepr_at_full_connectivity_restarts_dead_in_place_and_stays_a_matrix(optimizer):
    """Connectivity 1.0: every connection is a slot, in row-major order, for
    the whole run (the trainer then multiplies plain matrices); a dead
    connection can only be redrawn as itself, so it restarts in place at
    1e-12 with zeroed moments and nothing counts as rewired."""
    sizes, npc = [7, 5, 3], 2
    budgets = [sizes[0] * sizes[1], sizes[1] * sizes[2]]
    plan = _plan(sizes, npc, 100, budgets)
    rng = np.random.default_rng(5)
    dr = DeepR(rng, [(lp.n_in, lp.n_out) for lp in plan.layers], core_specs(plan),
               DeepRConfig(method="deepr", optimizer=optimizer, alpha=1e-3, noise=0.0), lr=0.1)
    n_dead = 0
    for _ in range(10):
        assert all(sl.full for sl in dr.sparse_layers())
        before = [layer.theta.copy() for layer in dr.layers]
        grads = [rng.standard_normal(len(layer.theta)) * 5 for layer in dr.layers]
        moved = dr.step(grads, lr=0.1)
        assert moved == [0, 0]
        _check(dr, plan)
        for i, layer in enumerate(dr.layers):
            assert np.array_equal(layer.keys(), np.arange(layer.n_in * layer.n_out))
            dead = layer.theta == 1e-12
            n_dead += int(dead.sum())
            if optimizer == "sgd":  # plain gradient step: the dead are exactly those pushed <= 0
                assert np.array_equal(dead, before[i] - 0.1 * (grads[i] * layer.slot_sign + 1e-3) <= 0)
            for arr in dr.moments[i].values():
                assert np.all(arr[dead] == 0) and np.any(arr[~dead] != 0)
    assert n_dead > 0


# ---------------------------------------------------------------- Adam counted per connection
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), seed=st.integers(0, 2**31 - 1), method=st.sampled_from(["fixed-sparse", "dense"]))
def test_adam_per_connection_equals_global_adam_when_nothing_is_rewired(net, seed, method):
    """Without rewiring every connection's own count is the global count: the same numbers."""
    plan = _plan(*net)
    shapes = [(lp.n_in, lp.n_out) for lp in plan.layers]
    runs = []
    for per_conn in (False, True):
        rng = np.random.default_rng(seed)
        dr = DeepR(rng, shapes, core_specs(plan), DeepRConfig(method=method, optimizer="adam", alpha=1e-3,
                                                             noise=0.0, adam_per_connection=per_conn), lr=0.01)
        g_rng = np.random.default_rng(seed + 1)
        for _ in range(5):
            dr.step([g_rng.standard_normal(len(layer.theta)) for layer in dr.layers], lr=0.01)
        runs.append([layer.theta.copy() for layer in dr.layers])
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=networks(), seed=st.integers(0, 2**31 - 1))
def test_adam_per_connection_gives_a_rewired_connection_a_first_step_of_one_lr(net, seed):
    """A connection rewired in after many global steps moves by lr (|m^/sqrt(v^)| = 1) on its
    first step, as a fresh Adam parameter does; with the global count t it moves
    (1 - b1) / (1 - b1^t) / sqrt((1 - b2) / (1 - b2^t)) lr (0.58 at t = 32, 3.1 at t = 3000)."""
    plan = _plan(*net)
    shapes = [(lp.n_in, lp.n_out) for lp in plan.layers]
    firsts = {}
    for per_conn in (False, True):
        rng = np.random.default_rng(seed)
        dr = DeepR(rng, shapes, core_specs(plan), DeepRConfig(method="deepr", optimizer="adam", alpha=0.0,
                                                             noise=0.0, adam_per_connection=per_conn), lr=1e-3)
        lr = 1e-3
        for _ in range(30):  # small positive gradients: every theta shrinks slowly, nobody dies
            dr.step([np.full(len(layer.theta), 1e-3) * layer.slot_sign for layer in dr.layers], lr=lr)
        layer = dr.layers[0]
        layer.theta[0] = -1.0  # kill one slot: the next step rewires it (theta = REVIVE_THETA, moments reset)
        dr.step([np.zeros(len(lay.theta)) for lay in dr.layers], lr=lr)
        before = layer.theta[0]
        grads = [np.zeros(len(lay.theta)) for lay in dr.layers]
        grads[0][0] = -1e-3 * layer.slot_sign[0]  # push the new connection up
        dr.step(grads, lr=lr)
        firsts[per_conn] = (layer.theta[0] - before) / lr
        t = dr.t
    assert firsts[True] == pytest.approx(1.0, rel=1e-4)
    assert firsts[False] == pytest.approx(0.1 / (1 - 0.9 ** t) / np.sqrt(0.001 / (1 - 0.999 ** t)), rel=1e-4)
