"""Model specs of recurrent spiking networks (``kind: recurrent`` in ``models/*.yaml``).

A recurrent spec names the temporal data set, the frame encoding (real frames
-> integer spike trains, ``network.frame_encoding``), the recurrent
population(s) of the chip's CUBA LIF neuron (chip units du/dv/vth, or time
constants tau_syn/tau_mem in chip steps converted exactly as
``LifParams.from_tau``), the projections with their target connectivities, the
readout (one integrator neuron a class: ``training.recurrent``), BPTT settings
and a ``training`` block (the MLP spec's :class:`TrainingSpec`, so every
training flag works).

``recurrent`` is either one mapping (one population named ``rec``; projections
exactly ``in_rec``, ``rec_rec`` (never a self-connection) and ``rec_out``) or a
list of named populations; with a list every projection says ``pre`` (input or
a population) and ``post`` (a population or out), pre == post never connects a
neuron to itself, every population must be reached from the input and reach
out, and ``input``/``out`` are reserved names. The order of the list is the
order of the populations on the cores; a population's pre space is its
projections' sources in the order the spec lists them.

The MLP spec format (:class:`model_spec.ModelSpec`) is unchanged: a file is a
recurrent spec exactly when it says ``kind: recurrent``
(:func:`model_spec.load_model_spec` dispatches on it).

Budgets: projection q keeps K_q = round(p_q * potential_q) connections
(potential of a pre == post projection = n (n - 1)). ``--connectivity X`` sets p
of every projection whose ``scaled`` is true (by default every projection into
a recurrent population: ``in_rec`` and ``rec_rec`` of one population) to X; a
projection into out keeps its own p unless its ``scaled`` is true. ``--method dense`` trains every connection.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError, model_serializer,
                      model_validator)

from deepr_neuro.errors import ConfigError
from deepr_neuro.hardware.mapping import NetworkPlan, PopulationSpec, ProjectionSpec, TrainingGraph, plan_graph
from deepr_neuro.hardware.yaml_io import (FieldIssue, did_you_mean, echo, format_validation_error,
                                          read_yaml_mapping, validate_mapping)
from deepr_neuro.training.model_spec import (MAX_NAME_CHARS, MAX_TEXT_CHARS, ModelSpec, TrainingSpec,
                                             check_model_fits_data, spec_with_overrides)

__all__ = ["RecurrentModelSpec", "is_recurrent_spec", "SEQUENCE_FEATURES", "recurrent_graph",
           "projection_budgets", "lif_params", "recurrent_core_spec", "load_any_model_spec",
           "any_model_spec_from_dict", "build_recurrent_plan", "load_recurrent_data", "check_recurrent_fits_data",
           "check_fits_data", "load_training_data", "population_lif_params", "cut_to_max_samples"]

_CFG = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

# Features per frame of each temporal data set (known before the data loads, so a
# run is mapped and refused before anything is read or written).
SEQUENCE_FEATURES = {"spoken-digits": 13, "fashion-mnist-rows": 28}
SEQUENCE_CLASSES = {"spoken-digits": 10, "fashion-mnist-rows": 10}
PROJECTION_NAMES = ("in_rec", "rec_rec", "rec_out")
SINGLE_ENDS = {"in_rec": ("input", "rec"), "rec_rec": ("rec", "rec"), "rec_out": ("rec", "out")}
RESERVED = ("input", "out")
MAX_POPULATIONS = 64
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
    """A recurrent population: its name (in a list; one mapping is ``rec``), size, split over
    cores and neuron."""

    model_config = _CFG
    name: Optional[str] = Field(None, min_length=1, max_length=MAX_NAME_CHARS,
                                description="the population's name (a list of populations only)")
    size: int = Field(gt=0, le=MAX_RECURRENT, description="recurrent neurons")
    max_neurons_per_core: Optional[int] = Field(None, gt=0, le=MAX_RECURRENT,
                                                description="at most this many of them on one core")
    neuron: NeuronSpec = NeuronSpec(tau_syn=4.0, tau_mem=16.0)

    @model_serializer(mode="wrap")
    def _without_unset_name(self, handler):
        # one-mapping specs record exactly what they recorded before 'name' existed, so runs,
        # checkpoints and sweeps written then still resume and continue
        return _drop_none(handler(self), ("name",))


class ReadoutSpec(BaseModel):
    """The readout ``out``: non-spiking integrators, one a class (final v decides)."""

    model_config = _CFG
    du: int = Field(4095, ge=0, le=4095, description="current decay (4095: no current memory)")
    dv: int = Field(0, ge=0, le=4095, description="voltage decay (0: integrate without leak)")


class ProjectionTarget(BaseModel):
    """One projection's target connectivity and initial weight scale."""

    model_config = _CFG
    pre: Optional[str] = Field(None, max_length=MAX_NAME_CHARS,
                               description="source: input or a population (required with a list of populations)")
    post: Optional[str] = Field(None, max_length=MAX_NAME_CHARS,
                                description="target: a population or out (required with a list of populations)")
    connectivity: float = Field(gt=0, le=1, description="fraction p of its potential connections kept")
    init_scale: float = Field(1.0, gt=0, le=1e3, description="initial weights ~ init_scale / sqrt(fan-in)")
    scaled: Optional[bool] = Field(None, description="--connectivity X sets p to X (default: true into a "
                                                     "recurrent population, false into out)")

    @model_serializer(mode="wrap")
    def _without_unset_ends(self, handler):
        return _drop_none(handler(self), ("pre", "post"))  # as RecurrentPopulationSpec's 'name'


def _drop_none(data, keys):
    if isinstance(data, dict):
        for k in keys:
            if data.get(k, 0) is None:
                del data[k]
    return data


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


def _one_or_list(v: Any) -> str:
    return "list" if isinstance(v, (list, tuple)) else "one"


_UNION_TAGS = ("one", "list")
RecurrentField = Annotated[Union[Annotated[RecurrentPopulationSpec, Tag("one")],
                                 Annotated[List[RecurrentPopulationSpec], Tag("list")]],
                           Discriminator(_one_or_list)]


class _Untagged:
    """A ValidationError without the union tag after ``recurrent`` in its locations (so a
    message names ``recurrent.size`` or ``recurrent[1].size``, as the user wrote it)."""

    def __init__(self, err: ValidationError):
        self._err = err

    def errors(self):
        out = []
        for e in self._err.errors():
            loc = tuple(e.get("loc", ()))
            if len(loc) >= 2 and loc[0] == "recurrent" and loc[1] in _UNION_TAGS:
                e = {**e, "loc": loc[:1] + loc[2:]}
            out.append(e)
        return out


def _format(err: ValidationError, source: str, cls) -> str:
    return format_validation_error(_Untagged(err), source, cls)   # duck-typed: only .errors() is read


class RecurrentModelSpec(BaseModel):
    """A recurrent spiking network: input -> recurrent population(s) (no self-connections) -> out."""

    model_config = _CFG

    kind: Literal["recurrent"]
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    description: str = Field("", max_length=MAX_TEXT_CHARS)
    dataset: str = Field(description="spoken-digits | fashion-mnist-rows")
    max_samples: Optional[int] = Field(None, gt=0, description="use at most this many samples of each split "
                                                               "(quick runs and tests); null: all")
    encoding: EncodingSpec = EncodingSpec()
    recurrent: RecurrentField
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
        if isinstance(self.recurrent, RecurrentPopulationSpec):
            self._check_one()
        else:
            self._check_list()
        return self

    def _check_one(self) -> None:
        if self.recurrent.name is not None:
            raise FieldIssue("recurrent.name", "one population (a mapping) is always named 'rec'; give a list of "
                                               "populations to name them")
        names = list(self.projections)
        for k in names:
            if k not in PROJECTION_NAMES:
                raise FieldIssue(f"projections.{k}", f"unknown projection {echo(k)}{did_you_mean(k, PROJECTION_NAMES)}"
                                                     f" (a recurrent spec has {', '.join(PROJECTION_NAMES)}; "
                                                     "give 'recurrent' as a list of populations for other "
                                                     "projections)")
        for k in PROJECTION_NAMES:
            if k not in self.projections:
                raise FieldIssue("projections", f"projection {k!r} missing (give {', '.join(PROJECTION_NAMES)}, "
                                                "each with a connectivity)")
        for k, (pre, post) in SINGLE_ENDS.items():
            t = self.projections[k]
            for end, want, got in (("pre", pre, t.pre), ("post", post, t.post)):
                if got is not None and got != want:
                    raise FieldIssue(f"projections.{k}.{end}", f"{k} goes {pre} -> {post} (got {end} {echo(got)})")
        if self.recurrent.size < 2:
            raise FieldIssue("recurrent.size", "a recurrent population needs at least 2 neurons (rec_rec has "
                                               "no self-connections)")

    def _check_list(self) -> None:
        pops = self.recurrent
        if not pops:
            raise FieldIssue("recurrent", "give at least one population (a mapping, or a list of named ones)")
        if len(pops) > MAX_POPULATIONS:
            raise FieldIssue("recurrent", f"{len(pops)} populations; at most {MAX_POPULATIONS}")
        names: List[str] = []
        for i, p in enumerate(pops):
            if p.name is None:
                raise FieldIssue(f"recurrent.{i}.name", "required field is missing: a population in a list needs "
                                                        "a name")
            if p.name in RESERVED:
                raise FieldIssue(f"recurrent.{i}.name", f"{echo(p.name)} is reserved (the input and the readout "
                                                        "populations); choose another name")
            if p.name in names:
                raise FieldIssue(f"recurrent.{i}.name", f"population {echo(p.name)} is named twice; names must be "
                                                        "unique")
            names.append(p.name)
        known = ("input", *names, "out")
        pairs: Dict[Tuple[str, str], str] = {}
        for k, t in self.projections.items():
            if k in names or k in RESERVED:
                raise FieldIssue(f"projections.{k}", f"projection {echo(k)} has the name of a population; "
                                                     "choose another name")
            for end in ("pre", "post"):
                v = getattr(t, end)
                if v is None:
                    raise FieldIssue(f"projections.{k}.{end}", f"required with a list of populations: say "
                                                               f"{'input or a population' if end == 'pre' else 'a population or out'}")
                if v not in known:
                    raise FieldIssue(f"projections.{k}.{end}", f"unknown population {echo(v)}"
                                                               f"{did_you_mean(v, known)} (known: {', '.join(known)})")
            if t.post == "input":
                raise FieldIssue(f"projections.{k}.post", "nothing projects into the input (the data drives it)")
            if t.pre == "out":
                raise FieldIssue(f"projections.{k}.pre", "the readout out projects nowhere (it is read after the "
                                                         "sample's last step)")
            if (t.pre, t.post) in pairs:
                raise FieldIssue(f"projections.{k}", f"repeats {t.pre} -> {t.post} of projection "
                                                     f"{pairs[(t.pre, t.post)]!r}; merge them into one")
            pairs[(t.pre, t.post)] = k
            if t.pre == t.post and self.population(t.pre).size < 2:
                raise FieldIssue(f"projections.{k}", f"{t.pre} -> {t.pre} never connects a neuron to itself: "
                                                     f"population {t.pre!r} needs at least 2 neurons")
        reach = _reachable("input", [(t.pre, t.post) for t in self.projections.values()])
        back = _reachable("out", [(t.post, t.pre) for t in self.projections.values()])
        if "out" not in reach:
            raise FieldIssue("projections", "the readout 'out' is unreachable from the input: add projections "
                                            "input -> ... -> out")
        for i, n in enumerate(names):
            if n not in reach:
                raise FieldIssue(f"recurrent.{i}", f"population {n!r}: no input reaches it (no path of projections "
                                                   "from input)")
            if n not in back:
                raise FieldIssue(f"recurrent.{i}", f"population {n!r} reaches no readout (no path of projections "
                                                   "to out): it could not learn anything")

    # ------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict, source: str = "<model spec>") -> "RecurrentModelSpec":
        return validate_mapping(cls, data, source, "recurrent model spec", _format)

    # ------------------------------------------------------------ the graph
    @property
    def is_single(self) -> bool:
        """One population given as a mapping (named ``rec``, projections in_rec, rec_rec, rec_out)."""
        return isinstance(self.recurrent, RecurrentPopulationSpec)

    def populations(self) -> List[Tuple[str, RecurrentPopulationSpec]]:
        """(name, spec) of every recurrent population, in order."""
        if self.is_single:
            return [("rec", self.recurrent)]
        return [(p.name, p) for p in self.recurrent]

    def population(self, name: str) -> RecurrentPopulationSpec:
        return next(p for n, p in self.populations() if n == name)

    def projection_ends(self) -> Dict[str, Tuple[str, str]]:
        """name -> (pre, post) of every projection, in the spec's order (in_rec, rec_rec, rec_out
        for one population)."""
        if self.is_single:
            return dict(SINGLE_ENDS)
        return {k: (t.pre, t.post) for k, t in self.projections.items()}

    def size_of(self, name: str) -> int:
        if name == "input":
            return self.n_in
        if name == "out":
            return self.n_out
        return int(self.population(name).size)

    @property
    def source(self) -> str:
        return self._source

    def with_overrides(self, **kw: Any) -> "RecurrentModelSpec":
        """A new spec with training fields (and ``dataset``) replaced; None keeps the spec's."""
        return spec_with_overrides(self, kw, {"dataset", "max_samples"}, _format)

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


def _reachable(start: str, edges) -> set:
    seen, todo = {start}, [start]
    while todo:
        a = todo.pop()
        for pre, post in edges:
            if pre == a and post not in seen:
                seen.add(post)
                todo.append(post)
    return seen


def _lif(nrn: NeuronSpec):
    from deepr_neuro.training.recurrent import LifParams

    if nrn.du is not None:
        return LifParams(du=nrn.du, dv=nrn.dv, vth=nrn.vth)
    return LifParams.from_tau(nrn.tau_syn, nrn.tau_mem, vth=nrn.vth)


def population_lif_params(spec: RecurrentModelSpec) -> Dict[str, Any]:
    """name -> LifParams of every recurrent population (chip units, or time constants converted
    by LifParams.from_tau)."""
    return {name: _lif(p.neuron) for name, p in spec.populations()}


def lif_params(spec: RecurrentModelSpec):
    """(rec, out) LifParams: the (first) recurrent population's and the readout's."""
    from deepr_neuro.training.recurrent import LifParams

    rec = next(iter(population_lif_params(spec).values()))
    out = LifParams(du=spec.readout.du, dv=spec.readout.dv, vth=131071)
    return rec, out


def recurrent_core_spec(spec: RecurrentModelSpec):
    """The training.recurrent RecurrentSpec of this model spec."""
    from deepr_neuro.network.frame_encoding import FrameEncoding
    from deepr_neuro.training.recurrent import RecurrentSpec

    rec, out = lif_params(spec)
    enc = FrameEncoding(steps_per_frame=spec.encoding.steps_per_frame, scale=float(spec.encoding.scale),
                        signed=spec.encoding.signed)
    if spec.is_single:
        return RecurrentSpec(n_in=spec.n_in, n_rec=spec.recurrent.size, n_out=spec.n_out, rec=rec, out=out,
                             encoding=enc, kind=spec.nonlinearity, gamma=float(spec.bptt.gamma))
    lifs = population_lif_params(spec)
    return RecurrentSpec.graph(spec.n_in, spec.n_out, [(n, int(p.size), lifs[n]) for n, p in spec.populations()],
                               [(k, pre, post) for k, (pre, post) in spec.projection_ends().items()],
                               out=out, encoding=enc, kind=spec.nonlinearity, gamma=float(spec.bptt.gamma))


def _potential(spec: RecurrentModelSpec, name: str) -> int:
    pre, post = spec.projection_ends()[name]
    n_pre, n_post = spec.size_of(pre), spec.size_of(post)
    return n_pre * n_post - (n_post if pre == post else 0)


def projection_budgets(spec: RecurrentModelSpec, connectivity: Optional[float] = None,
                       dense: bool = False) -> Dict[str, int]:
    """K_q = round(p_q * potential_q) per projection (see the module docstring)."""
    if connectivity is not None:
        if isinstance(connectivity, bool) or not isinstance(connectivity, (int, float)) \
                or not 0 < connectivity <= 1:
            raise ConfigError(f"--connectivity: must be a fraction in (0, 1] (got {echo(connectivity)})")
    out = {}
    for name, (_, post) in spec.projection_ends().items():
        t = spec.projections[name]
        p = t.connectivity
        scaled = t.scaled if t.scaled is not None else post != "out"
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
    """input, the recurrent populations in order, out; every projection of the spec (pre == post
    without self-connections). A population's pre space is its sources in projection order
    ([input channels | rec neurons] for one population)."""
    pops = (PopulationSpec("input", spec.n_in, None),
            *(PopulationSpec(n, p.size, p.max_neurons_per_core) for n, p in spec.populations()),
            PopulationSpec("out", spec.n_out, None))
    projs = tuple(ProjectionSpec(k, pre, post, budgets[k], **({"allow_self": False} if pre == post else {}))
                  for k, (pre, post) in spec.projection_ends().items())
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
    """Map input, the recurrent populations and out onto the profile's cores; K_c over the union of
    projections into a core."""
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
    from deepr_neuro.training.sequences import load_sequences

    data = load_sequences(settings.dataset, data_dir=data_dir, val_fraction=settings.val_fraction,
                          seed=settings.seed)
    return cut_to_max_samples(data, spec.max_samples)


def cut_to_max_samples(data, n: Optional[int]):
    """The first ``n`` samples of each split (None: all), with its own sha256, as training saw them
    (``export`` / ``simulate`` of a run trained with ``max_samples`` use the same cut)."""
    from deepr_neuro.training.datasets import _hash_arrays

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
