"""Threshold calibration on validation data (after the analytic conversion).

The conversion's normalisation misses the charge lost at Lava's reset to
zero, percentile clipping and the integer input periods; :func:`calibrate`
compensates on data by a greedy search over per-layer threshold factors and
a common output bias, scoring each candidate by simulating it (emulator by
default). Only thresholds and the output bias change.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepr_neuro.errors import ConfigError
from deepr_neuro.network.integer_network import IntegerNetwork
from deepr_neuro.convert.conversion import ACT_SHIFT, ChipFormat
from deepr_neuro.convert.accuracy import integer_ann_outputs

#: Threshold scale factors tried per layer by :func:`calibrate`.
#: Output-layer bias, as a fraction of the output threshold per step.
OUTPUT_BIAS_GRID = (0.0, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2)
CALIBRATION_GRID = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.4)

#: A candidate: (input vth, layer 0 vth, ..., output bias beta).
Candidate = Tuple
#: A candidate's score, compared lexicographically: (accuracy, ANN agreement, -spikes).
Score = Tuple[float, float, float]


def with_thresholds(net: IntegerNetwork, vths: Sequence[int],
                    output_bias: Optional[Tuple[int, int]] = None) -> IntegerNetwork:
    """A copy of ``net`` with thresholds ``vths`` = [input vth, layer 0 vth, ...]
    and, if given, ``output_bias = (bias_mant, bias_exp)`` on every output neuron."""
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


def output_bias_for(vths: Sequence[int], beta: float,
                    fmt: ChipFormat) -> Optional[Tuple[int, int]]:
    """``(bias_mant, bias_exp)`` with ``bias_mant << bias_exp ~ beta * (vth_out << 6)``,
    the smallest exponent whose mantissa fits; None for ``beta <= 0`` or when
    nothing fits (the candidate is then skipped)."""
    if beta <= 0:
        return None
    b = beta * (int(vths[-1]) << ACT_SHIFT)
    for e in range(0, int(fmt.bias_exp_max) + 1):
        m = int(round(b / (1 << e)))
        if m <= fmt.bias_mant_max:
            return (max(m, 0), e)
    return None


def _validation_subset(x_val_uint8: np.ndarray, y_val: np.ndarray,
                       max_samples: Optional[int], seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """The validation data, checked, and at most ``max_samples`` of it (seeded, in order)."""
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
    return x, y


def _simulation_scorer(net: IntegerNetwork, x: np.ndarray, y: np.ndarray, steps: int,
                       fmt: ChipFormat, backend,
                       cache: Dict[Candidate, Score]) -> Callable[[Candidate], Score]:
    """score(candidate) by one simulation of the validation data, memoised in ``cache``."""
    ann_pred = np.argmax(integer_ann_outputs(net, x), axis=1)

    def score(candidate: Candidate) -> Score:
        if candidate not in cache:
            ob = output_bias_for(candidate[:-1], candidate[-1], fmt)
            res = backend.run(with_thresholds(net, candidate[:-1], ob), x, steps)
            pred = res.predictions()
            spikes = float(sum(c.sum() for c in res.counts)) / x.shape[0]
            cache[candidate] = (float(np.mean(pred == y)), float(np.mean(pred == ann_pred)),
                                -spikes)
        return cache[candidate]
    return score


def _greedy_search(start: Candidate, vth0: Sequence[int], layers_to_tune: Sequence[int],
                   grid: Sequence[float], betas: Sequence[float], passes: int,
                   fmt: ChipFormat, score: Callable[[Candidate], Score]) -> Tuple[Candidate, Score]:
    """Coordinate search: per pass, each layer's factor in ``grid`` (of its converted
    ``vth0``), then the output bias; a candidate replaces the current one only if
    strictly better; stops early after a pass without change."""
    cur = start
    best = score(cur)
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
            if beta == cur[-1] or (beta > 0 and output_bias_for(cur[:-1], beta, fmt) is None):
                continue
            cand = cur[:-1] + (beta,)
            s = score(cand)
            if s > best:
                best, cur, changed = s, cand, True
        if not changed:
            break
    return cur, best


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
    x, y = _validation_subset(x_val_uint8, y_val, max_samples, seed)
    steps = int(steps)
    grid = sorted(set(float(f) for f in grid) | {1.0})
    vth0 = [int(net.input_neurons.vth)] + [int(L.neurons.vth) for L in net.layers]
    names = ["input"] + [L.name for L in net.layers]
    cache: Dict[Candidate, Score] = {}
    score = _simulation_scorer(net, x, y, steps, fmt, backend, cache)

    betas = sorted(set(float(b) for b in bias_grid) | {0.0})
    converted = tuple(vth0) + (0.0,)
    start = score(converted)
    layers_to_tune = list(range(0 if include_input else 1, len(vth0)))
    cur, best = _greedy_search(converted, vth0, layers_to_tune, grid, betas, passes, fmt, score)
    ob = output_bias_for(cur[:-1], cur[-1], fmt)
    out = with_thresholds(net, cur[:-1], ob)
    info = _calibration_info(names, vth0, cur, ob, start, best, steps=steps,
                             n_samples=int(x.shape[0]), grid=grid, passes=passes,
                             betas=betas, simulations=len(cache))
    return out, info


def _calibration_info(names: Sequence[str], vth0: Sequence[int], cur: Candidate,
                      ob: Optional[Tuple[int, int]], start: Score, best: Score, *,
                      steps: int, n_samples: int, grid: Sequence[float], passes: int,
                      betas: Sequence[float], simulations: int) -> Dict:
    """The manifest's ``calibration`` block (JSON-serialisable)."""
    return {
        "method": "greedy per-layer threshold scaling on validation data (emulator), "
                  "objective: accuracy, then agreement with the integer ANN, then fewer spikes",
        "steps": steps,
        "n_samples": n_samples,
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
        "simulations": simulations,
    }
