"""Training recurrent spiking networks with DEEP R under per-core budgets (the ``train`` command's
``kind: recurrent`` path).

The network is a training graph (input -> rec, rec -> rec without
self-connections, rec -> out; or several recurrent populations with any
projections between them) mapped by ``plan_graph``: a core of a recurrent
population holds K_c connections over the UNION of every projection into it
(``in_rec`` and ``rec_rec`` for one population: one budget, one input-axon
limit over all of them). One :class:`DeepR` layer per post population over its
concatenated pre space ([input channels | rec neurons] for ``rec``) keeps that
exact at every step. Each training step:

1. the DeepR slots become the dense weights and masks of H6's
   :class:`RecurrentModel` (w = sign * theta where active; dormant = masked);
2. BPTT on the chip's CUBA LIF update gives dL/dW per projection (masked);
   the gradients are clipped to a global norm (``bptt.clip_norm``);
3. the concatenated gradient, read at every slot, is DeepR's dL/dw; DeepR's
   step applies Adam (dormant entries guarded), L1, noise and the method's
   rewiring, exact K_c on every core.

Everything else (lock, checkpoints, bit-identical ``--resume``, history,
progress bar) is :class:`~deepr_neuro.training.trainer.Trainer`'s. The run
directory is a bundle version 2 with the manifest's ``recurrent`` block (the
contract with export / simulate: README "Run directory").
Pure NumPy: no Lava or Brian2 import.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from deepr_neuro.training.recurrent import RecurrentModel, encode_batch, evaluate, length_batches
from deepr_neuro.training.recurrent_spec import recurrent_core_spec
from deepr_neuro.training.trainer import Trainer

__all__ = ["RecurrentTrainer", "trainer_class"]


class RecurrentTrainer(Trainer):
    """A Trainer whose gradient comes from BPTT through H6's RecurrentModel."""

    def __init__(self, profile, spec, settings, dataset, out_dir, profile_path=None, spec_path=None):
        super().__init__(profile, spec, settings, dataset, out_dir, profile_path, spec_path)
        self.core_spec = recurrent_core_spec(spec)
        shapes = self.core_spec.shapes()
        self.model = RecurrentModel(self.core_spec, {k: np.zeros(s) for k, s in shapes.items()},
                                    {k: np.zeros(s, dtype=bool) for k, s in shapes.items()})
        self._rescale_init()
        self._sync_model()

    # -- DeepR slots <-> the model's dense projections -----------------------------------
    def _rescale_init(self) -> None:
        """Initial |w| ~ init_scale / sqrt(fan-in of the projection) (H6's init), not DeepR's
        1 / sqrt(n_in of the concatenated pre space): a spiking net needs its input to reach
        the threshold. Deterministic (no random draw), so a resume is unaffected."""
        for layer, lp in zip(self.deepr.layers, self.plan.layers):
            factor = np.ones(len(layer.theta))
            for s in lp.sources:
                on = (layer.cols >= s.offset) & (layer.cols < s.offset + s.size)
                fan = max(s.budget / lp.n_out, 1.0)
                factor[on] = self.spec.projections[s.projection].init_scale * math.sqrt(lp.n_in) / math.sqrt(fan)
            theta = layer.theta * factor
            if layer.theta_dense is not None:
                layer.theta_dense[layer.rows, layer.cols] = theta
            layer.set_slots(layer.rows, layer.cols, theta)

    def _sync_model(self, quantize_bits: Optional[int] = None) -> None:
        """The model's weights and masks from the DeepR slots (w = sign * theta where active).
        ``quantize_bits``: the forward pass sees the chip's weights (QAT, straight-through)."""
        for layer, lp in zip(self.deepr.layers, self.plan.layers):
            active = layer.active_mask()
            W = np.zeros((lp.n_out, lp.n_in), dtype=np.float32)
            M = np.zeros((lp.n_out, lp.n_in), dtype=bool)
            r, c = layer.rows[active], layer.cols[active]
            W[r, c] = layer.weights()[active]
            M[r, c] = True
            for s in lp.sources:
                w = np.ascontiguousarray(W[:, s.offset:s.offset + s.size].T)
                if quantize_bits:
                    from deepr_neuro.network.fixed_point import fake_quantize

                    w = fake_quantize(w, quantize_bits).astype(np.float32)
                self.model.weights[s.projection] = w
                self.model.masks[s.projection] = np.ascontiguousarray(M[:, s.offset:s.offset + s.size].T)

    def _slot_grads(self, grads: Dict[str, np.ndarray]):
        """dL/dw of every DeepR slot, read from the per-projection dense gradients."""
        out = []
        for layer, lp in zip(self.deepr.layers, self.plan.layers):
            G = np.zeros((lp.n_out, lp.n_in), dtype=np.float64)
            for s in lp.sources:
                G[:, s.offset:s.offset + s.size] = grads[s.projection].T
            out.append(G[layer.rows, layer.cols])
        return out

    # -- scores -------------------------------------------------------------------------------
    def score(self, which: str) -> float:
        self._sync_model()
        x, L, y = self.data.part(which)
        return evaluate(self.model, x, L, y)

    # -- one epoch (the loop is Trainer.run_epoch's) ---------------------------------------------
    progress_every = 20

    def epoch_batches(self):
        """Batches of similar length (less padding), in random order (training.recurrent.length_batches)."""
        return length_batches(self.data.len_train, self.settings.batch_size, self.data_rng)

    def batch_gradient(self, idx, qat_bits):
        """BPTT on the batch; gradients clipped to a global norm, read at DeepR's slots."""
        b = self.spec.bptt
        spikes, steps = encode_batch(self.core_spec.encoding, self.data.x_train, self.data.len_train, idx)
        loss, grads, info = self.model.loss_and_grads(spikes, steps, self.data.y_train[idx], b.rate_reg, b.rate_target)
        if b.clip_norm:
            norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
            if norm > b.clip_norm:
                for g in grads.values():
                    g *= b.clip_norm / norm
        return loss, self._slot_grads(grads), {"train_accuracy": info["accuracy"],
                                               "firing_rate": float(info["rate"].mean())}

    def weights_changed(self, qat_bits):
        self._sync_model(qat_bits)

    # -- the bundle (version 2, recurrent block) --------------------------------------------------------
    def network_arrays(self) -> Dict[str, np.ndarray]:
        arrays: Dict[str, np.ndarray] = {}
        for name, p in self.projection_arrays().items():
            arrays[f"proj/{name}/rows"] = p["rows"].astype(np.int32)
            arrays[f"proj/{name}/cols"] = p["cols"].astype(np.int32)
            arrays[f"proj/{name}/weight"] = p["weight"].astype(np.float32)
        arrays["pop/input/core"] = np.concatenate(
            [np.full(c.n_neurons, c.core_id, dtype=np.int32) for c in self.plan.input_cores])
        for lp in self.plan.layers:
            arrays[f"pop/{lp.name}/core"] = lp.core_of_post
        arrays["rewired_per_step"] = np.array([v for e in self.rewired_per_step for v in e], dtype=np.int32)
        return arrays

    def graph_block(self) -> Dict[str, Any]:
        pops = [{"name": "input", "size": int(self.spec.n_in), "role": "input",
                 "cores": [{"core": c.core_id, "start": c.post_start, "stop": c.post_stop}
                           for c in self.plan.input_cores]}]
        for lp in self.plan.layers:
            pops.append({"name": lp.name, "size": lp.n_out, "role": "readout" if lp.name == "out" else "hidden",
                         "cores": [{"core": c.core_id, "start": c.post_start, "stop": c.post_stop,
                                    "budget": c.budget, "capacity": c.capacity, "axon_limit": c.axon_limit,
                                    "budget_by_projection": {s.projection: int(v) for s, v in
                                                             zip(lp.sources, c.budget_by_projection)}}
                                   for c in lp.cores]})
        projs = [{"name": s.projection, "pre": s.pre, "post": lp.name, "budget": s.budget,
                  **({"allow_self": False} if s.masks_self else {})}
                 for lp in self.plan.layers for s in lp.sources]
        return {"populations": pops, "projections": projs, "readout": "out"}

    def manifest(self) -> Dict[str, Any]:
        m = super().manifest()
        m.pop("layers", None)
        m.pop("input_cores", None)
        m["graph"] = self.graph_block()
        cs = self.core_spec
        neurons = {p.name: {"du": int(p.lif.du), "dv": int(p.lif.dv), "vth": int(p.lif.vth)} for p in cs.populations}
        neurons["out"] = {"du": int(cs.out.du), "dv": int(cs.out.dv), "vth": int(cs.out.vth)}
        norm = getattr(self.data, "norm", {}) or {}
        m["recurrent"] = {
            "encoding": self.core_spec.encoding.info(),
            "normalisation": {k: [float(v) for v in np.asarray(norm[k]).ravel()] for k in ("mean", "std")
                              if k in norm},
            "readout": "final_v",
            "nonlinearity": self.core_spec.kind,
            "neurons": neurons,
            "steps_per_frame": int(self.core_spec.encoding.steps_per_frame),
            "weight_units": "threshold (deploy W = round(w * vth / 2**weight_exp))",
        }
        pot = sum(lp.n_in * lp.n_out - lp.n_out * lp.masked_per_post for lp in self.plan.layers)
        m["metrics"]["potential_connections"] = int(pot)
        return m

    def write_bundle(self) -> None:
        from deepr_neuro.store.bundle import save_bundle
        from deepr_neuro.training.trainer import _names_file

        with _names_file(self.out_dir):
            save_bundle(self.out_dir, self.manifest(), self.network_arrays())


def trainer_class(spec) -> type:
    """Trainer for an MLP spec, RecurrentTrainer for a ``kind: recurrent`` one (what
    ``trainer.train(trainer_cls=...)`` is given by the CLI and the sweep)."""
    return RecurrentTrainer if getattr(spec, "kind", None) == "recurrent" else Trainer
