"""Run directory I/O: the bundle (manifest.json + network.npz) and checkpoints.

Everything is written atomically (temporary file in the same directory, then
``os.replace``), so a killed run never leaves a half-written file behind and
never loses what was already there. Format: DESIGN.md section 6 (version 1),
documented in the README.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from deepr_neuro.errors import BundleError

FORMAT = "deepr-neuro-bundle"
VERSION = 1
MANIFEST = "manifest.json"
NETWORK = "network.npz"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    _atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def write_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    _atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def git_commit() -> str:
    """Commit of the deepr-neuro checkout this code runs from ('unknown' outside git)."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def save_bundle(run_dir: Path, manifest: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
    """Write network.npz first, then manifest.json (the manifest marks a complete bundle)."""
    run_dir = Path(run_dir)
    manifest = {"format": FORMAT, "version": VERSION, **manifest}
    write_npz(run_dir / NETWORK, arrays)
    write_json(run_dir / MANIFEST, manifest)


def load_bundle(run_dir: Path) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    run_dir = Path(run_dir)
    mpath, npath = run_dir / MANIFEST, run_dir / NETWORK
    if not mpath.exists():
        raise BundleError(f"{mpath}: no manifest; is {run_dir} a finished deepr-neuro run? "
                          f"(train one with `deepr-neuro train ... --out {run_dir}`)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{mpath}: not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath}: field 'format' is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise BundleError(f"{mpath}: field 'version' is {manifest.get('version')!r}; this deepr-neuro "
                          f"reads version {VERSION}")
    if not npath.exists():
        raise BundleError(f"{npath}: missing (the manifest exists, the network does not)")
    try:
        with np.load(npath) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile / pickle / value errors from a damaged file
        raise BundleError(f"{npath}: cannot be read ({e})") from None
    for i, layer in enumerate(manifest.get("layers", [])):
        for key in ("rows", "cols", "weight", "core"):
            if f"l{i}_{key}" not in arrays:
                raise BundleError(f"{npath}: array 'l{i}_{key}' missing for layer {layer.get('name', i)!r}")
    return manifest, arrays


def update_bundle(run_dir: Path, manifest_updates: Dict[str, Any], new_arrays: Dict[str, np.ndarray]) -> None:
    """Add arrays / manifest blocks to an existing bundle (e.g. after export)."""
    manifest, arrays = load_bundle(run_dir)
    arrays.update(new_arrays)
    manifest.update(manifest_updates)
    manifest.pop("format", None)
    manifest.pop("version", None)
    save_bundle(run_dir, manifest, arrays)
