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
* **Input encoding.** Bias-driven input neurons, fitted in
  :mod:`deepr_neuro.convert.encoding`; the fitted input rate enters the first
  layer's normalisation.
* **Readout.** Class = output neuron with most spikes over all steps, ties to
  the lowest index (:meth:`SimResult.predictions`).

Every integer is checked against the chip's widths (a :class:`ChipFormat`,
built from the hardware profile): in strict mode a value that does not fit
raises :class:`~deepr_neuro.errors.ConfigError` naming the layer, the value
and the limit.

Pure NumPy: no Lava import. Neighbours: :mod:`~deepr_neuro.convert.encoding`
(input encoding), :mod:`~deepr_neuro.convert.calibration` (thresholds tuned on
validation data), :mod:`~deepr_neuro.convert.accuracy` (ANN/SNN accuracies).
This module still holds :class:`ChipFormat` and the ``network.npz`` codec
until they move to ``hardware/`` and ``store/``.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from deepr_neuro.errors import ConfigError
from deepr_neuro.network.integer_network import (InputEncoding, IntegerNetwork,
                                         NeuronParams, SynapseLayer)
from deepr_neuro.convert.quantize import _get, ann_forward, dense_matrix
from deepr_neuro.convert.encoding import choose_input_encoding
from deepr_neuro.hardware.chip_format import ChipFormat
from deepr_neuro.network.fixed_point import ACT_SHIFT, IF_DU, IF_DV, full_range_scale, quantize_weights, sign_mode_of


def _limit_error(strict: bool, msg: str, warnings: List[str]) -> None:
    if strict:
        raise ConfigError(msg)
    warnings.append(msg)


# --------------------------------------------------------------------------
# Conversion: float ReLU layers -> integrate-and-fire layers
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


def _resolve_format(fmt: Optional[ChipFormat], profile,
                    num_weight_bits: Optional[int]) -> ChipFormat:
    """``fmt``, else the profile's widths, else Lava's; ``num_weight_bits`` overrides."""
    if fmt is None:
        fmt = ChipFormat.from_profile(profile) if profile is not None else ChipFormat()
    if num_weight_bits is not None:
        fmt = ChipFormat(**{**asdict(fmt), "num_weight_bits": int(num_weight_bits)})
    return fmt.check()


def _target_rates(max_rate, input_rate: float, n_layers: int) -> List[float]:
    """One target rate per weight layer's post-neurons, all in (0, 1]."""
    post_rates = ([float(max_rate)] * n_layers if np.ndim(max_rate) == 0
                  else [float(r) for r in max_rate])
    if len(post_rates) != n_layers:
        raise ConfigError(f"max_rate: give one rate or one per weight layer ({n_layers}); "
                          f"got {len(post_rates)}")
    if not all(0 < r <= 1 for r in post_rates) or not 0 < input_rate <= 1:
        raise ConfigError(
            f"max_rate / input_rate: must be in (0, 1] spikes per step "
            f"(got {max_rate}, {input_rate})")
    return post_rates


def _checked_calibration_data(calib_x_uint8: np.ndarray, layers_float: Sequence) -> np.ndarray:
    """The calibration pixels as a 2-D array, refused unless they fit the chain of layers."""
    if not layers_float:
        raise ConfigError("convert: the network has no weight layers")
    x = np.atleast_2d(np.asarray(calib_x_uint8))
    if x.size == 0:
        raise ConfigError("convert: calibration data is empty")
    if x.min() < 0 or x.max() > 255:
        raise ConfigError(
            f"convert: calibration inputs must be uint8 pixels 0..255 "
            f"(got {x.min()}..{x.max()})")
    n_inputs = int(_get(layers_float[0], "n_in"))
    if x.shape[1] != n_inputs:
        raise ConfigError(
            f"convert: calibration data has {x.shape[1]} features, the first "
            f"layer expects n_in = {n_inputs}")
    for i in range(1, len(layers_float)):
        if int(_get(layers_float[i], "n_in")) != int(_get(layers_float[i - 1], "n_out")):
            raise ConfigError(
                f"layer {i}: n_in {_get(layers_float[i], 'n_in')} != n_out "
                f"{_get(layers_float[i - 1], 'n_out')} of layer {i - 1}")
    return x


def _mean_active_rate(post_activations: np.ndarray, post_lambda: float,
                      post_rate: float) -> float:
    """Mean rate of the active post-neurons on the calibration data (for the
    reset-loss correction)."""
    active = post_activations[post_activations > 0]
    if not active.size:
        return 0.0
    return float(post_rate * np.mean(np.minimum(active / post_lambda, 1.0)))


def _worst_case_float_input(rows: np.ndarray, weights: np.ndarray, n_out: int) -> float:
    """Largest |input| per step to one post-neuron, in float weight units: every
    presynaptic neuron with a weight of one sign spikes in the same step."""
    pos_sum = np.zeros(n_out)
    neg_sum = np.zeros(n_out)
    np.add.at(pos_sum, rows, np.maximum(weights, 0.0))
    np.add.at(neg_sum, rows, np.minimum(weights, 0.0))
    return float(max(pos_sum.max(initial=0.0), -neg_sum.min(initial=0.0)))


def _worst_case_int_input(rows: np.ndarray, qweights: np.ndarray, n_out: int,
                          weight_exp: int) -> int:
    """Largest |a| per step to one post-neuron with the integer weights (manifest record)."""
    qpos = np.zeros(n_out, dtype=np.int64)
    qneg = np.zeros(n_out, dtype=np.int64)
    np.add.at(qpos, rows, np.maximum(qweights, 0))
    np.add.at(qneg, rows, np.minimum(qweights, 0))
    return int(max(qpos.max(initial=0), -qneg.min(initial=0))) << max(weight_exp, 0)


def _largest_fitting_weight_exp(mantissa_scale: float, ratio: float, charge: float,
                                compensation: float, worst_float: float, fmt: ChipFormat,
                                name: str, strict: bool, warnings: List[str]) -> int:
    """The largest exponent whose threshold (kept <= half its range) and
    worst-case input fit: larger integers give a finer threshold. If none
    fits, the smallest exponent, after a strict error or a warning."""
    e_lo, e_hi = int(fmt.weight_exp_min), int(fmt.weight_exp_max)
    for e in range(e_hi, e_lo - 1, -1):
        scale = mantissa_scale * 2.0 ** e
        if scale * ratio * charge * compensation <= (fmt.vth_max >> 1) \
                and worst_float * scale * charge <= fmt.input_max:
            return e
    scale = mantissa_scale * 2.0 ** e_lo
    _limit_error(strict,
                 f"layer {name!r}: threshold {scale * ratio * charge * compensation:.0f} or worst-case "
                 f"current {worst_float * scale * charge:.0f} per step does not fit (vth <= "
                 f"{fmt.vth_max}, |a| <= {fmt.input_max}) even at weight_exp "
                 f"{e_lo}; lower num_weight_bits or the profile's "
                 "weight_exp_min", warnings)
    return e_lo


def _convert_layer(layer_float, name: str, *, fmt: ChipFormat, du: int,
                   pre_rate: float, post_rate: float, pre_lambda: float, post_lambda: float,
                   post_activations: np.ndarray, reset_compensation: float,
                   strict: bool, warnings: List[str]) -> Tuple[SynapseLayer, Dict]:
    """One float weight layer -> a :class:`SynapseLayer` of integrate-and-fire
    neurons, and its manifest record (module docstring: normalisation, reset loss)."""
    w = np.asarray(_get(layer_float, "weight"), dtype=np.float64)
    rows = np.asarray(_get(layer_float, "rows"), dtype=np.int32)
    cols = np.asarray(_get(layer_float, "cols"), dtype=np.int32)
    n_in, n_out = int(_get(layer_float, "n_in")), int(_get(layer_float, "n_out"))
    if w.shape != rows.shape or w.shape != cols.shape:
        raise ConfigError(f"layer {name!r}: rows, cols and weight differ in length")
    order = np.lexsort((cols, rows))
    rows, cols, w = rows[order], cols[order], w[order]
    mode = sign_mode_of(w)
    # charge that one input of the median size delivers to v over time
    charge = charge_factor(du, float(np.median(np.abs(w))) / max(float(np.abs(w).max()), 1e-300)
                           * 2 ** (fmt.num_weight_bits - 1)) if w.size else 1.0
    mantissa_scale = full_range_scale(w, fmt.num_weight_bits, 0, mode)  # mantissa per float unit
    ratio = (pre_rate / post_rate) * post_lambda / pre_lambda
    rho = _mean_active_rate(post_activations, post_lambda, post_rate)
    compensation = max(0.0, 1.0 - reset_compensation * rho)
    worst_float = _worst_case_float_input(rows, w, n_out)
    weight_exp = _largest_fitting_weight_exp(mantissa_scale, ratio, charge, compensation,
                                             worst_float, fmt, name, strict, warnings)
    scale = mantissa_scale * 2.0 ** weight_exp
    q = quantize_weights(w, fmt.num_weight_bits, scale=scale, weight_exp=weight_exp,
                         weight_exp_min=int(fmt.weight_exp_min),
                         weight_exp_max=int(fmt.weight_exp_max),
                         sign_mode=mode, strict=strict, name=f"layer {name!r}")
    vth_ideal = scale * ratio * charge
    vth = int(round(vth_ideal * compensation))
    if vth < 1 or vth > fmt.vth_max:
        _limit_error(strict, f"layer {name!r}: vth {vth} outside 1..{fmt.vth_max} "
                     f"({fmt.threshold_mant_bits}-bit)", warnings)
        vth = int(np.clip(vth, 1, fmt.vth_max))
    neurons = NeuronParams(vth=vth, du=du, dv=IF_DV, bias_exp=0,
                           bias_mant=np.zeros(n_out, dtype=np.int32))
    layer = SynapseLayer(
        name=name, n_in=n_in, n_out=n_out, rows=rows, cols=cols,
        weights=q.weights.astype(np.int32), weight_exp=int(q.weight_exp),
        num_weight_bits=int(q.num_weight_bits), neurons=neurons)
    record = {
        "name": name,
        "activation_percentile": post_lambda,
        "rate_at_percentile": post_rate,
        "mean_active_rate": rho,
        "weight_scale": scale,
        "weight_exp": int(q.weight_exp),
        "num_weight_bits": int(q.num_weight_bits),
        "sign_mode": mode,
        "vth": vth,
        "vth_uncompensated": float(vth_ideal),
        "reset_compensation_factor": compensation,
        "max_abs_input_per_step": _worst_case_int_input(rows, q.weights, n_out, weight_exp),
        "charge_factor": charge,
        "du": du, "dv": IF_DV, "bias_exp": 0, "bias_mant": 0,
    }
    return layer, record


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
    fmt = _resolve_format(fmt, profile, num_weight_bits)
    n_layers = len(list(layers_float))
    post_rates = _target_rates(max_rate, input_rate, n_layers)
    if not 1.0 <= float(synaptic_tau) <= 4096.0:
        raise ConfigError(f"synaptic_tau: must be between 1 and 4096 steps (got {synaptic_tau})")
    du = synapse_du(synaptic_tau, fmt)
    if not 0 < percentile <= 100:
        raise ConfigError(f"percentile: must be in (0, 100] (got {percentile})")
    if int(steps) < 1:
        raise ConfigError(f"steps: must be >= 1 (got {steps})")
    steps = int(steps)
    layers_float = list(layers_float)
    x = _checked_calibration_data(calib_x_uint8, layers_float)
    if names is None:
        names = [f"l{i}" for i in range(len(layers_float))]
    warnings: List[str] = []

    # data-based normalisation: lambda per layer (input: the largest x / 255 = 1)
    activations = ann_forward([dense_matrix(L) for L in layers_float], x, all_layers=True)
    lambdas = [1.0] + [_percentile_norm(a, percentile) for a in activations[1:]]

    enc, in_vth, in_bias_exp, in_rate = choose_input_encoding(
        x, fmt, max_rate=input_rate, steps=steps)
    input_neurons = NeuronParams(vth=in_vth, du=IF_DU, dv=IF_DV, bias_exp=in_bias_exp,
                                 bias_mant=np.zeros(x.shape[1], dtype=np.int32))
    if int(enc.encode(np.array([255]))[0]) > fmt.bias_mant_max:
        _limit_error(strict, f"input layer: bias_mant at pixel 255 exceeds "
                     f"{fmt.bias_mant_max} ({fmt.bias_mant_bits}-bit)", warnings)
    rates = [in_rate] + post_rates

    out_layers: List[SynapseLayer] = []
    layer_info = []
    for li, layer_float in enumerate(layers_float):
        layer, record = _convert_layer(
            layer_float, str(names[li]), fmt=fmt, du=du,
            pre_rate=rates[li], post_rate=rates[li + 1],
            pre_lambda=lambdas[li], post_lambda=lambdas[li + 1],
            post_activations=activations[li + 1], reset_compensation=reset_compensation,
            strict=strict, warnings=warnings)
        out_layers.append(layer)
        layer_info.append(record)

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
# Comparing integer networks
# --------------------------------------------------------------------------

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
