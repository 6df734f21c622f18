"""Training loop: minibatches, DEEP R steps, per-epoch evaluation, checkpoints, resume.

``train`` maps the model onto the profile's cores (refusing with a table
when it does not fit), trains with DEEP R so that every core keeps its budget
after every step, and writes the run directory:

    runs/<name>/manifest.json      bundle manifest (DESIGN.md section 6)
    runs/<name>/network.npz        active connections, per-post-neuron cores
    runs/<name>/checkpoint.npz     full training state after the last epoch
    runs/<name>/history.json       per-epoch loss, accuracies, rewiring counts

A checkpoint holds every array and both random generators' states, so a run
resumed with ``--resume`` ends bit-for-bit where an uninterrupted one does.
It also records the profile, the model spec and every setting: a resume
under anything else (or from a damaged checkpoint) is refused, naming the
first differing field or the bad array, before anything is written. The run
directory's marker, lock and safe replacement live in ``rundir.py``.
Does not import Lava or Brian2.
"""
from __future__ import annotations

import io
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from deepr_neuro import __version__
from deepr_neuro.store.bundle import _atomic_write, git_commit, save_bundle, write_json
from deepr_neuro.training.deepr import DeepR, DeepRConfig
from deepr_neuro.errors import BundleError, ConfigError, InvariantError
from deepr_neuro.hardware.mapping import CorePlan, NetworkPlan, plan_graph
from deepr_neuro.training.model_spec import TrainingSpec, model_graph
from deepr_neuro.training.recurrent_spec import check_fits_data
from deepr_neuro.network.fixed_point import fake_quantize
from deepr_neuro.training.sparse_mlp import loss_and_grads, predict

CHECKPOINT = "checkpoint.npz"
HISTORY = "history.json"


# Settings of a run beyond the spec's training block: (name, type, default).
RUN_FIELDS = (("dataset", str, None), ("data_dir", Optional[str], None),
              ("connectivity", Optional[float], None), ("weight_bits", Optional[int], None))


def _settings_from_spec(cls, spec, data_dir=None, connectivity=None, weight_bits=None):
    """Effective settings: the spec's training block (already overridden by flags) and the run's."""
    t = spec.training
    return cls(dataset=spec.dataset, data_dir=data_dir, connectivity=connectivity, weight_bits=weight_bits,
               **{name: getattr(t, name) for name in TrainingSpec.model_fields})


def _prune_epoch(self) -> int:
    """prune-retrain: epochs trained dense before pruning (at least 1, at most epochs - 1)."""
    return min(max(1, round(self.prune_epoch_fraction * self.epochs)), max(1, self.epochs - 1))


def _deepr_config(self) -> DeepRConfig:
    values = {f.name: getattr(self, f.name) for f in fields(DeepRConfig)}
    if self.method == "l1":
        values["alpha"] = self.l1_alpha
    return DeepRConfig(**values)


# Effective settings of one run (spec defaults with command-line overrides): the
# run fields, then every TrainingSpec field (name, type and default declared once, there).
TrainSettings = make_dataclass(
    "TrainSettings",
    [(n, t, field(default=d)) for n, t, d in RUN_FIELDS[:2]]
    + [(n, f.annotation, field(default=f.default)) for n, f in TrainingSpec.model_fields.items()]
    + [(n, t, field(default=d)) for n, t, d in RUN_FIELDS[2:]],
    namespace={"from_spec": classmethod(_settings_from_spec), "prune_epoch": property(_prune_epoch),
               "deepr_config": _deepr_config, "__module__": __name__,
               "__doc__": "Effective settings of one run (spec defaults with command-line overrides)."})


def build_plan(profile, spec, settings: TrainSettings) -> NetworkPlan:
    """Map the model's layers onto the profile's cores with per-core budgets."""
    from deepr_neuro.training.model_spec import layer_budgets

    if getattr(spec, "kind", None) == "recurrent":
        from deepr_neuro.training.recurrent_spec import build_recurrent_plan

        return build_recurrent_plan(profile, spec, settings)
    connectivity = settings.connectivity
    if settings.method == "dense":
        if connectivity not in (None, 1.0):
            raise ConfigError(f"--method dense trains every connection: --connectivity must be 1.0 "
                              f"(got {connectivity}); use fixed-sparse or deepr for a sparse network")
        connectivity = 1.0
    budgets = layer_budgets(spec, connectivity, profile, settings.weight_bits)
    profile_name = Path(getattr(profile, "source", profile.name)).name

    def capacity(n_neurons: int, n_in: int) -> int:
        return profile.synapse_capacity(weight_bits=settings.weight_bits, sparse=True, n_neurons=n_neurons,
                                        n_axons=min(n_in, profile.input_axons_per_core))

    return plan_graph(model_graph(spec, budgets), neurons_per_core=profile.neurons_per_core, cores=profile.cores,
                      synapse_capacity=capacity, axon_limit=profile.input_axons_per_core,
                      profile_name=profile_name)


def core_specs(plan: NetworkPlan) -> List[List[CorePlan]]:
    """Every post population's cores, as the rewiring reads them (the plan's own cores)."""
    return [list(layer.cores) for layer in plan.layers]


def accuracy(x_uint8: np.ndarray, y: np.ndarray, deepr: DeepR, batch: int = 500) -> float:
    """Accuracy, converting to float one batch at a time (keeps peak memory low)."""
    if len(y) == 0:
        return float("nan")
    layers = deepr.sparse_layers()
    correct = 0
    for s in range(0, len(y), batch):
        correct += int(np.sum(predict(to_float(x_uint8[s:s + batch]), layers, batch=batch) == y[s:s + batch]))
    return correct / len(y)


def to_float(x_uint8: np.ndarray) -> np.ndarray:
    """The network's input: pixels 0..255 as x / 255 (data stays uint8 until a batch needs floats)."""
    return x_uint8.astype(np.float64) * (1.0 / 255.0)


def check_invariants(deepr: DeepR, plan: NetworkPlan, method: str) -> None:
    """The product's promise, checked after training (and after every step in tests):
    every core holds exactly its budget K_c (DEEP R and baselines; at most it for
    soft/global DEEP R), never more than its capacity, never more input axons
    than its limit. A break raises InvariantError naming layer, core, count and
    the limit's source (the toolkit's error, not a bare AssertionError)."""
    src = getattr(plan, "profile_name", None) or "profile"
    for layer, lp in zip(deepr.layers, plan.layers):
        counts = layer.core_counts()
        axons = layer.core_axons()
        if layer.forbidden is not None and layer.forbidden[layer.keys()[layer.active_mask()]].any():
            raise InvariantError(f"population '{lp.name}': a masked self-connection is active "
                                 f"(method {method}); the rewiring must never draw one")
        for c, n, a in zip(lp.cores, counts, axons):
            where = f"layer '{lp.name}' core {c.core_id}"
            if method not in ("soft-deepr", "global-deepr") and n != c.budget:
                raise InvariantError(f"{where}: {n} synapses != budget {c.budget} (the core's share of "
                                     f"the layer's {lp.budget} connections; method {method})")
            if n > c.capacity:
                raise InvariantError(f"{where}: {n} synapses > capacity {c.capacity} "
                                     f"({src}: synapse memory / synapses_per_core)")
            if a > c.axon_limit:
                raise InvariantError(f"{where}: {a} input axons > limit {c.axon_limit} "
                                     f"({src}: input_axons_per_core)")


class Trainer:
    """One run: state, one epoch at a time, checkpoints."""

    def __init__(self, profile, spec, settings: TrainSettings, dataset, out_dir: Path,
                 profile_path: Optional[str] = None, spec_path: Optional[str] = None):
        self.profile, self.spec, self.settings, self.data = profile, spec, settings, dataset
        self.out_dir = Path(out_dir)
        self.profile_path, self.spec_path = profile_path, spec_path
        check_fits_data(spec, dataset)  # a clear error before any mapping or training
        self.plan = build_plan(profile, spec, settings)
        self.init_rng = np.random.default_rng(settings.seed)
        self.data_rng = np.random.default_rng([settings.seed, 1])
        shapes = [(lp.n_in, lp.n_out) for lp in self.plan.layers]
        self.deepr = DeepR(self.init_rng, shapes, core_specs(self.plan), settings.deepr_config(), lr=settings.lr,
                           forbidden=[lp.forbidden_keys() for lp in self.plan.layers])
        self.epoch = 0
        self.history: List[Dict[str, Any]] = []
        self.rewired_per_step: List[List[int]] = []  # per epoch: rewired connections per step (all layers)
        # called as after_step(trainer) after every training step (tests check the budgets there)
        self.after_step: Optional[Callable[["Trainer"], None]] = None

    # -- checkpoints ------------------------------------------------------
    def checkpoint_meta(self) -> Dict[str, Any]:
        from deepr_neuro.training.model_spec import model_spec_to_dict
        from deepr_neuro.hardware.profile import profile_to_dict

        return {"epoch": self.epoch, "settings": asdict(self.settings), "history": self.history,
                "init_rng": self.init_rng.bit_generator.state, "data_rng": self.data_rng.bit_generator.state,
                "dataset_sha256": self.data.sha256,
                "profile": profile_to_dict(self.profile), "model": model_spec_to_dict(self.spec)}

    def save_checkpoint(self) -> None:
        arrays = self.deepr.state_arrays()
        arrays["meta_json"] = np.frombuffer(json.dumps(self.checkpoint_meta()).encode("utf-8"), dtype=np.uint8)
        arrays["rewired_per_step"] = np.array(
            [v for epoch in self.rewired_per_step for v in epoch], dtype=np.int32)
        arrays["rewired_epoch_lengths"] = np.array([len(e) for e in self.rewired_per_step], dtype=np.int64)
        # built in memory, then one atomic write: a full disk fails cleanly and keeps the last checkpoint
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        with _names_file(self.out_dir / CHECKPOINT):
            _atomic_write(self.out_dir / CHECKPOINT, lambda f: f.write(data))
        with _names_file(self.out_dir / HISTORY):
            write_json(self.out_dir / HISTORY, {"epochs": self.history})

    def load_checkpoint(self) -> None:
        """Restore the state, after checking that the checkpoint is whole and was
        written under the same profile, model and settings (nothing is written
        before that: a refused --resume leaves the run as it was)."""
        path = self.out_dir / CHECKPOINT
        if not path.exists():
            raise BundleError(f"{path}: no checkpoint to resume from (start without --resume)")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except OSError as e:
            if e.errno is not None:  # permission denied and the like: main() names the file
                raise
            raise BundleError(f"{path}: damaged checkpoint ({_cut(e)}); delete it to start over") from None
        except Exception as e:
            raise BundleError(f"{path}: damaged checkpoint ({_cut(e)}); delete it to start over") from None
        if "meta_json" not in arrays:
            raise BundleError(f"{path}: checkpoint has no array 'meta_json'; delete it to start over")
        try:
            meta = json.loads(bytes(arrays.pop("meta_json")).decode("utf-8"))
        except Exception as e:
            raise BundleError(f"{path}: array 'meta_json' is not valid JSON ({_cut(e)}); "
                              "delete the checkpoint to start over") from None
        self._check_meta(path, meta)
        self._check_same_run(path, meta)
        self._check_arrays(path, arrays, int(meta["epoch"]))
        try:
            self.deepr.load_state_arrays(arrays)
            self.init_rng.bit_generator.state = meta["init_rng"]
            self.data_rng.bit_generator.state = meta["data_rng"]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise BundleError(f"{path}: checkpoint state cannot be restored ({type(e).__name__}: {_cut(e)}); "
                              "delete it to start over") from None
        self.epoch = int(meta["epoch"])
        self.history = list(meta["history"])
        flat = arrays["rewired_per_step"].tolist()
        self.rewired_per_step, pos = [], 0
        for n in arrays["rewired_epoch_lengths"].tolist():
            self.rewired_per_step.append(flat[pos:pos + n])
            pos += n

    @staticmethod
    def _check_meta(path: Path, meta: Any) -> None:
        if not isinstance(meta, dict):
            raise BundleError(f"{path}: 'meta_json' is {type(meta).__name__}, expected an object; "
                              "delete the checkpoint to start over")
        kinds = {"epoch": int, "settings": dict, "history": list, "init_rng": dict, "data_rng": dict}
        for key, kind in kinds.items():
            if key not in meta:
                raise BundleError(f"{path}: checkpoint field '{key}' missing; delete it to start over")
            if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
                raise BundleError(f"{path}: checkpoint field '{key}' is {_cut(repr(meta[key]))}, expected "
                                  f"{kind.__name__}; delete it to start over")
        if meta["epoch"] < 0 or len(meta["history"]) != meta["epoch"]:
            raise BundleError(f"{path}: checkpoint field 'epoch' is {meta['epoch']} but 'history' holds "
                              f"{len(meta['history'])} epochs; delete it to start over")

    def _check_same_run(self, path: Path, meta: Dict[str, Any]) -> None:
        """The first field that differs from the checkpoint's, as a ConfigError."""
        from deepr_neuro.training.model_spec import model_spec_to_dict
        from deepr_neuro.hardware.profile import profile_to_dict

        saved = meta["settings"]
        mine = asdict(self.settings)
        # a setting newer than the checkpoint is fine while it keeps its default
        defaults = {f.name: f.default for f in fields(TrainSettings)}
        for k, v in mine.items():
            if k != "epochs" and saved.get(k, defaults.get(k)) != v:
                raise ConfigError(f"{path}: --resume: setting '{k}' is {_cut(repr(saved.get(k)))} in the "
                                  f"checkpoint, {_cut(repr(v))} now; drop the flag (or pass the original "
                                  "value) or train a new run with another --out")
        done = int(meta["epoch"])
        if self.settings.epochs < done:
            raise ConfigError(f"{path}: --resume: the checkpoint has {done} epochs done, --epochs is "
                              f"{self.settings.epochs}; pass --epochs {done} or more (or drop the flag), "
                              "or train a new run with another --out")
        # checkpoints written before these were recorded are checked by their array shapes only
        for part, now, flag in (("profile", profile_to_dict(self.profile), "--profile"),
                                ("model", model_spec_to_dict(self.spec), "--model")):
            old = meta.get(part)
            if not isinstance(old, dict):
                continue
            for k in now:
                if k in ("training", "description") or k not in old:
                    continue  # settings are compared above; free text and fields added later do not matter
                if old[k] != now[k]:
                    raise ConfigError(
                        f"{path}: --resume: {part} field '{k}' is {_cut(repr(old[k]))} in the checkpoint, "
                        f"{_cut(repr(now[k]))} now; pass the original {flag} "
                        f"(the checkpoint's {part} is {_cut(repr(old.get('name')))}) or train a new run "
                        "with another --out")
        if meta.get("dataset_sha256") != self.data.sha256:
            raise ConfigError(f"{path}: the data set changed since the checkpoint (sha256 differs)")

    def _check_arrays(self, path: Path, arrays: Dict[str, np.ndarray], epoch: int) -> None:
        """Every array a fresh trainer of this plan has, of a usable kind and shape."""
        fresh = self.deepr.state_arrays()
        for key in list(fresh) + ["rewired_per_step", "rewired_epoch_lengths"]:
            if key not in arrays:
                raise BundleError(f"{path}: checkpoint array '{key}' missing (written by another model or "
                                  "damaged); delete it to start over, or resume with the original --model")

        def bad(key: str, why: str) -> BundleError:
            return BundleError(f"{path}: checkpoint array '{key}' {why}; delete the checkpoint to start over, "
                               "or resume with the original --model / --profile")

        if arrays["adam_t"].shape != () or arrays["adam_t"].dtype.kind not in "iu":
            raise bad("adam_t", f"is {arrays['adam_t'].dtype}{list(arrays['adam_t'].shape)}, expected one integer")
        for i, (layer, lp) in enumerate(zip(self.deepr.layers, self.plan.layers)):
            for key, ref in fresh.items():
                if not key.startswith(f"l{i}_") or key.endswith("_slot_rows") or key.endswith("_slot_cols") \
                        or key.endswith("_slot_theta") or "_adam_" in key:
                    continue
                if arrays[key].shape != ref.shape:
                    raise bad(key, f"has shape {arrays[key].shape}, expected {ref.shape}")
            rows, cols, theta = (arrays[f"l{i}_slot_{k}"] for k in ("rows", "cols", "theta"))
            n = len(theta) if theta.ndim == 1 else -1
            for key, arr, kinds in ((f"l{i}_slot_rows", rows, "iu"), (f"l{i}_slot_cols", cols, "iu"),
                                    (f"l{i}_slot_theta", theta, "f")):
                if arr.ndim != 1 or len(arr) != n or arr.dtype.kind not in kinds:
                    raise bad(key, f"is {arr.dtype}{list(arr.shape)}, expected 1-D {kinds} of the slots' "
                                   f"length {n}")
            if n > lp.n_in * lp.n_out:
                raise bad(f"l{i}_slot_theta", f"holds {n} slots, more than the layer's {lp.n_in * lp.n_out} "
                                              "connections")
            # slot rows are post-synaptic neurons, cols pre-synaptic (signs are n_out x n_in)
            if n and (rows.min() < 0 or rows.max() >= lp.n_out or cols.min() < 0 or cols.max() >= lp.n_in):
                raise bad(f"l{i}_slot_rows", f"indexes outside the layer's {lp.n_out} x {lp.n_in} weights")
            dense = f"l{i}_theta_dense"
            moment_shape = arrays[dense].shape if dense in fresh else (n,)
            t = int(arrays["adam_t"])
            for key in fresh:
                if not key.startswith(f"l{i}_adam_"):
                    continue
                arr = arrays[key]
                if arr.shape != moment_shape:
                    raise bad(key, f"has shape {arr.shape}, expected {moment_shape}")
                # per-connection step counts (adam_per_connection) are whole numbers in 0..adam_t
                # whatever the run did (moments may be non-finite in a diverged run, which
                # resumes and stays flagged, so they are not value-checked)
                if key.endswith("_adam_n") and (arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)) or (
                        arr.size and (arr.min() < 0 or arr.max() > t or not np.array_equal(arr, np.floor(arr))))):
                    raise bad(key, f"holds step counts that are not whole numbers in 0..{t} (adam_t)")
        lengths, flat = arrays["rewired_epoch_lengths"], arrays["rewired_per_step"]
        if lengths.ndim != 1 or len(lengths) != epoch or lengths.dtype.kind not in "iu" or \
                flat.ndim != 1 or int(lengths.sum()) != len(flat) or (len(lengths) and lengths.min() < 0):
            raise bad("rewired_per_step", f"does not hold {epoch} epochs of per-step counts")

    # -- training ---------------------------------------------------------
    def score(self, which: str) -> float:
        """Accuracy on 'val' or 'test' with the current weights."""
        x, y = (self.data.x_val, self.data.y_val) if which == "val" else (self.data.x_test, self.data.y_test)
        return accuracy(x, y, self.deepr)

    def lr_at(self, epoch: int) -> float:
        s = self.settings
        lr = s.lr
        if s.method in ("dense", "prune-retrain", "l1") and s.dense_lr is not None:
            lr = s.dense_lr  # a dense network does not train at DEEP R's sparse learning rate
        return lr * s.lr_decay ** epoch

    def maybe_prune(self, final: bool = False) -> bool:
        """Baselines that prune: prune-retrain after its dense phase, l1 at the very end."""
        m = self.settings.method
        due = (m == "prune-retrain" and self.epoch == self.settings.prune_epoch) or (m == "l1" and final)
        over_budget = sum(layer.n_active for layer in self.deepr.layers) > self.plan.total_budget
        if due and over_budget:
            self.deepr.prune()
            return True
        return False

    # -- one epoch: one loop for every kind of network; a subclass says how an epoch is cut
    # into batches, what a batch's gradient is, and what to do when the weights changed
    progress_every = 200  # steps between loss updates on the progress bar

    def epoch_batches(self) -> List[np.ndarray]:
        """This epoch's batches of training-sample indices (drawn from data_rng)."""
        s = self.settings
        n = len(self.data.y_train)
        order = self.data_rng.permutation(n)
        return [order[i * s.batch_size:(i + 1) * s.batch_size] for i in range(-(-n // s.batch_size))]

    def batch_gradient(self, idx: np.ndarray, qat_bits: Optional[int]):
        """(loss, dL/dw per DeepR layer, per-batch figures averaged into the epoch record).
        ``qat_bits``: forward with the chip's weights (quantization-aware, straight-through)."""
        layers = self.deepr.sparse_layers()
        if qat_bits:
            for layer in layers:
                layer.w = fake_quantize(layer.w, qat_bits)
        loss, grads, _ = loss_and_grads(to_float(self.data.x_train[idx]), self.data.y_train[idx], layers)
        return loss, grads, {}

    def weights_changed(self, qat_bits: Optional[int]) -> None:
        """Before an epoch's first step and after every update (a model that keeps its own
        copy of the weights takes them here)."""

    def run_epoch(self, bar=None) -> Dict[str, Any]:
        s = self.settings
        pruned = self.maybe_prune()
        qat = self.epoch >= s.epochs - s.qat_epochs
        qat_bits = (s.weight_bits or self.profile.weight_bits) if qat else None
        n = len(self.data.y_train)
        batches = self.epoch_batches()
        lr = self.lr_at(self.epoch)
        rewired = np.zeros(len(self.deepr.layers), dtype=np.int64)
        unusable_before = self.deepr.unusable_thetas
        per_step = np.zeros(len(batches), dtype=np.int32)
        loss_sum = 0.0
        seen = 0
        figures: Dict[str, float] = {}
        t_grad = t_rewire = 0.0
        if bar is not None:
            bar.set_description(f"epoch {self.epoch + 1}/{s.epochs}")
        t0 = time.perf_counter()
        self.weights_changed(qat_bits)
        # overflow turns into a non-finite loss, reported once per run below
        # (instead of numpy's RuntimeWarnings from inside the step)
        with np.errstate(over="ignore", invalid="ignore"):
            for i, idx in enumerate(batches):
                ta = time.perf_counter()
                loss, grads, batch_figures = self.batch_gradient(idx, qat_bits)
                tb = time.perf_counter()
                replaced = self.deepr.step(grads, lr)
                self.weights_changed(qat_bits)
                t_rewire += time.perf_counter() - tb
                t_grad += tb - ta
                rewired += replaced
                per_step[i] = sum(replaced)
                if self.after_step is not None:
                    self.after_step(self)
                loss_sum += loss * len(idx)
                seen += len(idx)
                for k, v in batch_figures.items():
                    figures[k] = figures.get(k, 0.0) + v * len(idx)
                if bar is not None:
                    bar.update(1)
                    if i % self.progress_every == 0:
                        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
        seconds = time.perf_counter() - t0
        self.epoch += 1
        record = {
            "epoch": self.epoch, "lr": lr, "train_loss": loss_sum / n,
            "val_accuracy": self.score("val"), "test_accuracy": self.score("test"),
            "rewired": [int(v) for v in rewired], "seconds": seconds,
            "seconds_gradient": t_grad, "seconds_update_and_rewiring": t_rewire,
            "active": [int(layer.n_active) for layer in self.deepr.layers],
            "quantization_aware": bool(qat), **{k: v / n for k, v in figures.items()},
        }
        if pruned:
            record["pruned_before_epoch"] = True
        unusable = self.deepr.unusable_thetas - unusable_before
        if unusable:  # an update overflowed: those thetas were retired as dead (budgets
            record["unusable_thetas"] = int(unusable)  # stay exact); the epoch diverged
        self.history.append(record)
        self.rewired_per_step.append(per_step.tolist())
        self.save_checkpoint()
        return record

    def projection_arrays(self) -> Dict[str, Dict[str, np.ndarray]]:
        """Every projection's own connections: {name: {pre, post, rows, cols, weight}},
        cols local to its source (the rows of the concatenated pre space that
        belong to it), sorted by (row, col); for an MLP projection i is layer i."""
        out: Dict[str, Dict[str, np.ndarray]] = {}
        for layer, lp in zip(self.deepr.layers, self.plan.layers):
            r, c, w = layer.sorted_arrays()
            for s in lp.sources:
                rows, cols, weight = lp.split_by_source(r, c, w)[s.projection]
                out[s.projection] = {"pre": s.pre, "post": lp.name, "rows": rows, "cols": cols.astype(np.int32),
                                     "weight": weight.astype(np.float32)}
        return out

    def network_arrays(self) -> Dict[str, np.ndarray]:
        arrays: Dict[str, np.ndarray] = {}
        for i, (layer, lp) in enumerate(zip(self.deepr.layers, self.plan.layers)):
            r, c, w = layer.sorted_arrays()
            arrays[f"l{i}_rows"] = r
            arrays[f"l{i}_cols"] = c
            arrays[f"l{i}_weight"] = w.astype(np.float32)
            arrays[f"l{i}_core"] = lp.core_of_post
        arrays["input_core"] = np.concatenate(
            [np.full(c.n_neurons, c.core_id, dtype=np.int32) for c in self.plan.input_cores])
        # connections rewired at every training step (all layers), for rewiring-dynamics plots
        arrays["rewired_per_step"] = np.array([v for e in self.rewired_per_step for v in e], dtype=np.int32)
        return arrays

    def manifest(self) -> Dict[str, Any]:
        from deepr_neuro.training.model_spec import model_spec_to_dict
        from deepr_neuro.hardware.profile import profile_to_dict

        last = self.history[-1] if self.history else {}
        return {
            "profile": profile_to_dict(self.profile),
            "profile_path": self.profile_path,
            "model": model_spec_to_dict(self.spec),
            "model_path": self.spec_path,
            "layers": [{"name": lp.name, "n_in": lp.n_in, "n_out": lp.n_out, "budget": lp.budget,
                        "cores": [{"core": c.core_id, "post_start": c.post_start, "post_stop": c.post_stop,
                                   "budget": c.budget, "capacity": c.capacity, "axon_limit": c.axon_limit}
                                  for c in lp.cores]}
                       for lp in self.plan.layers],
            "input_cores": [{"core": c.core_id, "post_start": c.post_start, "post_stop": c.post_stop}
                            for c in self.plan.input_cores],
            "training": {**asdict(self.settings), "epochs_done": self.epoch},
            "seed": self.settings.seed,
            "package_version": __version__,
            "git_commit": git_commit(),
            "dataset": self.data.info(),
            "metrics": {
                "val_accuracy": last.get("val_accuracy"),
                "test_accuracy": last.get("test_accuracy"),
                "train_loss": last.get("train_loss"),
                "connections": int(sum(layer.n_active for layer in self.deepr.layers)),
                "potential_connections": int(sum(lp.n_in * lp.n_out for lp in self.plan.layers)),
                "seconds_per_epoch": (float(np.mean([h["seconds"] for h in self.history]))
                                      if self.history else None),
                "diverged_at_epoch": diverged_epoch(self.history),
            },
        }

    def write_bundle(self) -> None:
        with _names_file(self.out_dir):
            save_bundle(self.out_dir, self.manifest(), self.network_arrays())


@contextmanager
def _names_file(path: Path):
    """An OSError without a file name (ENOSPC from a write) gets the file it was writing."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def _cut(value, n: int = 200) -> str:
    text = str(value)
    return text if len(text) <= n else text[:n] + "..."


def _progress(total: int, enabled: bool):
    """One bar for the whole run: steps, rate and ETA (tqdm)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="step", mininterval=0.5, leave=False, dynamic_ncols=True)


def log_line(text: str, bar=None) -> None:
    """Print above the progress bar without breaking it."""
    if bar is not None:
        bar.write(text)
    else:
        print(text, flush=True)


def diverged_epoch(history: Sequence[Dict[str, Any]]) -> Optional[int]:
    """First epoch whose training loss was not finite, or whose updates made a
    theta NaN / inf / beyond float32 (retired as dead by the rewiring, so the
    loss alone may not show it); None: training never diverged."""
    for h in history:
        loss = h.get("train_loss")
        if (loss is not None and not np.isfinite(loss)) or h.get("unusable_thetas"):
            return int(h["epoch"])
    return None


def train(profile, spec, settings: TrainSettings, dataset, out_dir, *, resume: bool = False,
          progress: bool = True, profile_path: Optional[str] = None, spec_path: Optional[str] = None,
          on_epoch: Optional[Callable[[Dict[str, Any], Any], None]] = None,
          stop_after_epochs: Optional[int] = None, trainer_cls: Optional[type] = None) -> Trainer:
    """Train (or resume) one run and write its bundle. Returns the trainer.

    ``stop_after_epochs`` ends early after that many epochs *in this call*,
    leaving a checkpoint (used to test resumption as if the run was killed).
    ``trainer_cls``: the Trainer subclass (recurrent_trainer.trainer_class(spec)); default Trainer.
    """
    if trainer_cls is None:
        if getattr(spec, "kind", None) == "recurrent":
            raise ConfigError("a recurrent spec trains with trainer_cls=recurrent_trainer.RecurrentTrainer "
                              "(recurrent_trainer.trainer_class(spec) picks it)")
        trainer_cls = Trainer
    trainer = trainer_cls(profile, spec, settings, dataset, out_dir, profile_path, spec_path)
    out = Path(out_dir)
    if resume:
        trainer.load_checkpoint()
    elif (out / CHECKPOINT).exists() or (out / "manifest.json").exists():
        raise ConfigError(f"{out}: already holds a run; pass --resume to continue it, or choose a new --out")
    else:
        from deepr_neuro.store.rundir import mark_run

        mark_run(out)  # recognisable as a run (and so replaceable by --overwrite) from the start
    done_here = 0
    steps_per_epoch = -(-len(dataset.y_train) // settings.batch_size)
    bar = _progress(steps_per_epoch * max(0, settings.epochs - trainer.epoch), progress)
    try:
        while trainer.epoch < settings.epochs:
            record = trainer.run_epoch(bar)
            if diverged_epoch(trainer.history) == record["epoch"]:  # first epoch with a loss or thetas not finite
                log_line(f"warning: {out}: training diverged in epoch {record['epoch']} (loss or thetas not finite): "
                         f"the weights are unusable; lower --lr (epoch lr {record['lr']:g})", bar)
            if on_epoch is not None:
                on_epoch(record, bar)
            done_here += 1
            if stop_after_epochs is not None and done_here >= stop_after_epochs and trainer.epoch < settings.epochs:
                return trainer
    finally:
        if bar is not None:
            bar.close()
    if trainer.maybe_prune(final=True):
        last = trainer.history[-1]
        for key in ("val_accuracy", "test_accuracy"):
            last[f"{key}_before_prune"] = last[key]
        last["val_accuracy"] = trainer.score("val")
        last["test_accuracy"] = trainer.score("test")
        last["active"] = [int(layer.n_active) for layer in trainer.deepr.layers]
    check_invariants(trainer.deepr, trainer.plan, settings.method)
    trainer.write_bundle()
    return trainer
