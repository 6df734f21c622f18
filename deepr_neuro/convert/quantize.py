"""Quantization of trained float weights to the chip's integer weight format.

The quantized-ANN forward pass and accuracy, and :func:`quantize_network`
(every layer at its full-range scale).

Lava's integer weight format, its sign modes and truncation and the weight
quantizer itself live in :mod:`deepr_neuro.network.fixed_point` (one home of
Lava's numbers); this module evaluates quantized networks as ANNs.

Pure NumPy: no Lava import.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from deepr_neuro.network.fixed_point import QuantizedLayer, full_range_scale, quantize_weights

# --------------------------------------------------------------------------
# Float / quantized ANN evaluation
# --------------------------------------------------------------------------

def _get(layer, key):
    if isinstance(layer, dict):
        return layer[key]
    return getattr(layer, key)


def dense_matrix(layer, weight: Optional[np.ndarray] = None) -> np.ndarray:
    """(n_out, n_in) float matrix of a sparse layer (``rows``, ``cols``, weights)."""
    rows = np.asarray(_get(layer, "rows"), dtype=np.int64)
    cols = np.asarray(_get(layer, "cols"), dtype=np.int64)
    w = np.asarray(_get(layer, "weight") if weight is None else weight, dtype=np.float64)
    m = np.zeros((int(_get(layer, "n_out")), int(_get(layer, "n_in"))))
    np.add.at(m, (rows, cols), w)
    return m


def ann_forward(matrices: Sequence[np.ndarray], x_uint8: np.ndarray,
                all_layers: bool = False):
    """ReLU network without biases on ``x / 255`` (the trainer's input scaling).

    Hidden layers are ReLU, the output layer linear. Returns the output
    (n_samples, n_out), or the list [input, hidden..., output] when
    ``all_layers``.
    """
    h = np.atleast_2d(np.asarray(x_uint8, dtype=np.float64)) / 255.0
    acts = [h]
    for i, m in enumerate(matrices):
        h = h @ np.asarray(m).T
        if i < len(matrices) - 1:
            h = np.maximum(h, 0.0)
        acts.append(h)
    return acts if all_layers else h


def accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of argmax(outputs) == y (ties -> lowest index, as the SNN)."""
    return float(np.mean(np.argmax(outputs, axis=1) == np.asarray(y)))


def float_accuracy(layers, x_uint8: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the trained float network."""
    return accuracy(ann_forward([dense_matrix(L) for L in layers], x_uint8), y)


def quantized_matrices(layers, quantized: Sequence[QuantizedLayer]):
    """Dense matrices of the dequantized weights (as the chip sees them)."""
    return [dense_matrix(L, q.dequantize()) for L, q in zip(layers, quantized)]


def quantized_accuracy(layers, quantized: Sequence[QuantizedLayer],
                       x_uint8: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the ANN evaluated with the chip's weights.

    Each layer uses ``trunc(qweight) * 2**weight_exp / scale``: the integer
    weights after Lava's truncation, mapped back to float units. Per-layer
    scales do not change the prediction of a bias-free ReLU network (it is
    positively homogeneous), so only the integer rounding shows.
    """
    return accuracy(ann_forward(quantized_matrices(layers, quantized), x_uint8), y)


def quantize_network(layers, num_weight_bits: int = 8, *, weight_exp_min: int = -8,
                     weight_exp_max: int = 7, strict: bool = True):
    """Quantize every layer at its full-range scale with ``weight_exp = 0``
    when the profile allows it (else the smallest allowed exponent).

    A convenience for quantized-ANN accuracy; :func:`deepr_neuro.convert.conversion.convert`
    chooses its own scales.
    """
    e = min(max(0, int(weight_exp_min)), int(weight_exp_max))
    out = []
    for i, L in enumerate(layers):
        w = np.asarray(_get(L, "weight"))
        s = full_range_scale(w, num_weight_bits, e)
        out.append(quantize_weights(w, num_weight_bits, scale=s, weight_exp=e,
                                    weight_exp_min=weight_exp_min,
                                    weight_exp_max=weight_exp_max,
                                    strict=strict, name=f"layer {i}"))
    return out
