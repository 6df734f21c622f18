"""Lava's fixed-point numbers and rules, in one place (lava-nc 0.10.0).

Everything the emulator, the conversion/quantization, the bundle check and
the chip format (:mod:`deepr_neuro.hardware.chip_format`) need to agree on:
the LIF model's shifts and widths (``AbstractPyLifModelFixed`` in
lava/proc/lif/models.py), the value ranges of its parameters, the synapse
weight format (sign modes, 8-bit clip, truncation to ``num_weight_bits``:
lava/utils/weightutils.py, ``PySparseModelBitAcc``), the ``weight_exp`` shift
and the effective bias. Brian2's backend keeps its own copy on purpose (an
independent reading of Lava's source is the cross-check).

Lava's integer weight format (read from ``lava/utils/weightutils.py`` and
``lava/proc/sparse/models.py``, ``AbstractPySparseModelBitAcc.run_spk``):

* the sign mode is found from the weight matrix itself
  (``determine_sign_mode``): ``excitatory`` if min >= 0, else ``inhibitory``
  if max <= 0, else ``mixed``;
* the weights are clipped to 8 bits (``clip_weights``: mixed [-256, 255],
  excitatory [0, 255], inhibitory [-255, 0]);
* then truncated to ``num_weight_bits`` b (``truncate_weights``):
  ``w = (w >> n) << n`` with ``n = 8 - b + is_mixed``, an arithmetic shift,
  so negative mixed weights are floored (-3 -> -4 at n = 1); inhibitory
  weights are negated, truncated and negated back (rounded toward zero);
* each step the accumulated input ``a = W . s`` is shifted by ``weight_exp``
  (left if > 0, arithmetic right if < 0; the right shift floors the *sum*).

The weight quantizer (:func:`quantize_weights`, :func:`fake_quantize` for
quantization-aware training) lives here too: it puts float weights onto this
grid, and training needs it without importing the conversion.

Pure NumPy: no Lava import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from deepr_neuro.errors import ConfigError

# --- constants of AbstractPyLifModelFixed (lava/proc/lif/models.py) ---------
DECAY_SHIFT = 12            # decays are MSB-aligned to 12 bits
DECAY_UNITY = 1 << DECAY_SHIFT
DS_OFFSET = 1               # added to du ("ds_offset = 1")
DM_OFFSET = 0               # added to dv ("dm_offset = 0")
ACT_SHIFT = 6               # synaptic input a enters u as a << 6
VTH_SHIFT = 6               # threshold is compared as vth << 6
UV_BITS = 24                # "uv_bitwidth = 24"
MAX_UV = 1 << (UV_BITS - 1)  # "max_uv_val = 2 ** (uv_bitwidth - 1)"
V_MAX = MAX_UV - 1          # v is clipped to [-(2**23 - 1), 2**23 - 1]

#: Integrate-and-fire: current lasts one step (4096 - (4095 + 1) = 0), no leak.
IF_DU = DECAY_UNITY - DS_OFFSET  # 4095
IF_DV = 0

#: Lava's synapse word: weights are stored as 8-bit mantissas (+ sign when mixed).
LAVA_MAX_WEIGHT_BITS = 8

#: The widths of Lava's bit-accurate LIF (field names of a hardware profile and
#: of :class:`~deepr_neuro.hardware.chip_format.ChipFormat`). A profile may be
#: narrower, never wider: the deploy target could not carry it.
LAVA_FORMAT = {
    "threshold_mant_bits": 17,      # LIF vth (unsigned), compared as vth << 6
    "bias_mant_bits": 13,           # LIF bias_mant, signed, sign bit included
    "bias_exp_max": 7,              # LIF bias_exp, 3 bits
    "decay_bits": 12,               # LIF du, dv (0..4095)
    "current_bits": UV_BITS,        # LIF u, wraps at 2^23
    "voltage_bits": UV_BITS,        # LIF v, clipped to +-(2^23 - 1)
}

#: Value ranges (inclusive) of every integer field of a network, keyed by field.
LAVA_LIMITS = {
    "du": (0, (1 << LAVA_FORMAT["decay_bits"]) - 1),            # uint16, precision 12
    "dv": (0, (1 << LAVA_FORMAT["decay_bits"]) - 1),            # uint16, precision 12
    "vth": (0, (1 << LAVA_FORMAT["threshold_mant_bits"]) - 1),  # precision 17
    "bias_mant": (-(1 << (LAVA_FORMAT["bias_mant_bits"] - 1)),
                  (1 << (LAVA_FORMAT["bias_mant_bits"] - 1)) - 1),  # int16, precision 13 (signed)
    "bias_exp": (0, LAVA_FORMAT["bias_exp_max"]),                # precision 3
    "weight": (-(1 << LAVA_MAX_WEIGHT_BITS), (1 << LAVA_MAX_WEIGHT_BITS) - 1),  # Sparse clips to this
    "num_weight_bits": (1, LAVA_MAX_WEIGHT_BITS),
    "weight_exp": (-8, 7),      # Lava shifts by any amount; the range the agreement tests cover
}

# Lava's SignMode values (lava.utils.weightutils), without importing Lava.
MIXED = "mixed"
EXCITATORY = "excitatory"
INHIBITORY = "inhibitory"
SIGN_MODES = (MIXED, EXCITATORY, INHIBITORY)


# --------------------------------------------------------------------------
# Lava's integer weight format, reproduced exactly
# --------------------------------------------------------------------------

def sign_mode_of(weights: np.ndarray) -> str:
    """Sign mode as Lava's ``determine_sign_mode`` finds it.

    Lava looks at the whole (sparse) matrix, implicit zeros included; for the
    result this is the same as looking at the stored values plus one zero,
    except that a layer whose stored values are all > 0 stays excitatory.
    An empty or all-zero matrix is excitatory (min >= 0 is tested first).
    """
    w = np.asarray(weights)
    if w.size == 0 or w.min() >= 0:
        return EXCITATORY
    if w.max() <= 0:
        return INHIBITORY
    return MIXED


def _check_bits(num_weight_bits: int, name: str = "num_weight_bits") -> int:
    b = int(num_weight_bits)
    if not 1 <= b <= LAVA_MAX_WEIGHT_BITS:
        raise ConfigError(
            f"{name}: must be between 1 and {LAVA_MAX_WEIGHT_BITS} "
            f"(got {num_weight_bits})")
    return b


def _check_mode(sign_mode: str) -> str:
    if sign_mode not in SIGN_MODES:
        raise ConfigError(
            f"sign_mode: must be one of {', '.join(SIGN_MODES)} (got {sign_mode!r})")
    return sign_mode


def truncation_shift(num_weight_bits: int, sign_mode: str = MIXED) -> int:
    """Lava's ``n = 8 - num_weight_bits + is_mixed`` (bits dropped by truncation)."""
    b = _check_bits(num_weight_bits)
    return LAVA_MAX_WEIGHT_BITS - b + int(_check_mode(sign_mode) == MIXED)


def weight_step(num_weight_bits: int, sign_mode: str = MIXED) -> int:
    """Spacing of the integer weights that survive Lava's truncation: ``2**n``."""
    return 1 << truncation_shift(num_weight_bits, sign_mode)


def weight_range(num_weight_bits: int, sign_mode: str = MIXED) -> Tuple[int, int]:
    """(lowest, highest) integer weight representable after clip + truncation.

    Both are multiples of :func:`weight_step`; for 8-bit mixed weights this is
    (-256, 254) in steps of 2, for 8-bit excitatory (0, 255).
    """
    n = truncation_shift(num_weight_bits, sign_mode)
    if sign_mode == MIXED:
        return -256, (255 >> n) << n
    if sign_mode == EXCITATORY:
        return 0, (255 >> n) << n
    return -((255 >> n) << n), 0


def clip_weights(weights: np.ndarray, sign_mode: str) -> np.ndarray:
    """Lava's ``clip_weights(..., num_bits=8)``: clip to the 8-bit range."""
    w = np.asarray(weights).astype(np.int64)
    mode = _check_mode(sign_mode)
    if mode == INHIBITORY:
        w = -w
    lo = -256 if mode == MIXED else 0
    w = np.clip(w, lo, 255)
    if mode == INHIBITORY:
        w = -w
    return w.astype(np.int32)


def truncate_weights(weights: np.ndarray, num_weight_bits: int,
                     sign_mode: Optional[str] = None) -> np.ndarray:
    """Integer weights exactly as Lava's bit-accurate Sparse model uses them.

    Clip to 8 bits, then ``(w >> n) << n`` (arithmetic shift), negating around
    the shift for inhibitory layers, as ``clip_weights`` followed by
    ``truncate_weights`` in ``lava/utils/weightutils.py``. ``sign_mode``
    defaults to what Lava determines from ``weights`` (pass the mode of the
    whole layer when ``weights`` is a part of it).
    """
    w = np.asarray(weights)
    mode = sign_mode_of(w) if sign_mode is None else _check_mode(sign_mode)
    w = clip_weights(w, mode).astype(np.int64)
    n = truncation_shift(num_weight_bits, mode)
    if mode == INHIBITORY:
        w = -w
    w = (w >> n) << n
    if mode == INHIBITORY:
        w = -w
    return w.astype(np.int32)


def shift_weight_exp(a: np.ndarray, weight_exp: int) -> np.ndarray:
    """Sparse's ``a_buff``: the summed input of one projection shifted left if
    weight_exp > 0, else arithmetically right (floors the *sum*); keeps a's dtype."""
    e = int(weight_exp)
    return np.left_shift(a, e) if e > 0 else np.right_shift(a, -e)


def shift_by_exp(a: np.ndarray, weight_exp: int) -> np.ndarray:
    """Lava's ``weight_exp`` shift of the accumulated synaptic input, in int64."""
    return shift_weight_exp(np.asarray(a, dtype=np.int64), weight_exp)


# --------------------------------------------------------------------------
# The quantization pass
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantizedLayer:
    """Integer weights of one layer and how they relate to the float ones.

    ``weights`` are the integers handed to Lava's Sparse process (already on
    the truncation grid, so Lava keeps them as they are); the effective weight
    on the chip is ``weights * 2**weight_exp`` (units of synaptic input), and
    ``scale`` is the float-to-integer factor: ``w_float * scale`` ~
    ``weights * 2**weight_exp``.
    """

    weights: np.ndarray  # int32
    weight_exp: int
    num_weight_bits: int
    sign_mode: str
    scale: float
    overflow: int = 0  # weights clipped (non-strict mode only)

    def effective(self) -> np.ndarray:
        """Integer effective weights as the chip applies them (after truncation).

        For ``weight_exp < 0`` the chip floors the accumulated *sum*, not each
        weight; this returns the exact rational weight ``trunc(w) * 2**exp``.
        """
        w = truncate_weights(self.weights, self.num_weight_bits, self.sign_mode)
        return w.astype(np.float64) * (2.0 ** self.weight_exp)

    def dequantize(self) -> np.ndarray:
        """Float weights the chip realises: ``trunc(w) * 2**weight_exp / scale``."""
        return self.effective() / self.scale


def choose_weight_exp(target: np.ndarray, num_weight_bits: int, sign_mode: str = MIXED,
                      weight_exp_min: int = -8, weight_exp_max: int = 7) -> int:
    """Smallest exponent in [min, max] whose mantissa range holds ``target``.

    ``target`` are the wanted effective weights (float, units of synaptic
    input). The smallest fitting exponent is the one that uses the mantissa
    range best (largest integer weights); the positive and negative ends are
    checked separately (mixed 8-bit: [-256, 254]). Returns
    ``weight_exp_max + 1`` when even the largest exponent does not fit (the
    caller decides: error or clip), ``weight_exp_min`` when every one fits.
    """
    t = np.asarray(target, dtype=np.float64)
    lo, hi = weight_range(num_weight_bits, sign_mode)
    # a relative tolerance so that max == limit * 2**e exactly is not pushed
    # to the next exponent by the float rounding of the caller's scale
    pos = float(t.max()) * (1.0 - 1e-12) if t.size and t.max() > 0 else 0.0
    neg = float(-t.min()) * (1.0 - 1e-12) if t.size and t.min() < 0 else 0.0
    for e in range(int(weight_exp_min), int(weight_exp_max) + 1):
        if pos <= hi * 2.0 ** e and neg <= -lo * 2.0 ** e:
            return e
    return int(weight_exp_max) + 1


def quantize_weights(weights: np.ndarray, num_weight_bits: int = 8, *,
                     scale: float = 1.0, weight_exp: Optional[int] = None,
                     weight_exp_min: int = -8, weight_exp_max: int = 7,
                     sign_mode: Optional[str] = None, strict: bool = True,
                     name: str = "layer") -> QuantizedLayer:
    """Quantize float weights of one layer to Lava's integer format.

    The target effective weights are ``t = weights * scale`` (in units of
    synaptic input ``a``). ``weight_exp`` defaults to the smallest exponent in
    ``[weight_exp_min, weight_exp_max]`` with ``max|t| / 2**weight_exp`` inside
    the mantissa range, so the largest weight uses the range. The integer
    weights are ``round(t / 2**weight_exp / step) * step`` with ``step`` the
    truncation grid of :func:`weight_step`: Lava's truncation keeps them.

    Strict mode raises :class:`ConfigError` when a weight does not fit (even at
    ``weight_exp_max``, or at the given ``weight_exp``); otherwise such weights
    are clipped to the range and counted in ``overflow``.

    The sign mode defaults to the float weights' sign mode (Lava's rule); an
    all-non-negative layer thus gets the excitatory format, one bit finer.
    """
    w = np.asarray(weights, dtype=np.float64)
    b = _check_bits(num_weight_bits, f"{name}.num_weight_bits")
    if not np.all(np.isfinite(w)):
        raise ConfigError(f"{name}: weights contain NaN or inf; the training diverged")
    if not (np.isfinite(scale) and scale > 0):
        raise ConfigError(f"{name}: scale must be a positive finite number (got {scale})")
    if int(weight_exp_min) > int(weight_exp_max):
        raise ConfigError(
            f"{name}: weight_exp_min {weight_exp_min} > weight_exp_max {weight_exp_max}")
    mode = sign_mode_of(w) if sign_mode is None else _check_mode(sign_mode)
    lo, hi = weight_range(b, mode)
    step = weight_step(b, mode)
    t = w * float(scale)
    max_abs = float(np.abs(t).max()) if t.size else 0.0

    if weight_exp is None:
        e = choose_weight_exp(t, b, mode, weight_exp_min, weight_exp_max)
        if e > weight_exp_max:
            if strict:
                raise ConfigError(
                    f"{name}: largest weight {max_abs:.6g} (float weight x scale "
                    f"{scale:.6g}) exceeds the {b}-bit {mode} range "
                    f"[{lo}, {hi}] x 2**{weight_exp_max} (weight_exp_max); "
                    "lower the scale or raise weight_exp_max in the profile")
            e = int(weight_exp_max)
    else:
        e = int(weight_exp)
        if not weight_exp_min <= e <= weight_exp_max:
            raise ConfigError(
                f"{name}.weight_exp: must be between {weight_exp_min} and "
                f"{weight_exp_max} (got {e})")

    mant = np.round(t / (2.0 ** e) / step) * step
    bad = (mant < lo) | (mant > hi)
    n_bad = int(bad.sum())
    if n_bad and strict:
        k = int(np.argmax(np.abs(np.where(bad, t, 0.0))))
        raise ConfigError(
            f"{name}: {n_bad} weight(s) overflow the {b}-bit {mode} range "
            f"[{lo}, {hi}] at weight_exp {e} (e.g. weight #{k}: "
            f"{w.flat[k]:.6g} -> {mant.flat[k]:.0f}); lower the scale or "
            "let quantize_weights choose weight_exp")
    mant = np.clip(mant, lo, hi).astype(np.int32)
    chip_mode = sign_mode_of(mant)
    if chip_mode != mode and np.any(mant):
        # A mixed layer whose weights of one sign all rounded to 0: Lava will
        # see an excitatory (inhibitory) layer and use that format. Quantize
        # for it at the same exponent, those weights set to 0 (they round to 0
        # here already); the inhibitory range ends at -255, not -256, so a
        # mantissa of -256 moves the exponent up by one.
        w0 = np.where(np.sign(w) == np.sign(mant.max() + mant.min()), w, 0.0)
        kw = dict(scale=scale, weight_exp_min=weight_exp_min,
                  weight_exp_max=weight_exp_max, sign_mode=chip_mode, name=name)
        try:
            return quantize_weights(w0, b, weight_exp=e, strict=True, **kw)
        except ConfigError:
            if e + 1 > weight_exp_max and strict:
                raise
            return quantize_weights(w0, b, weight_exp=min(e + 1, int(weight_exp_max)),
                                    strict=strict, **kw)
    return QuantizedLayer(weights=mant, weight_exp=e, num_weight_bits=b,
                          sign_mode=mode,
                          scale=float(scale), overflow=n_bad)


def full_range_scale(weights: np.ndarray, num_weight_bits: int = 8,
                     weight_exp: int = 0, sign_mode: Optional[str] = None) -> float:
    """The scale that maps the largest |weight| onto the top of the mantissa
    range at the given ``weight_exp`` (1.0 for an all-zero layer)."""
    w = np.asarray(weights, dtype=np.float64)
    mode = sign_mode_of(w) if sign_mode is None else _check_mode(sign_mode)
    lo, hi = weight_range(num_weight_bits, mode)
    m = float(np.abs(w).max()) if w.size else 0.0
    if m == 0.0:
        return 1.0
    # the positive and negative ends may differ (mixed: -256 vs 254)
    pos = float(w.max()) if w.max() > 0 else 0.0
    neg = float(-w.min()) if w.min() < 0 else 0.0
    s = np.inf
    if pos > 0:
        s = min(s, hi / pos)
    if neg > 0:
        s = min(s, -lo / neg)
    return float(s) * 2.0 ** int(weight_exp)


# --------------------------------------------------------------------------
# Quantization-aware training helper
# --------------------------------------------------------------------------

def fake_quantize(w_float: np.ndarray, bits: int = 8, *,
                  sign_mode: Optional[str] = None) -> np.ndarray:
    """Weights after an 8-bit (``bits``) round trip, for a training forward pass.

    The layer is quantized with the full-range scale (as :func:`convert` does:
    the largest |weight| lands on the top of the mantissa range, so the result
    does not depend on ``weight_exp``) and dequantized exactly as the chip sees
    it. Straight-through estimator: use the returned array in the forward
    pass and apply the gradient to ``w_float`` unchanged (d out / d w = 1).
    Entries that are exactly zero stay zero (dormant connections stay dormant).
    """
    w = np.asarray(w_float, dtype=np.float64)
    if w.size == 0 or not np.any(w):
        return w.astype(np.asarray(w_float).dtype, copy=True)
    scale = full_range_scale(w, bits, 0, sign_mode)
    q = quantize_weights(w, bits, scale=scale, weight_exp=0, weight_exp_min=0,
                         weight_exp_max=8, sign_mode=sign_mode, strict=True,
                         name="fake_quantize")
    return q.dequantize().astype(np.asarray(w_float).dtype)


def effective_bias(bias_mant: np.ndarray, bias_exp: int) -> np.ndarray:
    """Lava's ``scale_bias``: bias_mant (stored as int16) << bias_exp, int32."""
    b = np.asarray(bias_mant).astype(np.int16).astype(np.int32)
    e = int(bias_exp)
    return np.left_shift(b, e) if e >= 0 else np.right_shift(b, -e)
