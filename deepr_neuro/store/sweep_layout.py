"""The names and the result-record rule of a sweep directory.

Lives in ``store/`` because the run-directory guard (:mod:`deepr_neuro.store.rundir`)
must recognise a sweep's own files before it replaces a sweep directory, and
``store`` sits below ``experiments``; :mod:`deepr_neuro.experiments.sweep`
and :mod:`deepr_neuro.experiments.summary` import these names from here.

    OUT/sweep.json                the sweep's settings (a rerun must match them)
    OUT/cells/<cell>/             one run directory per cell
    OUT/results/<cell>.json       one result record per finished or skipped cell
    OUT/summary.json, summary.md  statistics over seeds
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["FORMAT", "VERSION", "SWEEP_JSON", "SUMMARY_JSON", "SUMMARY_MD", "CELLS", "RESULTS",
           "cell_name", "result_problem"]

FORMAT = "deepr-neuro-sweep"
VERSION = 1
SWEEP_JSON = "sweep.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
CELLS = "cells"
RESULTS = "results"


def cell_name(method: str, connectivity: float, seed: int) -> str:
    """``<method>_c<connectivity>_s<seed>``, e.g. ``deepr_c0.0133_s1``: a cell's directory and result name."""
    return f"{method}_c{float(connectivity):g}_s{int(seed)}"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def result_problem(record: Any, stem: str) -> Optional[str]:
    """Why ``record`` is not a usable result record named ``stem`` (None: it is)."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    need = {"cell": str, "method": str, "status": str}
    for key, kind in need.items():
        if not isinstance(record.get(key), kind):
            return f"field '{key}' missing or not a {kind.__name__}"
    if not _number(record.get("connectivity")) or not 0 < record["connectivity"] <= 1:
        return "field 'connectivity' missing or not in (0, 1]"
    if not isinstance(record.get("seed"), int) or isinstance(record.get("seed"), bool):
        return "field 'seed' missing or not an integer"
    if record["cell"] != stem or cell_name(record["method"], record["connectivity"], record["seed"]) != stem:
        return f"its cell, method, connectivity and seed do not match the file name {stem!r}"
    if record["status"] == "skipped":
        return None if isinstance(record.get("reason"), str) else "field 'reason' missing"
    if record["status"] != "ok":
        return f"field 'status' is {str(record['status'])[:40]!r}, expected 'ok' or 'skipped'"
    for key in ("test_accuracy", "val_accuracy", "fraction", "seconds", "connections", "steps_per_epoch"):
        if not _number(record.get(key)):
            return f"field '{key}' missing or not a number"
    for key in ("K", "rewired_per_epoch"):
        if not isinstance(record.get(key), list):
            return f"field '{key}' missing or not a list"
    if not all(isinstance(e, list) and all(_number(v) for v in e) for e in record["rewired_per_epoch"]):
        return "field 'rewired_per_epoch' is not a list of per-layer counts"
    if not isinstance(record.get("run_dir"), str):
        return "field 'run_dir' missing"
    if not isinstance(record.get("history", []), list):
        return "field 'history' is not a list"
    return None

