"""Hardware profiles: the single home of every chip limit.

A profile is a YAML file (``hardware_profiles/*.yaml``) that states what one
neuromorphic chip offers: cores, neurons and input axons per core, a synapse
budget per core (a count, a memory size in bits, or both), the weight format
and the bit widths of the neuron state. :func:`load_profile` validates it with
pydantic (unknown keys rejected) and turns every problem into a
:class:`~deepr_neuro.errors.ConfigError` that names the file, the field, the
reason and, where one is likely, the fix::

    hardware_profiles/x.yaml: field 'synapses_per_core': must be > 0 (got 0)

The YAML loading and error text live in :mod:`deepr_neuro.hardware.yaml_io`
(the model spec uses them too); the chunked synapse memory model (nengo-loihi's
formula: per input axon, rows split into chunks, rounded up to memory words)
in :mod:`deepr_neuro.hardware.memory`, to which the memory methods delegate.
This module is the schema.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from deepr_neuro.errors import ConfigError
from deepr_neuro.hardware import memory
from deepr_neuro.hardware.yaml_io import FieldIssue, echo, read_yaml_mapping, validate_mapping
from deepr_neuro.hardware.energy import EnergyModel
from deepr_neuro.network.fixed_point import LAVA_FORMAT, LAVA_LIMITS

__all__ = [
    "LAVA_LIMITS",
    "SynapseMemory",
    "ChipTotals",
    "HardwareProfile",
    "load_profile",
    "list_profiles",
    "profile_to_dict",
]

# What Lava's bit-accurate models can represent lives in network/fixed_point.py
# (LAVA_LIMITS: value ranges, LAVA_FORMAT: LIF widths). A profile may be
# narrower than this, never wider: the deploy target could not carry it.



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
            raise FieldIssue(
                "index_bits_allowed",
                "give either index_bits (a fixed width) or index_bits_allowed "
                "(the widths the chip offers, e.g. [0, 6, 7, 8, 9, 10, 11, 12] on Loihi)")
        if self.index_bits is not None and self.index_bits_allowed:
            raise FieldIssue(
                "index_bits", "give index_bits or index_bits_allowed, not both")
        if self.index_bits_allowed:
            bad = [b for b in self.index_bits_allowed if not 0 <= b <= MAX_FIELD_BITS]
            if bad:
                raise FieldIssue("index_bits_allowed",
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
    energy: Optional[EnergyModel] = Field(None, exclude=True)  # estimates only: not part of manifests/fingerprints

    _source: str = PrivateAttr(default="<profile>")

    # ------------------------------------------------------------ validation
    @model_validator(mode="after")
    def _check(self) -> "HardwareProfile":
        """Cross-field rules, in this order: a budget exists, the weight format
        and the neuron widths fit Lava, the memory model holds the budget, the
        chip totals are plausible."""
        self._check_budget()
        self._check_weight_format()
        self._check_lava_widths()
        if self.synapse_memory_bits_per_core is not None:
            self._check_memory()
        self._check_chip_totals()
        return self

    def _check_budget(self) -> None:
        if self.synapses_per_core is None and self.synapse_memory_bits_per_core is None:
            raise FieldIssue(
                "synapses_per_core",
                "no synapse budget: give synapses_per_core (a count) and/or "
                "synapse_memory_bits_per_core (with a synapse_memory block)")
        if self.synapse_memory_bits_per_core is not None and self.synapse_memory is None:
            raise FieldIssue(
                "synapse_memory",
                "synapse_memory_bits_per_core is set but the synapse_memory block "
                "(word_bits, chunk_max_synapses, chunk_header_bits, index bits) is missing: add it")

    def _check_weight_format(self) -> None:
        lo, hi = LAVA_LIMITS["num_weight_bits"]
        bad = [b for b in self.weight_bits_allowed if not lo <= b <= hi]
        if bad:
            raise FieldIssue(
                "weight_bits_allowed",
                f"widths {bad} cannot be represented: Lava's Sparse/Dense take "
                f"{lo}..{hi} weight bits; remove them")
        if self.weight_bits not in self.weight_bits_allowed:
            raise FieldIssue(
                "weight_bits",
                f"{self.weight_bits} bits is not offered by this chip "
                f"(weight_bits_allowed: {self.weight_bits_allowed}); pick one of those")
        wmin, wmax = LAVA_LIMITS["weight"]
        if not wmin <= self.weight_min < 0:
            raise FieldIssue(
                "weight_min", f"must be in [{wmin}, -1] (mixed-sign weights as Lava "
                f"stores them; got {self.weight_min})")
        if not 0 < self.weight_max <= wmax:
            raise FieldIssue(
                "weight_max", f"must be in [1, {wmax}] (got {self.weight_max})")
        if self.weight_exp_min > self.weight_exp_max:
            raise FieldIssue(
                "weight_exp_min", f"must be <= weight_exp_max ({self.weight_exp_min} > "
                f"{self.weight_exp_max})")

    def _check_lava_widths(self) -> None:
        for key in ("threshold_mant_bits", "bias_mant_bits", "bias_exp_max",
                    "decay_bits", "current_bits", "voltage_bits"):
            val, lim = getattr(self, key), LAVA_FORMAT[key]
            if val > lim:
                raise FieldIssue(
                    key, f"must be <= {lim} (got {val}): Lava's bit-accurate LIF "
                    f"cannot represent more")

    def _check_memory(self) -> None:
        """The memory is whole words, addresses every neuron, and holds the count budget."""
        mem = self.synapse_memory
        assert mem is not None
        if self.synapse_memory_bits_per_core % mem.word_bits:
            raise FieldIssue(
                "synapse_memory_bits_per_core",
                f"must be a whole number of {mem.word_bits}-bit words "
                f"(got {self.synapse_memory_bits_per_core})")
        need = memory.index_bits_needed(self.neurons_per_core)
        if mem.index_bits is not None and mem.index_bits < need:
            raise FieldIssue(
                "synapse_memory.index_bits",
                f"{mem.index_bits} bits cannot address {self.neurons_per_core} "
                f"neurons per core (needs {need})")
        if mem.index_bits_allowed and max(mem.index_bits_allowed) < need:
            raise FieldIssue(
                "synapse_memory.index_bits_allowed",
                f"the widest index ({max(mem.index_bits_allowed)} bits) cannot "
                f"address {self.neurons_per_core} neurons per core (needs {need}); "
                f"add a wider index or lower neurons_per_core")
        one = self._chunk_bits(1, self.weight_bits, True, self.neurons_per_core)
        if one > self.synapse_memory_bits_per_core:
            raise FieldIssue(
                "synapse_memory_bits_per_core",
                f"too small to hold even one synapse ({one} bits needed)")
        if self.synapses_per_core is not None:
            cap = self._memory_capacity_best(self.weight_bits, True, self.neurons_per_core)
            if self.synapses_per_core > cap:
                raise FieldIssue(
                    "synapses_per_core",
                    f"{self.synapses_per_core} synapses do not fit "
                    f"synapse_memory_bits_per_core={self.synapse_memory_bits_per_core} "
                    f"with {self.weight_bits}-bit sparse weights (at most {cap} even "
                    f"packed in full chunks); lower synapses_per_core to <= {cap} or "
                    f"remove it to derive the budget from memory")

    def _check_chip_totals(self) -> None:
        if self.chip is not None and self.chip.neurons is not None:
            if self.chip.neurons > self.cores * self.neurons_per_core:
                raise FieldIssue(
                    "chip.neurons",
                    f"{self.chip.neurons} neurons per chip exceed cores x "
                    f"neurons_per_core = {self.cores * self.neurons_per_core}")

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
        need = memory.index_bits_needed(n)
        if mem.index_bits is not None:
            if need > mem.index_bits:
                raise ConfigError(
                    f"{self._source}: field 'synapse_memory.index_bits': {mem.index_bits} "
                    f"bits cannot address {n} neurons")
            return mem.index_bits
        width = memory.index_width(mem.index_bits_allowed, need)
        if width is not None:
            return width
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
        return memory.chunk_bits(mem, m, self.bits_per_synapse(weight_bits, sparse, n_neurons))

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
        c = memory.axon_counts(counts)
        if c.size == 0:
            return 0
        return memory.memory_bits(mem, c, self.bits_per_synapse(weight_bits, sparse, n_neurons))

    def _memory_capacity_best(self, weight_bits, sparse, n_neurons) -> int:
        """Most synapses the memory holds, rows packed in full chunks (:func:`memory.capacity_best`)."""
        mem = self._mem()
        assert self.synapse_memory_bits_per_core is not None
        return memory.capacity_best(mem, self.synapse_memory_bits_per_core,
                                    self.bits_per_synapse(weight_bits, sparse, n_neurons), n_neurons)

    def _memory_capacity_guaranteed(self, weight_bits, sparse, n_neurons, n_axons) -> int:
        """Synapses that fit in every layout over ``n_axons`` axons (:func:`memory.capacity_guaranteed`)."""
        mem = self._mem()
        return memory.capacity_guaranteed(mem, self.synapse_memory_bits_per_core,
                                          self.bits_per_synapse(weight_bits, sparse, n_neurons),
                                          n_neurons, n_axons)

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
