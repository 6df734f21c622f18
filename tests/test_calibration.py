"""convert/calibration.py's named parts: the output bias rule and the greedy search."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepr_neuro.convert.calibration import _greedy_search, output_bias_for, with_thresholds
from deepr_neuro.convert.conversion import ACT_SHIFT, ChipFormat
from deepr_neuro.errors import ConfigError
from deepr_neuro.network.integer_network import InputEncoding, IntegerNetwork, NeuronParams, SynapseLayer


@settings(max_examples=200, deadline=None)
@given(vth=st.integers(1, (1 << 17) - 1), beta=st.floats(-1, 3, allow_nan=False),
       mant_bits=st.integers(2, 13), exp_max=st.integers(0, 7))
def test_output_bias_fits_and_is_the_finest(vth, beta, mant_bits, exp_max):
    fmt = ChipFormat(bias_mant_bits=mant_bits, bias_exp_max=exp_max)
    got = output_bias_for([vth], beta, fmt)
    target = beta * (vth << ACT_SHIFT)
    if beta <= 0:
        assert got is None
        return
    if got is None:  # nothing fits: even the largest exponent overflows the mantissa
        assert round(target / (1 << exp_max)) > fmt.bias_mant_max
        return
    mant, exp = got
    assert 0 <= mant <= fmt.bias_mant_max and 0 <= exp <= exp_max
    assert abs((mant << exp) - target) <= (1 << exp) / 2 + 1e-6 * target
    if exp > 0:  # a smaller exponent would not have fitted
        assert round(target / (1 << (exp - 1))) > fmt.bias_mant_max


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n_layers=st.integers(1, 4), passes=st.integers(0, 3))
def test_greedy_search_only_moves_to_strictly_better_candidates(data, n_layers, passes):
    """Whatever the score landscape, the result is never worse than the start,
    every accepted move was strictly better, and thresholds stay in range."""
    fmt = ChipFormat()
    vth0 = [data.draw(st.integers(1, 5000)) for _ in range(n_layers)]
    table = {}
    seen = []

    def score(c):
        if c not in table:
            table[c] = (data.draw(st.sampled_from([0.1, 0.5, 0.9])), 0.0, -float(sum(c[:-1])))
        seen.append(c)
        return table[c]
    start = tuple(vth0) + (0.0,)
    grid = sorted({0.5, 0.8, 1.0, 1.25})
    best_c, best_s = _greedy_search(start, vth0, list(range(n_layers)), grid, [0.0, 0.05], passes, fmt, score)
    assert best_s == table[best_c] and best_s >= table[start]
    assert all(1 <= v <= fmt.vth_max for v in best_c[:-1])
    if passes == 0:
        assert best_c == start


def _net(n_layers=2):
    z = lambda n: NeuronParams(vth=10, du=4095, dv=0, bias_exp=0, bias_mant=np.zeros(n, np.int32))
    layers = [SynapseLayer(name=f"l{i}", n_in=3, n_out=3, rows=np.zeros(0, np.int32), cols=np.zeros(0, np.int32),
                           weights=np.zeros(0, np.int32), weight_exp=0, num_weight_bits=8, neurons=z(3))
              for i in range(n_layers)]
    return IntegerNetwork(input_neurons=z(3), encoding=InputEncoding(gain=1, shift=0), layers=layers)


@pytest.mark.parametrize("count", [0, 1, 2, 4])
def test_with_thresholds_wants_one_per_population(count):
    with pytest.raises(ConfigError, match="3 thresholds expected"):
        with_thresholds(_net(), list(range(1, count + 1)))


def test_with_thresholds_sets_vths_and_the_output_bias_only():
    net = with_thresholds(_net(), [7, 8, 9], output_bias=(5, 2))
    assert [net.input_neurons.vth] + [L.neurons.vth for L in net.layers] == [7, 8, 9]
    assert net.layers[-1].neurons.bias_exp == 2 and (net.layers[-1].neurons.bias_mant == 5).all()
    assert net.layers[0].neurons.bias_exp == 0 and (net.layers[0].neurons.bias_mant == 0).all()
