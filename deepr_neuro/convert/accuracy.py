"""Accuracy helpers: the quantized ANN and the spiking network on labelled data.

Used by export (the manifest's accuracies), calibration (agreement with the
integer ANN) and the benchmarks. The emulator is the default backend.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from deepr_neuro.network.integer_network import IntegerNetwork
from deepr_neuro.convert.quantize import accuracy, ann_forward, quantized_matrices
from deepr_neuro.network.fixed_point import QuantizedLayer, sign_mode_of


def quantized_layers_of(net: IntegerNetwork) -> List[QuantizedLayer]:
    """The integer weights of ``net`` as QuantizedLayers (scale 1)."""
    return [QuantizedLayer(weights=L.weights, weight_exp=L.weight_exp,
                           num_weight_bits=L.num_weight_bits,
                           sign_mode=sign_mode_of(L.weights), scale=1.0)
            for L in net.layers]



def integer_ann_outputs(net: IntegerNetwork, x_uint8: np.ndarray) -> np.ndarray:
    """Output logits of the ANN with the network's integer weights, as the chip
    applies them (after Lava's truncation); no biases, so scales do not matter."""
    layers = [dict(rows=L.rows, cols=L.cols, weight=np.zeros(len(L.rows)),
                   n_in=L.n_in, n_out=L.n_out) for L in net.layers]
    return ann_forward(quantized_matrices(layers, quantized_layers_of(net)), x_uint8)


def quantized_ann_accuracy(net: IntegerNetwork, x_uint8: np.ndarray, y: np.ndarray) -> float:
    """ANN accuracy with the network's integer weights, as the chip applies them
    (after Lava's truncation). Scales do not matter: the net has no biases."""
    return accuracy(integer_ann_outputs(net, x_uint8), y)


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
