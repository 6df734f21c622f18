"""Run directory I/O: the bundle (manifest.json + network.npz) and checkpoints.

Everything is written atomically (temporary file in the same directory, then
``os.replace``), so a killed run never leaves a half-written file behind and
never loses what was already there. Format version 2 (the network graph,
array names in :mod:`deepr_neuro.store.codec`) is written; version 1 (the
chain of layers, DESIGN.md section 6) is still read, into the same
in-memory form. Both are documented in the README.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from deepr_neuro.errors import BundleError

FORMAT = "deepr-neuro-bundle"
VERSION = 2
#: Versions this deepr-neuro reads; version 1 is turned into version 2 on load (store.codec.v1_to_v2).
READ_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
NETWORK = "network.npz"


#: Leftover temp files of an interrupted write older than this are removed by the next write.
STALE_TEMP_SECONDS = 300


def _atomic_write(path: Path, data) -> None:
    """Write ``data`` (bytes, or a callable writing to a binary file) to ``path``
    via a temp file in the same directory + os.replace.

    A failed write (disk full, permission, I/O error) raises BundleError naming
    the file and leaves the previous file untouched; the temp file is removed.
    """
    path = Path(path)
    if callable(data):  # serialise in memory: a full disk then fails in one write()
        buf = io.BytesIO()
        data(buf)
        data = buf.getvalue()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise BundleError(f"{path}: cannot be written ({e.strerror or e}); check that {path.parent} "
                          "is a writable directory") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        hint = "free some disk space and run the command again" if e.errno == errno.ENOSPC \
            else "check the directory's permissions and free space, then run the command again"
        code = errno.errorcode.get(e.errno, "error") if e.errno else "error"
        raise BundleError(f"{path}: write failed ({code}: {e.strerror or e}); the previous {path.name} "
                          f"(if any) is unchanged; {hint}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def clean_stale_temp_files(run_dir: Path, max_age: float = STALE_TEMP_SECONDS) -> List[Path]:
    """Remove ``.manifest.json.*.tmp`` / ``.network.npz.*.tmp`` left by a killed write.

    Only files older than ``max_age`` seconds go: a write in progress in another
    process keeps its temp file fresh. Loading never reads temp files.
    """
    removed = []
    now = time.time()
    for name in (MANIFEST, NETWORK):
        for tmp in Path(run_dir).glob(f".{name}.*.tmp"):
            try:
                if now - tmp.stat().st_mtime > max_age:
                    tmp.unlink()
                    removed.append(tmp)
            except OSError:
                pass
    return removed


def write_json(path: Path, data: Dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    _atomic_write(Path(path), text.encode("utf-8"))


def write_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    """np.savez into memory first, so a full disk fails in one clean write()."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_write(Path(path), buf.getvalue())


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


#: How manifest.json's ``integrity`` hashes are computed (also written into the manifest).
INTEGRITY_ALGORITHM = "sha256 over the arrays sorted by name: JSON [name, dtype, shape], NUL, C-order bytes"


def arrays_sha256(arrays: Mapping[str, np.ndarray], keys=None) -> str:
    """Content hash of ``arrays`` (all, or ``keys``): independent of zip layout and order."""
    h = hashlib.sha256()
    for k in sorted(arrays if keys is None else keys):
        a = np.ascontiguousarray(arrays[k])
        h.update(json.dumps([k, a.dtype.str, list(a.shape)]).encode("utf-8") + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def _integrity(arrays: Mapping[str, np.ndarray]) -> Dict[str, str]:
    from deepr_neuro.store.codec import is_export_key

    return {"algorithm": INTEGRITY_ALGORITHM,
            "network_sha256": arrays_sha256(arrays),
            "trained_sha256": arrays_sha256(arrays, [k for k in arrays if not is_export_key(k)])}


def save_bundle(run_dir: Path, manifest: Dict[str, Any], arrays: Dict[str, np.ndarray],
                version: int = VERSION) -> None:
    """Write network.npz first, then manifest.json (the manifest marks a complete bundle).

    The manifest records sha256 hashes of the arrays (``integrity``), so a
    network.npz and a manifest.json of two different writes (a write killed
    between the two files) are refused on load. A chain given in the
    version-1 shape (manifest ``layers``, arrays ``l<i>_*``: what the MLP
    trainer produces) is written as version 2; ``version=1`` writes that shape
    as it is (tests and tools that make version-1 bundles).
    """
    from deepr_neuro.store.codec import v1_to_v2

    run_dir = Path(run_dir)
    if version not in READ_VERSIONS:
        raise BundleError(f"{run_dir / MANIFEST}: cannot write bundle version {version!r}; "
                          f"versions {READ_VERSIONS} exist")
    if version == 2 and "layers" in manifest and "graph" not in manifest:
        manifest, arrays, _ = v1_to_v2(manifest, arrays)
    body = {k: v for k, v in manifest.items() if k not in ("format", "version", "integrity")}
    manifest = {"format": FORMAT, "version": version, **body, "integrity": _integrity(arrays)}
    clean_stale_temp_files(run_dir)
    write_npz(run_dir / NETWORK, arrays)
    write_json(run_dir / MANIFEST, manifest)


def _fix(run_dir: Path) -> Dict[str, str]:
    """The fix to name, by what is wrong: the manifest, a trained array, or the SNN export."""
    train = (f"train the run again (`deepr-neuro train ... --out {run_dir} --overwrite`) "
             "or restore the bundle's two files together from a copy")
    return {"manifest": f"{MANIFEST} was damaged or edited: {train}",
            "trained": f"the trained network is damaged: {train}",
            "export": f"the SNN export is damaged: export again (`deepr-neuro export {run_dir}`)"}


def read_manifest(run_dir: Path) -> Dict[str, Any]:
    """manifest.json as a dict, with format and version checked (no other checks)."""
    run_dir = Path(run_dir)
    mpath = run_dir / MANIFEST
    if not mpath.exists():
        raise BundleError(f"{mpath}: no manifest; is {run_dir} a finished deepr-neuro run? "
                          f"(train one with `deepr-neuro train ... --out {run_dir}`)")
    try:
        manifest = json.loads(mpath.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, deep nesting
        raise BundleError(f"{mpath}: not valid JSON ({str(e)[:200]}); {_fix(run_dir)['manifest']}") from None
    except OSError as e:
        raise BundleError(f"{mpath}: cannot be read ({e.strerror or e}); check its permissions") from None
    if not isinstance(manifest, dict):
        from deepr_neuro.store.bundle_check import cut

        raise BundleError(f"{mpath}: must hold a JSON object, got {type(manifest).__name__} "
                          f"{cut(manifest, 80)}; {_fix(run_dir)['manifest']}")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath}: field 'format' is {str(manifest.get('format'))[:80]!r}, expected {FORMAT!r}")
    v = manifest.get("version")
    if not isinstance(v, int) or isinstance(v, bool) or v not in READ_VERSIONS:
        raise BundleError(f"{mpath}: field 'version' is {str(v)[:80]!r}; this deepr-neuro reads versions "
                          f"{', '.join(map(str, READ_VERSIONS))} (a newer deepr-neuro wrote it? upgrade: "
                          "`pip install -U deepr-neuro`)")
    return manifest


def load_bundle(run_dir: Path, *, need_fit: bool = False,
                for_export: bool = False) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Read and validate a bundle; refuse it, naming the first violation, if anything is wrong.

    A version-1 bundle is returned in the version-2 form (manifest ``graph``,
    arrays named per population / projection), so every reader sees one shape;
    its files are not changed. Checks (bundle_check): manifest shape and profile, integrity hashes (when
    the manifest has them: bundles written before they existed skip only this
    check), every array's dtype, length, index range, order and uniqueness,
    core placement, chip-format ranges of an export. ``need_fit``: also refuse
    a network that does not fit its profile (limits recomputed from the
    profile). ``for_export``: the SNN part is dropped before the checks (an
    export rewrites it), so an export killed halfway can be re-run.
    """
    from deepr_neuro.store.bundle_check import check_arrays, check_fit, check_manifest
    from deepr_neuro.store.codec import is_export_key, v1_to_v2

    run_dir = Path(run_dir)
    mpath, npath = run_dir / MANIFEST, run_dir / NETWORK
    raw_manifest = read_manifest(run_dir)
    fix = _fix(run_dir)
    if for_export:  # the export block is rewritten: a damaged one must not block the re-export
        raw_manifest = {k: v for k, v in raw_manifest.items() if k != "snn"}
    profile, manifest = check_manifest(raw_manifest, str(mpath), fix["manifest"])
    if not npath.exists():
        raise BundleError(f"{npath}: missing (the manifest exists, the network does not); {fix['trained']}")
    try:
        with np.load(npath, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile / pickle / value errors from a damaged file
        raise BundleError(f"{npath}: cannot be read ({str(e)[:200]}); {fix['trained']}") from None
    integ = manifest.get("integrity")
    if integ is not None:
        want_all, want_trained = integ.get("network_sha256"), integ.get("trained_sha256")
        if not isinstance(want_all, str) or not isinstance(want_trained, str):
            raise BundleError(f"{mpath}: field 'integrity': network_sha256 and trained_sha256 must be "
                              f"strings; {fix['manifest']}")
        got_all = arrays_sha256(arrays)
        if got_all != want_all:
            trained = [k for k in arrays if not is_export_key(k)]
            trained_ok = arrays_sha256(arrays, trained) == want_trained
            if not (for_export and trained_ok):
                what = ("its SNN export differs: an export was interrupted between writing the two files; "
                        f"run `deepr-neuro export {run_dir}` again") if trained_ok else \
                    ("its trained arrays differ: a write was interrupted or a file was replaced; "
                     f"train the run again (`deepr-neuro train ... --out {run_dir} --overwrite`) "
                     "or restore both files together")
                raise BundleError(f"{npath} does not belong to {mpath} (sha256 of the arrays "
                                  f"{got_all[:12]}... != manifest's network_sha256 {want_all[:12]}...): {what}")
    if for_export:
        arrays = {k: v for k, v in arrays.items() if not is_export_key(k)}
    shown = None
    if raw_manifest["version"] == 1:
        _, arrays, shown = v1_to_v2(raw_manifest, arrays)
    check_arrays(manifest, profile, arrays, str(npath), fix, need_finite=need_fit, shown=shown)
    if need_fit:
        check_fit(manifest, arrays, str(run_dir))
    return manifest, arrays


def check_bundle(run_dir: Path, manifest: Dict[str, Any], arrays: Mapping[str, np.ndarray],
                 need_fit: bool = True) -> None:
    """The load-time checks on an in-memory bundle (export runs them before writing)."""
    from deepr_neuro.store.bundle_check import check_arrays, check_fit, check_manifest
    from deepr_neuro.store.codec import v1_to_v2

    run_dir = Path(run_dir)
    fix = _fix(run_dir)
    manifest = {"version": VERSION, **manifest}
    profile, checked = check_manifest(manifest, str(run_dir / MANIFEST), fix["manifest"])
    shown = None
    if manifest["version"] == 1:
        _, arrays, shown = v1_to_v2(manifest, arrays)
    check_arrays(checked, profile, arrays, str(run_dir / NETWORK), fix, need_finite=need_fit, shown=shown)
    manifest = checked
    if need_fit:
        check_fit(manifest, arrays, str(run_dir))


def update_bundle(run_dir: Path, manifest_updates: Dict[str, Any], new_arrays: Dict[str, np.ndarray]) -> None:
    """Add arrays / manifest blocks to an existing bundle (e.g. after export); written as version 2."""
    manifest, arrays = load_bundle(run_dir)
    arrays.update(new_arrays)
    manifest.update(manifest_updates)
    save_bundle(run_dir, manifest, arrays)
