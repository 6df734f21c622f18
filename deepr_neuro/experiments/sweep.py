"""Sweeps: a grid connectivity x method x seed, one training run per cell.

``run_sweep`` expands the grid, trains every cell that has no result yet
(in parallel on the local cores, or as tasks on an existing Dask cluster) and
keeps the sweep directory up to date after every finished cell:

    OUT/sweep.json                the sweep's settings (a rerun must match them)
    OUT/cells/<cell>/             a normal run directory (bundle, checkpoint, history)
    OUT/results/<cell>.json       one record per finished or skipped cell
    OUT/summary.json, summary.md  mean / std / min / max over seeds per method x connectivity

A cell is named ``<method>_c<connectivity>_s<seed>`` (``deepr_c0.0133_s1``).

Resumable: a cell whose result JSON exists is not run again. A cell that was
in flight when the sweep was killed continues from its run directory's last
checkpoint (``train(resume=True)``: it ends bit-for-bit where an
uninterrupted run does), or, if its bundle was already complete, only its
result is written. Every file is written atomically.

Cells that cannot run (the network does not fit the chip, a layer gets no
connection at that connectivity, ``dense`` below connectivity 1.0) are
recorded as ``skipped`` with the reason. Cells that fail for any other reason
get no result file (a rerun tries them again) and make the sweep end with
status 1.

One process at a time writes a sweep directory (a lock beside it, see
``rundir.py``); ``overwrite`` replaces only a sweep directory holding nothing
but a sweep's files, and only once the new sweep has run (it is built in a
sibling ``.OUT.new-PID``). A file in ``results/`` that is no result record
is ignored with one warning.

Workers: ``workers`` local processes (spawned, BLAS limited to one thread
each, so N cells use N cores; they end when this process dies, even by
kill -9), or ``scheduler="tcp://host:port"``: the cells
go to that Dask distributed cluster. Its workers need deepr-neuro installed
and the sweep directory (and ``--data-dir``) at the same path, e.g. on a
shared file system; results and summaries are written by this process.

This module is the orchestration; the directory's names and the result-record
rule are in :mod:`deepr_neuro.store.sweep_layout`, the statistics and the
Markdown table in :mod:`deepr_neuro.experiments.summary`.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

from deepr_neuro.store.bundle import MANIFEST, write_json
from deepr_neuro.errors import BudgetError, BundleError, ConfigError, DeeprError
# the directory's names and the record rule (store/), statistics and Markdown (summary.py)
from deepr_neuro.store.sweep_layout import (CELLS, FORMAT, RESULTS, SUMMARY_JSON, SUMMARY_MD,  # noqa: F401
                                            SWEEP_JSON, VERSION, cell_name, result_problem)
from deepr_neuro.experiments.summary import (METHOD_ORDER, load_results, method_key,  # noqa: F401
                                             read_result, summarize, summary_markdown, write_summary)

# Methods that train every weight: only connectivity 1.0 applies.
DENSE_METHODS = ("dense",)
# Environment that keeps numerical libraries to one thread per worker.
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "BLIS_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"}


class SweepError(DeeprError, RuntimeError):
    """The sweep itself cannot go on (its finished cells are kept)."""


# --------------------------------------------------------------------- grid
@dataclass(frozen=True, order=True)
class Cell:
    """One grid point: a training method at one connectivity with one seed."""

    method: str
    connectivity: float
    seed: int

    @property
    def name(self) -> str:
        return cell_name(self.method, self.connectivity, self.seed)



def expand_grid(methods: Sequence[str], connectivities: Sequence[float], seeds: Sequence[int]) -> List[Cell]:
    """All cells, seed-major (a partly finished sweep already covers the whole
    grid for the first seeds), then connectivity, then method. Duplicates are
    dropped; an empty axis is a ConfigError."""
    for label, axis in (("--methods", methods), ("--connectivity", connectivities), ("--seeds", seeds)):
        if len(axis) == 0:
            raise ConfigError(f"{label}: empty; give at least one value")
    for c in connectivities:
        if not (isinstance(c, (int, float)) and 0.0 < float(c) <= 1.0) or isinstance(c, bool):
            raise ConfigError(f"--connectivity: {c!r} is not in (0, 1]; e.g. 0.0133 for 1.33 %")
    cells: List[Cell] = []
    seen = set()
    for s in seeds:
        for c in connectivities:
            for m in methods:
                cell = Cell(str(m), float(c), int(s))
                if cell.name not in seen:
                    seen.add(cell.name)
                    cells.append(cell)
    return cells


def parse_float_list(text: str, flag: str = "--connectivity") -> List[float]:
    """'0.005,0.01,1.0' -> [0.005, 0.01, 1.0] (ConfigError naming the flag otherwise)."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise ConfigError(f"{flag}: {part!r} is not a number (expected e.g. 0.005,0.01,1.0)") from None
    if not out:
        raise ConfigError(f"{flag}: no value given (expected e.g. 0.005,0.01,1.0)")
    return out


def parse_name_list(text: str) -> List[str]:
    return [p.strip() for p in str(text).split(",") if p.strip()]



# --------------------------------------------------------------------- config
@dataclass
class SweepConfig:
    """Everything a sweep needs; plain data, so it travels to worker processes."""

    profile_path: str
    model_path: str
    out: str
    methods: List[str]
    connectivities: List[float]
    seeds: int = 1
    base_seed: Optional[int] = None        # default: the spec's training.seed
    overrides: Dict[str, Any] = field(default_factory=dict)  # training fields (epochs, lr, dataset, ...)
    data_dir: Optional[str] = None
    weight_bits: Optional[int] = None

    def load(self):
        """(profile, spec with overrides) read from disk."""
        from deepr_neuro.training.recurrent_spec import load_any_model_spec
        from deepr_neuro.hardware.profile import load_profile

        profile = load_profile(self.profile_path)
        spec = load_any_model_spec(self.model_path).with_overrides(**self.overrides)
        return profile, spec

    def seed_list(self, spec) -> List[int]:
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            raise ConfigError(f"--seeds: need a number of seeds >= 1 (got {self.seeds!r})")
        base = spec.training.seed if self.base_seed is None else int(self.base_seed)
        if base < 0:
            raise ConfigError(f"--seed: must be >= 0 (got {base})")
        return [base + i for i in range(self.seeds)]


@dataclass
class SweepOutcome:
    """What one ``run_sweep`` call did, by cell name."""

    out: Path
    cells: List[Cell]
    ran: List[str] = field(default_factory=list)        # trained in this call (fresh or resumed)
    reused: List[str] = field(default_factory=list)     # result JSON already there: not run
    skipped: List[str] = field(default_factory=list)    # recorded as impossible (this call)
    failed: Dict[str, str] = field(default_factory=dict)  # cell -> error (no result written)
    summary: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------- one cell
@contextmanager
def one_blas_thread():
    """Limit BLAS/OpenMP pools to one thread while a cell trains (threadpoolctl
    when installed; the worker processes also start with ONE_THREAD_ENV)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn installs it
        yield
        return
    with threadpool_limits(limits=1):
        yield


def cell_task(config: SweepConfig, cell: Cell) -> Dict[str, Any]:
    """Plain-data description of one cell's job (what a worker receives)."""
    from deepr_neuro.training.model_spec import model_spec_to_dict
    from deepr_neuro.hardware.profile import profile_to_dict

    profile, spec = config.load()
    out = Path(config.out).resolve()
    return {"profile": profile_to_dict(profile), "profile_path": config.profile_path,
            "model": model_spec_to_dict(spec), "model_path": config.model_path,
            "method": cell.method, "connectivity": cell.connectivity, "seed": cell.seed,
            "data_dir": config.data_dir, "weight_bits": config.weight_bits,
            "run_dir": str(out / CELLS / cell.name), "name": cell.name}


def _cell_objects(task: Dict[str, Any]):
    from deepr_neuro.training.recurrent_spec import any_model_spec_from_dict
    from deepr_neuro.hardware.profile import HardwareProfile
    from deepr_neuro.training.trainer import TrainSettings

    profile = HardwareProfile.from_dict(task["profile"], source=task["profile_path"])
    spec = any_model_spec_from_dict(task["model"], source=task["model_path"]).with_overrides(
        method=task["method"], seed=task["seed"])
    settings = TrainSettings.from_spec(spec, data_dir=task["data_dir"], connectivity=task["connectivity"],
                                       weight_bits=task["weight_bits"])
    return profile, spec, settings


def feasibility(task: Dict[str, Any]) -> Optional[str]:
    """None if the cell can run, else the reason it cannot (the chip, the budget rule)."""
    from deepr_neuro.training.trainer import build_plan

    if task["method"] in DENSE_METHODS and task["connectivity"] < 1.0:
        return f"{task['method']} trains every connection: only connectivity 1.0 applies"
    try:
        profile, spec, settings = _cell_objects(task)
        build_plan(profile, spec, settings)
    except (BudgetError, ConfigError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def skipped_record(task: Dict[str, Any], reason: str) -> Dict[str, Any]:
    return {"cell": task["name"], "method": task["method"], "connectivity": task["connectivity"],
            "seed": task["seed"], "status": "skipped", "reason": reason}


def run_cell(task: Dict[str, Any]) -> Dict[str, Any]:
    """Train one cell (or finish it from its checkpoint) and return its result
    record. Runs in a worker process (local pool or Dask). Never raises: an
    impossible cell returns status 'skipped', an unexpected error 'failed'."""
    t0 = time.perf_counter()
    try:
        reason = feasibility(task)
        if reason is not None:
            return skipped_record(task, reason)
        with one_blas_thread():
            record = _train_cell(task)
        record["wall_seconds"] = time.perf_counter() - t0
        return record
    except (BudgetError, ConfigError) as e:  # e.g. a method that refuses this connectivity
        return skipped_record(task, f"{type(e).__name__}: {e}")
    except BaseException as e:  # reported by the parent; no result file, a rerun retries
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"cell": task["name"], "method": task["method"], "connectivity": task["connectivity"],
                "seed": task["seed"], "status": "failed", "reason": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()}


def _train_cell(task: Dict[str, Any]) -> Dict[str, Any]:
    from deepr_neuro.training.recurrent_spec import load_training_data
    from deepr_neuro.training.recurrent_trainer import trainer_class
    from deepr_neuro.training.trainer import CHECKPOINT, train

    profile, spec, settings = _cell_objects(task)
    run_dir = Path(task["run_dir"])
    resumed_from = None
    if not (run_dir / MANIFEST).exists():
        data = load_training_data(spec, settings, settings.data_dir)
        resume = (run_dir / CHECKPOINT).exists()
        if resume:
            resumed_from = _checkpoint_epoch(run_dir / CHECKPOINT)
        elif run_dir.exists():
            shutil.rmtree(run_dir)  # started, killed before its first checkpoint: start over
        try:
            train(profile, spec, settings, data, run_dir, resume=resume, progress=False,
                  profile_path=task["profile_path"], spec_path=task["model_path"], trainer_cls=trainer_class(spec))
        except (ConfigError, BundleError):
            if not resume:
                raise
            # the checkpoint belongs to other settings (the sweep was changed) or is damaged: start over
            shutil.rmtree(run_dir)
            resumed_from = None
            train(profile, spec, settings, data, run_dir, progress=False,
                  profile_path=task["profile_path"], spec_path=task["model_path"], trainer_cls=trainer_class(spec))
    else:
        resumed_from = "bundle"
    return result_from_run(task, run_dir, resumed_from)


def _checkpoint_epoch(path: Path) -> Optional[int]:
    import numpy as np

    try:
        with np.load(path) as z:
            return int(json.loads(bytes(z["meta_json"]).decode("utf-8"))["epoch"])
    except Exception:
        return None


def result_from_run(task: Dict[str, Any], run_dir: Path, resumed_from=None) -> Dict[str, Any]:
    """The result record of a finished run directory (manifest + history)."""
    from deepr_neuro.store.bundle import load_bundle
    from deepr_neuro.hardware.report import core_report
    from deepr_neuro.training.trainer import HISTORY

    manifest, arrays = load_bundle(run_dir)
    history = json.loads((run_dir / HISTORY).read_text())["epochs"]
    m = manifest["metrics"]
    tr = manifest["training"]
    n_train = manifest["dataset"]["n_train"]
    report = core_report(manifest, arrays)
    return {
        "cell": task["name"], "method": task["method"], "connectivity": task["connectivity"],
        "seed": task["seed"], "status": "ok", "reason": None,
        "test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"], "train_loss": m["train_loss"],
        "layers": [q["name"] for q in manifest["graph"]["projections"]],
        "K": [q.get("budget") for q in manifest["graph"]["projections"]],
        "active": [int(len(arrays[f"proj/{q['name']}/rows"])) for q in manifest["graph"]["projections"]],
        "connections": m["connections"], "potential_connections": m["potential_connections"],
        "fraction": m["connections"] / m["potential_connections"],
        "cores_used": report.cores_used, "fits": report.fits,
        "epochs": tr["epochs_done"], "steps_per_epoch": -(-n_train // tr["batch_size"]),
        "seconds": float(sum(h["seconds"] for h in history)),
        "rewired_per_epoch": [h["rewired"] for h in history],
        "history": history,
        "run_dir": str(Path(CELLS) / task["name"]),
        "resumed_from": resumed_from,
        "settings": {k: v for k, v in tr.items() if k != "epochs_done"},
        "dataset": manifest["dataset"],
    }


# --------------------------------------------------------------------- sweep file
def _fingerprint(config: SweepConfig, profile, spec) -> Dict[str, Any]:
    """What every cell of a sweep shares; a rerun into the same OUT must match it."""
    from deepr_neuro.training.model_spec import model_spec_to_dict
    from deepr_neuro.hardware.profile import profile_to_dict
    from deepr_neuro.training.trainer import TrainSettings

    settings = asdict(TrainSettings.from_spec(spec, data_dir=config.data_dir, weight_bits=config.weight_bits))
    for k in ("method", "seed", "connectivity"):
        settings.pop(k)
    model = model_spec_to_dict(spec)
    model.pop("training")
    return {"profile": profile_to_dict(profile), "model": model, "settings": settings}


def prepare_out(config: SweepConfig, profile, spec, seeds: List[int]) -> Dict[str, Any]:
    """Write (or check) OUT/sweep.json: a rerun may extend the grid but not change the training."""
    out = Path(config.out)
    fp = _fingerprint(config, profile, spec)
    path = out / SWEEP_JSON
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e}); delete it or use a new --out") from None
        if old.get("format") != FORMAT:
            raise ConfigError(f"{path}: not a deepr-neuro sweep (field 'format'); use a new --out")
        diffs = []
        # a setting added after the sweep was written matches while it keeps its default
        from deepr_neuro.training.trainer import TrainSettings
        defaults = {f.name: f.default for f in fields(TrainSettings)}
        for part in ("profile", "model", "settings"):
            a, b = old.get(part) or {}, fp[part]
            for k in sorted(set(a) | set(b)):
                if part == "settings" and k not in a and k in defaults and b.get(k) == defaults[k]:
                    continue
                if a.get(k) != b.get(k):
                    diffs.append(f"{part}.{k}: {a.get(k)!r} in the sweep vs {b.get(k)!r} now")
        if diffs:
            raise ConfigError(
                f"{out}: holds a sweep with other settings ({'; '.join(diffs[:4])}"
                f"{'; ...' if len(diffs) > 4 else ''}); pass the same flags to continue it, "
                "or use a new --out (or --overwrite to start over)")
    sweep = {"format": FORMAT, "version": VERSION, "profile_path": config.profile_path,
             "model_path": config.model_path, **fp,
             "grid": {"methods": list(config.methods), "connectivity": list(config.connectivities),
                      "seeds": seeds}}
    write_json(path, sweep)
    return sweep


def _check_methods(spec, methods: Sequence[str]) -> None:
    """Every method must be one the trainer knows (a typo is an error before any cell runs)."""
    for m in methods:
        try:
            spec.with_overrides(method=m)
        except ConfigError as e:
            raise ConfigError(f"--methods: {m!r} is not a training method of this deepr-neuro\n{e}") from None


# --------------------------------------------------------------------- executors
@contextmanager
def _env(values: Dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _local_results(tasks: List[Dict[str, Any]], workers: int) -> Iterator[Dict[str, Any]]:
    """Results as they finish: in this process for one worker, else a spawned
    process pool whose workers start with one BLAS thread each."""
    if workers <= 1:
        for task in tasks:
            yield run_cell(task)
        return
    import multiprocessing

    with _env(ONE_THREAD_ENV):  # inherited by the spawned workers before they import numpy
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(run_cell, t): t for t in tasks}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except BrokenProcessPool:
                raise SweepError(
                    "a worker process died (killed, or out of memory? with N workers a sweep needs N "
                    "times one run's memory: try fewer --workers). Finished cells are kept; run the "
                    "same command again to continue (cells in flight resume from their checkpoints). "
                    "In your own script, call run_sweep under `if __name__ == \"__main__\":` "
                    "(worker processes are spawned)") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when the sweep's process dies, even
    by kill -9 (Linux: the kernel sends SIGTERM; elsewhere, and as a fallback,
    a thread that watches the parent's pid)."""
    import signal
    import threading

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="deepr-neuro-parent-watch", daemon=True).start()


def _dask_results(tasks: List[Dict[str, Any]], scheduler: Any) -> Iterator[Dict[str, Any]]:
    """Results from a Dask distributed cluster (an address or a Client)."""
    try:
        from dask.distributed import Client, as_completed as dask_as_completed
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("--scheduler needs dask[distributed] (pip install 'dask[distributed]')") from None
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout="20s") if own else scheduler
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({e}); "
                          "start one with `dask scheduler` and workers with `dask worker ADDRESS`") from None
    try:
        futures = {client.submit(run_cell, t, key=f"deepr-neuro-{t['name']}-{os.getpid()}-{time.time_ns()}",
                                 pure=False): t for t in tasks}
        for fut in dask_as_completed(list(futures)):
            t = futures[fut]
            try:
                yield fut.result()
            except Exception as e:
                yield {"cell": t["name"], "method": t["method"], "connectivity": t["connectivity"],
                       "seed": t["seed"], "status": "failed", "reason": f"dask task: {type(e).__name__}: {e}"}
    finally:
        if own:
            client.close()


# --------------------------------------------------------------------- the sweep
def _postfix(record: Dict[str, Any]) -> str:
    if record["status"] == "ok":
        return f"{record['cell']} {100 * record['test_accuracy']:.1f}%"
    return f"{record['cell']} {record['status']}"


def run_sweep(config: SweepConfig, *, workers: Optional[int] = None, scheduler: Any = None,
              progress: bool = True, overwrite: bool = False,
              on_result: Optional[Callable[[Dict[str, Any]], None]] = None) -> SweepOutcome:
    """Run every cell of the grid that has no result yet; see the module docstring.

    ``workers``: local processes (default os.cpu_count(); 1 runs in this
    process). ``scheduler``: a Dask scheduler address (``tcp://host:port``) or
    a ``dask.distributed.Client``; then ``workers`` is ignored.
    """
    from dataclasses import replace

    from deepr_neuro.store.rundir import DirLock, Target, check_out_path

    check_out_path(Path(config.out))
    # everything is checked before the sweep directory is touched (an --overwrite that fails keeps the old one)
    profile, spec = config.load()
    _check_methods(spec, config.methods)
    seeds = config.seed_list(spec)
    cells = expand_grid(config.methods, config.connectivities, seeds)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: need at least 1 (got {workers})")
    with DirLock(Path(config.out), what="sweep"):
        target = Target(Path(config.out), kind="sweep", overwrite=overwrite)
        for note in target.notes:
            import sys

            print(f"note: {config.out}: {note}", file=sys.stderr)
        if target.replacing and any(feasibility(cell_task(config, c)) is None for c in cells):
            _check_dataset(config, spec, seeds)
        work = target.begin()  # OUT itself, or a sibling .OUT.new-PID while replacing an old sweep
        try:
            outcome = _run_sweep_in(replace(config, out=str(work)), profile, spec, seeds, cells, workers=workers,
                                    scheduler=scheduler, progress=progress, on_result=on_result)
        except BaseException:
            target.abort()  # the old sweep stays as it was
            raise
        target.commit()
        outcome.out = Path(config.out)
        return outcome


def _check_dataset(config: SweepConfig, spec, seeds: List[int]) -> None:
    """A missing data set is one clear error, not a failure in every cell."""
    from deepr_neuro.training.recurrent_spec import check_fits_data, load_training_data
    from deepr_neuro.training.trainer import TrainSettings

    settings = TrainSettings.from_spec(spec.with_overrides(seed=seeds[0]), data_dir=config.data_dir)
    data = load_training_data(spec, settings, config.data_dir)
    check_fits_data(spec, data)  # one clear error, not one per cell


def _run_sweep_in(config: SweepConfig, profile, spec, seeds: List[int], cells: List[Cell], *,
                  workers: Optional[int], scheduler: Any, progress: bool,
                  on_result: Optional[Callable[[Dict[str, Any]], None]]) -> SweepOutcome:
    """The sweep itself, in ``config.out`` (run_sweep holds its lock)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    sweep = prepare_out(config, profile, spec, seeds)
    outcome = SweepOutcome(out=out, cells=cells)

    pending = []
    for cell in cells:
        path = out / RESULTS / f"{cell.name}.json"
        if path.exists() and read_result(path) is not None:
            outcome.reused.append(cell.name)
        else:
            pending.append(cell)
    tasks = [cell_task(config, c) for c in pending]
    # impossible cells are recorded here, before any worker starts
    runnable = []
    for task in tasks:
        reason = feasibility(task)
        if reason is None:
            runnable.append(task)
        else:
            write_json(out / RESULTS / f"{task['name']}.json", skipped_record(task, reason))
            outcome.skipped.append(task["name"])
    if runnable:  # a missing data set is one clear error, not a failure in every cell
        _check_dataset(config, spec, seeds)
    outcome.summary = write_summary(out)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cells), initial=len(cells) - len(runnable), unit="cell", dynamic_ncols=True,
                   desc="sweep")
    try:
        if scheduler is not None:
            results = _dask_results(runnable, scheduler)
        else:
            n = min(workers or os.cpu_count() or 1, max(1, len(runnable)))
            results = _local_results(runnable, n)
        for record in results:
            name = record["cell"]
            if record["status"] == "failed":
                outcome.failed[name] = record["reason"]
                msg = f"cell {name} failed: {record['reason']}"
                if record.get("traceback"):
                    msg += "\n" + record["traceback"]
                (bar.write if bar is not None else print)(msg)
            else:
                write_json(out / RESULTS / f"{name}.json", record)
                (outcome.ran if record["status"] == "ok" else outcome.skipped).append(name)
            outcome.summary = write_summary(out, outcome.failed)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(_postfix(record))
            if on_result is not None:
                on_result(record)
    finally:
        if bar is not None:
            bar.close()
    return outcome
