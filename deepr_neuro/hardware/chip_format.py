"""The chip's integer format: the widths conversion must respect.

A hardware profile's integer fields (weight bits, weight_exp range, LIF
widths) as one small value type; its defaults are Lava's own widths
(:data:`deepr_neuro.network.fixed_point.LAVA_FORMAT`), a profile may be
narrower (:meth:`ChipFormat.from_profile`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from deepr_neuro.errors import ConfigError
from deepr_neuro.network.fixed_point import (ACT_SHIFT, IF_DU, LAVA_FORMAT, LAVA_LIMITS,
                                             LAVA_MAX_WEIGHT_BITS, VTH_SHIFT)


@dataclass(frozen=True)
class ChipFormat:
    """The integer widths conversion must respect.

    Defaults are what Lava's bit-accurate models hold (lava-nc 0.10.0); a
    hardware profile may be narrower: use :meth:`from_profile`.
    """

    num_weight_bits: int = LAVA_MAX_WEIGHT_BITS
    weight_exp_min: int = LAVA_LIMITS["weight_exp"][0]
    weight_exp_max: int = LAVA_LIMITS["weight_exp"][1]
    threshold_mant_bits: int = LAVA_FORMAT["threshold_mant_bits"]   # vth, unsigned
    bias_mant_bits: int = LAVA_FORMAT["bias_mant_bits"]             # signed, sign bit included
    bias_exp_max: int = LAVA_FORMAT["bias_exp_max"]
    decay_bits: int = LAVA_FORMAT["decay_bits"]
    current_bits: int = LAVA_FORMAT["current_bits"]                 # u; the input a enters as a << 6
    voltage_bits: int = LAVA_FORMAT["voltage_bits"]                 # v

    @classmethod
    def from_profile(cls, profile, num_weight_bits: Optional[int] = None) -> "ChipFormat":
        """Read the widths from a :class:`deepr_neuro.hardware.profile.HardwareProfile`."""
        return cls(
            num_weight_bits=int(num_weight_bits if num_weight_bits is not None
                                else profile.weight_bits),
            weight_exp_min=int(profile.weight_exp_min),
            weight_exp_max=int(profile.weight_exp_max),
            threshold_mant_bits=int(profile.threshold_mant_bits),
            bias_mant_bits=int(profile.bias_mant_bits),
            bias_exp_max=int(profile.bias_exp_max),
            decay_bits=int(profile.decay_bits),
            current_bits=int(profile.current_bits),
            voltage_bits=int(profile.voltage_bits),
        )

    @property
    def vth_max(self) -> int:
        return (1 << self.threshold_mant_bits) - 1

    @property
    def bias_mant_max(self) -> int:
        return (1 << (self.bias_mant_bits - 1)) - 1

    @property
    def bias_mant_min(self) -> int:
        return -(1 << (self.bias_mant_bits - 1))

    @property
    def decay_max(self) -> int:
        return (1 << self.decay_bits) - 1

    @property
    def input_max(self) -> int:
        """Largest |a| per step with ``a << 6`` inside the current's range (no wrap)."""
        return (1 << (self.current_bits - 1 - ACT_SHIFT)) - 1

    def check(self) -> "ChipFormat":
        if self.decay_max < IF_DU:
            raise ConfigError(
                f"decay_bits: {self.decay_bits} bits cannot hold du = {IF_DU} "
                "(integrate-and-fire needs 12-bit decays)")
        if self.vth_max << VTH_SHIFT > (1 << (self.voltage_bits - 1)) - 1:
            raise ConfigError(
                f"threshold_mant_bits: vth up to {self.vth_max} << 6 does not fit "
                f"the {self.voltage_bits}-bit voltage")
        return self
