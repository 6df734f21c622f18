"""Model specs of recurrent spiking networks (``kind: recurrent`` in ``models/*.yaml``).

A recurrent spec names the temporal data set, the frame encoding (real frames
-> integer spike trains, ``network.frame_encoding``), one recurrent population
of the chip's CUBA LIF neuron (chip units du/dv/vth, or time constants
tau_syn/tau_mem in chip steps converted exactly as ``LifParams.from_tau``), the
three projections ``in_rec``, ``rec_rec`` (never a self-connection) and
``rec_out`` with their target connectivities, the readout (one integrator
neuron a class: ``training.recurrent``), BPTT settings and a ``training``
block (the MLP spec's :class:`TrainingSpec`, so every training flag works).

The MLP spec format (:class:`model_spec.ModelSpec`) is unchanged: a file is a
recurrent spec exactly when it says ``kind: recurrent``
(:func:`model_spec.load_model_spec` dispatches on it).

Budgets: projection q keeps K_q = round(p_q * potential_q) connections
(potential of ``rec_rec`` = n (n - 1)). ``--connectivity X`` sets p of every
projection whose ``scaled`` is true (by default ``in_rec`` and ``rec_rec``, the
projections into the recurrent population) to X; ``rec_out`` keeps its own p
unless its ``scaled`` is true. ``--method dense`` trains every connection.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from deepr_neuro.errors import ConfigError
from deepr_neuro.hardware.mapping import NetworkPlan, PopulationSpec, ProjectionSpec, TrainingGraph, plan_graph
from deepr_neuro.hardware.yaml_io import (FieldIssue, did_you_mean, echo, format_validation_error,
                                          read_yaml_mapping, validate_mapping)
from deepr_neuro.training.model_spec import (MAX_NAME_CHARS, MAX_TEXT_CHARS, ModelSpec, TrainingSpec,
                                             check_model_fits_data)

__all__ = ["RecurrentModelSpec", "is_recurrent_spec", "SEQUENCE_FEATURES", "recurrent_graph",
           "projection_budgets", "lif_params", "recurrent_core_spec", "load_any_model_spec",
           "any_model_spec_from_dict", "build_recurrent_plan", "load_recurrent_data", "check_recurrent_fits_data",
           "check_fits_data", "load_training_data"]

_CFG = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

# Features per frame of each temporal data set (known before the data loads, so a
# run is mapped and refused before anything is read or written).
SEQUENCE_FEATURES = {"spoken-digits": 13, "fashion-mnist-rows": 28}
SEQUENCE_CLASSES = {"spoken-digits": 10, "fashion-mnist-rows": 10}
PROJECTION_NAMES = ("in_rec", "rec_rec", "rec_out")
MAX_RECURRENT = 65_536
MAX_STEPS_PER_FRAME = 1000


class EncodingSpec(BaseModel):
    """Frames -> spikes (network.frame_encoding.FrameEncoding)."""

    model_config = _CFG
    steps_per_frame: int = Field(4, ge=1, le=MAX_STEPS_PER_FRAME, description="chip steps a frame is held")
    scale: float = Field(2.0, gt=0, le=1e6, description="levels per unit of a normalised feature")
    signed: bool = Field(True, description="two channels a feature (positive, negative part)")


class NeuronSpec(BaseModel):
    """The recurrent neuron: chip units (du, dv, vth) or time constants (tau_syn, tau_mem, vth)."""

    model_config = _CFG
    du: Optional[int] = Field(None, ge=0, le=4095, description="current decay (Lava units)")
    dv: Optional[int] = Field(None, ge=0, le=4095, description="voltage decay (Lava units)")
    tau_syn: Optional[float] = Field(None, ge=0, le=1e9, description="current time constant, chip steps")
    tau_mem: Optional[float] = Field(None, ge=0, le=1e9, description="voltage time constant, chip steps")
    vth: int = Field(1 << 10, ge=1, le=131071, description="threshold mantissa (Lava units)")

    @model_validator(mode="after")
    def _one_way(self) -> "NeuronSpec":
        chip = (self.du is not None, self.dv is not None)
        tau = (self.tau_syn is not None, self.tau_mem is not None)
        if any(chip) and any(tau):
            raise ValueError("give the decays in chip units (du, dv) or as time constants (tau_syn, tau_mem), "
                             "not both")
        if any(chip) and not all(chip):
            raise ValueError("give both du and dv (or tau_syn and tau_mem instead)")
        if any(tau) and not all(tau):
            raise ValueError("give both tau_syn and tau_mem (or du and dv instead)")
        return self


class RecurrentPopulationSpec(BaseModel):
    """The recurrent population ``rec``: its size, its split over cores and its neuron."""

    model_config = _CFG
    size: int = Field(gt=0, le=MAX_RECURRENT, description="recurrent neurons")
    max_neurons_per_core: Optional[int] = Field(None, gt=0, le=MAX_RECURRENT,
                                                description="at most this many of them on one core")
    neuron: NeuronSpec = NeuronSpec(tau_syn=4.0, tau_mem=16.0)


class ReadoutSpec(BaseModel):
    """The readout ``out``: non-spiking integrators, one a class (final v decides)."""

    model_config = _CFG
    du: int = Field(4095, ge=0, le=4095, description="current decay (4095: no current memory)")
    dv: int = Field(0, ge=0, le=4095, description="voltage decay (0: integrate without leak)")


class ProjectionTarget(BaseModel):
    """One projection's target connectivity and initial weight scale."""

    model_config = _CFG
    connectivity: float = Field(gt=0, le=1, description="fraction p of its potential connections kept")
    init_scale: float = Field(1.0, gt=0, le=1e3, description="initial weights ~ init_scale / sqrt(fan-in)")
    scaled: Optional[bool] = Field(None, description="--connectivity X sets p to X (default: true for "
                                                     "in_rec and rec_rec, false for rec_out)")


class BpttSpec(BaseModel):
    """Backpropagation through time (training.recurrent)."""

    model_config = _CFG
    gamma: float = Field(0.3, gt=0, lt=10, description="pseudo-derivative dampening")
    clip_norm: Optional[float] = Field(10.0, gt=0, description="global gradient norm clip; null = off")
    rate_reg: float = Field(0.0, ge=0, le=1e6, description="firing-rate regulariser strength")
    rate_target: float = Field(0.02, ge=0, le=1, description="target firing rate per step")


# Training defaults of a recurrent spec where its ``training`` block is silent
# (the MLP's SGD at lr 0.5 would not train BPTT): Adam as in H6's benchmark.
RECURRENT_TRAINING_DEFAULTS = {"epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": 3e-3,
                               "lr_decay": 1.0, "alpha": 0.0, "noise": 0.0}


def _recurrent_training_defaults() -> TrainingSpec:
    return TrainingSpec(**RECURRENT_TRAINING_DEFAULTS)


class RecurrentModelSpec(BaseModel):
    """A recurrent spiking network: input -> rec (recurrent, no self) -> out."""

    model_config = _CFG

    kind: Literal["recurrent"]
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    description: str = Field("", max_length=MAX_TEXT_CHARS)
    dataset: str = Field(description="spoken-digits | fashion-mnist-rows")
    max_samples: Optional[int] = Field(None, gt=0, description="use at most this many samples of each split "
                                                               "(quick runs and tests); null: all")
    encoding: EncodingSpec = EncodingSpec()
    recurrent: RecurrentPopulationSpec
    readout: ReadoutSpec = ReadoutSpec()
    projections: Dict[str, ProjectionTarget]
    nonlinearity: Literal["spiking", "rate"] = Field(
        "spiking", description="spiking (the chip's LIF) or rate (tanh, the non-spiking reference)")
    bptt: BpttSpec = BpttSpec()
    training: TrainingSpec = Field(default_factory=_recurrent_training_defaults)

    _source: str = PrivateAttr(default="<model spec>")

    @model_validator(mode="before")
    @classmethod
    def _training_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("training"), dict):
            data = {**data, "training": {**RECURRENT_TRAINING_DEFAULTS, **data["training"]}}
        return data

    @model_validator(mode="after")
    def _check(self) -> "RecurrentModelSpec":
        if self.dataset not in SEQUENCE_FEATURES:
            raise FieldIssue("dataset", f"unknown temporal data set {echo(self.dataset)}"
                                        f"{did_you_mean(self.dataset, SEQUENCE_FEATURES)} "
                                        f"(known: {', '.join(SEQUENCE_FEATURES)})")
        names = list(self.projections)
        for k in names:
            if k not in PROJECTION_NAMES:
                raise FieldIssue(f"projections.{k}", f"unknown projection {echo(k)}{did_you_mean(k, PROJECTION_NAMES)}"
                                                     f" (a recurrent spec has {', '.join(PROJECTION_NAMES)})")
        for k in PROJECTION_NAMES:
            if k not in self.projections:
                raise FieldIssue("projections", f"projection {k!r} missing (give {', '.join(PROJECTION_NAMES)}, "
                                                "each with a connectivity)")
        if self.recurrent.size < 2:
            raise FieldIssue("recurrent.size", "a recurrent population needs at least 2 neurons (rec_rec has "
                                               "no self-connections)")
        return self

    # ------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict, source: str = "<model spec>") -> "RecurrentModelSpec":
        return validate_mapping(cls, data, source, "recurrent model spec")

    @property
    def source(self) -> str:
        return self._source

    def with_overrides(self, **kw: Any) -> "RecurrentModelSpec":
        """A new spec with training fields (and ``dataset``) replaced; None keeps the spec's."""
        top_keys = {"dataset", "max_samples"}
        known = set(TrainingSpec.model_fields) | top_keys
        kw = {k.replace("-", "_"): v for k, v in kw.items() if v is not None}
        unknown = [k for k in kw if k not in known]
        if unknown:
            k = unknown[0]
            raise ConfigError(f"override '{k}': not a training setting{did_you_mean(k, sorted(known))} "
                              f"(known: {', '.join(sorted(known))})")
        data = self.model_dump()
        data["training"].update({k: v for k, v in kw.items() if k not in top_keys})
        data.update({k: v for k, v in kw.items() if k in top_keys})
        src = f"{self.source} (with command-line overrides)"
        try:
            spec = type(self).model_validate(data)
        except ValidationError as err:
            msg = format_validation_error(err, src, type(self))
            lines = msg.split("\n")
            for k in kw:
                where = f"field 'training.{k}':" if k not in top_keys else f"field '{k}':"
                lines = [f"{ln} [set by --{k.replace('_', '-')}]" if where in ln else ln for ln in lines]
            raise ConfigError("\n".join(lines)) from None
        spec._source = self.source
        return spec

    # ------------------------------------------------------------ shapes
    @property
    def n_features(self) -> int:
        return SEQUENCE_FEATURES[self.dataset]

    @property
    def n_in(self) -> int:
        """Input channels: features, twice when the encoding is signed."""
        return self.n_features * (2 if self.encoding.signed else 1)

    @property
    def n_out(self) -> int:
        return SEQUENCE_CLASSES[self.dataset]

    @property
    def input_size(self) -> int:  # what bundle checks compare the graph's input with
        return self.n_in


def is_recurrent_spec(spec) -> bool:
    return isinstance(spec, RecurrentModelSpec)


def lif_params(spec: RecurrentModelSpec):
    """(rec, out) LifParams: chip units as given, or time constants converted by LifParams.from_tau."""
    from deepr_neuro.training.recurrent import LifParams

    nrn = spec.recurrent.neuron
    if nrn.du is not None:
        rec = LifParams(du=nrn.du, dv=nrn.dv, vth=nrn.vth)
    else:
        rec = LifParams.from_tau(nrn.tau_syn, nrn.tau_mem, vth=nrn.vth)
    out = LifParams(du=spec.readout.du, dv=spec.readout.dv, vth=131071)
    return rec, out


def recurrent_core_spec(spec: RecurrentModelSpec):
    """The training.recurrent RecurrentSpec of this model spec."""
    from deepr_neuro.network.frame_encoding import FrameEncoding
    from deepr_neuro.training.recurrent import RecurrentSpec

    rec, out = lif_params(spec)
    enc = FrameEncoding(steps_per_frame=spec.encoding.steps_per_frame, scale=float(spec.encoding.scale),
                        signed=spec.encoding.signed)
    return RecurrentSpec(n_in=spec.n_in, n_rec=spec.recurrent.size, n_out=spec.n_out, rec=rec, out=out,
                         encoding=enc, kind=spec.nonlinearity, gamma=float(spec.bptt.gamma))


def _potential(spec: RecurrentModelSpec, name: str) -> int:
    n, i, c = spec.recurrent.size, spec.n_in, spec.n_out
    return {"in_rec": i * n, "rec_rec": n * (n - 1), "rec_out": n * c}[name]


def projection_budgets(spec: RecurrentModelSpec, connectivity: Optional[float] = None,
                       dense: bool = False) -> Dict[str, int]:
    """K_q = round(p_q * potential_q) per projection (see the module docstring)."""
    if connectivity is not None:
        if isinstance(connectivity, bool) or not isinstance(connectivity, (int, float)) \
                or not 0 < connectivity <= 1:
            raise ConfigError(f"--connectivity: must be a fraction in (0, 1] (got {echo(connectivity)})")
    out = {}
    for name in PROJECTION_NAMES:
        t = spec.projections[name]
        p = t.connectivity
        scaled = t.scaled if t.scaled is not None else name != "rec_out"
        if dense:
            p = 1.0
        elif connectivity is not None and scaled:
            p = float(connectivity)
        pot = _potential(spec, name)
        k = min(pot, int(round(p * pot)))
        if k < 1:
            raise ConfigError(f"{spec.source}: field 'projections.{name}.connectivity': projection {name} "
                              f"({pot} potential connections) gets 0 connections at p={p:.3g}; raise it "
                              f"(or --connectivity) to at least {1 / pot:.3g}")
        out[name] = k
    return out


def recurrent_graph(spec: RecurrentModelSpec, budgets: Dict[str, int]) -> TrainingGraph:
    """input -> rec (in_rec), rec -> rec (rec_rec, no self), rec -> out (rec_out).
    rec's pre space is [input channels | rec neurons] (projection order)."""
    pops = (PopulationSpec("input", spec.n_in, None),
            PopulationSpec("rec", spec.recurrent.size, spec.recurrent.max_neurons_per_core),
            PopulationSpec("out", spec.n_out, None))
    projs = (ProjectionSpec("in_rec", "input", "rec", budgets["in_rec"]),
             ProjectionSpec("rec_rec", "rec", "rec", budgets["rec_rec"], allow_self=False),
             ProjectionSpec("rec_out", "rec", "out", budgets["rec_out"]))
    return TrainingGraph(pops, projs)


# ---------------------------------------------------------------- either kind of spec
def load_any_model_spec(path):
    """Read and validate a model spec YAML file: an MLP (:class:`ModelSpec`), or a
    :class:`RecurrentModelSpec` when the file says ``kind: recurrent``."""
    data = read_yaml_mapping(path, "model spec")
    return any_model_spec_from_dict(data, source=str(path))


def any_model_spec_from_dict(data: dict, source: str = "<model spec>"):
    """An MLP spec, or a recurrent one when the mapping says ``kind: recurrent``."""
    if isinstance(data, dict) and "kind" in data:
        if data["kind"] != "recurrent":
            raise ConfigError(f"{source}: field 'kind': {echo(data['kind'])} is not a model kind; use "
                              "'recurrent' (a recurrent spiking network) or leave 'kind' out (an MLP)")
        return RecurrentModelSpec.from_dict(data, source=source)
    return ModelSpec.from_dict(data, source=source)


def load_training_data(spec, settings, data_dir: Optional[str] = None):
    """The run's data set: an image data set for an MLP, a temporal one for a recurrent spec."""
    if is_recurrent_spec(spec):
        return load_recurrent_data(spec, settings, data_dir)
    from deepr_neuro.training.datasets import load_dataset

    return load_dataset(settings.dataset, data_dir=data_dir, val_fraction=settings.val_fraction,
                        seed=settings.seed)


def check_fits_data(spec, data) -> None:
    """check_model_fits_data for an MLP, check_recurrent_fits_data for a recurrent spec."""
    if is_recurrent_spec(spec):
        return check_recurrent_fits_data(spec, data)
    return check_model_fits_data(spec, data)


def build_recurrent_plan(profile, spec: RecurrentModelSpec, settings) -> NetworkPlan:
    """Map input, rec and out onto the profile's cores; K_c over the union of projections into a core."""
    connectivity = settings.connectivity
    dense = settings.method == "dense"
    if dense and connectivity not in (None, 1.0):
        raise ConfigError(f"--method dense trains every connection: --connectivity must be 1.0 "
                          f"(got {connectivity}); use fixed-sparse or deepr for a sparse network")
    budgets = projection_budgets(spec, connectivity, dense=dense)
    profile_name = Path(getattr(profile, "source", profile.name)).name

    def capacity(n_neurons: int, n_in: int) -> int:
        return profile.synapse_capacity(weight_bits=settings.weight_bits, sparse=True, n_neurons=n_neurons,
                                        n_axons=min(n_in, profile.input_axons_per_core))

    return plan_graph(recurrent_graph(spec, budgets), neurons_per_core=profile.neurons_per_core,
                      cores=profile.cores, synapse_capacity=capacity, axon_limit=profile.input_axons_per_core,
                      profile_name=profile_name)


def load_recurrent_data(spec: RecurrentModelSpec, settings, data_dir: Optional[str] = None):
    """The spec's temporal data set (never downloads), cut to ``max_samples`` a split if set."""
    from deepr_neuro.training.datasets import _hash_arrays
    from deepr_neuro.training.sequences import load_sequences

    data = load_sequences(settings.dataset, data_dir=data_dir, val_fraction=settings.val_fraction,
                          seed=settings.seed)
    n = spec.max_samples
    if n is None:
        return data
    parts = {}
    for which in ("train", "val", "test"):
        x, L, y = data.part(which)
        L = L[:n]
        T = int(L.max()) if len(L) else 0
        parts[f"x_{which}"], parts[f"len_{which}"], parts[f"y_{which}"] = x[:n, :T], L, y[:n]
    order = [f"{a}_{k}" for k in ("train", "val", "test") for a in ("x", "len", "y")]
    sha = _hash_arrays(f"{data.name} max_samples={n}", [(k, parts[k]) for k in order])
    return dataclasses.replace(data, sha256=sha, split={**data.split, "max_samples": int(n)}, **parts)


def check_recurrent_fits_data(spec: RecurrentModelSpec, data) -> None:
    """The data's frame width and classes must be the spec's (ConfigError naming file and field)."""
    if data.n_features != spec.n_features:
        raise ConfigError(f"{spec.source}: field 'dataset': the model is built for {spec.n_features} features a "
                          f"frame ({spec.dataset}) but data set '{data.name}' has {data.n_features}; use the "
                          "matching --dataset")
    if data.n_classes != spec.n_out:
        raise ConfigError(f"{spec.source}: field 'dataset': the readout has {spec.n_out} neurons but data set "
                          f"'{data.name}' has {data.n_classes} classes; use the matching --dataset")
    if len(data.y_train) == 0:
        raise ConfigError(f"{spec.source}: field 'max_samples': no training samples left; raise it")
