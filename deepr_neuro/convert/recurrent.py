"""A trained recurrent spiking network -> the integer graph a chip runs.

The float network (``training.recurrent``) is already the chip's update in
threshold units, so deployment is weight quantization and nothing else:

* ``in_rec``, ``rec_rec`` (into a spiking population of threshold ``vth``):
  ``W = round(w * vth / 2**weight_exp)``, so that ``W * 2**weight_exp * 64``
  (what one spike adds to u) over ``vth * 64`` (the threshold) is ``w``;
* ``rec_out`` (into the non-spiking readout): the readout's units are free
  (argmax does not care), so ``vth`` is replaced by a scale ``c`` chosen from
  the training data so that the largest |v| the float readout reaches on it,
  times ``64 * c``, is half the readout threshold ``131071 << 6``: the readout
  (du, dv from the bundle, vth at its maximum 131071) never spikes and its v
  stays far from Lava's 24-bit clip.

``weight_exp`` per projection is the smallest exponent (within the profile's
range) that keeps every ``|W|`` within the ``num_weight_bits`` grid; ``W`` is
rounded to that grid (multiples of Lava's truncation step, sign mode of the
rounded weights), so Lava's own truncation leaves it unchanged. Biases are 0.
The input population is a spike source (``input_kind="spikes"``) replaying
``FrameEncoding`` trains; the readout rule is ``final_v``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from deepr_neuro.errors import ConfigError
from deepr_neuro.network.fixed_point import LAVA_LIMITS, sign_mode_of, weight_range, weight_step
from deepr_neuro.network.frame_encoding import FrameEncoding
from deepr_neuro.network.integer_network import IntegerGraph, NeuronParams, Population, Projection

__all__ = ["READOUT_VTH", "quantize_projection", "readout_scale", "deploy_recurrent", "Deployed",
           "dequantized_weights"]

READOUT_VTH = LAVA_LIMITS["vth"][1]      # 131071: the readout never reaches it
READOUT_HEADROOM = 0.5                   # float readout peak maps to half the readout threshold


def quantize_projection(w: np.ndarray, scale: float, num_weight_bits: int,
                        exp_range: Tuple[int, int] = (-7, 7)) -> Tuple[np.ndarray, int, Dict]:
    """Float weights ``w`` -> (int32 chip weights, weight_exp, info).

    ``W = round(w * scale / 2**weight_exp)`` on the ``num_weight_bits`` grid
    (multiples of Lava's truncation step), with the smallest weight_exp in
    ``exp_range`` that keeps max |W| inside the grid's range; weights beyond
    it at the top exponent are clipped (counted in ``info['clipped']``).
    """
    w = np.asarray(w, dtype=np.float64)
    if w.size and not np.all(np.isfinite(w)):
        raise ConfigError("weights: NaN or infinite trained weights; train the run again with a smaller --lr")
    if not (isinstance(scale, (int, float, np.floating, np.integer)) and np.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale: must be a finite number > 0 (got {str(scale)[:40]})")
    lo_e, hi_e = int(exp_range[0]), int(exp_range[1])
    if lo_e > hi_e:
        raise ConfigError(f"weight_exp range: {lo_e} > {hi_e}")
    x = w * float(scale)
    mixed_hi = weight_range(num_weight_bits, "mixed")[1]
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        e = lo_e
    else:
        e = int(math.ceil(math.log2(peak / mixed_hi)))
        e = min(max(e, lo_e), hi_e)
    while e < hi_e and peak / 2.0 ** e > mixed_hi:   # guard the float ceil at the boundary
        e += 1
    step = weight_step(num_weight_bits, "mixed")
    lo, hi = weight_range(num_weight_bits, "mixed")
    q = np.rint(x / 2.0 ** e / step) * step
    clipped = int(np.sum((q < lo) | (q > hi)))
    q = np.clip(q, lo, hi).astype(np.int64)
    mode = sign_mode_of(q)                  # the rounded weights decide Lava's sign mode
    if mode != "mixed":
        lo_m, hi_m = weight_range(num_weight_bits, mode)
        clipped += int(np.sum((q < lo_m) | (q > hi_m)))
        q = np.clip(q, lo_m, hi_m)
        assert not np.any(q % weight_step(num_weight_bits, mode))
    err = (q * 2.0 ** e - x) / float(scale) if x.size else np.zeros(0)
    info = {"weight_exp": e, "clipped": clipped, "sign_mode": mode,
            "max_abs_error": float(np.max(np.abs(err))) if err.size else 0.0,
            "zeroed": int(np.sum((q == 0) & (w != 0)))}
    return q.astype(np.int32), e, info


def dequantized_weights(qw: np.ndarray, weight_exp: int, scale: float) -> np.ndarray:
    """The float weight a chip weight stands for: ``W * 2**weight_exp / scale``."""
    return np.asarray(qw, np.float64) * 2.0 ** int(weight_exp) / float(scale)


def _float_peak(model, x, lengths, batch_size: int = 128) -> float:
    """Largest |v| of the float readout over every step of every sample (its own length)."""
    from deepr_neuro.training.recurrent import encode_batch

    order = np.argsort(lengths, kind="stable")
    peak = 0.0
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        s, n = encode_batch(model.spec.encoding, x, lengths, idx)
        v = model.forward(s, n).v_out                      # (T, B, C)
        valid = np.arange(v.shape[0])[:, None] < np.asarray(n)[None, :]
        peak = max(peak, float(np.max(np.abs(v) * valid[:, :, None])) if v.size else 0.0)
    return peak


def readout_scale(model, x, lengths) -> Tuple[float, float]:
    """(c, float peak): c maps the float readout's peak |v| on (x, lengths) to
    READOUT_HEADROOM of the readout threshold ``131071 << 6``."""
    peak = _float_peak(model, x, lengths)
    if peak <= 0:
        return 1.0, peak
    return READOUT_HEADROOM * READOUT_VTH / peak, peak


@dataclass
class Deployed:
    graph: IntegerGraph
    info: Dict
    scales: Dict[str, float]          # projection -> scale used in W = round(w * scale / 2**e)


def deploy_recurrent(model, num_weight_bits: int, exp_range: Tuple[int, int], x_cal, len_cal,
                     cores: Optional[Mapping[str, np.ndarray]] = None) -> Deployed:
    """The integer graph of a trained :class:`~deepr_neuro.training.recurrent.RecurrentModel`.

    ``x_cal``, ``len_cal``: training frames that set the readout scale (never
    the test set). ``cores``: population -> core id per neuron (the trained
    placement), kept on the graph.
    """
    spec = model.spec
    if spec.kind != "spiking":
        raise ConfigError(f"model kind {spec.kind!r}: only a spiking recurrent network deploys to a chip "
                          "(the 'rate' kind is the non-spiking reference)")
    c_out, peak = readout_scale(model, x_cal, len_cal)
    scales = {"in_rec": float(spec.rec.vth), "rec_rec": float(spec.rec.vth), "rec_out": c_out}
    W = model.effective()
    cores = dict(cores or {})
    zeros = {n: np.zeros(k, np.int32) for n, k in (("input", spec.n_in), ("rec", spec.n_rec), ("out", spec.n_out))}
    pops = (
        Population("input", NeuronParams(vth=0, du=0, dv=0, bias_exp=0, bias_mant=zeros["input"]),
                   cores.get("input")),
        Population("rec", NeuronParams(vth=int(spec.rec.vth), du=int(spec.rec.du), dv=int(spec.rec.dv),
                                       bias_exp=0, bias_mant=zeros["rec"]), cores.get("rec")),
        Population("out", NeuronParams(vth=READOUT_VTH, du=int(spec.out.du), dv=int(spec.out.dv),
                                       bias_exp=0, bias_mant=zeros["out"]), cores.get("out")),
    )
    ends = {"in_rec": ("input", "rec"), "rec_rec": ("rec", "rec"), "rec_out": ("rec", "out")}
    projs, per = [], {}
    for name in ("in_rec", "rec_rec", "rec_out"):
        mask = model.masks[name]
        pre_idx, post_idx = np.nonzero(mask)                     # dense (n_pre, n_post)
        order = np.lexsort((pre_idx, post_idx))                  # sorted by (row=post, col=pre)
        rows, cols = post_idx[order].astype(np.int32), pre_idx[order].astype(np.int32)
        qw, e, info = quantize_projection(W[name][cols, rows], scales[name], num_weight_bits, exp_range)
        projs.append(Projection(name=name, pre=ends[name][0], post=ends[name][1], rows=rows, cols=cols,
                                weights=qw, weight_exp=int(e), num_weight_bits=int(num_weight_bits)))
        per[name] = dict(info, scale=scales[name], synapses=int(rows.size))
    graph = IntegerGraph(populations=pops, projections=tuple(projs), encoding=spec.encoding, readout="out",
                         input_kind="spikes", readout_kind="final_v")
    return Deployed(graph=graph, scales=scales,
                    info={"projections": per, "readout_scale": c_out, "readout_float_peak": peak,
                          "readout_vth": READOUT_VTH, "num_weight_bits": int(num_weight_bits)})


def quantized_model(model, deployed: Deployed):
    """The float model with every weight replaced by what its chip weight stands for
    (the 'quantized' accuracy: quantization alone, without integer dynamics)."""
    from deepr_neuro.training.recurrent import RecurrentModel

    weights = {}
    for q in deployed.graph.projections:
        dense = np.zeros_like(model.weights[q.name], dtype=np.float64)
        dense[q.cols, q.rows] = dequantized_weights(q.weights, q.weight_exp, deployed.scales[q.name])
        weights[q.name] = dense.astype(model.dtype)
    return RecurrentModel(model.spec, weights, {k: m.copy() for k, m in model.masks.items()}, dtype=model.dtype)


def run_sequences(backend, graph: IntegerGraph, x, lengths, batch_size: int = 64,
                  record_spikes: bool = False):
    """Run frames (n, T, F) of the given lengths (frames) through a backend, batches
    sorted by length, each batch max(n_i) * S steps; returns (readout_v (n, n_out),
    counts per population (n, n_k), SimResult list in batch order, order)."""
    enc = graph.encoding
    if not isinstance(enc, FrameEncoding):
        raise ConfigError("graph.encoding: a spike-source graph needs a FrameEncoding")
    S = int(enc.steps_per_frame)
    lengths = np.asarray(lengths, np.int64)
    order = np.argsort(lengths, kind="stable")
    n = len(order)
    k_out = graph.index(graph.readout)
    readout_v = np.zeros((n, graph.populations[k_out].n), np.float64 if not backend.exact else np.int64)
    counts = [np.zeros((n, p.n), np.int64) for p in graph.populations]
    results = []
    for lo in range(0, n, int(batch_size)):
        idx = order[lo:lo + int(batch_size)]
        L = lengths[idx]
        T = int(L.max())
        spikes = enc.encode(np.asarray(x)[idx, :T], L)
        res = backend.run(graph, spikes, T * S, record_spikes=record_spikes, n_steps=L * S)
        readout_v[idx] = res.readout_v
        for k in range(len(counts)):
            counts[k][idx] = res.counts[k]
        results.append(res)
    return readout_v, counts, results, order
