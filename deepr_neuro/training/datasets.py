"""Offline data sets. Nothing here ever downloads.

:func:`load_dataset` returns a :class:`Dataset` whose feature arrays are
**uint8, flattened, 0..255** (the trainer converts batches to float) and whose
labels are int64 class indices 0..n_classes-1.

Data sets
---------
``digits``
    scikit-learn's ``load_digits`` (1,797 8x8 images, embedded in
    scikit-learn). Pixel values 0..16 become uint8 by ``x * 255 // 16``
    (exact integer floor: 0 -> 0, 1 -> 15, 8 -> 127, 16 -> 255). There is no
    official test set, so a fixed one is made: a stratified 20 % drawn with
    seed ``DIGITS_TEST_SEED`` (independent of ``seed``), so every run of every
    seed is scored on the same 359 images (per-class rounding).
``fashion-mnist``
    Debian package ``dataset-fashion-mnist``: gzipped IDX files
    (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) under
    ``/usr/share/datasets/fashion-mnist/``; 60,000 train / 10,000 test 28x28.
``mnist``
    IDX files in a directory the user names (``data_dir``), gzipped or raw,
    with the standard names (``train-images-idx3-ubyte[.gz]`` or the
    ``train-images.idx3-ubyte`` spelling, and likewise for the others).

Splits
------
The validation set is held out of the training data: per class, ``round(
val_fraction * n_class)`` samples chosen by a NumPy ``RandomState(seed)``
permutation (legacy MT19937, whose stream NumPy keeps stable across versions),
classes taken in ascending order. Index sets are returned sorted, so the split
depends only on the labels, the fraction and the seed.

``Dataset.sha256`` hashes the arrays actually used (name, dtype, shape and
bytes of x_train, y_train, x_val, y_val, x_test, y_test, in that order): two
runs with the same hash saw the same data and the same split.
"""
from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from deepr_neuro.errors import DataError

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_DIR",
    "DIGITS_TEST_FRACTION",
    "DIGITS_TEST_SEED",
    "Dataset",
    "load_dataset",
    "read_idx",
    "stratified_split",
    "find_idx_file",
]

DATASET_NAMES = ("digits", "fashion-mnist", "mnist")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 20180101  # fixed: the digits test set never depends on --seed

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set with its train / validation / test split (uint8 features)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple[int, ...]
    source: str
    split: dict = field(default_factory=dict)
    sha256: str = ""

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def info(self) -> dict:
        """JSON-ready summary for the bundle manifest."""
        return {
            "name": self.name,
            "source": self.source,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "image_shape": list(self.image_shape),
            "n_train": int(len(self.y_train)),
            "n_val": int(len(self.y_val)),
            "n_test": int(len(self.y_test)),
            "split": dict(self.split),
            "sha256": self.sha256,
        }


# ---------------------------------------------------------------- helpers
def _hash_arrays(name: str, arrays: list[tuple[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    h.update(f"deepr-neuro dataset {name}\n".encode())
    for key, a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{key} {a.dtype.str} {a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``y`` into (kept, held_out), holding out
    ``round(fraction * n_c)`` of every class c, chosen by RandomState(seed).
    Both index arrays are sorted."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"split fraction must be in [0, 1) (got {fraction})")
    y = np.asarray(y)
    rng = np.random.RandomState(int(seed))
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(fraction * len(idx)))
        if k:
            held.append(idx[rng.permutation(len(idx))[:k]])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


# What an IDX file may declare: far above MNIST (60,000 x 28 x 28 = 47 MB), low
# enough that a corrupt or hostile header (or a gzip bomb: a few kB that inflate
# to GBs) is refused before the memory is spent.
MAX_IDX_PAYLOAD_BYTES = 1 << 30  # 1 GiB decompressed
MAX_IDX_DIM = 1 << 28            # any one dimension


def _read_at_most(stream, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the stream), read in
    pieces so a decompressing stream never inflates more than ``n`` bytes."""
    parts, got = [], 0
    while got < n:
        piece = stream.read(min(n - got, 1 << 24))
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or raw, detected from its bytes).

    Checks the magic number (two zero bytes, a known type code, 1..4
    dimensions), that no dimension is zero, that the declared size is within
    MAX_IDX_PAYLOAD_BYTES, and that the payload is exactly the size the header
    declares. Streams: at most the declared size plus one byte is ever read
    or decompressed (a gzip bomb costs no more than its header claims).
    Any failure is a DataError naming the file. Returns a native-endian array
    of the declared shape.
    """
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: an IDX file expected but this is a directory")
    if p.exists() and not p.is_file():  # a FIFO would block the open
        raise DataError(f"{p}: an IDX file expected but this is not a regular file")
    try:
        f = open(p, "rb")
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror or exc}); check its permissions") from None
    try:
        with f:
            gz = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            stream = gzip.GzipFile(fileobj=f, mode="rb") if gz else f
            try:
                return _read_idx_stream(p, stream)
            finally:
                if gz:
                    stream.close()
    except (OSError, EOFError, zlib.error) as exc:
        if gz:
            raise DataError(
                f"{p}: corrupt or truncated gzip file ({exc}); "
                f"re-fetch or reinstall it") from None
        raise DataError(f"{p}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


def _read_idx_stream(p: Path, stream) -> np.ndarray:
    head = _read_at_most(stream, 4)
    if len(head) < 4:
        raise DataError(f"{p}: not an IDX file: {len(head)} bytes, shorter than the 4-byte magic number")
    if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES or not 1 <= head[3] <= 4:
        raise DataError(
            f"{p}: not an IDX file: bad magic number 0x{head[:4].hex()} (expected "
            f"00 00, a type code in {{08,09,0b,0c,0d,0e}}, and 1..4 dimensions)")
    dtype = _IDX_TYPES[head[2]]
    ndim = head[3]
    header = 4 + 4 * ndim
    dim_bytes = _read_at_most(stream, 4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise DataError(f"{p}: truncated IDX header ({4 + len(dim_bytes)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(dim_bytes, dtype=">u4", count=ndim))
    if any(d == 0 for d in dims):
        raise DataError(f"{p}: IDX header declares an empty dimension {dims}")
    payload = dtype.itemsize
    for d in dims:
        payload *= d
    if max(dims) > MAX_IDX_DIM or payload > MAX_IDX_PAYLOAD_BYTES:
        raise DataError(
            f"{p}: IDX header declares shape {dims} ({payload} bytes of data), above the "
            f"limit of {MAX_IDX_PAYLOAD_BYTES} bytes (and {MAX_IDX_DIM} a dimension); the "
            f"file is corrupt or not a data set this toolkit trains on")
    expected = header + payload
    data = _read_at_most(stream, payload + 1)
    if len(data) != payload:
        if len(data) < payload:
            raise DataError(
                f"{p}: IDX file truncated: header declares shape {dims} "
                f"({expected} bytes in all) but the file holds {header + len(data)} bytes")
        raise DataError(
            f"{p}: IDX file has trailing bytes: header declares shape {dims} "
            f"({expected} bytes in all) but the file holds more")
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


_IDX_NAMES = {
    "train-images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train-labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test-images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test-labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def find_idx_file(directory: Path, kind: str) -> Path:
    """The IDX file of ``kind`` (train-images, train-labels, test-images,
    test-labels) in ``directory``: standard names, raw or ``.gz``."""
    names = _IDX_NAMES[kind]
    for base in names:
        for cand in (directory / (base + ".gz"), directory / base):
            if cand.is_file():
                return cand
    raise DataError(
        f"{directory / (names[0] + '.gz')}: file not found (looked for "
        f"{', '.join(n + '[.gz]' for n in names)} in {directory})")


def _load_idx_set(directory: Path, what: str) -> tuple[np.ndarray, ...]:
    out = []
    for split in ("train", "test"):
        ip = find_idx_file(directory, f"{split}-images")
        lp = find_idx_file(directory, f"{split}-labels")
        x, y = read_idx(ip), read_idx(lp)
        if x.dtype != np.uint8 or x.ndim != 3:
            raise DataError(f"{ip}: expected unsigned-byte images of 3 dimensions "
                            f"(n, rows, cols), got {x.dtype} of shape {x.shape}")
        if y.dtype != np.uint8 or y.ndim != 1:
            raise DataError(f"{lp}: expected unsigned-byte labels of 1 dimension, "
                            f"got {y.dtype} of shape {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{ip} holds {len(x)} images but {lp} holds {len(y)} labels")
        if y.max() > 9:
            raise DataError(f"{lp}: label {int(y.max())} out of range 0..9 for {what}")
        out += [x, y]
    return tuple(out)


def _finish(name, source, x_tr, y_tr, x_te, y_te, n_classes, image_shape,
            val_fraction, seed, extra_split) -> Dataset:
    x_tr = x_tr.reshape(len(x_tr), -1).astype(np.uint8, copy=False)
    x_te = x_te.reshape(len(x_te), -1).astype(np.uint8, copy=False)
    y_tr = y_tr.astype(np.int64)
    y_te = y_te.astype(np.int64)
    keep, held = stratified_split(y_tr, val_fraction, seed)
    arrays = {
        "x_train": np.ascontiguousarray(x_tr[keep]), "y_train": y_tr[keep],
        "x_val": np.ascontiguousarray(x_tr[held]), "y_val": y_tr[held],
        "x_test": np.ascontiguousarray(x_te), "y_test": y_te,
    }
    split = {"val_fraction": float(val_fraction), "val_seed": int(seed),
             "val_rule": "stratified, per class round(val_fraction*n_c), RandomState(seed)",
             **extra_split}
    sha = _hash_arrays(name, list(arrays.items()))
    return Dataset(name=name, n_classes=n_classes, image_shape=tuple(image_shape),
                   source=source, split=split, sha256=sha, **arrays)


# ---------------------------------------------------------------- loaders
def _load_digits(val_fraction: float, seed: int) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    raw = np.asarray(d.data)
    if raw.min() < 0 or raw.max() > 16:
        raise DataError(f"scikit-learn digits: values outside 0..16 ({raw.min()}..{raw.max()})")
    x = (raw.astype(np.int64) * 255 // 16).astype(np.uint8)
    y = np.asarray(d.target, dtype=np.int64)
    rest, test = stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED)
    return _finish(
        "digits", "sklearn.datasets.load_digits", x[rest], y[rest], x[test], y[test],
        10, (8, 8), val_fraction, seed,
        {"test_rule": f"stratified {DIGITS_TEST_FRACTION:g} of all 1797, "
                      f"RandomState({DIGITS_TEST_SEED}) (fixed, independent of seed)",
         "pixel_map": "x * 255 // 16"})


def _load_fashion(data_dir: Optional[Path], val_fraction: float, seed: int) -> Dataset:
    directory = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    if not directory.is_dir():
        hint = ("install the Debian package: apt-get install dataset-fashion-mnist, "
                "or pass --data-dir pointing to a directory with the IDX files"
                if data_dir is None else
                "check --data-dir: it must be a directory holding the four IDX files")
        raise DataError(f"{directory}: Fashion-MNIST directory not found; {hint}")
    try:
        x_tr, y_tr, x_te, y_te = _load_idx_set(directory, "fashion-mnist")
    except DataError as exc:
        if data_dir is None:
            raise DataError(f"{exc}\n(Fashion-MNIST comes from the Debian package "
                            f"dataset-fashion-mnist: apt-get install --reinstall "
                            f"dataset-fashion-mnist, or pass --data-dir)") from None
        raise
    return _finish("fashion-mnist", str(directory), x_tr, y_tr, x_te, y_te, 10,
                   x_tr.shape[1:], val_fraction, seed, {"test_rule": "official t10k files"})


def _load_mnist(data_dir: Optional[Path], val_fraction: float, seed: int) -> Dataset:
    if data_dir is None:
        raise DataError(
            "mnist: no data directory given; MNIST is not shipped offline. Pass "
            "--data-dir DIR with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] (fetch them once "
            "on a machine with internet), or use the digits or fashion-mnist data sets")
    directory = Path(data_dir)
    if not directory.is_dir():
        raise DataError(f"{directory}: MNIST directory not found; check --data-dir")
    x_tr, y_tr, x_te, y_te = _load_idx_set(directory, "mnist")
    return _finish("mnist", str(directory), x_tr, y_tr, x_te, y_te, 10,
                   x_tr.shape[1:], val_fraction, seed, {"test_rule": "official t10k files"})


def load_dataset(name: str, data_dir: Optional[str | Path] = None,
                 val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Load a data set by name (see DATASET_NAMES), split into train /
    validation / test. ``data_dir`` replaces the default location (needed
    for mnist). Never downloads; a missing or corrupt file is a DataError
    that names it and says how to get it."""
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must be in [0, 1) (got {val_fraction!r})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= 2 ** 32 - 1:
        raise DataError(f"seed must be an integer in 0..{2 ** 32 - 1} (got {str(seed)[:40]})")
    key = str(name).strip().lower().replace("_", "-")
    dd = Path(data_dir) if data_dir is not None else None
    if key == "digits":
        if dd is not None:
            raise DataError(
                f"--data-dir {str(dd)[:200]}: the digits data set is built into scikit-learn and "
                f"reads no files, so --data-dir would be ignored; drop --data-dir, or choose "
                f"--dataset mnist / fashion-mnist to train on the IDX files there")
        return _load_digits(float(val_fraction), int(seed))
    if key in ("fashion-mnist", "fashionmnist"):
        return _load_fashion(dd, float(val_fraction), int(seed))
    if key == "mnist":
        return _load_mnist(dd, float(val_fraction), int(seed))
    import difflib
    close = difflib.get_close_matches(key, DATASET_NAMES, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise DataError(f"unknown data set {name!r}{hint} (known: {', '.join(DATASET_NAMES)})")
