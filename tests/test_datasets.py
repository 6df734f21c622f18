"""Offline data sets: digits split, IDX reader, Fashion-MNIST / MNIST loaders."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepr_neuro.training.datasets import (
    DIGITS_TEST_FRACTION,
    FASHION_MNIST_DIR,
    load_dataset,
    read_idx,
    stratified_split,
)
from deepr_neuro.errors import DataError


# ------------------------------------------------------------ digits
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes_and_types(digits):
    assert digits.n_features == 64 and digits.n_classes == 10
    assert digits.image_shape == (8, 8)
    for x in (digits.x_train, digits.x_val, digits.x_test):
        assert x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == 64
    assert digits.x_train.max() == 255 and digits.x_train.min() == 0
    n = len(digits.y_train) + len(digits.y_val) + len(digits.y_test)
    assert n == 1797
    assert len(digits.y_test) == pytest.approx(DIGITS_TEST_FRACTION * 1797, abs=5)
    assert len(digits.y_val) == pytest.approx(0.1 * (1797 - len(digits.y_test)), abs=5)


def test_digits_pixel_map(digits):
    from sklearn.datasets import load_digits
    raw = load_digits().data.astype(int)
    mapped = raw * 255 // 16
    # every row we return is one of the mapped sklearn rows
    rows = {r.tobytes() for r in mapped.astype(np.uint8)}
    assert all(r.tobytes() in rows for r in digits.x_test)


def _rows(x):
    return [r.tobytes() + bytes([i]) for i, r in enumerate(x)]


def test_digits_split_disjoint_and_stratified(digits):
    from sklearn.datasets import load_digits
    d = load_digits()
    # identify samples by their index via a unique-ish key: (pixels, label) counts
    all_keys = {}
    for x, y in zip((d.data.astype(int) * 255 // 16).astype(np.uint8), d.target):
        all_keys[(x.tobytes(), int(y))] = all_keys.get((x.tobytes(), int(y)), 0) + 1
    seen = {}
    for xs, ys in ((digits.x_train, digits.y_train), (digits.x_val, digits.y_val),
                   (digits.x_test, digits.y_test)):
        for x, y in zip(xs, ys):
            k = (x.tobytes(), int(y))
            seen[k] = seen.get(k, 0) + 1
    assert seen == all_keys  # a partition of the 1797 samples
    full = np.bincount(d.target, minlength=10) / len(d.target)
    for ys in (digits.y_train, digits.y_val, digits.y_test):
        frac = np.bincount(ys, minlength=10) / len(ys)
        assert np.abs(frac - full).max() < 0.01


def test_digits_deterministic_and_test_set_fixed(digits):
    again = load_dataset("digits")
    assert again.sha256 == digits.sha256
    assert np.array_equal(again.x_val, digits.x_val)
    other = load_dataset("digits", seed=7)
    assert np.array_equal(other.x_test, digits.x_test)  # test set independent of seed
    assert np.array_equal(other.y_test, digits.y_test)
    assert not np.array_equal(other.y_val, digits.y_val) or \
        not np.array_equal(other.x_val, digits.x_val)
    assert other.sha256 != digits.sha256
    none = load_dataset("digits", val_fraction=0.0)
    assert len(none.y_val) == 0 and len(none.y_train) == len(digits.y_train) + len(digits.y_val)
    info = digits.info()
    assert info["sha256"] == digits.sha256 and info["n_test"] == len(digits.y_test)


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.integers(0, 4), min_size=1, max_size=300),
       frac=st.floats(0.0, 0.9), seed=st.integers(0, 2**31 - 1))
def test_stratified_split_properties(labels, frac, seed):
    y = np.array(labels)
    keep, held = stratified_split(y, frac, seed)
    assert len(np.intersect1d(keep, held)) == 0
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(len(y)))
    for c in np.unique(y):
        n_c = int((y == c).sum())
        assert int((y[held] == c).sum()) == int(round(frac * n_c))
    k2, h2 = stratified_split(y, frac, seed)
    assert np.array_equal(keep, k2) and np.array_equal(held, h2)


@pytest.mark.parametrize("kw,needle", [
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(val_fraction=-0.1), "val_fraction"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments(kw, needle):
    with pytest.raises(DataError, match=needle):
        load_dataset("digits", **kw)


def test_unknown_name():
    with pytest.raises(DataError, match="did you mean 'digits'"):
        load_dataset("digit")


# ------------------------------------------------------------ IDX reader
def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return head + arr.astype(dt).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool, code: int = 0x08) -> Path:
    data = idx_bytes(arr, code)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), gz=st.booleans(),
       code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]), seed=st.integers(0, 99))
def test_idx_roundtrip(tmp_path_factory, shape, gz, code, seed):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 100, size=shape)
    p = write_idx(tmp_path_factory.mktemp("idx") / "a.idx", arr, gz, code)
    out = read_idx(p)
    assert out.shape == tuple(shape)
    assert np.array_equal(out, arr)
    assert out.dtype.isnative


@pytest.mark.parametrize("gz", [False, True])
def test_idx_bad_magic(tmp_path, gz):
    data = bytearray(idx_bytes(np.zeros((2, 3), np.uint8)))
    data[0] = 8
    p = tmp_path / "bad"
    p.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
    with pytest.raises(DataError, match=r"bad\S* magic number 0x08000802") as ei:
        read_idx(p)
    assert str(p) in str(ei.value)


def test_idx_bad_type_code_and_dims(tmp_path):
    p = tmp_path / "t"
    p.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(DataError, match="magic number"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 0x08, 0]))
    with pytest.raises(DataError, match="magic number"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 0]))
    with pytest.raises(DataError, match="empty dimension"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, gz):
    data = idx_bytes(np.arange(20, dtype=np.uint8).reshape(4, 5))[:-3]
    p = tmp_path / "trunc"
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match=r"truncated.*\(4, 5\)") as ei:
        read_idx(p)
    assert str(p) in str(ei.value)


def test_idx_truncated_header_trailing_and_short(tmp_path):
    p = tmp_path / "h"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(p)
    p.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"xx")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(p)
    p.write_bytes(b"\0")
    with pytest.raises(DataError, match="shorter than"):
        read_idx(p)


def test_idx_truncated_gzip_stream(tmp_path):
    p = tmp_path / "t.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 50), np.uint8)))[:-10])
    with pytest.raises(DataError, match="gzip") as ei:
        read_idx(p)
    assert str(p) in str(ei.value)


def test_idx_missing(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz")


# ------------------------------------------------------------ MNIST-style directories
def make_idx_dir(d: Path, gz: bool, n_train=30, n_test=10, dotted=False, rows=4):
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    sep = "." if dotted else "-"
    sets = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, rows, rows)).astype(np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        ext = ".gz" if gz else ""
        write_idx(d / f"{split}-images{sep}idx3-ubyte{ext}", x, gz)
        write_idx(d / f"{split}-labels{sep}idx1-ubyte{ext}", y, gz)
        sets[split] = (x, y)
    return sets


@pytest.mark.parametrize("gz,dotted", [(True, False), (False, False), (False, True)])
def test_mnist_from_directory(tmp_path, gz, dotted):
    sets = make_idx_dir(tmp_path / "m", gz, dotted=dotted)
    ds = load_dataset("mnist", data_dir=tmp_path / "m", val_fraction=1 / 3, seed=1)
    assert ds.n_features == 16 and ds.image_shape == (4, 4)
    # 3 samples per class: round(3 / 3) = 1 held out per class
    assert len(ds.y_train) == 20 and len(ds.y_val) == 10 and len(ds.y_test) == 10
    assert np.array_equal(ds.x_test, sets["t10k"][0].reshape(10, -1))
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert len(ds.sha256) == 64


def test_mnist_needs_data_dir():
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("mnist")


def test_mnist_missing_and_corrupt_files(tmp_path):
    make_idx_dir(tmp_path / "m", gz=True)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: file not found"):
        load_dataset("mnist", data_dir=tmp_path / "m")
    make_idx_dir(tmp_path / "c", gz=False)
    f = tmp_path / "c" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: IDX file truncated"):
        load_dataset("mnist", data_dir=tmp_path / "c")


def test_mnist_count_mismatch(tmp_path):
    make_idx_dir(tmp_path / "m", gz=False)
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte", np.zeros(29, np.uint8), False)
    with pytest.raises(DataError, match="30 images but .* 29 labels"):
        load_dataset("mnist", data_dir=tmp_path / "m")


# ------------------------------------------------------------ Fashion-MNIST
HAVE_FASHION = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


@pytest.mark.skipif(not HAVE_FASHION, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    ds = load_dataset("fashion-mnist", val_fraction=0.1, seed=0)
    assert ds.n_features == 784 and ds.image_shape == (28, 28)
    assert len(ds.y_train) == 54_000 and len(ds.y_val) == 6_000 and len(ds.y_test) == 10_000
    assert np.bincount(ds.y_val).tolist() == [600] * 10
    assert ds.x_train.dtype == np.uint8


@pytest.mark.skipif(HAVE_FASHION, reason="Fashion-MNIST is installed; tested above")
def test_fashion_mnist_absent_says_how_to_install():
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_fashion_mnist_bad_data_dir(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "none")
    make_idx_dir(tmp_path / "f", gz=True)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "f", val_fraction=0.0)
    assert ds.name == "fashion-mnist" and len(ds.y_train) == 30


def test_fashion_mnist_missing_package_message(monkeypatch, tmp_path):
    import deepr_neuro.training.datasets as dsm
    monkeypatch.setattr(dsm, "FASHION_MNIST_DIR", tmp_path / "usr-share-datasets-fashion-mnist")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    # a damaged installation names the file and how to repair it
    make_idx_dir(tmp_path / "usr-share-datasets-fashion-mnist", gz=True)
    (tmp_path / "usr-share-datasets-fashion-mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bxx")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: corrupt(.|\n)*--reinstall"):
        load_dataset("fashion-mnist")
