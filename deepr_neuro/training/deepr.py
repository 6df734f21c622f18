"""The DEEP R parameter update: optimiser step, L1, noise, then rewiring (pure NumPy).

One :class:`DeepR` holds every layer's connections and optimiser moments and
applies, per training step (DESIGN.md section 3):

    theta <- theta - lr * update(grad) - lr * alpha + lr * sigma * N(0, 1)

on active connections (soft-DEEP R: noise on every theta, then clip at
theta_min), followed by the method's rewiring. ``update`` is the plain
gradient (SGD) or Adam's; Adam moments live per slot and are zeroed when a
slot is given a new connection, so momentum cannot revive a dormant one.

On a training graph there is one layer per post population, over the
concatenation of all its sources (n_in = sum of their sizes), with the
population's forbidden entries (no-self masks); the plan's
``LayerPlan.split_by_source`` gives each projection its rows back.

No Lava or Brian2 import here.
"""
from __future__ import annotations

from dataclasses import field, make_dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from deepr_neuro.errors import InvariantError
from deepr_neuro.hardware.mapping import CorePlan
from deepr_neuro.training.methods import (BASELINES, METHODS, OPTIMIZERS, REWIRING_METHODS,  # noqa: F401 (re-exported)
                                          theta_min_rule)
from deepr_neuro.training.model_spec import TrainingSpec
from deepr_neuro.training.rewiring import (THETA_MAX, LayerConnections, dead_slots, init_free_layer, init_layer,
                                           prune_to_budget, rewire_deepr, rewire_global, soft_update_active)
from deepr_neuro.training.sparse_mlp import SparseLayer

# The settings the update rule reads; their types and defaults are TrainingSpec's
# (alpha: L1 strength on active thetas; noise sigma: lr * sigma * N(0,1), T = lr sigma^2 / 2;
# theta_min: soft-DEEP R clip, None = reference rule of thumb).
DEEPR_FIELDS = ("method", "optimizer", "alpha", "noise", "theta_min", "adam_beta1", "adam_beta2", "adam_eps",
                "adam_per_connection")


def _check_config(self) -> None:
    if self.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} (got {self.method!r})")
    if self.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS} (got {self.optimizer!r})")


DeepRConfig = make_dataclass(
    "DeepRConfig",
    [(name, TrainingSpec.model_fields[name].annotation, field(default=TrainingSpec.model_fields[name].default))
     for name in DEEPR_FIELDS],
    namespace={"__post_init__": _check_config, "__module__": __name__,
               "__doc__": "What the DEEP R update reads (fields, types and defaults from TrainingSpec)."})


def soft_theta_min(connectivity: float, alpha: float, noise: float, lr: float) -> float:
    """The rule of thumb for training: p kept inside (0, 1), -1e-4 where it is undefined."""
    if noise <= 0 or alpha <= 0:
        return -1e-4
    try:
        t = theta_min_rule(min(max(connectivity, 1e-6), 1 - 1e-6), alpha, noise, lr)
    except (ZeroDivisionError, OverflowError):  # temperature overflowed to inf: beta = 0
        t = -np.inf
    # an extreme (finite) lr * noise^2 makes the rule non-finite; a finite clip keeps
    # dormant thetas finite (the run then diverges and is reported so)
    return t if np.isfinite(t) and t >= -THETA_MAX else -THETA_MAX


class DeepR:
    """All layers' connection state plus the optimiser; ``step`` applies one update."""

    def __init__(self, rng: np.random.Generator, layer_shapes: Sequence[tuple],
                 layer_cores: Sequence[Sequence[CorePlan]], config: DeepRConfig, lr: float = 0.0,
                 forbidden: Optional[Sequence[Optional[np.ndarray]]] = None):
        """One layer per post population: ``layer_shapes[l]`` is (n_in, n_out) with
        n_in the concatenated pre space of all its sources; ``forbidden[l]``
        (flat keys, e.g. a no-self mask) are entries never made active."""
        self.config = config
        self.rng = rng
        self.t = 0  # Adam step counter
        # thetas found NaN, inf or beyond THETA_MAX (a diverging update) and
        # retired as dead; the trainer reports an epoch with any as diverged
        self.unusable_thetas = 0
        self.layers: List[LayerConnections] = []
        self.theta_min: List[float] = []  # soft-DEEP R clip per layer (0.0 for other methods)
        forbidden = list(forbidden) if forbidden is not None else [None] * len(layer_shapes)
        for (n_in, n_out), cores, forbid in zip(layer_shapes, layer_cores, forbidden):
            if config.method in BASELINES:
                dense = config.method != "fixed-sparse"
                self.layers.append(init_free_layer(rng, n_in, n_out, cores, dense=dense, forbidden=forbid))
                self.theta_min.append(0.0)
                continue
            tmin = None
            if config.method == "soft-deepr":
                tmin = config.theta_min
                if tmin is None:
                    k = sum(c.budget for c in cores)
                    tmin = soft_theta_min(k / (n_in * n_out), config.alpha, config.noise, lr)
                tmin = float(tmin)
            self.layers.append(init_layer(rng, n_in, n_out, cores, soft_theta_min=tmin, forbidden=forbid))
            self.theta_min.append(tmin if tmin is not None else 0.0)
        self.initial_budgets = [np.array([c.budget for c in cores], dtype=np.int64) for cores in layer_cores]
        self.moments: List[Dict[str, np.ndarray]] = [self._zero_moments(layer) for layer in self.layers]

    def _zero_moments(self, layer: LayerConnections) -> Dict[str, np.ndarray]:
        if self.config.optimizer != "adam":
            return {}
        shape = layer.theta_dense.shape if layer.theta_dense is not None else layer.theta.shape
        if self.config.adam_per_connection:
            # "n": the connection's own Adam step count, zeroed with m and v when
            # its slot is given a new connection (the rewiring resets every array here)
            return {"m": np.zeros(shape), "v": np.zeros(shape), "n": np.zeros(shape)}
        return {"m": np.zeros(shape), "v": np.zeros(shape)}

    # ------------------------------------------------------------------
    def sparse_layers(self) -> List[SparseLayer]:
        return [SparseLayer(layer.n_in, layer.n_out, layer.rows, layer.cols, layer.weights(),
                            full=layer.is_full_row_major())
                for layer in self.layers]

    def _update(self, i: int, g_theta: np.ndarray, index=None) -> np.ndarray:
        """Optimiser direction for the given theta gradient (Adam or plain)."""
        if self.config.optimizer == "sgd":
            return g_theta
        c = self.config
        mom = self.moments[i]
        m = mom["m"] if index is None else mom["m"][index]
        v = mom["v"] if index is None else mom["v"][index]
        m = c.adam_beta1 * m + (1 - c.adam_beta1) * g_theta
        v = c.adam_beta2 * v + (1 - c.adam_beta2) * g_theta * g_theta
        if index is None:
            mom["m"], mom["v"] = m, v
        else:
            mom["m"][index], mom["v"][index] = m, v
        if "n" in mom:  # per-connection bias correction (adam_per_connection)
            n = (mom["n"] if index is None else mom["n"][index]) + 1.0
            if index is None:
                mom["n"] = n
            else:
                mom["n"][index] = n
            return (m / (1 - c.adam_beta1 ** n)) / (np.sqrt(v / (1 - c.adam_beta2 ** n)) + c.adam_eps)
        mhat = m / (1 - c.adam_beta1 ** self.t)
        vhat = v / (1 - c.adam_beta2 ** self.t)
        return mhat / (np.sqrt(vhat) + c.adam_eps)

    @property
    def rewires(self) -> bool:
        return self.config.method in REWIRING_METHODS

    def prune(self) -> None:
        """Baselines: keep the K_c largest-magnitude connections of every core."""
        for i, layer in enumerate(self.layers):
            kept = prune_to_budget(layer)
            for name, arr in self.moments[i].items():
                self.moments[i][name] = arr[kept]

    def step(self, grads_w: Sequence[np.ndarray], lr: float) -> List[int]:
        """Apply one update given dL/dw per slot; returns connections rewired per layer."""
        c = self.config
        self.t += 1
        replaced = [0] * len(self.layers)
        if not self.rewires:
            for i, (layer, gw) in enumerate(zip(self.layers, grads_w)):
                layer.theta -= lr * (self._update(i, gw) + c.alpha * np.sign(layer.theta))
            return replaced
        for i, (layer, gw) in enumerate(zip(self.layers, grads_w)):
            g_theta = gw * layer.slot_sign  # dL/dtheta = s * dL/dw on active connections
            if c.method == "soft-deepr":
                dense = layer.theta_dense
                idx = (layer.rows, layer.cols)
                dense[idx] -= lr * (self._update(i, g_theta, idx) + c.alpha)
                dense += lr * c.noise * self.rng.standard_normal(dense.shape)
                np.maximum(dense, self.theta_min[i], out=dense)
                unusable = ~(dense <= THETA_MAX)  # NaN, inf or beyond float32 (see dead_slots)
                n_bad = int(np.count_nonzero(unusable))
                if n_bad:
                    self.unusable_thetas += n_bad
                    # a diverging update: such thetas become dormant at the clip
                    # (np.maximum keeps NaN), so no NaN/inf weight and no
                    # connection stuck outside the budget bookkeeping
                    dense[unusable] = self.theta_min[i]
                if self.moments[i]:
                    dormant = dense <= 0
                    self.moments[i]["m"][dormant] = 0.0
                    self.moments[i]["v"][dormant] = 0.0
                replaced[i] = soft_update_active(self.rng, layer)
                continue
            layer.theta -= lr * (self._update(i, g_theta) + c.alpha)
            if c.noise:
                layer.theta += lr * c.noise * self.rng.standard_normal(layer.theta.shape)
            self.unusable_thetas += int(np.count_nonzero(~(layer.theta <= THETA_MAX)))  # NaN too
            if c.method == "deepr":
                try:
                    replaced[i] = rewire_deepr(self.rng, layer, reset=list(self.moments[i].values()))
                except InvariantError as exc:  # say which layer (the rewiring knows only the core)
                    raise InvariantError(f"weight layer {i} ({layer.n_in} x {layer.n_out}): {exc}") from None
        if c.method == "global-deepr":
            before = [len(dead_slots(layer.theta)) for layer in self.layers]
            rewire_global(self.rng, self.layers, self.initial_budgets,
                          states=self.moments if self.config.optimizer == "adam" else None)
            replaced = before
        return replaced

    # ------------------------------------------------------------------
    def state_arrays(self) -> Dict[str, np.ndarray]:
        """Everything needed to continue training exactly (for checkpoints)."""
        out: Dict[str, np.ndarray] = {"adam_t": np.array(self.t)}
        for i, layer in enumerate(self.layers):
            out[f"l{i}_signs"] = layer.signs
            out[f"l{i}_slot_rows"] = layer.rows
            out[f"l{i}_slot_cols"] = layer.cols
            out[f"l{i}_slot_theta"] = layer.theta
            if layer.theta_dense is not None:
                out[f"l{i}_theta_dense"] = layer.theta_dense
            for name, arr in self.moments[i].items():
                out[f"l{i}_adam_{name}"] = arr
        return out

    def load_state_arrays(self, arrays) -> None:
        self.t = int(arrays["adam_t"])
        for i, layer in enumerate(self.layers):
            layer.signs = np.array(arrays[f"l{i}_signs"], dtype=np.int8)
            if f"l{i}_theta_dense" in arrays:
                layer.theta_dense = np.array(arrays[f"l{i}_theta_dense"], dtype=np.float64)
            layer.set_slots(np.array(arrays[f"l{i}_slot_rows"]), np.array(arrays[f"l{i}_slot_cols"]),
                            np.array(arrays[f"l{i}_slot_theta"]))
            for name in list(self.moments[i]):
                self.moments[i][name] = np.array(arrays[f"l{i}_adam_{name}"], dtype=np.float64)
