"""Spiking conversion: a trained sparse ReLU network becomes an IntegerNetwork.

DESIGN.md section 5. The float network (no biases, ReLU hidden layers, linear
output, input ``x / 255``) is turned into integrate-and-fire layers of Lava's
bit-accurate LIF (``PyLifModelBitAcc``) with rate coding:

* **Neurons.** ``dv = 0``: ``v * 4096 >> 12 = v``, no leak; a neuron spikes
  when ``v > vth << 6`` (input enters as ``a << 6``, so both sides are in
  units of synaptic input ``a`` times 64), then ``v = 0``. ``du`` comes from
  ``synaptic_tau``: ``du = 4096 / tau - 1``. ``tau = 1`` is DESIGN.md's pure
  integrate-and-fire (``du = 4095``: with Lava's ``ds_offset`` of 1,
  ``u * (4096 - 4096) >> 12 = 0``, an input lasts one step). The default
  ``tau = 4`` (``du = 1023``) spreads each input over a few steps: smaller
  steps of ``v`` mean less charge lost at the reset to zero; measured better
  on digits and Fashion-MNIST (see the benchmark). Thresholds include the
  total charge of one input (:func:`charge_factor`).
* **Normalisation** (Diehl et al. 2015, Rueckauer et al. 2017). On calibration
  data, ``lambda_l`` = the ``percentile``-th percentile of the positive
  activations of layer ``l`` (input: ``lambda_0 = 1``, the largest ``x/255``).
  Layer ``l`` is meant to fire at ``rate_l * a_l / lambda_l`` spikes per step.
  For weight layer ``l`` (layer ``l`` -> ``l+1``) with integer weights
  ``q ~ w * S`` (``S`` = mantissa scale times ``2**weight_exp``), the mean
  input per step of a post-neuron is ``S * rate_l * z / lambda_l``, so the
  threshold that gives ``rate_{l+1} * z / lambda_{l+1}`` is
  ``theta = S * (rate_l / rate_{l+1}) * lambda_{l+1} / lambda_l``.
* **Reset loss.** Lava resets ``v`` to 0, so the charge above threshold at a
  spike is lost: with a mean input ``D`` per step the neuron fires at about
  ``D / (theta + D / 2)`` instead of ``D / theta``. The threshold is lowered to
  ``theta * (1 - reset_compensation * rho)``, ``rho`` the mean rate of the
  layer's active neurons on the calibration data (their mean overshoot is
  about half a step's input, ``theta * rho / 2``, for
  ``reset_compensation = 0.5``). The default was chosen by measurement
  (``benchmarks/bench_conversion.py``); rates are kept moderate
  (``max_rate``) so that the loss is small in the first place.
* **Input encoding.** Input neuron ``i`` is a chip neuron with no synapses and
  bias ``bias_mant = (x_i * gain) >> shift`` (``InputEncoding``), ``gain`` and
  ``shift`` chosen so that a pixel of 255 gets (nearly) the largest 13-bit
  bias mantissa. A constant bias ``B`` fires every ``floor(theta / B) + 1``
  steps (reset to zero makes the period an integer); ``vth`` of the input
  layer is chosen to make the spike count over ``steps`` steps as
  proportional to the pixel as those integer periods allow (least squares over
  the calibration pixels), and the fitted slope is the input rate used for
  the first layer's normalisation.
* **Readout.** Class = output neuron with most spikes over all steps, ties to
  the lowest index (:meth:`SimResult.predictions`).

Every integer is checked against the chip's widths (a :class:`ChipFormat`,
built from the hardware profile): in strict mode a value that does not fit
raises :class:`~deepr_neuro.errors.ConfigError` naming the layer, the value
and the limit.

Pure NumPy: no Lava import. The emulator is used only by the accuracy helpers.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from deepr_neuro.errors import BundleError, ConfigError
from deepr_neuro.network.integer_network import (InputEncoding, IntegerNetwork,
                                         NeuronParams, SynapseLayer)
from deepr_neuro.convert.quantize import (QuantizedLayer, _get, accuracy, ann_forward,
                                  dense_matrix, full_range_scale,
                                  quantize_weights, quantized_matrices,
                                  sign_mode_of)

#: Integrate-and-fire: current lasts one step (4096 - (4095 + 1) = 0), no leak.
IF_DU = 4095
IF_DV = 0
ACT_SHIFT = 6  # Lava shifts the synaptic input and the threshold left by 6


@dataclass(frozen=True)
class ChipFormat:
    """The integer widths conversion must respect.

    Defaults are what Lava's bit-accurate models hold (lava-nc 0.10.0); a
    hardware profile may be narrower: use :meth:`from_profile`.
    """

    num_weight_bits: int = 8
    weight_exp_min: int = -8
    weight_exp_max: int = 7
    threshold_mant_bits: int = 17   # vth, unsigned
    bias_mant_bits: int = 13        # signed, sign bit included
    bias_exp_max: int = 7
    decay_bits: int = 12
    current_bits: int = 24          # u; the input a enters as a << 6
    voltage_bits: int = 24          # v

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
        if self.vth_max << ACT_SHIFT > (1 << (self.voltage_bits - 1)) - 1:
            raise ConfigError(
                f"threshold_mant_bits: vth up to {self.vth_max} << 6 does not fit "
                f"the {self.voltage_bits}-bit voltage")
        return self


def _limit_error(strict: bool, msg: str, warnings: List[str]) -> None:
    if strict:
        raise ConfigError(msg)
    warnings.append(msg)


# --------------------------------------------------------------------------
# Input encoding
# --------------------------------------------------------------------------

def input_counts(bias_eff: np.ndarray, vth: int, steps: int) -> np.ndarray:
    """Spike count of an input neuron with constant effective bias over ``steps``.

    v = k * B after k steps; it spikes when k * B > vth << 6 and resets to 0,
    so the period is floor((vth << 6) / B) + 1 steps (no spike when B <= 0).
    """
    b = np.asarray(bias_eff, dtype=np.int64)
    theta = int(vth) << ACT_SHIFT
    period = np.where(b > 0, theta // np.maximum(b, 1) + 1, 0)
    return np.where(b > 0, steps // np.maximum(period, 1), 0)


def choose_input_encoding(x_calib: np.ndarray, fmt: ChipFormat, *, max_rate: float,
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


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------

def synapse_du(synaptic_tau: float, fmt: Optional["ChipFormat"] = None) -> int:
    """Lava ``du`` for a current that decays by ``1 - 1/tau`` per step.

    Lava: ``u <- u * (4096 - (du + 1)) >> 12``; ``du = 4096 / tau - 1``.
    ``tau = 1`` gives ``du = 4095``: the input lasts exactly one step.
    """
    du = int(round(4096.0 / float(synaptic_tau))) - 1
    hi = fmt.decay_max if fmt is not None else 4095
    return int(min(max(du, 0), hi))


def charge_factor(du: int, jump: float = 128.0, max_steps: int = 100000) -> float:
    """Total charge a synaptic input ``a = jump`` adds to v, per unit of
    ``jump << 6``, with Lava's integer current decay (sign-magnitude floor).

    1 for ``du = 4095``; about ``tau`` for longer currents.
    """
    u = int(round(max(jump, 1.0))) << ACT_SHIFT
    first = u
    total = 0
    k = 4096 - (int(du) + 1)
    for _ in range(max_steps):
        if u == 0:
            break
        total += u
        u = (u * k) >> 12
    return total / first

def _percentile_norm(a: np.ndarray, percentile: float) -> float:
    pos = a[a > 0]
    if pos.size == 0:
        return 1.0
    lam = float(np.percentile(pos, percentile))
    return lam if lam > 0 else 1.0


def convert(layers_float: Sequence, calib_x_uint8: np.ndarray, *,
            num_weight_bits: Optional[int] = None,
            profile=None, fmt: Optional[ChipFormat] = None,
            steps: int = 100, percentile: float = 99.9,
            max_rate=0.6, input_rate: float = 0.4,
            reset_compensation: float = 0.5, synaptic_tau: float = 4.0,
            names: Optional[Sequence[str]] = None,
            strict: bool = True) -> Tuple[IntegerNetwork, Dict]:
    """Turn trained float sparse layers into an :class:`IntegerNetwork`.

    ``layers_float``: per weight layer a mapping (or object) with ``rows``
    (post), ``cols`` (pre), ``weight`` (float), ``n_in``, ``n_out``.
    ``calib_x_uint8``: calibration inputs (n, n_in) of uint8 pixels, normally
    training data. The widths come from ``fmt``, else from ``profile`` (a
    HardwareProfile), else Lava's; ``num_weight_bits`` overrides the width.
    ``steps`` is the intended steps per sample (used to fit the input
    encoding and recorded in the manifest; the network can run any number).
    ``max_rate`` is the target rate (spikes per step) of a hidden/output
    neuron at the ``percentile``-th activation, ``input_rate`` that of an input
    neuron at pixel 255 (nominal; the fitted rate is recorded).

    Returns ``(net, snn_info)``: ``snn_info`` is the manifest ``snn`` block
    (JSON-serialisable).
    """
    if fmt is None:
        fmt = ChipFormat.from_profile(profile) if profile is not None else ChipFormat()
    if num_weight_bits is not None:
        fmt = ChipFormat(**{**asdict(fmt), "num_weight_bits": int(num_weight_bits)})
    fmt.check()
    n_w = len(list(layers_float))
    post_rates = ([float(max_rate)] * n_w if np.ndim(max_rate) == 0
                  else [float(r) for r in max_rate])
    if len(post_rates) != n_w:
        raise ConfigError(f"max_rate: give one rate or one per weight layer ({n_w}); "
                          f"got {len(post_rates)}")
    if not all(0 < r <= 1 for r in post_rates) or not 0 < input_rate <= 1:
        raise ConfigError(
            f"max_rate / input_rate: must be in (0, 1] spikes per step "
            f"(got {max_rate}, {input_rate})")
    if not 1.0 <= float(synaptic_tau) <= 4096.0:
        raise ConfigError(f"synaptic_tau: must be between 1 and 4096 steps (got {synaptic_tau})")
    du = synapse_du(synaptic_tau, fmt)
    if not 0 < percentile <= 100:
        raise ConfigError(f"percentile: must be in (0, 100] (got {percentile})")
    if int(steps) < 1:
        raise ConfigError(f"steps: must be >= 1 (got {steps})")
    steps = int(steps)
    layers_float = list(layers_float)
    if not layers_float:
        raise ConfigError("convert: the network has no weight layers")
    x = np.atleast_2d(np.asarray(calib_x_uint8))
    if x.size == 0:
        raise ConfigError("convert: calibration data is empty")
    if x.min() < 0 or x.max() > 255:
        raise ConfigError(
            f"convert: calibration inputs must be uint8 pixels 0..255 "
            f"(got {x.min()}..{x.max()})")
    n_in0 = int(_get(layers_float[0], "n_in"))
    if x.shape[1] != n_in0:
        raise ConfigError(
            f"convert: calibration data has {x.shape[1]} features, the first "
            f"layer expects n_in = {n_in0}")
    for i in range(1, len(layers_float)):
        if int(_get(layers_float[i], "n_in")) != int(_get(layers_float[i - 1], "n_out")):
            raise ConfigError(
                f"layer {i}: n_in {_get(layers_float[i], 'n_in')} != n_out "
                f"{_get(layers_float[i - 1], 'n_out')} of layer {i - 1}")
    if names is None:
        names = [f"l{i}" for i in range(len(layers_float))]
    warnings: List[str] = []

    # ---- data-based normalisation -----------------------------------------
    mats = [dense_matrix(L) for L in layers_float]
    acts = ann_forward(mats, x, all_layers=True)
    lam = [1.0] + [_percentile_norm(a, percentile) for a in acts[1:]]

    # ---- input layer ------------------------------------------------------
    enc, in_vth, in_bias_exp, in_rate = choose_input_encoding(
        x, fmt, max_rate=input_rate, steps=steps)
    n0 = n_in0
    input_neurons = NeuronParams(vth=in_vth, du=IF_DU, dv=IF_DV, bias_exp=in_bias_exp,
                                 bias_mant=np.zeros(n0, dtype=np.int32))
    if int(enc.encode(np.array([255]))[0]) > fmt.bias_mant_max:
        _limit_error(strict, f"input layer: bias_mant at pixel 255 exceeds "
                     f"{fmt.bias_mant_max} ({fmt.bias_mant_bits}-bit)", warnings)
    rates = [in_rate] + post_rates

    # ---- weight layers ----------------------------------------------------
    out_layers: List[SynapseLayer] = []
    layer_info = []
    e_lo = int(fmt.weight_exp_min)
    e_hi = int(fmt.weight_exp_max)
    for li, L in enumerate(layers_float):
        w = np.asarray(_get(L, "weight"), dtype=np.float64)
        rows = np.asarray(_get(L, "rows"), dtype=np.int32)
        cols = np.asarray(_get(L, "cols"), dtype=np.int32)
        n_in, n_out = int(_get(L, "n_in")), int(_get(L, "n_out"))
        name = str(names[li])
        if w.shape != rows.shape or w.shape != cols.shape:
            raise ConfigError(f"layer {name!r}: rows, cols and weight differ in length")
        order = np.lexsort((cols, rows))
        rows, cols, w = rows[order], cols[order], w[order]
        mode = sign_mode_of(w)
        # charge that one input of the median size delivers to v over time
        g = charge_factor(du, float(np.median(np.abs(w))) / max(float(np.abs(w).max()), 1e-300)
                          * 2 ** (fmt.num_weight_bits - 1)) if w.size else 1.0
        s0 = full_range_scale(w, fmt.num_weight_bits, 0, mode)  # mantissa per float unit
        ratio = (rates[li] / rates[li + 1]) * lam[li + 1] / lam[li]
        # mean rate of the active post-neurons (for the reset-loss correction)
        post = acts[li + 1]
        act_pos = post[post > 0]
        rho = float(rates[li + 1] * np.mean(np.minimum(act_pos / lam[li + 1], 1.0))) \
            if act_pos.size else 0.0
        comp = max(0.0, 1.0 - reset_compensation * rho)
        # worst-case |a| per step: every presynaptic neuron with a weight of one
        # sign spikes in the same step
        pos_sum = np.zeros(n_out)
        neg_sum = np.zeros(n_out)
        np.add.at(pos_sum, rows, np.maximum(w, 0.0))
        np.add.at(neg_sum, rows, np.minimum(w, 0.0))
        worst_float = float(max(pos_sum.max(initial=0.0), -neg_sum.min(initial=0.0)))
        # largest exponent whose threshold and worst-case input fit: larger
        # integers give a finer threshold; vth kept <= half its range
        chosen = None
        for e in range(e_hi, e_lo - 1, -1):
            S = s0 * 2.0 ** e
            vth_f = S * ratio * g * comp
            if vth_f <= (fmt.vth_max >> 1) and worst_float * S * g <= fmt.input_max:
                chosen = e
                break
        if chosen is None:
            e = e_lo
            S = s0 * 2.0 ** e
            _limit_error(strict,
                         f"layer {name!r}: threshold {S * ratio * g * comp:.0f} or worst-case "
                         f"current {worst_float * S * g:.0f} per step does not fit (vth <= "
                         f"{fmt.vth_max}, |a| <= {fmt.input_max}) even at weight_exp "
                         f"{e_lo}; lower num_weight_bits or the profile's "
                         "weight_exp_min", warnings)
            chosen = e_lo
        S = s0 * 2.0 ** chosen
        q = quantize_weights(w, fmt.num_weight_bits, scale=S, weight_exp=chosen,
                             weight_exp_min=e_lo, weight_exp_max=e_hi,
                             sign_mode=mode, strict=strict, name=f"layer {name!r}")
        vth_ideal = S * ratio * g
        vth = int(round(vth_ideal * comp))
        if vth < 1 or vth > fmt.vth_max:
            _limit_error(strict, f"layer {name!r}: vth {vth} outside 1..{fmt.vth_max} "
                         f"({fmt.threshold_mant_bits}-bit)", warnings)
            vth = int(np.clip(vth, 1, fmt.vth_max))
        neurons = NeuronParams(vth=vth, du=du, dv=IF_DV, bias_exp=0,
                               bias_mant=np.zeros(n_out, dtype=np.int32))
        out_layers.append(SynapseLayer(
            name=name, n_in=n_in, n_out=n_out, rows=rows, cols=cols,
            weights=q.weights.astype(np.int32), weight_exp=int(q.weight_exp),
            num_weight_bits=int(q.num_weight_bits), neurons=neurons))
        qpos = np.zeros(n_out, dtype=np.int64)
        qneg = np.zeros(n_out, dtype=np.int64)
        np.add.at(qpos, rows, np.maximum(q.weights, 0))
        np.add.at(qneg, rows, np.minimum(q.weights, 0))
        worst_int = int(max(qpos.max(initial=0), -qneg.min(initial=0))) << max(chosen, 0)
        layer_info.append({
            "name": name,
            "activation_percentile": lam[li + 1],
            "rate_at_percentile": rates[li + 1],
            "mean_active_rate": rho,
            "weight_scale": S,
            "weight_exp": int(q.weight_exp),
            "num_weight_bits": int(q.num_weight_bits),
            "sign_mode": mode,
            "vth": vth,
            "vth_uncompensated": float(vth_ideal),
            "reset_compensation_factor": comp,
            "max_abs_input_per_step": worst_int,
            "charge_factor": g,
            "du": du, "dv": IF_DV, "bias_exp": 0, "bias_mant": 0,
        })

    net = IntegerNetwork(input_neurons=input_neurons, encoding=enc, layers=out_layers)
    info = {
        "steps": steps,
        "neuron_model": "Lava LIF fixed_pt (PyLifModelBitAcc): dv=0 (no leak), reset v "
                        f"to 0; du={du} (synaptic current decays by 1-1/{float(synaptic_tau):g} "
                        "per step; du=4095 would make each input last one step)",
        "input_encoding": {
            "kind": "bias_rate",
            "formula": "bias_mant[i] = in_bias_mant[i] + ((x[i] * gain) >> shift), "
                       "x uint8 0..255",
            "gain": int(enc.gain), "shift": int(enc.shift),
            "vth": int(in_vth), "bias_exp": int(in_bias_exp),
            "du": IF_DU, "dv": IF_DV, "base_bias_mant": 0,
            "rate_at_255": in_rate,
            "nominal_rate_at_255": float(input_rate),
        },
        "readout": {"kind": "spike_count", "layer": "output",
                    "rule": "class = output neuron with most spikes over all steps",
                    "ties": "lowest index"},
        "normalisation": {"method": "data-based, percentile of positive ReLU "
                                    "activations (Rueckauer et al. 2017)",
                          "percentile": float(percentile),
                          "n_calibration_samples": int(x.shape[0]),
                          "max_rate": post_rates,
                          "reset_compensation": float(reset_compensation),
                          "synaptic_tau": float(synaptic_tau)},
        "layers": layer_info,
        "num_weight_bits": int(fmt.num_weight_bits),
        "strict": bool(strict),
        "warnings": warnings,
    }
    return net, info


# --------------------------------------------------------------------------
# Threshold calibration on validation data
# --------------------------------------------------------------------------

#: Threshold scale factors tried per layer by :func:`calibrate`.
#: Output-layer bias, as a fraction of the output threshold per step.
OUTPUT_BIAS_GRID = (0.0, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2)
CALIBRATION_GRID = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.4)


def with_thresholds(net: IntegerNetwork, vths: Sequence[int],
                    output_bias: Optional[Tuple[int, int]] = None) -> IntegerNetwork:
    """A copy of ``net`` with thresholds ``vths`` = [input vth, layer 0 vth, ...]
    and, if given, ``output_bias = (bias_mant, bias_exp)`` on every output neuron."""
    from dataclasses import replace
    if len(vths) != len(net.layers) + 1:
        raise ConfigError(f"with_thresholds: {len(net.layers) + 1} thresholds expected, "
                          f"got {len(vths)}")
    inp = replace(net.input_neurons, vth=int(vths[0]))
    layers = [replace(L, neurons=replace(L.neurons, vth=int(v)))
              for L, v in zip(net.layers, vths[1:])]
    if output_bias is not None:
        mant, exp = int(output_bias[0]), int(output_bias[1])
        last = layers[-1]
        layers[-1] = replace(last, neurons=replace(
            last.neurons, bias_exp=exp,
            bias_mant=np.full(last.n_out, mant, dtype=np.int32)))
    return IntegerNetwork(input_neurons=inp, encoding=net.encoding, layers=layers)


def calibrate(net: IntegerNetwork, x_val_uint8: np.ndarray, y_val: np.ndarray, steps: int, *,
              fmt: Optional[ChipFormat] = None, grid: Sequence[float] = CALIBRATION_GRID,
              passes: int = 2, max_samples: Optional[int] = 1000,
              include_input: bool = True, bias_grid: Sequence[float] = OUTPUT_BIAS_GRID,
              backend=None, seed: int = 0) -> Tuple[IntegerNetwork, Dict]:
    """Choose per-layer thresholds by simulating validation data.

    Greedy coordinate search (``passes`` sweeps, input layer first, then each
    weight layer in order): the threshold of one layer is set to
    ``round(vth0 * f)`` for each ``f`` in ``grid`` (``vth0`` = the converted
    threshold, so factors are not compounded across passes) and the choice
    that is best on the validation set is kept. "Best" is lexicographic:
    SNN accuracy, then agreement of the SNN's class with the ANN's (the
    network's own integer weights), then fewer spikes. The current setting is
    always a candidate and is replaced only by a strictly better one, so the
    validation accuracy never goes down. Only thresholds change; every value
    stays inside ``1..fmt.vth_max`` (thresholds that would leave it are
    skipped), weights, exponents and the input encoding are untouched.

    The output layer may also get a constant bias, the same for every output
    neuron (a common shift of all logits: the ANN's class does not change),
    of ``beta * (vth << 6)`` per step for ``beta`` in ``bias_grid``: without
    it a sample whose largest logit is <= 0 gives no output spike at all and
    falls to class 0. The bias is stored as ``bias_mant << bias_exp`` with
    the smallest exponent whose mantissa fits ``fmt``'s width.

    This compensates, on data, what the analytic normalisation misses: the
    charge lost at Lava's reset to zero, percentile clipping and the integer
    input periods. The validation data must not be the test set.

    Returns ``(net, info)``: ``info`` (JSON-serialisable) records the factors,
    thresholds, validation accuracy before/after and the number of
    simulations.
    """
    if backend is None:
        from deepr_neuro.simulate.backends import get_backend
        backend = get_backend("emulator")
    fmt = fmt or ChipFormat()
    x = np.atleast_2d(np.asarray(x_val_uint8))
    y = np.asarray(y_val).reshape(-1)
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"calibrate: {x.shape[0]} samples but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ConfigError("calibrate: validation data is empty")
    if max_samples is not None and x.shape[0] > int(max_samples):
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], int(max_samples),
                                                         replace=False))
        x, y = x[idx], y[idx]
    steps = int(steps)
    grid = sorted(set(float(f) for f in grid) | {1.0})
    qlayers = [dict(rows=L.rows, cols=L.cols, weight=np.zeros(len(L.rows)),
                    n_in=L.n_in, n_out=L.n_out) for L in net.layers]
    ann_pred = np.argmax(ann_forward(quantized_matrices(qlayers, quantized_layers_of(net)), x),
                         axis=1)
    vth0 = [int(net.input_neurons.vth)] + [int(L.neurons.vth) for L in net.layers]
    names = ["input"] + [L.name for L in net.layers]
    cache: Dict[Tuple[int, ...], Tuple[float, float, float]] = {}

    def score(vths: Tuple[int, ...]) -> Tuple[float, float, float]:
        if vths not in cache:
            ob = out_bias(vths[:-1], vths[-1])
            res = backend.run(with_thresholds(net, vths[:-1], ob), x, steps)
            pred = res.predictions()
            spikes = float(sum(c.sum() for c in res.counts)) / x.shape[0]
            cache[vths] = (float(np.mean(pred == y)), float(np.mean(pred == ann_pred)), -spikes)
        return cache[vths]

    def out_bias(vths: Tuple[int, ...], beta: float) -> Optional[Tuple[int, int]]:
        if beta <= 0:
            return None
        b = beta * (int(vths[-1]) << ACT_SHIFT)
        for e in range(0, int(fmt.bias_exp_max) + 1):
            m = int(round(b / (1 << e)))
            if m <= fmt.bias_mant_max:
                return (max(m, 0), e)
        return None  # does not fit: candidate skipped

    betas = sorted(set(float(b) for b in bias_grid) | {0.0})
    cur = tuple(vth0) + (0.0,)
    start = score(cur)
    best = start
    layers_to_tune = list(range(0 if include_input else 1, len(vth0)))
    for _ in range(max(int(passes), 0)):
        changed = False
        for li in layers_to_tune:
            for f in grid:
                v = int(round(vth0[li] * f))
                if v < 1 or v > fmt.vth_max or v == cur[li]:
                    continue
                cand = cur[:li] + (v,) + cur[li + 1:]
                s = score(cand)
                if s > best:
                    best, cur, changed = s, cand, True
        for beta in betas:
            if beta == cur[-1] or (beta > 0 and out_bias(cur[:-1], beta) is None):
                continue
            cand = cur[:-1] + (beta,)
            s = score(cand)
            if s > best:
                best, cur, changed = s, cand, True
        if not changed:
            break
    ob = out_bias(cur[:-1], cur[-1])
    out = with_thresholds(net, cur[:-1], ob)
    info = {
        "method": "greedy per-layer threshold scaling on validation data (emulator), "
                  "objective: accuracy, then agreement with the integer ANN, then fewer spikes",
        "steps": steps,
        "n_samples": int(x.shape[0]),
        "grid": [float(f) for f in grid],
        "passes": int(passes),
        "layers": [{"name": n, "vth_converted": int(a), "vth": int(b),
                    "factor": float(b) / float(a) if a else 1.0}
                   for n, a, b in zip(names, vth0, cur[:-1])],
        "output_bias": {"beta": float(cur[-1]),
                        "bias_mant": int(ob[0]) if ob else 0,
                        "bias_exp": int(ob[1]) if ob else 0,
                        "rule": "bias_mant << bias_exp = beta * (vth << 6) on every output "
                                "neuron (a common shift of the logits)"},
        "bias_grid": [float(b) for b in betas],
        "val_accuracy_before": start[0], "val_accuracy_after": best[0],
        "val_ann_agreement_before": start[1], "val_ann_agreement_after": best[1],
        "val_spikes_per_sample_before": -start[2], "val_spikes_per_sample_after": -best[2],
        "simulations": len(cache),
    }
    return out, info


# --------------------------------------------------------------------------
# Accuracy helpers
# --------------------------------------------------------------------------

def quantized_layers_of(net: IntegerNetwork) -> List[QuantizedLayer]:
    """The integer weights of ``net`` as QuantizedLayers (scale 1)."""
    return [QuantizedLayer(weights=L.weights, weight_exp=L.weight_exp,
                           num_weight_bits=L.num_weight_bits,
                           sign_mode=sign_mode_of(L.weights), scale=1.0)
            for L in net.layers]


def quantized_ann_accuracy(net: IntegerNetwork, x_uint8: np.ndarray, y: np.ndarray) -> float:
    """ANN accuracy with the network's integer weights, as the chip applies them
    (after Lava's truncation). Scales do not matter: the net has no biases."""
    layers = [dict(rows=L.rows, cols=L.cols, weight=np.zeros(len(L.rows)),
                   n_in=L.n_in, n_out=L.n_out) for L in net.layers]
    return accuracy(ann_forward(quantized_matrices(layers, quantized_layers_of(net)),
                                x_uint8), y)


def snn_accuracy(net: IntegerNetwork, x_uint8: np.ndarray, y: np.ndarray, steps: int,
                 backend=None) -> float:
    """Accuracy of the spiking network (most output spikes, ties -> lowest)."""
    if backend is None:
        from deepr_neuro.simulate.backends import get_backend
        backend = get_backend("emulator")
    res = backend.run(net, np.asarray(x_uint8), int(steps))
    return float(np.mean(res.predictions() == np.asarray(y)))


def steps_accuracy_table(net: IntegerNetwork, x: np.ndarray, y: np.ndarray,
                         steps_list: Sequence[int] = (10, 20, 50, 100, 200),
                         backend=None) -> List[Dict]:
    """SNN accuracy for each number of steps (one run of the longest, counts
    taken at each prefix would differ only by ties; each length is run
    separately so the numbers are exactly what a user running it gets).

    Returns ``[{"steps": T, "accuracy": acc, "mean_output_spikes": s}, ...]``.
    """
    if backend is None:
        from deepr_neuro.simulate.backends import get_backend
        backend = get_backend("emulator")
    rows = []
    for T in steps_list:
        res = backend.run(net, np.asarray(x), int(T))
        rows.append({"steps": int(T),
                     "accuracy": float(np.mean(res.predictions() == np.asarray(y))),
                     "mean_output_spikes": float(res.output_counts.sum(axis=1).mean())})
    return rows


# --------------------------------------------------------------------------
# Bundle arrays (DESIGN.md section 6)
# --------------------------------------------------------------------------

_IN_KEYS = ("in_vth", "in_du", "in_dv", "in_bias_exp", "in_bias_mant", "in_gain", "in_shift")


def integer_network_to_arrays(net: IntegerNetwork) -> Dict[str, np.ndarray]:
    """The integer network as ``network.npz`` arrays.

    Per weight layer i: ``l{i}_rows``, ``l{i}_cols`` (int32, the same arrays the
    trainer stores), ``l{i}_qweight`` (int32), scalars ``l{i}_weight_exp``,
    ``l{i}_num_weight_bits``, ``l{i}_vth``, ``l{i}_du``, ``l{i}_dv``,
    ``l{i}_bias_exp`` (int64 0-d) and ``l{i}_bias_mant`` (int32, per neuron).
    Input layer: ``in_vth``, ``in_du``, ``in_dv``, ``in_bias_exp`` (scalars),
    ``in_bias_mant`` (int32 base bias per input neuron, added to the encoded
    pixel), ``in_gain``, ``in_shift`` (scalars of ``InputEncoding``).
    """
    p = net.input_neurons
    out: Dict[str, np.ndarray] = {
        "in_vth": np.int64(p.vth), "in_du": np.int64(p.du), "in_dv": np.int64(p.dv),
        "in_bias_exp": np.int64(p.bias_exp),
        "in_bias_mant": np.asarray(p.bias_mant, dtype=np.int32),
        "in_gain": np.int64(net.encoding.gain), "in_shift": np.int64(net.encoding.shift),
    }
    for i, L in enumerate(net.layers):
        n = L.neurons
        out.update({
            f"l{i}_rows": np.asarray(L.rows, dtype=np.int32),
            f"l{i}_cols": np.asarray(L.cols, dtype=np.int32),
            f"l{i}_qweight": np.asarray(L.weights, dtype=np.int32),
            f"l{i}_weight_exp": np.int64(L.weight_exp),
            f"l{i}_num_weight_bits": np.int64(L.num_weight_bits),
            f"l{i}_vth": np.int64(n.vth), f"l{i}_du": np.int64(n.du),
            f"l{i}_dv": np.int64(n.dv), f"l{i}_bias_exp": np.int64(n.bias_exp),
            f"l{i}_bias_mant": np.asarray(n.bias_mant, dtype=np.int32),
        })
    return out


def _scalar(arrays: Mapping, key: str) -> int:
    if key not in arrays:
        raise BundleError(f"network.npz: key {key!r} is missing; re-run the export")
    a = np.asarray(arrays[key])
    if a.dtype.kind not in "iu":
        raise BundleError(f"network.npz: {key!r} has dtype {a.dtype}, not an integer type "
                          "(values are never cast); re-run the export")
    if a.size != 1:
        raise BundleError(f"network.npz: {key!r} must be a scalar (got shape {a.shape})")
    return int(a.reshape(()))


_I32 = np.iinfo(np.int32)


def _vector(arrays: Mapping, key: str) -> np.ndarray:
    """A 1-D integer array as int32; float/complex/bool arrays or values beyond
    int32 are refused, never cast (a cast would silently change the network)."""
    if key not in arrays:
        raise BundleError(f"network.npz: key {key!r} is missing; re-run the export")
    a = np.asarray(arrays[key])
    if a.dtype.kind not in "iu":
        raise BundleError(f"network.npz: {key!r} has dtype {a.dtype}, not an integer type "
                          "(values are never cast); re-run the export")
    if a.ndim != 1:
        raise BundleError(f"network.npz: {key!r} must be 1-D (got shape {a.shape}); re-run the export")
    if a.size and (a.min() < _I32.min or a.max() > _I32.max):
        raise BundleError(f"network.npz: {key!r} holds values beyond 32-bit integers "
                          f"({a.min()}..{a.max()}); re-run the export")
    return a.astype(np.int32)


def integer_network_from_arrays(arrays: Mapping[str, np.ndarray],
                                names: Optional[Sequence[str]] = None) -> IntegerNetwork:
    """Rebuild the :class:`IntegerNetwork` from :func:`integer_network_to_arrays`
    output (or a loaded ``network.npz``). Layer names come from ``names`` (the
    manifest's ``layers``, which then also fixes the number of layers), default
    ``l0, l1, ...``; sizes follow from the per-neuron arrays (``n_in`` of layer
    i = neurons of layer i-1). Integer arrays must have an integer dtype; the
    full checks against the manifest and profile are :func:`deepr_neuro.store.bundle.load_bundle`'s."""
    for k in _IN_KEYS:
        if k not in arrays:
            raise BundleError(
                f"network.npz: key {k!r} is missing: the bundle has no SNN export; "
                "run `deepr-neuro export` first")
    inp = NeuronParams(vth=_scalar(arrays, "in_vth"), du=_scalar(arrays, "in_du"),
                       dv=_scalar(arrays, "in_dv"), bias_exp=_scalar(arrays, "in_bias_exp"),
                       bias_mant=_vector(arrays, "in_bias_mant"))
    enc = InputEncoding(gain=_scalar(arrays, "in_gain"), shift=_scalar(arrays, "in_shift"))
    if enc.gain < 0 or not 0 <= enc.shift <= 31:
        raise BundleError(f"network.npz: in_gain {enc.gain} / in_shift {enc.shift}: the gain must be "
                          ">= 0 and the shift in 0..31; re-run the export")
    n_layers = 0
    while f"l{n_layers}_qweight" in arrays:
        n_layers += 1
    if n_layers == 0:
        raise BundleError("network.npz: no l0_qweight: the bundle has no SNN export")
    if names is not None and len(names) != n_layers:
        raise BundleError(f"network.npz has {n_layers} layers, {len(names)} names given")
    layers = []
    n_prev = inp.n
    for i in range(n_layers):
        bias = _vector(arrays, f"l{i}_bias_mant")
        rows, cols = _vector(arrays, f"l{i}_rows"), _vector(arrays, f"l{i}_cols")
        qw = _vector(arrays, f"l{i}_qweight")
        if not (rows.shape == cols.shape == qw.shape):
            raise BundleError(f"network.npz: l{i}_rows/cols/qweight differ in length")
        if rows.size and (rows.max() >= bias.size or cols.max() >= n_prev
                          or rows.min() < 0 or cols.min() < 0):
            raise BundleError(f"network.npz: layer {i} indices out of range "
                              f"({bias.size} post, {n_prev} pre neurons)")
        neurons = NeuronParams(vth=_scalar(arrays, f"l{i}_vth"), du=_scalar(arrays, f"l{i}_du"),
                               dv=_scalar(arrays, f"l{i}_dv"),
                               bias_exp=_scalar(arrays, f"l{i}_bias_exp"), bias_mant=bias)
        layers.append(SynapseLayer(
            name=str(names[i]) if names is not None else f"l{i}",
            n_in=n_prev, n_out=bias.size, rows=rows, cols=cols, weights=qw,
            weight_exp=_scalar(arrays, f"l{i}_weight_exp"),
            num_weight_bits=_scalar(arrays, f"l{i}_num_weight_bits"), neurons=neurons))
        n_prev = bias.size
    return IntegerNetwork(input_neurons=inp, encoding=enc, layers=layers)


def float_layers_from_arrays(arrays: Mapping[str, np.ndarray],
                             layers_meta: Sequence[Mapping]) -> List[Dict]:
    """Trained float layers from a bundle: ``l{i}_rows/cols/weight`` plus the
    manifest's ``layers`` entries (``name``, ``n_in``, ``n_out``).

    Refuses (naming the layer) index arrays that are not integers, weights
    that are not real floats or not finite (NaN/inf: a diverged run), and
    arrays of different lengths: conversion would otherwise quantize garbage.
    """
    out = []
    for i, meta in enumerate(layers_meta):
        name = str(meta.get("name", f"l{i}"))
        for k in ("rows", "cols", "weight"):
            if f"l{i}_{k}" not in arrays:
                raise BundleError(f"network.npz: key 'l{i}_{k}' is missing")
        rows, cols = _vector(arrays, f"l{i}_rows"), _vector(arrays, f"l{i}_cols")
        w = np.asarray(arrays[f"l{i}_weight"])
        if w.dtype.kind != "f":
            raise BundleError(f"network.npz: 'l{i}_weight' (layer {name!r}) has dtype {w.dtype}, "
                              "not a real float type")
        if not (rows.shape == cols.shape == w.shape):
            raise BundleError(f"network.npz: l{i}_rows/cols/weight (layer {name!r}) differ in length "
                              f"({rows.shape}, {cols.shape}, {w.shape})")
        bad = np.flatnonzero(~np.isfinite(w))
        if bad.size:
            raise BundleError(f"network.npz: 'l{i}_weight' (layer {name!r}) index {int(bad[0])}: weight "
                              f"{w[bad[0]]} is not finite; the run diverged: train it again with a smaller --lr")
        out.append(dict(rows=rows, cols=cols, weight=w.astype(np.float32),
                        n_in=int(meta["n_in"]), n_out=int(meta["n_out"]), name=name))
    return out


def networks_equal(a: IntegerNetwork, b: IntegerNetwork) -> bool:
    """Exact equality of two integer networks (every integer, name and size)."""
    def neq(p: NeuronParams, q: NeuronParams) -> bool:
        return (p.vth, p.du, p.dv, p.bias_exp) == (q.vth, q.du, q.dv, q.bias_exp) \
            and np.array_equal(p.bias_mant, q.bias_mant)
    if not neq(a.input_neurons, b.input_neurons) or a.encoding != b.encoding:
        return False
    if len(a.layers) != len(b.layers):
        return False
    for x, y in zip(a.layers, b.layers):
        if (x.name, x.n_in, x.n_out, x.weight_exp, x.num_weight_bits) != \
                (y.name, y.n_in, y.n_out, y.weight_exp, y.num_weight_bits):
            return False
        for f in ("rows", "cols", "weights"):
            if not np.array_equal(getattr(x, f), getattr(y, f)):
                return False
        if not neq(x.neurons, y.neurons):
            return False
    return True
