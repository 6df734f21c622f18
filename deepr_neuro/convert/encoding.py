"""Input encoding: how a uint8 pixel becomes a spike train on the chip.

Input neuron ``i`` is a chip neuron with no synapses and bias
``bias_mant = (x_i * gain) >> shift`` (``InputEncoding``), ``gain`` and
``shift`` chosen so that a pixel of 255 gets (nearly) the largest 13-bit bias
mantissa. A constant bias ``B`` fires every ``floor(theta / B) + 1`` steps
(reset to zero makes the period an integer); ``vth`` of the input layer is
chosen to make the spike count over ``steps`` steps as proportional to the
pixel as those integer periods allow (least squares over the calibration
pixels), and the fitted slope is the input rate used for the first layer's
normalisation (DESIGN.md section 5).

Its own module because the choice is a self-contained fit that the
conversion (:mod:`deepr_neuro.convert.conversion`) only consumes. ``fmt`` is
that module's ``ChipFormat`` (read by attribute, not imported: the conversion
imports this module).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from deepr_neuro.errors import ConfigError
from deepr_neuro.network.integer_network import InputEncoding
from deepr_neuro.network.fixed_point import ACT_SHIFT


def input_counts(bias_eff: np.ndarray, vth: int, steps: int) -> np.ndarray:
    """Spike count of an input neuron with constant effective bias over ``steps``.

    v = k * B after k steps; it spikes when k * B > vth << 6 and resets to 0,
    so the period is floor((vth << 6) / B) + 1 steps (no spike when B <= 0).
    """
    b = np.asarray(bias_eff, dtype=np.int64)
    theta = int(vth) << ACT_SHIFT
    period = np.where(b > 0, theta // np.maximum(b, 1) + 1, 0)
    return np.where(b > 0, steps // np.maximum(period, 1), 0)


def choose_input_encoding(x_calib: np.ndarray, fmt: "ChipFormat", *, max_rate: float,
                          steps: int) -> Tuple[InputEncoding, int, int, float]:
    """(encoding, vth, bias_exp, rate) for the input layer.

    ``gain / 2**shift`` maps 255 onto the largest bias mantissa (fine bias
    steps); ``vth`` is picked among thresholds whose nominal rate at 255 is
    within 2x of ``max_rate`` to make the spike count over ``steps`` most nearly
    proportional to the pixel (least squares over the calibration pixels);
    ``rate`` is the fitted count per step at pixel 255.
    """
    shift = 12
    gain = (fmt.bias_mant_max << shift) // 255
    enc = InputEncoding(gain=int(gain), shift=shift)
    bias_exp = 0
    levels = np.arange(256)
    b = enc.encode(levels).astype(np.int64) << bias_exp
    hist = np.bincount(np.asarray(x_calib, dtype=np.int64).ravel(), minlength=256)
    hist = hist[:256].astype(np.float64)
    hist[0] = 0.0  # zero pixels give zero spikes whatever vth is
    if hist.sum() == 0:
        hist[:] = 1.0
    theta_nominal = b[255] / max_rate
    best = None
    lo = max(1, int(theta_nominal / 2) >> ACT_SHIFT)
    hi = min(fmt.vth_max, (int(theta_nominal * 2) >> ACT_SHIFT) + 1)
    cands = np.unique(np.linspace(lo, hi, 400).astype(np.int64))
    for vth in cands:
        c = input_counts(b, int(vth), steps).astype(np.float64)
        # least-squares slope through 0 of count ~ slope * pixel, weighted
        slope = np.sum(hist * c * levels) / max(np.sum(hist * levels * levels), 1e-12)
        if slope <= 0:
            continue
        err = np.sum(hist * (c - slope * levels) ** 2) / (slope * 255) ** 2
        if best is None or err < best[0]:
            best = (err, int(vth), slope)
    if best is None:
        raise ConfigError(
            f"input layer: no threshold gives spikes in {steps} steps at "
            f"max_rate {max_rate}; raise max_rate or steps")
    _, vth, slope = best
    return enc, vth, bias_exp, float(slope * 255 / steps)

