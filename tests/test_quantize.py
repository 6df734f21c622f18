"""Quantization to Lava's integer weight format: properties, not examples."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from deepr_neuro.errors import ConfigError
from deepr_neuro.convert.quantize import float_accuracy, quantize_network, quantized_accuracy
from deepr_neuro.network.fixed_point import (EXCITATORY, INHIBITORY, MIXED, choose_weight_exp, fake_quantize,
                                             full_range_scale, quantize_weights, sign_mode_of, truncate_weights,
                                             weight_range, weight_step)

bits = st.integers(1, 8)
# 1-bit mixed weights hold no positive value ([-256, 0]): such layers overflow
# by design, so range/error properties are stated for 2..8 bits
floats = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False, width=32)
weights = arrays(np.float64, st.integers(1, 60), elements=floats)
int8w = arrays(np.int32, st.integers(1, 60), elements=st.integers(-256, 255))


def lava_reference(w, num_weight_bits):
    """Lava's own code path (lava/utils/weightutils.py), imported only here."""
    from deepr_neuro.simulate import lava_compat
    lava_compat.install()
    import lava.utils.weightutils as wu
    mode = wu.determine_sign_mode(w)
    w = wu.clip_weights(w, mode, num_bits=8)
    return wu.truncate_weights(w, mode, num_weight_bits)


@settings(max_examples=300, deadline=None)
@given(int8w, bits)
def test_truncation_is_lavas_formula(w, b):
    """(w >> n) << n, n = 8 - b + is_mixed; arithmetic shift floors negatives."""
    mode = sign_mode_of(w)
    got = truncate_weights(w, b)
    n = 8 - b + (mode == MIXED)
    if mode == INHIBITORY:
        want = -((np.clip(-w, 0, 255) >> n) << n)
    else:
        want = (np.clip(w, -256 if mode == MIXED else 0, 255) >> n) << n
    np.testing.assert_array_equal(got, want)
    neg = w < 0
    if mode == MIXED and neg.any():
        # floor, not round-toward-zero: never larger than the input
        assert np.all(got[neg] <= w[neg])


def test_truncation_negative_examples():
    w = np.array([-3, -1, -256, 5, 254, 255])
    np.testing.assert_array_equal(truncate_weights(w, 8), [-4, -2, -256, 4, 254, 254])
    np.testing.assert_array_equal(truncate_weights(w, 7), [-4, -4, -256, 4, 252, 252])
    # inhibitory layer: negated, truncated, negated back (toward zero)
    np.testing.assert_array_equal(truncate_weights(np.array([-3, -255, 0]), 7), [-2, -254, 0])


@pytest.mark.lava  # skipped with the reason where Lava is absent (conftest.py)
@settings(max_examples=150, deadline=None)
@given(int8w, bits)
def test_truncation_matches_installed_lava(w, b):
    np.testing.assert_array_equal(truncate_weights(w, b), lava_reference(w, b))


@settings(max_examples=300, deadline=None)
@given(weights, bits, st.floats(1e-3, 1e4), st.booleans())
def test_quantized_weights_in_range_and_on_grid(w, b, scale, strict):
    try:
        q = quantize_weights(w, b, scale=scale, weight_exp_min=-8, weight_exp_max=7,
                             strict=strict)
    except ConfigError:
        assert strict
        lo, hi = weight_range(b, sign_mode_of(w))
        t = w * scale
        assert t.max() > hi * 2 ** 7 * (1 - 1e-9) or -t.min() > -lo * 2 ** 7 * (1 - 1e-9) \
            or -t.min() > 255 * 2 ** 6  # -256 at weight_exp 7 of a layer that became inhibitory
        return
    lo, hi = weight_range(b, q.sign_mode)
    assert q.weights.dtype == np.int32
    assert q.weights.min() >= lo and q.weights.max() <= hi
    assert -256 <= q.weights.min() and q.weights.max() <= 255
    assert np.all(q.weights % weight_step(b, q.sign_mode) == 0)
    # Lava's truncation keeps them as they are
    np.testing.assert_array_equal(truncate_weights(q.weights, b), q.weights)
    assert -8 <= q.weight_exp <= 7


@settings(max_examples=300, deadline=None)
@given(weights, st.integers(2, 8), st.floats(1e-2, 1e3))
def test_exponent_uses_the_range(w, b, scale):
    """The chosen exponent is the smallest that fits: at one less, the largest
    weight would overflow (unless already at weight_exp_min)."""
    q = quantize_weights(w, b, scale=scale, weight_exp_min=-8, weight_exp_max=7)
    t = w * scale
    lo, hi = weight_range(b, q.sign_mode)
    if q.sign_mode != sign_mode_of(w):
        # all weights of one sign rounded to 0: the chip's sign mode differs
        t = np.where(np.sign(t) == np.sign(hi + lo), t, 0.0)
    half = weight_step(b, q.sign_mode) / 2  # the range holds what rounds into it
    assert t.max() <= (hi + half) * 2.0 ** q.weight_exp * (1 + 1e-9)
    assert -t.min() <= (-lo + half) * 2.0 ** q.weight_exp * (1 + 1e-9)
    if q.weight_exp > -8 and np.any(t != 0) and q.sign_mode == sign_mode_of(w):
        e = q.weight_exp - 1
        assert t.max() > hi * 2.0 ** e or -t.min() > -lo * 2.0 ** e
        # so the largest mantissa is at least half the range
        assert np.abs(q.weights).max() >= min(hi, -lo) // 2 - weight_step(b, q.sign_mode)


@settings(max_examples=300, deadline=None)
@given(weights, st.integers(2, 8), st.floats(1e-2, 1e3))
def test_dequantized_error_bounded(w, b, scale):
    """Round to nearest on the grid: error <= step/2 * 2**exp / scale per weight."""
    q = quantize_weights(w, b, scale=scale, weight_exp_min=-8, weight_exp_max=7)
    if q.weight_exp == -8 and np.abs(w * scale).max() < 1:
        pass  # underflow region: still bounded by the same formula
    # (the float sign mode's step: with mixed float weights it is the coarser)
    bound = weight_step(b, sign_mode_of(w)) / 2 * 2.0 ** q.weight_exp / scale
    assert np.all(np.abs(q.dequantize() - w) <= bound * (1 + 1e-9))


def test_strict_mode_raises_on_overflow_and_names_the_layer():
    w = np.array([0.5, -1.0, 3.0])
    with pytest.raises(ConfigError, match=r"layer 'h1'.*weight_exp_max"):
        quantize_weights(w, 8, scale=1e5, weight_exp_max=7, name="layer 'h1'")
    with pytest.raises(ConfigError, match="overflow"):
        quantize_weights(w, 8, scale=100.0, weight_exp=0, name="h1")
    q = quantize_weights(w, 8, scale=100.0, weight_exp=0, strict=False)
    assert q.overflow == 1 and q.weights.max() == 254
    with pytest.raises(ConfigError, match="weight_exp"):
        quantize_weights(w, 8, weight_exp=9)
    with pytest.raises(ConfigError, match="num_weight_bits"):
        quantize_weights(w, 9)
    with pytest.raises(ConfigError, match="NaN"):
        quantize_weights(np.array([np.nan]), 8)
    assert issubclass(ConfigError, ValueError)


def test_sign_modes():
    assert sign_mode_of(np.array([0.0, 1.0])) == EXCITATORY
    assert sign_mode_of(np.array([0.0, -1.0])) == INHIBITORY
    assert sign_mode_of(np.array([-1.0, 1.0])) == MIXED
    assert sign_mode_of(np.zeros(3)) == EXCITATORY
    assert weight_range(8, MIXED) == (-256, 254)
    assert weight_range(8, EXCITATORY) == (0, 255)
    assert weight_range(8, INHIBITORY) == (-255, 0)
    assert weight_range(4, MIXED) == (-256, 224)
    q = quantize_weights(np.array([0.1, 0.2]), 8, scale=1000.0)
    assert q.sign_mode == EXCITATORY and q.weights.max() == 200


@settings(max_examples=200, deadline=None)
@given(weights, st.integers(2, 8))
def test_fake_quantize_matches_full_range_quantization(w, b):
    d = fake_quantize(w, b)
    assert d.shape == w.shape
    np.testing.assert_array_equal(d[w == 0], 0)
    if np.any(w):
        s = full_range_scale(w, b)
        lo, hi = weight_range(b, sign_mode_of(w))
        # at most 2**(b-1) (mixed) or 2**b levels, error <= half a step
        step = weight_step(b, sign_mode_of(w)) / s
        # (x2: a layer whose weights of one sign all round to 0 may move up one exponent)
        assert np.all(np.abs(d - w) <= step * (1 + 1e-9))
        assert len(np.unique(d)) <= (hi - lo) // weight_step(b, sign_mode_of(w)) + 1


def test_choose_weight_exp_edges():
    assert choose_weight_exp(np.array([254.0]), 8) == 0
    assert choose_weight_exp(np.array([255.0]), 8) == 1
    assert choose_weight_exp(np.array([-256.0]), 8) == 0
    assert choose_weight_exp(np.array([1e9]), 8, weight_exp_max=7) == 8
    assert choose_weight_exp(np.array([0.0]), 8, weight_exp_min=-8) == -8


def test_quantized_accuracy_close_to_float():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 20)).astype(np.uint8)
    layers = []
    for n_in, n_out in ((20, 30), (30, 5)):
        m = rng.random((n_out, n_in)) < 0.4
        r, c = np.nonzero(m)
        layers.append(dict(rows=r.astype(np.int32), cols=c.astype(np.int32),
                           weight=rng.standard_normal(r.size).astype(np.float32),
                           n_in=n_in, n_out=n_out))
    y = np.argmax(x @ rng.standard_normal((20, 5)), axis=1)
    q8 = quantize_network(layers, 8)
    q2 = quantize_network(layers, 2)
    f = float_accuracy(layers, x, y)
    assert abs(quantized_accuracy(layers, q8, x, y) - f) <= 0.05
    # 2-bit weights really change the network
    assert any(not np.allclose(a.dequantize(), L["weight"]) for a, L in zip(q2, layers))
