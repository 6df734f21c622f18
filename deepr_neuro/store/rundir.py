"""Run and sweep directories: what deepr-neuro may write, lock and replace.

The promise to users: nothing they had is lost.

* ``check_out_path`` refuses an ``--out`` that is a file, lies under a file,
  or is the current directory, one of its ancestors, the home directory or the
  project's own folder (a run needs a directory of its own).
* ``DirLock`` holds an exclusive ``fcntl.flock`` on ``PARENT/.NAME.lock``
  while a command writes ``PARENT/NAME``. The kernel drops the lock when the
  process ends (even by ``kill -9``), so a lock is never stale; a second
  process refuses at once, naming the directory and the holder's pid. The lock
  file sits beside the directory, not in it, so it stays valid while the
  directory is swapped.
* ``Target`` decides where a command writes: in place for a new, empty or
  resumed directory; into a sibling ``.NAME.new-PID`` for ``--overwrite`` of
  an existing run (or sweep), swapped in only when the new one is complete.
  Only a directory that holds nothing but deepr-neuro's own files may be
  replaced; anything else is refused with the foreign entries named.
  Leftovers of a killed overwrite are cleaned (or the old run restored) by the
  next command that takes the lock.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import List, Optional

from deepr_neuro.errors import ConfigError, DeeprError

try:  # POSIX; elsewhere directories are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore

MARKER = ".deepr-neuro-run"
BUNDLE_FORMAT = "deepr-neuro-bundle"
SWEEP_FORMAT = "deepr-neuro-sweep"
# Everything a run directory may hold (train, export): --overwrite deletes only these.
RUN_FILES = ("manifest.json", "network.npz", "checkpoint.npz", "history.json", MARKER)
# Top-level files of a sweep directory besides cells/, results/ and plots/.
SWEEP_FILES = ("sweep.json", "summary.json", "summary.md")
SWEEP_DIRS = ("cells", "results", "plots")
PLOT_FILES = ("accuracy_vs_connectivity.png", "rewiring.png", "budget_use.png")  # plots.py
PROJECT = Path(__file__).resolve().parents[2]  # the checkout (deepr_neuro/store/rundir.py)
_CUT = 200


def mark_run(d: Path) -> None:
    """Create ``d`` with the marker that makes it a deepr-neuro run from its first moment."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    if not (d / MARKER).exists():
        (d / MARKER).write_text(json.dumps({"format": "deepr-neuro-run"}) + "\n")


class LockedError(DeeprError, RuntimeError):
    """Another process is writing the same run or sweep directory."""


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= _CUT else text[:_CUT] + "..."


def _is_temp_file(name: str) -> bool:
    """Temporary files of the atomic writes (``.NAME.XXXX.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


# --------------------------------------------------------------------- paths
def check_out_path(out: Path, flag: str = "--out") -> Path:
    """The resolved path of a directory a command may write, or a ConfigError."""
    out = Path(out)
    resolved = out.resolve()
    for anc in (resolved, *resolved.parents):
        if anc.exists():
            if not anc.is_dir():
                where = "is a file" if anc == resolved else f"lies under the file {_short(anc)}"
                raise ConfigError(f"{flag} {_short(out)}: {where}, not a directory; "
                                  f"choose a directory path such as runs/NAME")
            break
    cwd = Path.cwd().resolve()
    protected = {cwd, *cwd.parents, PROJECT, *PROJECT.parents}
    try:
        protected.add(Path.home().resolve())
    except (RuntimeError, KeyError):  # pragma: no cover - no home directory
        pass
    if resolved in protected:
        raise ConfigError(f"{flag} {_short(out)}: is the current directory, an ancestor of it, the home "
                          f"directory or the project's folder; a run needs a directory of its own, "
                          f"e.g. {flag} runs/NAME")
    return resolved


# --------------------------------------------------------------------- lock
class DirLock:
    """Exclusive, non-blocking lock on a run or sweep directory (see module doc)."""

    def __init__(self, target: Path, what: str = "run", flag: str = "--out"):
        self.target = Path(target).resolve()
        self.what, self.flag = what, flag
        self.path = self.target.parent / f".{self.target.name}.lock"
        self.fd: Optional[int] = None

    def acquire(self) -> "DirLock":
        if fcntl is None:  # pragma: no cover
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                pass
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise LockedError(
                f"{self.flag} {_short(self.target)}: another deepr-neuro process ({who}) is writing this "
                f"{self.what} directory (lock {self.path.name}); wait for it to end or stop it, "
                f"or choose another {self.flag}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:  # pragma: no cover
                pass
            os.close(self.fd)  # closing drops the flock; the file stays (unlinking it would race)
            self.fd = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------- what a directory is
def _json_format(path: Path) -> Optional[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("format") if isinstance(data, dict) else None


def _checkpoint_is_ours(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return "meta_json.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def is_run_dir(d: Path) -> bool:
    """A directory deepr-neuro's train made: its marker, a bundle manifest, or a checkpoint."""
    d = Path(d)
    return ((d / MARKER).is_file() or _json_format(d / "manifest.json") == BUNDLE_FORMAT
            or _checkpoint_is_ours(d / "checkpoint.npz"))


def is_sweep_dir(d: Path) -> bool:
    return _json_format(Path(d) / "sweep.json") == SWEEP_FORMAT


def _foreign_in_run(d: Path, prefix: str = "") -> List[str]:
    out = []
    for entry in sorted(os.scandir(d), key=lambda e: e.name):
        ok = entry.is_file(follow_symlinks=False) and (entry.name in RUN_FILES or _is_temp_file(entry.name))
        if not ok:
            out.append(prefix + entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
    return out


def _is_result(path: Path) -> bool:
    """A result record the sweep wrote (a user's own .json in results/ is not)."""
    from deepr_neuro.store.sweep_layout import result_problem

    if not path.name.endswith(".json"):
        return False
    try:
        return result_problem(json.loads(path.read_text()), path.stem) is None
    except (OSError, ValueError):
        return False


def _foreign_in_sweep(d: Path) -> List[str]:
    out = []
    for entry in sorted(os.scandir(d), key=lambda e: e.name):
        name = entry.name
        if entry.is_file(follow_symlinks=False) and (name in SWEEP_FILES or _is_temp_file(name)):
            continue
        if entry.is_dir(follow_symlinks=False) and name in SWEEP_DIRS:
            for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
                if name == "cells" and sub.is_dir(follow_symlinks=False):
                    out += _foreign_in_run(Path(sub.path), f"cells/{sub.name}/")
                elif name == "results" and sub.is_file(follow_symlinks=False) and (
                        _is_temp_file(sub.name) or _is_result(Path(sub.path))):
                    continue
                elif name == "plots" and sub.is_file(follow_symlinks=False) and (
                        sub.name in PLOT_FILES or _is_temp_file(sub.name)):
                    continue
                else:
                    out.append(f"{name}/{sub.name}" + ("/" if sub.is_dir(follow_symlinks=False) else ""))
            continue
        out.append(name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
    return out


def _listing(names: List[str]) -> str:
    shown = ", ".join(_short(n) for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


# --------------------------------------------------------------------- leftovers and swap
def _leftovers(target: Path, kind: str) -> List[Path]:
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.{kind}-\d+$")
    try:
        entries = list(os.scandir(target.parent))
    except FileNotFoundError:
        return []
    return sorted(Path(e.path) for e in entries if pattern.match(e.name) and e.is_dir(follow_symlinks=False))


def recover(target: Path) -> List[str]:
    """Under the lock: undo what a killed overwrite left beside ``target``.

    An old run set aside but not yet replaced is put back; half-built new
    runs and set-aside old runs whose replacement finished are deleted.
    Returns what was done (for a note to the user)."""
    target = Path(target)
    done = []
    olds = _leftovers(target, "old")
    if olds and not os.path.lexists(target):
        os.rename(olds[-1], target)
        done.append(f"restored {target.name} from {olds[-1].name} (an overwrite was killed mid-swap)")
        olds = olds[:-1]
    for d in _leftovers(target, "new") + olds:
        shutil.rmtree(d, ignore_errors=True)
        done.append(f"removed {d.name} (left by a killed overwrite)")
    return done


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where not supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(new: Path, target: Path) -> None:
    """Replace ``target`` by the complete ``new`` sibling, then delete the old one."""
    new, target = Path(new), Path(target)
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # now holds the old directory
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    os.rename(target, old)
    os.rename(new, target)  # a kill between the two renames: recover() puts the old one back
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------- where to write
class Target:
    """Where one command writes ``target`` (call with its DirLock held).

    ``begin()`` returns the directory to write into; ``commit()`` swaps a
    replacement in; ``abort()`` deletes an unfinished replacement (the old
    directory is untouched)."""

    def __init__(self, target: Path, *, kind: str = "run", overwrite: bool = False, resume: bool = False,
                 flag: str = "--out"):
        self.target = Path(target).resolve()
        self.kind, self.overwrite, self.resume, self.flag = kind, overwrite, resume, flag
        self.work: Optional[Path] = None
        self.replacing = False
        self.notes = recover(self.target)
        self._classify()

    def _classify(self) -> None:
        t, kind = self.target, self.kind
        if not t.exists():
            return
        if not t.is_dir():
            raise ConfigError(f"{self.flag} {_short(t)}: is a file, not a directory; choose a directory path")
        entries = [e for e in os.listdir(t) if not _is_temp_file(e)]
        if not entries:
            return
        is_ours = is_run_dir(t) if kind == "run" else is_sweep_dir(t)
        other = "run (it has no manifest.json, checkpoint.npz or marker)" if kind == "run" else \
            "sweep (it has no sweep.json of format deepr-neuro-sweep)"
        if not is_ours:
            raise ConfigError(
                f"{self.flag} {_short(t)}: holds files that are not a deepr-neuro {other}: "
                f"{_listing(sorted(entries))}; deepr-neuro neither writes into nor deletes such a directory: "
                f"choose a new or empty directory")
        if self.overwrite:
            foreign = _foreign_in_run(t) if kind == "run" else _foreign_in_sweep(t)
            if foreign:
                raise ConfigError(
                    f"{self.flag} {_short(t)}: --overwrite would delete files deepr-neuro did not write: "
                    f"{_listing(foreign)}; move them out of the {kind} directory first, or choose another "
                    f"{self.flag}")
            self.replacing = True

    def begin(self) -> Path:
        if self.replacing:
            self.work = self.target.parent / f".{self.target.name}.new-{os.getpid()}"
            if self.work.exists():
                shutil.rmtree(self.work)
            self.work.mkdir()
        elif self.resume:
            self.work = self.target  # the checkpoint must be there; nothing is created
            return self.work
        else:
            self.work = self.target
            self.work.mkdir(parents=True, exist_ok=True)
        if self.kind == "run" and not any((self.work / f).exists() for f in ("checkpoint.npz", "manifest.json")):
            mark_run(self.work)
        return self.work

    def commit(self) -> None:
        if self.replacing and self.work is not None:
            swap_in(self.work, self.target)
            self.work = self.target

    def abort(self) -> None:
        if self.replacing and self.work is not None and self.work != self.target:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = None
