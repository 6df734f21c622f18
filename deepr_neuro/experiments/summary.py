"""Sweep statistics and the Markdown table: what ``summary.json`` and ``summary.md`` say.

Reads the result records under ``OUT/results/`` (a stray or damaged file is
ignored with one warning), groups them per method x connectivity and gives
test / validation accuracy over seeds (mean, sample std, min, max); the
Markdown table puts connectivity in rows and methods in columns. Kept apart
from the orchestration in :mod:`deepr_neuro.experiments.sweep` so that the
plots and the CLI can summarise a sweep without running one.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepr_neuro.store.bundle import _atomic_write, write_json
from deepr_neuro.store.sweep_layout import (FORMAT, RESULTS, SUMMARY_JSON, SUMMARY_MD, SWEEP_JSON, VERSION,
                                            result_problem)
from deepr_neuro.training.methods import METHODS

# Order of methods in tables and plots: dense first, then training.methods.METHODS' order
# (names not in it follow alphabetically).
METHOD_ORDER = ("dense",) + tuple(m for m in METHODS if m != "dense")


def method_key(method: str):
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)

def load_results(out: Path) -> List[Dict[str, Any]]:
    """Every result record under OUT/results/, sorted by method, connectivity, seed.
    A file that is not a result record of this sweep is ignored with one warning."""
    rdir = Path(out) / RESULTS
    records = []
    for path in sorted(rdir.glob("*.json")) if rdir.is_dir() else []:
        record = read_result(path)
        if record is not None:
            records.append(record)
    records.sort(key=lambda r: (method_key(r["method"]), r["connectivity"], r["seed"]))
    return records


_warned: set = set()


def read_result(path: Path) -> Optional[Dict[str, Any]]:
    """The record in ``path``, or None (warned once) when it is not one: a stray
    or damaged file counts as no result, so its cell runs again."""
    try:
        record = json.loads(Path(path).read_text())
        why = result_problem(record, Path(path).stem)
    except (OSError, ValueError) as e:
        why = f"cannot be read ({type(e).__name__})"
    if why is None:
        return record
    key = str(path)
    if key not in _warned:
        _warned.add(key)
        import sys

        print(f"warning: {path}: not a result record of this sweep ({why}); ignored (its cell, if any, "
              "runs again); move the file out of results/ to silence this", file=sys.stderr)
    return None


def _stats(values: List[float]) -> Dict[str, Optional[float]]:
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values)}


def summarize(records: List[Dict[str, Any]], sweep: Optional[Dict[str, Any]] = None,
              failed: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Per method x connectivity: seeds, test / validation accuracy (mean, sample
    std over seeds (ddof 1; null for one seed), min, max), K, seconds; plus
    the skipped cells with their reasons."""
    from deepr_neuro.training.trainer import diverged_epoch

    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["method"], r["connectivity"]), []).append(r)
    rows = []
    for (method, conn), rs in sorted(groups.items(), key=lambda kv: (method_key(kv[0][0]), kv[0][1])):
        ok = [r for r in rs if r["status"] == "ok"]
        row = {"method": method, "connectivity": conn, "n": len(ok), "seeds": [r["seed"] for r in ok],
               "skipped": len(rs) - len(ok)}
        if ok:
            row["test_accuracy"] = _stats([r["test_accuracy"] for r in ok])
            row["val_accuracy"] = _stats([r["val_accuracy"] for r in ok])
            row["K"] = ok[0]["K"]
            row["connections"] = ok[0]["connections"]
            row["fraction"] = _stats([r["fraction"] for r in ok])  # measured: soft-deepr may exceed K
            row["seconds"] = _stats([r["seconds"] for r in ok])
            row["rewired_last_epoch"] = _stats([float(sum(r["rewired_per_epoch"][-1])) for r in ok
                                                if r["rewired_per_epoch"]])
            # seeds whose training loss became NaN/inf (they still count in the statistics)
            row["diverged_seeds"] = [r["seed"] for r in ok if diverged_epoch(r.get("history") or [])]
        else:
            row["reason"] = rs[0].get("reason")
        rows.append(row)
    return {
        "format": FORMAT + "-summary", "version": VERSION,
        "sweep": {k: sweep.get(k) for k in ("profile_path", "model_path", "settings")} if sweep else None,
        "cells_done": sum(1 for r in records if r["status"] == "ok"),
        "cells_skipped": sum(1 for r in records if r["status"] == "skipped"),
        "rows": rows,
        "skipped": [{"cell": r["cell"], "reason": r.get("reason")} for r in records if r["status"] == "skipped"],
        "failed": [{"cell": k, "reason": v} for k, v in (failed or {}).items()],
    }


def _pct(x: Optional[float], digits: int = 2) -> str:
    return "" if x is None else f"{100 * x:.{digits}f}"


def summary_markdown(summary: Dict[str, Any]) -> str:
    """One row per connectivity, one column per method: test accuracy mean ± std
    over seeds (n seeds), skipped cells marked with a footnote number."""
    rows = summary["rows"]
    if not rows:
        return "No finished or skipped cells yet.\n"
    methods = sorted({r["method"] for r in rows}, key=method_key)
    conns = sorted({r["connectivity"] for r in rows})
    by = {(r["method"], r["connectivity"]): r for r in rows}
    sw = summary.get("sweep") or {}
    settings = sw.get("settings") or {}
    lines = []
    title = "Test accuracy (%), mean ± std over seeds (n)"
    if settings:
        title += (f": {Path(str(sw.get('model_path'))).stem} on {settings.get('dataset')}, "
                  f"{Path(str(sw.get('profile_path'))).stem}, {settings.get('epochs')} epochs")
    lines += [title, ""]
    lines.append("| connectivity | K per layer | " + " | ".join(methods) + " |")
    lines.append("| --- | --- | " + " | ".join("---" for _ in methods) + " |")
    reasons: List[str] = []
    any_diverged = False
    for c in conns:
        ks = [by[(m, c)]["K"] for m in methods if (m, c) in by and by[(m, c)].get("K")]
        kcell = "/".join(str(k) for k in ks[0]) if ks else ""
        cells = []
        for m in methods:
            r = by.get((m, c))
            if r is None:
                cells.append("")
            elif r["n"] == 0:
                reason = r.get("reason") or "skipped"
                if reason not in reasons:
                    reasons.append(reason)
                cells.append(f"skipped [{reasons.index(reason) + 1}]")
            else:
                t = r["test_accuracy"]
                std = f" ± {_pct(t['std'])}" if t["std"] is not None else ""
                used = r["fraction"]["mean"]
                note = f" [uses {100 * used:.3g} %]" if abs(used - c) > 0.05 * c else ""
                if r.get("diverged_seeds"):
                    note += f" [{len(r['diverged_seeds'])} diverged]"
                    any_diverged = True
                cells.append(f"{_pct(t['mean'])}{std} ({r['n']}){note}")
        lines.append(f"| {100 * c:g} % | {kcell} | " + " | ".join(cells) + " |")
    if reasons:
        lines.append("")
        for i, reason in enumerate(reasons, 1):
            lines.append(f"[{i}] {reason.splitlines()[0]}")
    if summary.get("failed"):
        lines.append("")
        lines.append("Failed (no result; a rerun tries again): " +
                     ", ".join(f"{f['cell']} ({f['reason']})" for f in summary["failed"]))
    lines.append("")
    lines.append(f"{summary['cells_done']} cells trained, {summary['cells_skipped']} skipped. "
                 "Std is the sample standard deviation over seeds (blank for one seed); "
                 "[uses X %]: the runs' measured connections differ from the requested connectivity "
                 "(soft-deepr keeps each core at or under its budget K, not exactly at it).")
    if any_diverged:
        lines.append("[N diverged]: in N of the seeds the training loss became NaN or infinite (learning rate "
                     "too high for that network); those runs count in the mean and std as they ended.")
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> None:
    _atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def write_summary(out: Path, failed: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    out = Path(out)
    sweep = json.loads((out / SWEEP_JSON).read_text()) if (out / SWEEP_JSON).exists() else None
    summary = summarize(load_results(out), sweep, failed)
    write_json(out / SUMMARY_JSON, summary)
    write_text(out / SUMMARY_MD, summary_markdown(summary))
    return summary

