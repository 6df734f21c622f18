"""The optional ``energy:`` block of a hardware profile: per-operation energy and time, with its source.

Figures are claims about a chip and must come from a publication: ``source`` is required and
names it. A profile without the block has no energy model, and ``deepr-neuro estimate`` says so
instead of guessing (Loihi 2 and SpiNNaker 2 publish no per-operation table).

Tile model (used for spike messages and the barrier): core ``c`` sits on tile
``c // cores_per_tile``; tiles form a 2-D mesh ``mesh_tiles_x`` wide, tile ``t`` at
``(t % mesh_tiles_x, t // mesh_tiles_x)``; a message between tiles takes |dx| east-west and
|dy| north-south hops (dimension-order routing), one within a tile costs ``spike_within_tile``.
"""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["EnergyModel"]

_MAX_PJ = 1e9     # per operation; far above any published figure
_MAX_NS = 1e9


def _pj(description: str, optional: bool = False):
    return Field(None if optional else ..., ge=0, le=_MAX_PJ, allow_inf_nan=False, description=description)


class EnergyModel(BaseModel):
    """Per-operation energy (pJ) and time (ns) of one chip, and where they were published."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    source: str = Field(min_length=10, max_length=2000,
                        description="publication the figures come from (authors, venue, year, table)")
    synaptic_op_pj: float = _pj("energy of one synaptic spike operation (one synapse of one arriving spike)")
    synaptic_op_ns: float = Field(ge=0, le=_MAX_NS, allow_inf_nan=False, description="time of one synaptic op")
    neuron_update_active_pj: float = _pj("energy of one neuron update of an active neuron")
    neuron_update_inactive_pj: float = _pj("energy of one neuron update of an inactive neuron")
    neuron_update_active_ns: float = Field(ge=0, le=_MAX_NS, allow_inf_nan=False)
    neuron_update_inactive_ns: float = Field(ge=0, le=_MAX_NS, allow_inf_nan=False)
    spike_within_tile_pj: float = _pj("energy of one spike message between cores of one tile")
    spike_within_tile_ns: float = Field(ge=0, le=_MAX_NS, allow_inf_nan=False)
    hop_east_west_pj: float = _pj("energy per tile hop east-west")
    hop_north_south_pj: float = _pj("energy per tile hop north-south")
    hop_east_west_ns: float = Field(ge=0, le=_MAX_NS, allow_inf_nan=False)
    hop_north_south_ns: float = Field(ge=0, le=_MAX_NS, allow_inf_nan=False)
    barrier_ns_min: float = Field(ge=0, le=_MAX_NS, allow_inf_nan=False,
                                  description="barrier synchronisation time at barrier_tiles_min tiles")
    barrier_ns_max: float = Field(ge=0, le=_MAX_NS, allow_inf_nan=False,
                                  description="barrier synchronisation time at barrier_tiles_max tiles")
    barrier_tiles_min: int = Field(1, ge=1, le=1 << 20)
    barrier_tiles_max: int = Field(ge=1, le=1 << 20)
    cores_per_tile: int = Field(ge=1, le=1 << 20, description="cores sharing one mesh router")
    mesh_tiles_x: int = Field(ge=1, le=1 << 20, description="tiles per mesh row (the mesh's width)")
    voltage: Optional[str] = Field(None, max_length=100, description="operating point the figures hold at")
    notes: str = Field("", max_length=4000)

    @model_validator(mode="after")
    def _check(self) -> "EnergyModel":
        if self.barrier_tiles_min > self.barrier_tiles_max:
            raise ValueError(f"barrier_tiles_min must be <= barrier_tiles_max ({self.barrier_tiles_min} > "
                             f"{self.barrier_tiles_max})")
        if self.barrier_ns_min > self.barrier_ns_max:
            raise ValueError(f"barrier_ns_min must be <= barrier_ns_max ({self.barrier_ns_min} > "
                             f"{self.barrier_ns_max})")
        return self

    def barrier_ns(self, tiles: int) -> float:
        """Barrier time for ``tiles`` tiles: linear between the two published ends, clamped
        (the paper gives only the range; linear in between is this toolkit's assumption)."""
        lo, hi = self.barrier_tiles_min, self.barrier_tiles_max
        t = min(max(int(tiles), lo), hi)
        if hi == lo:
            return float(self.barrier_ns_max)
        return float(self.barrier_ns_min + (self.barrier_ns_max - self.barrier_ns_min) * (t - lo) / (hi - lo))
