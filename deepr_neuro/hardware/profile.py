"""Hardware profiles: the single home of every chip limit.

A profile is a YAML file (``hardware_profiles/*.yaml``) that states what one
neuromorphic chip offers: cores, neurons and input axons per core, a synapse
budget per core (a count, a memory size in bits, or both), the weight format
and the bit widths of the neuron state. :func:`load_profile` validates it with
pydantic (unknown keys rejected) and turns every problem into a
:class:`~deepr_neuro.errors.ConfigError` that names the file, the field, the
reason and, where one is likely, the fix::

    hardware_profiles/x.yaml: field 'synapses_per_core': must be > 0 (got 0)

Synapse memory model
--------------------
The memory formula is nengo-loihi's (``SynapseConfig.bits_per_axon`` in
``nengo_loihi/block.py``; ``Synapse.bits`` sums it over the weight rows of a
synapse block). Our reading of it:

* Synapses are stored **per input axon**: the synapses that one presynaptic
  neuron (one input axon of the core) makes onto neurons of the core form one
  row. A row of ``n`` synapses is split into chunks of at most
  ``chunk_max_synapses`` (64 on Loihi: ``n_synapses = 63`` plus one).
* A chunk of ``m`` synapses costs ``m * (weight_bits + delay_bits + tag_bits
  [+ index_bits when sparse]) + chunk_header_bits`` (10 on Loihi: a 4-bit
  synapse-format index and a 6-bit synapse count), rounded **up** to a whole
  memory word (``word_bits`` = 64).
* ``index_bits`` addresses the post-neuron (compartment) on the core: nengo-
  loihi takes ``ceil(log2(max_index + 1))`` and rounds it up to the next width
  the chip offers (``index_bits_allowed``: 0, 6, 7, ..., 12 on Loihi). A core
  whose highest used neuron index is 1023 therefore pays 10 index bits per
  sparse synapse; one with 64 neurons pays 6.
* Dense storage (``sparse=False``) stores one weight for every neuron of the
  core in each row (zeros included) and no index bits.

So the memory one core uses depends on how its synapses spread over input
axons, not only on their number: 64 synapses from one axon cost one chunk
(1216 bits with 8-bit weights and 10 index bits), the same 64 synapses from 64
different axons cost 64 one-synapse chunks (64 x 64 = 4096 bits).
:meth:`HardwareProfile.synapse_memory_bits` computes the exact figure for a
given layout; :meth:`HardwareProfile.synapse_capacity` gives the best case
(rows packed into full chunks) or, with ``n_axons``, a count that fits *every*
layout over at most that many axons (what a rewiring loop needs, since it moves
synapses between axons at every step).
"""
from __future__ import annotations

import difflib
import math
import reprlib
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from deepr_neuro.errors import ConfigError

__all__ = [
    "LAVA_LIMITS",
    "SynapseMemory",
    "ChipTotals",
    "HardwareProfile",
    "load_profile",
    "list_profiles",
    "profile_to_dict",
    "format_validation_error",
    "read_yaml_mapping",
    "read_text_file",
    "StrictLoader",
    "echo",
]

# What Lava's bit-accurate models (lava-nc 0.10.0: proc/sparse, proc/dense,
# proc/lif models, utils/weightutils.py) can represent. A profile may be
# narrower than this, never wider: the deploy target could not carry it.
LAVA_LIMITS = {
    "weight_bits": (1, 8),          # Sparse/Dense num_weight_bits
    "weight_min": -256,             # weights are integers in [-256, 255]
    "weight_max": 255,
    "threshold_mant_bits": 17,      # LIF vth (unsigned), compared as vth << 6
    "bias_mant_bits": 13,           # LIF bias_mant, signed, sign bit included
    "bias_exp_max": 7,              # LIF bias_exp, 3 bits
    "decay_bits": 12,               # LIF du, dv (0..4095)
    "current_bits": 24,             # LIF u, wraps at 2^23
    "voltage_bits": 24,             # LIF v, clipped to +-(2^23 - 1)
}


class _FieldIssue(ValueError):
    """A cross-field problem raised inside a validator, tagged with its field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


# ---------------------------------------------------------------- error text
def _loc_to_field(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_at(model_cls: type, loc: Sequence[Any]) -> Optional[type]:
    """The pydantic model class that owns the last element of ``loc``."""
    import typing

    cls: Any = model_cls
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
        field = cls.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        # unwrap Optional[...] / list[...]
        for _ in range(3):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                break
            if not args:
                break
            ann = next(
                (a for a in args if isinstance(a, type) and issubclass(a, BaseModel)),
                args[0],
            )
        cls = ann
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return cls
    return None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word)[:100], list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def format_validation_error(
    err: ValidationError, source: str, model_cls: type
) -> str:
    """Turn a pydantic ValidationError into one line per problem:
    ``<source>: field '<field>': <reason> (got <value>)``."""
    lines = []
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        typ = e.get("type", "")
        ctx = e.get("ctx") or {}
        inp = e.get("input")
        field = _loc_to_field(loc)[:120]
        original = ctx.get("error")
        if isinstance(original, _FieldIssue):
            field = _loc_to_field(loc + tuple(
                int(x) if x.isdigit() else x for x in original.field.split(".")))
            msg = original.message
        elif typ == "extra_forbidden":
            owner = _model_at(model_cls, loc)
            allowed = sorted(owner.model_fields) if owner else []
            key = str(loc[-1])[:120] if loc else "?"
            msg = f"unknown key{_did_you_mean(key, allowed)}"
            if allowed:
                msg += f" (allowed keys: {', '.join(allowed)})"
        elif typ == "missing":
            msg = "required field is missing: add it"
        elif typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            op, key = {
                "greater_than": (">", "gt"),
                "greater_than_equal": (">=", "ge"),
                "less_than": ("<", "lt"),
                "less_than_equal": ("<=", "le"),
            }[typ]
            msg = f"must be {op} {ctx.get(key)} (got {echo(inp)})"
        elif typ == "finite_number":
            msg = f"must be a finite number (got {echo(inp)})"
        elif typ.startswith("int_"):
            msg = f"must be an integer (got {echo(inp)})"
        elif typ.startswith("float_"):
            msg = f"must be a number (got {echo(inp)})"
        elif typ.startswith("bool_"):
            msg = f"must be true or false (got {echo(inp)})"
        elif typ.startswith("string_") and typ != "string_too_short":
            msg = f"must be a string (got {echo(inp)})"
        elif typ == "string_too_short":
            msg = f"must not be empty (got {echo(inp)})"
        elif typ in ("list_type",):
            msg = f"must be a list (got {echo(inp)})"
        elif typ in ("model_type", "dict_type", "model_attributes_type"):
            msg = f"must be a mapping of keys to values (got {echo(inp)})"
        elif typ == "literal_error":
            expected = ctx.get("expected", "")
            choices = [c.strip(" '\"") for c in str(expected).replace(" or ", ",").split(",")]
            msg = (f"must be one of {expected} (got {echo(inp)})"
                   f"{_did_you_mean(inp, choices) if isinstance(inp, str) else ''}")
        elif typ == "value_error" and original is not None:
            msg = str(original)[:600]
        else:
            msg = f"{e.get('msg')} (got {echo(inp)})"
        where = f"field '{field}'" if field else "top level"
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def validate_mapping(cls: type, data: Any, source: str, kind: str):
    """``cls.model_validate(data)`` with problems raised as ConfigError naming ``source``;
    the result remembers ``source`` for later messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a {kind} must be a mapping (got {type(data).__name__})")
    try:
        obj = cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, cls)) from None
    obj._source = str(source)
    return obj


# What a YAML input may hold. A profile or model spec is a few kB; these
# bounds stop a hostile file (huge, or an alias "billion laughs" bomb) before
# it costs memory or time.
MAX_YAML_BYTES = 1 << 20        # 1 MiB per file
MAX_YAML_ALIASES = 100          # '*name' references per file
MAX_YAML_NODES = 100_000        # nodes after expanding every alias
ECHO_CHARS = 200                # an echoed user value is cut to this many characters

_ECHO = reprlib.Repr()
_ECHO.maxstring = _ECHO.maxother = ECHO_CHARS
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxdict = _ECHO.maxset = 8
_ECHO.maxlevel = 3


def echo(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` for an error message, bounded in time and length (a
    deeply nested or huge value never reaches the message whole)."""
    text = _ECHO.repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


class _YamlRefused(Exception):
    """Raised inside the loader; turned into a ConfigError naming the file."""


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate mapping keys (PyYAML keeps the
    last silently) and alias expansion beyond MAX_YAML_ALIASES references or
    MAX_YAML_NODES nodes (an anchor bomb builds an exponentially large value
    from a few lines)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise _YamlRefused(
                    f"line {mark.line + 1}: more than {MAX_YAML_ALIASES} alias references "
                    f"('*name'); write the values out")
        return super().compose_node(parent, index)

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _count_expanded(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:
                    continue
                if first != key_node.start_mark.line + 1:
                    raise _YamlRefused(
                        f"line {key_node.start_mark.line + 1}: duplicate key {echo(key)} (first "
                        f"given at line {first}); YAML would keep only the last: remove one")
        return super().construct_mapping(node, deep=deep)


def _count_expanded(root) -> None:
    """Nodes the document has once every alias is expanded; refuse past MAX_YAML_NODES.
    Counted over the shared node graph with memoisation, so the count itself is cheap."""
    memo: dict = {}

    def size(node) -> int:
        got = memo.get(id(node))
        if got is not None:
            return got
        memo[id(node)] = MAX_YAML_NODES + 1  # a cycle (recursive alias) counts as too large
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        total = min(total, MAX_YAML_NODES + 1)
        memo[id(node)] = total
        return total

    if size(root) > MAX_YAML_NODES:
        raise _YamlRefused(
            f"expanding its aliases ('*name') gives more than {MAX_YAML_NODES} values "
            f"(an alias bomb?); write the values out")


def read_text_file(path: str | Path, kind: str, max_bytes: int = MAX_YAML_BYTES) -> str:
    """The UTF-8 text of a small input file; a missing, unreadable, binary or
    oversized file is a ConfigError naming it."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: {kind} file expected but this is a directory; give the YAML file's path")
    if not p.exists():
        raise ConfigError(f"{p}: {kind} file not found; check the path")
    if not p.is_file():  # a FIFO would block the open, a socket or device makes no sense
        raise ConfigError(f"{p}: {kind} file expected but this is not a regular file; give the YAML file's path")
    try:
        with open(p, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the {kind} file ({exc.strerror or exc}); "
                          f"check its permissions") from None
    if len(raw) > max_bytes:
        raise ConfigError(f"{p}: {kind} file larger than {max_bytes} bytes; a {kind} is a "
                          f"few kB of YAML: check the path")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text (UTF-8) YAML file") from None


def read_yaml_mapping(path: str | Path, kind: str) -> dict:
    """Read a YAML file that must hold a mapping; errors name the file.
    Duplicate keys, alias bombs and files over MAX_YAML_BYTES are refused."""
    p = Path(path)
    text = read_text_file(p, kind)
    try:
        loader = StrictLoader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except _YamlRefused as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {str(getattr(exc, 'problem', exc))[:300]}") from None
    except (RecursionError, ValueError, OverflowError) as exc:  # e.g. deeply nested flow, huge number
        raise ConfigError(f"{p}: YAML value cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: a {kind} must be a YAML mapping of keys to values "
            f"(got {type(data).__name__})"
        )
    return data


# ---------------------------------------------------------------- the schema
# Upper bounds on what a profile may claim: far above any published chip (Loihi:
# 128 cores x 1024 neurons, 4096 axons, 1 Mbit synapse memory per core; TrueNorth:
# 4096 cores), low enough that every later computation stays cheap and exact.
MAX_CORES = 1 << 20                 # cores per chip
MAX_NEURONS_PER_CORE = 1 << 20      # neurons (compartments) per core
MAX_AXONS_PER_CORE = 1 << 24        # input / output axons per core
MAX_SYNAPSES_PER_CORE = 1 << 32     # synapse count budget per core
MAX_MEMORY_BITS_PER_CORE = 1 << 40  # synapse memory per core (bits)
MAX_CHIP_TOTAL = 1 << 52            # chip totals (neurons, synapses, bytes)
MAX_FORMAT_BITS = 4096              # memory word, chunk header (bits)
MAX_CHUNK_SYNAPSES = 4096           # synapses per chunk
MAX_FIELD_BITS = 64                 # one field of a synapse (index, delay, tag) and list lengths
MAX_WEIGHT_EXP = 32                 # |shared weight exponent| (Loihi: 7)
MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 10_000
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class SynapseMemory(BaseModel):
    """How one core stores synapses (nengo-loihi's chunk format)."""

    model_config = _STRICT

    word_bits: int = Field(gt=0, le=MAX_FORMAT_BITS,
                           description="memory word; a chunk is rounded up to whole words (bits)")
    chunk_max_synapses: int = Field(gt=0, le=MAX_CHUNK_SYNAPSES, description="most synapses one chunk holds")
    chunk_header_bits: int = Field(ge=0, le=MAX_FORMAT_BITS, description="fixed cost of one chunk (bits)")
    delay_bits: int = Field(0, ge=0, le=MAX_FIELD_BITS, description="synaptic delay field per synapse (bits)")
    tag_bits: int = Field(0, ge=0, le=MAX_FIELD_BITS, description="learning tag field per synapse (bits)")
    index_bits: Optional[int] = Field(
        None, ge=0, le=MAX_FIELD_BITS, description="fixed post-neuron index field per sparse synapse (bits); "
        "null: derive from the neurons on the core via index_bits_allowed")
    index_bits_allowed: Optional[list[int]] = Field(
        None, max_length=MAX_FIELD_BITS + 1, description="index widths the chip offers (bits); the smallest that "
        "addresses the core's neurons is used")

    @model_validator(mode="after")
    def _check(self) -> "SynapseMemory":
        if self.index_bits is None and not self.index_bits_allowed:
            raise _FieldIssue(
                "index_bits_allowed",
                "give either index_bits (a fixed width) or index_bits_allowed "
                "(the widths the chip offers, e.g. [0, 6, 7, 8, 9, 10, 11, 12] on Loihi)")
        if self.index_bits is not None and self.index_bits_allowed:
            raise _FieldIssue(
                "index_bits", "give index_bits or index_bits_allowed, not both")
        if self.index_bits_allowed:
            bad = [b for b in self.index_bits_allowed if not 0 <= b <= MAX_FIELD_BITS]
            if bad:
                raise _FieldIssue("index_bits_allowed",
                                  f"widths must be in 0..{MAX_FIELD_BITS} (got {echo(bad)})")
        return self


class ChipTotals(BaseModel):
    """Whole-chip figures as published (informational; checked for plausibility)."""

    model_config = _STRICT

    neurons: Optional[int] = Field(None, gt=0, le=MAX_CHIP_TOTAL, description="neurons per chip")
    synapses: Optional[int] = Field(None, gt=0, le=MAX_CHIP_TOTAL, description="synapses per chip")
    synapse_memory_bytes: Optional[int] = Field(None, gt=0, le=MAX_CHIP_TOTAL,
                                                description="synapse memory per chip (bytes)")


class HardwareProfile(BaseModel):
    """What one neuromorphic chip offers. Units are in the field names."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    description: str = Field("", max_length=MAX_TEXT_CHARS)
    cores: int = Field(gt=0, le=MAX_CORES, description="neuro-cores per chip")
    neurons_per_core: int = Field(gt=0, le=MAX_NEURONS_PER_CORE, description="neurons (compartments) per core")
    input_axons_per_core: int = Field(gt=0, le=MAX_AXONS_PER_CORE,
                                      description="distinct presynaptic sources per core")
    output_axons_per_core: Optional[int] = Field(None, gt=0, le=MAX_AXONS_PER_CORE,
                                                 description="fan-out axons per core")
    synapses_per_core: Optional[int] = Field(None, gt=0, le=MAX_SYNAPSES_PER_CORE,
                                             description="synapse count budget per core")
    synapse_memory_bits_per_core: Optional[int] = Field(
        None, gt=0, le=MAX_MEMORY_BITS_PER_CORE, description="synapse memory per core (bits)")
    synapse_memory: Optional[SynapseMemory] = None
    weight_bits: int = Field(description="weight bit width used by default (bits)")
    weight_bits_allowed: list[int] = Field(min_length=1, max_length=MAX_FIELD_BITS,
                                           description="weight widths the chip offers (bits)")
    weight_min: int = Field(description="smallest integer weight")
    weight_max: int = Field(description="largest integer weight")
    weight_exp_min: int = Field(ge=-MAX_WEIGHT_EXP, le=MAX_WEIGHT_EXP, description="smallest shared weight exponent")
    weight_exp_max: int = Field(ge=-MAX_WEIGHT_EXP, le=MAX_WEIGHT_EXP, description="largest shared weight exponent")
    threshold_mant_bits: int = Field(gt=0, description="threshold mantissa width (bits, unsigned)")
    bias_mant_bits: int = Field(gt=0, description="bias mantissa width (bits, signed incl. sign)")
    bias_exp_max: int = Field(ge=0, description="largest bias exponent")
    decay_bits: int = Field(gt=0, description="current/voltage decay width (bits)")
    current_bits: int = Field(gt=0, description="synaptic current state width (bits, signed)")
    voltage_bits: int = Field(gt=0, description="membrane voltage state width (bits, signed)")
    chip: Optional[ChipTotals] = None

    _source: str = PrivateAttr(default="<profile>")

    # ------------------------------------------------------------ validation
    @model_validator(mode="after")
    def _check(self) -> "HardwareProfile":
        if self.synapses_per_core is None and self.synapse_memory_bits_per_core is None:
            raise _FieldIssue(
                "synapses_per_core",
                "no synapse budget: give synapses_per_core (a count) and/or "
                "synapse_memory_bits_per_core (with a synapse_memory block)")
        if self.synapse_memory_bits_per_core is not None and self.synapse_memory is None:
            raise _FieldIssue(
                "synapse_memory",
                "synapse_memory_bits_per_core is set but the synapse_memory block "
                "(word_bits, chunk_max_synapses, chunk_header_bits, index bits) is missing: add it")
        lo, hi = LAVA_LIMITS["weight_bits"]
        bad = [b for b in self.weight_bits_allowed if not lo <= b <= hi]
        if bad:
            raise _FieldIssue(
                "weight_bits_allowed",
                f"widths {bad} cannot be represented: Lava's Sparse/Dense take "
                f"{lo}..{hi} weight bits; remove them")
        if self.weight_bits not in self.weight_bits_allowed:
            raise _FieldIssue(
                "weight_bits",
                f"{self.weight_bits} bits is not offered by this chip "
                f"(weight_bits_allowed: {self.weight_bits_allowed}); pick one of those")
        wmin, wmax = LAVA_LIMITS["weight_min"], LAVA_LIMITS["weight_max"]
        if not wmin <= self.weight_min < 0:
            raise _FieldIssue(
                "weight_min", f"must be in [{wmin}, -1] (mixed-sign weights as Lava "
                f"stores them; got {self.weight_min})")
        if not 0 < self.weight_max <= wmax:
            raise _FieldIssue(
                "weight_max", f"must be in [1, {wmax}] (got {self.weight_max})")
        if self.weight_exp_min > self.weight_exp_max:
            raise _FieldIssue(
                "weight_exp_min", f"must be <= weight_exp_max ({self.weight_exp_min} > "
                f"{self.weight_exp_max})")
        for key in ("threshold_mant_bits", "bias_mant_bits", "bias_exp_max",
                    "decay_bits", "current_bits", "voltage_bits"):
            val, lim = getattr(self, key), LAVA_LIMITS[key]
            if val > lim:
                raise _FieldIssue(
                    key, f"must be <= {lim} (got {val}): Lava's bit-accurate LIF "
                    f"cannot represent more")
        if self.synapse_memory_bits_per_core is not None:
            mem = self.synapse_memory
            assert mem is not None
            if self.synapse_memory_bits_per_core % mem.word_bits:
                raise _FieldIssue(
                    "synapse_memory_bits_per_core",
                    f"must be a whole number of {mem.word_bits}-bit words "
                    f"(got {self.synapse_memory_bits_per_core})")
            need = math.ceil(math.log2(self.neurons_per_core)) if self.neurons_per_core > 1 else 0
            if mem.index_bits is not None and mem.index_bits < need:
                raise _FieldIssue(
                    "synapse_memory.index_bits",
                    f"{mem.index_bits} bits cannot address {self.neurons_per_core} "
                    f"neurons per core (needs {need})")
            if mem.index_bits_allowed and max(mem.index_bits_allowed) < need:
                raise _FieldIssue(
                    "synapse_memory.index_bits_allowed",
                    f"the widest index ({max(mem.index_bits_allowed)} bits) cannot "
                    f"address {self.neurons_per_core} neurons per core (needs {need}); "
                    f"add a wider index or lower neurons_per_core")
            one = self._chunk_bits(1, self.weight_bits, True, self.neurons_per_core)
            if one > self.synapse_memory_bits_per_core:
                raise _FieldIssue(
                    "synapse_memory_bits_per_core",
                    f"too small to hold even one synapse ({one} bits needed)")
            if self.synapses_per_core is not None:
                cap = self._memory_capacity_best(self.weight_bits, True, self.neurons_per_core)
                if self.synapses_per_core > cap:
                    raise _FieldIssue(
                        "synapses_per_core",
                        f"{self.synapses_per_core} synapses do not fit "
                        f"synapse_memory_bits_per_core={self.synapse_memory_bits_per_core} "
                        f"with {self.weight_bits}-bit sparse weights (at most {cap} even "
                        f"packed in full chunks); lower synapses_per_core to <= {cap} or "
                        f"remove it to derive the budget from memory")
        if self.chip is not None and self.chip.neurons is not None:
            if self.chip.neurons > self.cores * self.neurons_per_core:
                raise _FieldIssue(
                    "chip.neurons",
                    f"{self.chip.neurons} neurons per chip exceed cores x "
                    f"neurons_per_core = {self.cores * self.neurons_per_core}")
        return self

    # ------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict, source: str = "<profile>") -> "HardwareProfile":
        """Validate a mapping; problems raise ConfigError naming ``source``."""
        return validate_mapping(cls, data, source, "hardware profile")

    @property
    def source(self) -> str:
        """The file this profile was read from (for error messages)."""
        return self._source

    # ------------------------------------------------------------ memory model
    def _mem(self) -> SynapseMemory:
        if self.synapse_memory is None:
            raise ConfigError(
                f"{self._source}: field 'synapse_memory': this profile has no synapse "
                f"memory model (only a synapses_per_core count); add a synapse_memory block")
        return self.synapse_memory

    def _weight_bits(self, weight_bits: Optional[int]) -> int:
        wb = self.weight_bits if weight_bits is None else int(weight_bits)
        if wb not in self.weight_bits_allowed:
            raise ConfigError(
                f"{self._source}: field 'weight_bits_allowed': {wb}-bit weights are not "
                f"offered by this chip (allowed: {self.weight_bits_allowed})")
        return wb

    def index_bits(self, n_neurons: Optional[int] = None) -> int:
        """Index bits one sparse synapse pays on a core holding ``n_neurons``
        post-neurons (default: a full core). nengo-loihi: ceil(log2(max index
        + 1)), rounded up to the next width in index_bits_allowed."""
        mem = self._mem()
        n = self.neurons_per_core if n_neurons is None else int(n_neurons)
        if n < 1:
            raise ConfigError(f"n_neurons must be >= 1 (got {n})")
        need = math.ceil(math.log2(n)) if n > 1 else 0
        if mem.index_bits is not None:
            if need > mem.index_bits:
                raise ConfigError(
                    f"{self._source}: field 'synapse_memory.index_bits': {mem.index_bits} "
                    f"bits cannot address {n} neurons")
            return mem.index_bits
        for b in sorted(mem.index_bits_allowed or []):
            if b >= need:
                return b
        raise ConfigError(
            f"{self._source}: field 'synapse_memory.index_bits_allowed': no width addresses "
            f"{n} neurons (needs {need} bits)")

    def bits_per_synapse(self, weight_bits: Optional[int] = None, sparse: bool = True,
                         n_neurons: Optional[int] = None) -> int:
        """Bits one synapse costs inside a chunk (header and rounding excluded)."""
        mem = self._mem()
        wb = self._weight_bits(weight_bits)
        bits = wb + mem.delay_bits + mem.tag_bits
        if sparse:
            bits += self.index_bits(n_neurons)
        return bits

    def _chunk_bits(self, m, weight_bits, sparse, n_neurons):
        mem = self._mem()
        bps = self.bits_per_synapse(weight_bits, sparse, n_neurons)
        m = np.asarray(m, dtype=np.int64)
        raw = m * bps + mem.chunk_header_bits
        words = -(-raw // mem.word_bits)
        out = np.where(m > 0, words * mem.word_bits, 0)
        return int(out) if out.ndim == 0 else out

    def chunk_bits(self, n_synapses: int, weight_bits: Optional[int] = None,
                   sparse: bool = True, n_neurons: Optional[int] = None) -> int:
        """Memory of one chunk of ``n_synapses`` (1..chunk_max_synapses), in bits."""
        mem = self._mem()
        if not 1 <= int(n_synapses) <= mem.chunk_max_synapses:
            raise ConfigError(
                f"a chunk holds 1..{mem.chunk_max_synapses} synapses (got {n_synapses})")
        return self._chunk_bits(int(n_synapses), weight_bits, sparse, n_neurons)

    def synapse_memory_bits(self, counts: Iterable[int] | np.ndarray,
                            weight_bits: Optional[int] = None, sparse: bool = True,
                            n_neurons: Optional[int] = None) -> int:
        """Memory (bits) one core's synapses use.

        ``counts``: for each input axon of the core (each presynaptic neuron with
        at least one synapse onto the core), the number of synapses it makes onto
        the core's neurons; zeros are ignored. For ``sparse=False`` (dense rows)
        pass the stored row length, i.e. the number of neurons on the core, for
        each axon. ``n_neurons``: post-neurons on the core, which sets the index
        width (default: neurons_per_core, the widest).
        """
        mem = self._mem()
        c = np.asarray(list(counts) if not isinstance(counts, np.ndarray) else counts)
        if c.size == 0:
            return 0
        c = c.astype(np.int64).ravel()
        if (c < 0).any():
            raise ConfigError("synapse counts per axon must be >= 0")
        C = mem.chunk_max_synapses
        full, rest = np.divmod(c, C)
        total = int(full.sum()) * self._chunk_bits(C, weight_bits, sparse, n_neurons)
        if (rest > 0).any():
            total += int(np.sum(self._chunk_bits(rest, weight_bits, sparse, n_neurons)))
        return int(total)

    def _memory_capacity_best(self, weight_bits, sparse, n_neurons) -> int:
        """Most synapses the memory holds with every axon's row packed in full
        chunks of min(chunk_max_synapses, n_neurons) synapses."""
        mem = self._mem()
        M = self.synapse_memory_bits_per_core
        assert M is not None
        L = min(mem.chunk_max_synapses, n_neurons)
        F = self._chunk_bits(L, weight_bits, sparse, n_neurons)
        full, rem = divmod(M, F)
        extra = 0
        for m in range(L - 1, 0, -1):
            if self._chunk_bits(m, weight_bits, sparse, n_neurons) <= rem:
                extra = m
                break
        return full * L + extra

    def _memory_capacity_guaranteed(self, weight_bits, sparse, n_neurons, n_axons) -> int:
        """Largest K such that ANY layout of K synapses over at most ``n_axons``
        axons (each with <= n_neurons synapses) fits. Uses the exact identity
        bits(row of n) = n*F/C + h(n mod C), h(r) = chunk(r) - r*F/C, and bounds
        the sum of h over axons by min(n_axons, K) * max h (conservative)."""
        mem = self._mem()
        M = Fraction(self.synapse_memory_bits_per_core)
        C = mem.chunk_max_synapses
        F = Fraction(self._chunk_bits(C, weight_bits, sparse, n_neurons))
        rate = F / C
        rmax = min(C - 1, n_neurons)
        hmax = max([Fraction(self._chunk_bits(r, weight_bits, sparse, n_neurons)) - r * rate
                    for r in range(1, rmax + 1)] or [Fraction(0)])
        hmax = max(hmax, Fraction(0))
        A = n_axons
        best = 0
        k1 = math.floor(M / (rate + hmax)) if rate + hmax > 0 else 0  # K <= A branch
        best = max(best, min(k1, A))
        if M >= A * hmax:  # K > A branch
            k2 = math.floor((M - A * hmax) / rate)
            if k2 > A:
                best = max(best, k2)
        return int(best)

    def synapse_capacity(self, weight_bits: Optional[int] = None, sparse: bool = True,
                         n_neurons: Optional[int] = None,
                         n_axons: Optional[int] = None) -> int:
        """Synapses that fit one core: the minimum of the count budget
        (synapses_per_core), what the memory allows, and what the wiring allows
        (input_axons_per_core x n_neurons).

        ``n_neurons``: post-neurons placed on the core (default neurons_per_core);
        it sets the index width and the longest row.
        ``sparse=False``: dense rows (one weight per neuron of the core, zeros
        included), so the figure is whole rows x n_neurons.
        ``n_axons=None``: the memory figure is the best case (rows packed into
        full chunks). ``n_axons=A``: a count guaranteed to fit for every layout
        over at most A input axons (conservative; use this when synapses move
        between axons, as in rewiring). Exact usage of a given layout:
        :meth:`synapse_memory_bits`.
        """
        n = self.neurons_per_core if n_neurons is None else int(n_neurons)
        if not 1 <= n <= self.neurons_per_core:
            raise ConfigError(
                f"{self._source}: n_neurons must be in 1..{self.neurons_per_core} "
                f"(neurons_per_core; got {n})")
        A = self.input_axons_per_core if n_axons is None else min(int(n_axons), self.input_axons_per_core)
        if n_axons is not None and int(n_axons) < 1:
            raise ConfigError(f"n_axons must be >= 1 (got {n_axons})")
        cap = A * n
        if self.synapses_per_core is not None:
            cap = min(cap, self.synapses_per_core)
        if self.synapse_memory_bits_per_core is not None:
            wb = self._weight_bits(weight_bits)
            if not sparse:
                # dense rows always store one weight per neuron of the core
                row = self.synapse_memory_bits([n], wb, sparse=False, n_neurons=n)
                mem_cap = min(self.synapse_memory_bits_per_core // row, A) * n
            elif n_axons is None:
                mem_cap = self._memory_capacity_best(wb, sparse, n)
            else:
                mem_cap = self._memory_capacity_guaranteed(wb, sparse, n, A)
            cap = min(cap, mem_cap)
        elif weight_bits is not None:
            self._weight_bits(weight_bits)
        return int(cap)

    def fits_memory(self, counts, weight_bits: Optional[int] = None, sparse: bool = True,
                    n_neurons: Optional[int] = None) -> bool:
        """True when a core with these per-axon counts fits its synapse memory
        (always True for a count-only profile)."""
        if self.synapse_memory_bits_per_core is None:
            return True
        return self.synapse_memory_bits(counts, weight_bits, sparse, n_neurons) \
            <= self.synapse_memory_bits_per_core


# ---------------------------------------------------------------- functions
def load_profile(path: str | Path) -> HardwareProfile:
    """Read and validate a hardware profile YAML file."""
    data = read_yaml_mapping(path, "hardware profile")
    return HardwareProfile.from_dict(data, source=str(path))


def list_profiles(directory: str | Path = "hardware_profiles") -> list[Path]:
    """The profile files (``*.yaml``, ``*.yml``) in ``directory``, sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: no such profile directory")
    return sorted([*d.glob("*.yaml"), *d.glob("*.yml")])


def profile_to_dict(profile: HardwareProfile) -> dict:
    """Plain JSON-ready dict of a validated profile (for the bundle manifest);
    ``HardwareProfile.from_dict`` reads it back."""
    return profile.model_dump(mode="json")
