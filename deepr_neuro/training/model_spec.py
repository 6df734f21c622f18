"""Model specs: what network to train, and how (``models/*.yaml``).

A spec names the input size, the layers (size, target connectivity, activation),
an optional cap on neurons per core, the default data set and a ``training``
block of defaults that command-line flags override
(:meth:`ModelSpec.with_overrides`). Problems raise
:class:`~deepr_neuro.errors.ConfigError` naming file, field, reason and fix.

Connectivity and budgets (DESIGN.md section 3)
----------------------------------------------
Layer l keeps K_l = round(p_l * n_in * n_out) connections. ``--connectivity X``
sets the whole network's fraction to X and scales the spec's per-layer targets
in their ratios, each capped (at 1.0, or at the hardware fill value for a
``fill`` layer); when caps bind, the remainder is spread over the uncapped
layers, still in their ratios (water-filling), so the network total stays X as
far as the caps allow (see :func:`scaled_connectivity`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Sequence, Set, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from deepr_neuro.errors import ConfigError
from deepr_neuro.hardware.mapping import TrainingGraph
from deepr_neuro.training.methods import METHODS, OPTIMIZERS, theta_min_rule  # one formula, shared with the trainer
from deepr_neuro.hardware.profile import HardwareProfile
from deepr_neuro.hardware.yaml_io import (
    FieldIssue as _FieldIssue,
    did_you_mean as _did_you_mean,
    echo,
    format_validation_error,
    read_yaml_mapping,
    validate_mapping,
)

__all__ = [
    "LayerSpec",
    "TrainingSpec",
    "ModelSpec",
    "load_model_spec",
    "model_spec_to_dict",
    "layer_shapes",
    "fill_connectivity",
    "resolve_connectivity",
    "network_fraction",
    "scaled_connectivity",
    "layer_budgets",
    "reference_theta_min",
    "SNAP_RELATIVE_TOLERANCE",
    "check_model_fits_data",
    "model_graph",
]

# A --connectivity request within this relative distance of the spec's own
# network fraction means "the spec's budgets": the paper's 1.33 % (0.0133)
# then reproduces K = 2352/900/300 exactly instead of 2344/898/299.
SNAP_RELATIVE_TOLERANCE = 0.005

_CFG = ConfigDict(extra="forbid", frozen=True, strict=True)
# NaN and +-inf are refused in every float field (pydantic: allow_inf_nan=False)
_TRAIN_CFG = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

# Upper bounds on what a model spec / a run may ask for: far above any network
# this toolkit maps (LeNet-300-100: 784 inputs, 300 neurons, 266,200 potential
# connections), low enough that a typo (an extra zero or three) is refused at
# once instead of costing hours or all memory.
MAX_LAYER_SIZE = 10_000_000           # neurons in one layer, and input_size
MAX_LAYERS = 100                      # weight layers
MAX_POTENTIAL_CONNECTIONS = 1_000_000_000  # sum of n_in x n_out: training keeps a sign
                                      # (int8) and a bit for each, about 2 GB at this bound
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1_000_000
MAX_SEED = 2 ** 32 - 1                # NumPy's RandomState takes seeds 0..2^32-1
MAX_L1 = 1.0                          # alpha, l1_alpha: an L1 term above 1 outweighs the whole
                                      # cross-entropy (about 2.3 at chance) and removes every connection
MAX_ADAM_EPS = 1.0                    # Adam's epsilon is a guard against 0 / 0, not a step size
MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 10_000


class LayerSpec(BaseModel):
    """One weight layer: ``size`` post-neurons fed by the previous layer."""

    model_config = _CFG

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="layer name (unique)")
    size: int = Field(gt=0, le=MAX_LAYER_SIZE, description="neurons in this layer")
    connectivity: Any = Field(
        description="target fraction p of the n_in x n_out weights kept (0 < p <= 1), "
        "or 'fill': as many as the per-core budget holds")
    activation: Optional[Literal["relu", "linear"]] = Field(
        None, description="relu (hidden) or linear (output); default by position")

    @field_validator("connectivity", mode="before")
    @classmethod
    def _connectivity(cls, p: Any) -> Union[float, str]:
        if isinstance(p, str):
            if p.strip().lower() == "fill":
                return "fill"
            try:
                p = float(p)
            except ValueError:
                raise ValueError(
                    f"must be a fraction in (0, 1] or 'fill' (got {echo(p)})") from None
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise ValueError(f"must be a fraction in (0, 1] or 'fill' (got {echo(p)})")
        try:
            p = float(p)
        except OverflowError:
            p = math.inf
        if math.isnan(p) or not 0.0 < p <= 1.0:
            raise ValueError(
                f"must be in (0, 1] or 'fill' (got {echo(p)}); e.g. 0.1 keeps 10 % of the weights")
        return p


class TrainingSpec(BaseModel):
    """Training defaults; every one can be overridden from the command line."""

    model_config = _TRAIN_CFG

    epochs: int = Field(10, gt=0, le=MAX_EPOCHS, description="passes over the training set")
    batch_size: int = Field(10, gt=0, le=MAX_BATCH_SIZE, description="samples per gradient step")
    optimizer: Literal[OPTIMIZERS] = "sgd"
    lr: float = Field(0.5, gt=0, description="learning rate eta")
    lr_decay: float = Field(0.8, gt=0, le=1, description="lr multiplied by this after every epoch")
    alpha: float = Field(1e-5, ge=0, le=MAX_L1, description="L1 coefficient on active theta")
    noise: float = Field(1e-5, ge=0, description="noise scale sigma; temperature T = lr*sigma^2/2")
    method: Literal[METHODS] = "deepr"
    l1_alpha: float = Field(1e-4, ge=0, le=MAX_L1, description="L1 strength of the l1 baseline (other methods use alpha)")
    dense_lr: Optional[float] = Field(None, gt=0, description="learning rate of the baselines with a dense "
                                                             "phase (dense, prune-retrain, l1); null = lr")
    qat_epochs: int = Field(0, ge=0, le=MAX_EPOCHS, description="last epochs trained with quantized weights in the "
                                                  "forward pass (straight-through), budgets still enforced")
    prune_epoch_fraction: float = Field(
        0.5, gt=0, lt=1, description="prune-retrain: share of the epochs trained dense before pruning")
    theta_min: Optional[float] = Field(
        None, le=0, description="soft-DEEP R lower clip of theta; null: the reference "
        "code's rule of thumb -(1-p)/(p*alpha/T) per layer (see reference_theta_min)")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_eps: float = Field(1e-8, gt=0, le=MAX_ADAM_EPS)
    adam_per_connection: bool = Field(
        False, description="Adam's bias correction counts each connection's own steps, so one rewired in "
        "starts as a fresh Adam parameter (first step ~lr), not with the global count (first steps ~3-6 lr)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the training data held out")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of init, sampling and data split")

    @model_validator(mode="before")
    @classmethod
    def _ints_as_floats(cls, data: Any) -> Any:
        # strict mode takes ints for floats already; YAML '1e-5' without a dot
        # is a string in YAML 1.1 (PyYAML): accept it for float fields.
        if isinstance(data, dict):
            out = dict(data)
            for key, field in cls.model_fields.items():
                v = out.get(key)
                if isinstance(v, str) and field.annotation in (float, Optional[float]):
                    try:
                        out[key] = float(v)
                    except ValueError:
                        pass
            return out
        return data


class ModelSpec(BaseModel):
    """A feed-forward network: input_size -> layers[0] -> ... -> layers[-1]."""

    model_config = _CFG

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    description: str = Field("", max_length=MAX_TEXT_CHARS)
    input_size: int = Field(gt=0, le=MAX_LAYER_SIZE, description="input features (e.g. 784 pixels)")
    layers: list[LayerSpec] = Field(min_length=1, max_length=MAX_LAYERS)
    max_neurons_per_core: Optional[int] = Field(
        None, gt=0, le=MAX_LAYER_SIZE, description="place at most this many neurons of a layer on one core")
    dataset: str = Field("digits", description="default data set")
    training: TrainingSpec = TrainingSpec()

    _source: str = PrivateAttr(default="<model spec>")

    @model_validator(mode="before")
    @classmethod
    def _default_activations(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("layers"), list):
            layers = []
            n = len(data["layers"])
            for i, layer in enumerate(data["layers"]):
                if isinstance(layer, dict) and layer.get("activation") is None:
                    layer = {**layer, "activation": "linear" if i == n - 1 else "relu"}
                layers.append(layer)
            data = {**data, "layers": layers}
        return data

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        from deepr_neuro.training.datasets import DATASET_NAMES

        seen: dict[str, int] = {}
        for i, layer in enumerate(self.layers):
            if layer.name in seen:
                raise _FieldIssue(
                    f"layers.{i}.name",
                    f"layer name {layer.name!r} is already used by layers[{seen[layer.name]}]; "
                    f"names must be unique")
            seen[layer.name] = i
        potential, n_in = 0, self.input_size
        for i, layer in enumerate(self.layers):
            potential += n_in * layer.size
            if potential > MAX_POTENTIAL_CONNECTIONS:
                raise _FieldIssue(
                    f"layers.{i}.size",
                    f"the network reaches {potential} potential connections (sum of n_in x n_out) "
                    f"at layer {layer.name!r}, above the bound {MAX_POTENTIAL_CONNECTIONS} (training "
                    f"keeps a sign and a bit for each: about 2 GB there); use smaller layers")
            n_in = layer.size
        if self.dataset not in DATASET_NAMES:
            raise _FieldIssue(
                "dataset", f"unknown data set {echo(self.dataset)}"
                f"{_did_you_mean(self.dataset, DATASET_NAMES)} (known: {', '.join(DATASET_NAMES)})")
        return self

    # ------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict, source: str = "<model spec>") -> "ModelSpec":
        """Validate a mapping; problems raise ConfigError naming ``source``."""
        return validate_mapping(cls, data, source, "model spec")

    @property
    def source(self) -> str:
        """The file this spec was read from (for error messages)."""
        return self._source

    def with_overrides(self, **kw: Any) -> "ModelSpec":
        """A new spec with training fields replaced (CLI flags override the
        spec; a value of None keeps the spec's). ``dataset`` and
        ``max_neurons_per_core`` may be overridden too. Unknown names and bad
        values raise ConfigError naming the flag."""
        return spec_with_overrides(self, kw, {"dataset", "max_neurons_per_core"}, format_validation_error)

    # ------------------------------------------------------------ shapes
    @property
    def sizes(self) -> list[int]:
        """[input_size, size of layer 0, ..., size of last layer]."""
        return [self.input_size] + [layer.size for layer in self.layers]


def spec_with_overrides(spec, kw: Dict[str, Any], top_keys: Set[str], format_error):
    """A copy of ``spec`` (a ModelSpec or a RecurrentModelSpec) with its ``training`` fields and the
    top-level ``top_keys`` replaced by ``kw`` (None keeps the spec's value); unknown names and bad
    values raise ConfigError naming the flag that set them. ``format_error(err, source, cls)``
    turns a ValidationError into the spec kind's message."""
    known = set(TrainingSpec.model_fields) | top_keys
    kw = {k.replace("-", "_"): v for k, v in kw.items() if v is not None}
    unknown = [k for k in kw if k not in known]
    if unknown:
        k = unknown[0]
        raise ConfigError(
            f"override '{k}': not a training setting{_did_you_mean(k, sorted(known))} "
            f"(known: {', '.join(sorted(known))})")
    data = spec.model_dump()
    data["training"].update({k: v for k, v in kw.items() if k not in top_keys})
    data.update({k: v for k, v in kw.items() if k in top_keys})
    src = f"{spec.source} (with command-line overrides)"
    try:
        new = type(spec).model_validate(data)
    except ValidationError as err:
        lines = format_error(err, src, type(spec)).split("\n")
        for k in kw:  # name the flag that set the field
            where = (f"field 'training.{k}':" if k not in top_keys else f"field '{k}':")
            lines = [f"{ln} [set by --{k.replace('_', '-')}]" if where in ln else ln for ln in lines]
        raise ConfigError("\n".join(lines)) from None
    new._source = spec.source
    return new


def load_model_spec(path: str | Path) -> ModelSpec:
    """Read and validate a model spec YAML file."""
    data = read_yaml_mapping(path, "model spec")
    return ModelSpec.from_dict(data, source=str(path))


def model_spec_to_dict(spec: ModelSpec) -> dict:
    """Plain JSON-ready dict (for the bundle manifest); ModelSpec.from_dict reads it back."""
    return spec.model_dump(mode="json")


def model_graph(spec: ModelSpec, budgets: Sequence[Optional[int]]) -> TrainingGraph:
    """The MLP as a training graph: populations input, layer names...; one
    projection (named after its layer) into each layer, with budget K_l.
    ``max_neurons_per_core`` caps every population (the input's cores too, as
    the mapping always did)."""
    return TrainingGraph.chain(spec.input_size, [layer.size for layer in spec.layers],
                               [layer.name for layer in spec.layers], budgets,
                               max_per_core=spec.max_neurons_per_core)


def layer_shapes(spec: ModelSpec) -> list[tuple[int, int]]:
    """(n_in, n_out) of every weight layer."""
    s = spec.sizes
    return [(s[i], s[i + 1]) for i in range(len(spec.layers))]


# ---------------------------------------------------------------- connectivity
def _neurons_per_core(spec: ModelSpec, profile: HardwareProfile, n_out: int) -> int:
    cap = profile.neurons_per_core
    if spec.max_neurons_per_core is not None:
        cap = min(cap, spec.max_neurons_per_core)
    return min(cap, n_out)


def fill_connectivity(spec: ModelSpec, layer_index: int, profile: HardwareProfile,
                      weight_bits: Optional[int] = None) -> float:
    """The fraction a ``fill`` layer gets: what a full core (min(neurons_per_core,
    max_neurons_per_core, layer size) post-neurons) holds, over the dense count
    of that core, capped at 1.0. Uses the capacity guaranteed for any layout
    over min(n_in, input_axons_per_core) axons (rewiring moves synapses)."""
    n_in, n_out = layer_shapes(spec)[layer_index]
    m = _neurons_per_core(spec, profile, n_out)
    axons = min(n_in, profile.input_axons_per_core)
    cap = profile.synapse_capacity(weight_bits=weight_bits, sparse=True,
                                   n_neurons=m, n_axons=axons)
    return min(1.0, cap / (n_in * m))


def resolve_connectivity(spec: ModelSpec, profile: Optional[HardwareProfile] = None,
                         weight_bits: Optional[int] = None) -> list[float]:
    """Per-layer fractions of the spec, with ``fill`` resolved against ``profile``."""
    out = []
    for i, layer in enumerate(spec.layers):
        if layer.connectivity == "fill":
            if profile is None:
                raise ConfigError(
                    f"{spec.source}: field 'layers[{i}].connectivity': 'fill' needs a "
                    f"hardware profile to size the layer; pass --profile or give a fraction")
            out.append(fill_connectivity(spec, i, profile, weight_bits))
        else:
            out.append(float(layer.connectivity))
    return out


def network_fraction(spec: ModelSpec, connectivity: Sequence[float]) -> float:
    """Whole-network fraction sum(p_l n_in n_out) / sum(n_in n_out)."""
    shapes = layer_shapes(spec)
    n = [a * b for a, b in shapes]
    return sum(p * k for p, k in zip(connectivity, n)) / sum(n)


def scaled_connectivity(spec: ModelSpec, X: float,
                        profile: Optional[HardwareProfile] = None,
                        weight_bits: Optional[int] = None) -> list[float]:
    """Per-layer fractions for a whole-network fraction ``X`` (0 < X <= 1).

    The spec's fractions r_l (``fill`` resolved against ``profile``) give the
    ratios; layer l gets p_l = min(s * r_l, c_l) with c_l = 1.0 (or the fill
    value for a fill layer: hardware cannot hold more), and s solves
    sum_l p_l N_l = X * sum_l N_l (N_l = n_in * n_out). Because p_l is
    piecewise linear in s, s is found exactly by walking the caps in order:
    when a layer hits its cap, the rest of the target goes to the others in
    their ratios. If every layer is capped the total falls short of X (returned
    fractions are the caps). A request within SNAP_RELATIVE_TOLERANCE (0.5 %)
    of the spec's own fraction returns the spec's fractions unchanged, so
    X = 0.0133 on lenet300_100 gives exactly 0.01/0.03/0.3.
    """
    try:
        X = float(X)
    except (TypeError, ValueError):
        raise ConfigError(f"--connectivity must be a number in (0, 1] (got {X!r})") from None
    if not (0.0 < X <= 1.0):
        raise ConfigError(f"--connectivity must be in (0, 1] (got {X!r}); e.g. 0.0133 for 1.33 %")
    ratios = resolve_connectivity(spec, profile, weight_bits)
    caps = [r if layer.connectivity == "fill" else 1.0
            for r, layer in zip(ratios, spec.layers)]
    N = [a * b for a, b in layer_shapes(spec)]
    own = network_fraction(spec, ratios)
    if abs(X - own) <= SNAP_RELATIVE_TOLERANCE * own:
        return list(ratios)
    target = X * sum(N)
    # layer l saturates at s_l = c_l / r_l; walk s upward through the breakpoints
    order = sorted(range(len(N)), key=lambda l: caps[l] / ratios[l])
    capped: set[int] = set()
    s = 0.0
    for l in order:
        fixed = sum(caps[j] * N[j] for j in capped)
        free = sum(ratios[j] * N[j] for j in range(len(N)) if j not in capped)
        s_needed = (target - fixed) / free
        if s_needed <= caps[l] / ratios[l]:
            s = s_needed
            break
        capped.add(l)
    else:
        return list(caps)
    return [caps[l] if l in capped else min(caps[l], s * ratios[l]) for l in range(len(N))]


def layer_budgets(spec: ModelSpec, connectivity: Optional[float] = None,
                  profile: Optional[HardwareProfile] = None,
                  weight_bits: Optional[int] = None) -> list[int]:
    """K_l = round(p_l * n_in * n_out) for every layer; ``connectivity`` (the
    --connectivity flag, X) rescales the spec's fractions first (see
    scaled_connectivity). A layer left with 0 connections is a ConfigError."""
    if connectivity is None:
        ps = resolve_connectivity(spec, profile, weight_bits)
    else:
        ps = scaled_connectivity(spec, connectivity, profile, weight_bits)
    out = []
    for i, ((a, b), p) in enumerate(zip(layer_shapes(spec), ps)):
        k = min(a * b, int(round(p * a * b)))
        if k < 1:
            raise ConfigError(
                f"{spec.source}: field 'layers[{i}].connectivity': layer "
                f"{spec.layers[i].name!r} ({a} x {b}) gets 0 connections at p={p:.3g}; "
                f"raise its connectivity (or --connectivity) to at least {1 / (a * b):.3g}")
        out.append(k)
    return out


def reference_theta_min(p: float, alpha: float, lr: float, noise: float) -> float:
    """soft-DEEP R clip value, the reference code's rule of thumb
    (guillaumeBellec/deep_rewiring, script_mnist_soft_deep_rewiring.py):
    T = lr * noise^2 / 2, beta = alpha / T, theta_min = -(1 - p) / (p * beta)."""
    if not (0 < p <= 1):
        raise ConfigError(f"theta_min rule of thumb needs 0 < p <= 1 (got {p})")
    if alpha <= 0 or noise <= 0 or lr <= 0:
        raise ConfigError(
            "training.theta_min is null but the rule of thumb -(1-p)/(p*alpha/T) needs "
            f"alpha > 0, noise > 0 and lr > 0 (got alpha={alpha}, noise={noise}, lr={lr}); "
            "set training.theta_min explicitly (e.g. -1e-4)")
    return theta_min_rule(p, alpha, noise, lr)


def check_model_fits_data(spec: ModelSpec, data) -> None:
    """Refuse, before training, a model whose input layer does not take the data
    set's features or whose output layer has fewer neurons than it has classes
    (a 784-input LeNet on 8x8 digits, 28x28 images into an 8x8 model): one
    ConfigError naming the model file, the field and the data set."""
    shape = "x".join(str(d) for d in getattr(data, "image_shape", ()) or ())
    what = f"data set '{data.name}' ({data.n_features} features" + (f", {shape} images" if shape else "")
    if spec.input_size != data.n_features:
        raise ConfigError(
            f"{spec.source}: field 'input_size': the model takes {spec.input_size} inputs but the "
            f"{what}, from {echo(data.source, 120)}); use a model spec made for this data set "
            f"(models/digits_mlp.yaml: digits; models/lenet300_100.yaml: 28x28 fashion-mnist / mnist) "
            f"or choose the matching --dataset")
    out = spec.layers[-1]
    if out.size < data.n_classes:
        raise ConfigError(
            f"{spec.source}: field 'layers[{len(spec.layers) - 1}].size': the output layer "
            f"{out.name!r} has {out.size} neurons but the {what}) has {data.n_classes} classes; "
            f"give it at least {data.n_classes} neurons (one a class)")
