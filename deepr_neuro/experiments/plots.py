"""Plots of a sweep directory (``deepr-neuro plot OUT``): PNG files and the Markdown table.

* ``accuracy_vs_connectivity.png``: test accuracy against the network's
  connectivity (log axis), one line per method: mean over seeds, shaded
  min..max, error bars +-1 std; dense (if swept) as a dotted reference line.
* ``rewiring.png``: new connections per training step against the epoch, one
  panel per rewiring method, one line per connectivity (mean over seeds,
  averaged in bins). Per-step counts come from the run's ``network.npz``
  (``rewired_per_step``), else its checkpoint, else the per-epoch totals of
  ``history.json`` divided by the steps per epoch.
* ``budget_use.png``: synapses on every core against its budget K_c and its
  capacity (from :func:`deepr_neuro.hardware.report.core_report`), one panel per
  method, for one connectivity (seed with the lowest number).

Uses matplotlib's object interface with the Agg canvas: no pyplot state, no display.
"""
from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from deepr_neuro.errors import BundleError
from deepr_neuro.store.sweep_layout import RESULTS, SWEEP_JSON
from deepr_neuro.experiments.summary import load_results, method_key, write_summary

ACCURACY_PNG = "accuracy_vs_connectivity.png"
REWIRING_PNG = "rewiring.png"
BUDGET_PNG = "budget_use.png"
DPI = 130


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(methods: Sequence[str]) -> Dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(sorted(methods, key=method_key))}


def _title(sweep: Optional[Dict[str, Any]]) -> str:
    if not sweep:
        return ""
    s = sweep.get("settings") or {}
    return (f"{Path(str(sweep.get('model_path'))).stem} on {s.get('dataset')}, "
            f"{Path(str(sweep.get('profile_path'))).stem} budgets, {s.get('epochs')} epochs")


# --------------------------------------------------------------------- (a)
def plot_accuracy(records: List[Dict[str, Any]], path: Path, title: str = "") -> Path:
    ok = [r for r in records if r["status"] == "ok"]
    methods = sorted({r["method"] for r in ok}, key=method_key)
    colors = _colors(methods)
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    for m in methods:
        rs = [r for r in ok if r["method"] == m]
        requested = sorted({r["connectivity"] for r in rs})
        acc = [[100 * r["test_accuracy"] for r in rs if r["connectivity"] == c] for c in requested]
        # x: the connections the runs really kept (soft-deepr may use more than K)
        conns = [float(np.mean([r["fraction"] for r in rs if r["connectivity"] == c])) for c in requested]
        mean = np.array([np.mean(a) for a in acc])
        lo = np.array([np.min(a) for a in acc])
        hi = np.array([np.max(a) for a in acc])
        std = np.array([np.std(a, ddof=1) if len(a) > 1 else 0.0 for a in acc])
        n = max(len(a) for a in acc)
        label = f"{m} (n={n})" if n > 1 else m
        if m == "dense" and len(conns) == 1:
            ax.axhline(mean[0], color=colors[m], ls=":", lw=1.2)
        ax.errorbar(conns, mean, yerr=std, color=colors[m], marker="o", ms=4, lw=1.6, capsize=3, label=label)
        if len(conns) > 1:
            ax.fill_between(conns, lo, hi, color=colors[m], alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("connectivity: active connections / dense network's weights (measured, log scale)")
    ax.set_ylabel("test accuracy (%)")
    # ticks at the connectivities the sweep asked for, all labelled in percent
    from matplotlib.ticker import FixedLocator, NullFormatter
    asked = sorted({float(r["connectivity"]) for r in ok})
    if asked:
        ax.xaxis.set_major_locator(FixedLocator(asked))
    ax.xaxis.set_major_formatter(_percent_formatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="x", alpha=0.1)
    if methods:
        ax.legend(loc="lower right", fontsize=9, title="line: mean, bar: ±1 std, band: min-max over seeds",
                  title_fontsize=8)
    ax.set_title(f"Accuracy vs connectivity{': ' + title if title else ''}", fontsize=10)
    fig.savefig(path)
    return path


def _percent_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: f"{100 * x:g} %")


# --------------------------------------------------------------------- (b)
def rewired_series(out: Path, record: Dict[str, Any]) -> tuple:
    """(new connections per step (float array), steps per epoch, source) of one run."""
    run = Path(out) / record["run_dir"]
    steps = int(record["steps_per_epoch"])
    for name in ("network.npz", "checkpoint.npz"):
        path = run / name
        if path.exists():
            try:
                with np.load(path) as z:
                    if "rewired_per_step" in z.files and len(z["rewired_per_step"]):
                        return z["rewired_per_step"].astype(np.float64), steps, name
            except Exception:  # a damaged file: fall back to history
                continue
    per_epoch = [sum(e) for e in record.get("rewired_per_epoch") or []]
    return np.repeat(np.asarray(per_epoch, dtype=np.float64) / max(steps, 1), steps), steps, "history.json"


def _binned(series: np.ndarray, n_bins: int = 150) -> tuple:
    size = max(1, len(series) // n_bins)
    n = len(series) // size * size
    if n == 0:
        return np.zeros(0), np.zeros(0)
    y = series[:n].reshape(-1, size).mean(axis=1)
    x = (np.arange(len(y)) + 0.5) * size
    return x, y


def plot_rewiring(out: Path, records: List[Dict[str, Any]], path: Path, title: str = "") -> Path:
    # at connectivity 1.0 there is no dormant connection to rewire to: left out
    ok = [r for r in records if r["status"] == "ok" and r.get("rewired_per_epoch") and r["connectivity"] < 1.0
          and any(sum(e) for e in r["rewired_per_epoch"])]
    methods = sorted({r["method"] for r in ok}, key=method_key)
    conns = sorted({r["connectivity"] for r in ok})
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    ccolor = {c: cmap(0.9 * i / max(1, len(conns) - 1)) for i, c in enumerate(conns)}
    cols = min(3, max(1, len(methods)))
    rows = max(1, math.ceil(len(methods) / cols))
    fig = _figure(4.4 * cols + 0.6, 3.5 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    sources = set()
    for k, m in enumerate(methods):
        ax = axes[k // cols][k % cols]
        for c in conns:
            rs = [r for r in ok if r["method"] == m and r["connectivity"] == c]
            if not rs:
                continue
            curves = []
            for r in rs:
                series, steps, source = rewired_series(out, r)
                sources.add(source)
                x, y = _binned(series)
                curves.append((x / steps, y))
            n = min(len(cv[1]) for cv in curves)
            x = curves[0][0][:n]
            y = np.mean([cv[1][:n] for cv in curves], axis=0)
            K = sum(rs[0]["K"])
            ax.plot(x, np.where(y > 0, y, np.nan), color=ccolor[c], lw=1.4, label=f"{100 * c:g} % (K={K})")
        ax.set_yscale("log")
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("new connections per step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, title="connectivity", title_fontsize=7)
    for k in range(len(methods), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    if not methods:
        axes[0][0].set_visible(True)
        axes[0][0].text(0.5, 0.5, "no run rewired any connection", ha="center", va="center")
        axes[0][0].set_axis_off()
    src = ", ".join(sorted(sources)) or "-"
    text = (f"Rewiring over training (mean over seeds, binned){': ' + title if title else ''}\n"
            f"per-step counts from {src}; connectivity 100 % left out (nothing dormant to rewire to)")
    # wrap to the figure's width so a one-panel figure does not cut its title
    width_chars = int(fig.get_figwidth() * 13)
    fig.suptitle("\n".join(textwrap.fill(line, width_chars) for line in text.split("\n")), fontsize=10)
    fig.savefig(path)
    return path


# --------------------------------------------------------------------- (c)
def _default_budget_connectivity(records: List[Dict[str, Any]], sweep: Optional[Dict[str, Any]]) -> Optional[float]:
    ok = [r for r in records if r["status"] == "ok"]
    conns = sorted({r["connectivity"] for r in ok})
    if not conns:
        return None
    sparse = [c for c in conns if c < 1.0] or conns
    own = None
    try:
        model = (sweep or {}).get("model") or {}
        sizes = [model["input_size"]] + [layer["size"] for layer in model["layers"]]
        ps = [float(layer["connectivity"]) for layer in model["layers"]]
        n = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
        own = sum(p * k for p, k in zip(ps, n)) / sum(n)
    except (KeyError, TypeError, ValueError):
        pass
    if own is None:
        return sparse[0]
    return min(sparse, key=lambda c: abs(math.log(c) - math.log(own)))


def plot_budget_use(out: Path, records: List[Dict[str, Any]], path: Path, connectivity: float,
                    title: str = "") -> Path:
    from deepr_neuro.store.bundle import load_bundle
    from deepr_neuro.hardware.report import core_report

    ok = [r for r in records if r["status"] == "ok" and abs(r["connectivity"] - connectivity) < 1e-12]
    methods = sorted({r["method"] for r in ok}, key=method_key)
    rows = max(1, len(methods))
    fig = _figure(9.0, 2.3 * rows + 0.8)
    axes = fig.subplots(rows, 1, squeeze=False, sharex=True)
    for k, m in enumerate(methods):
        ax = axes[k][0]
        r = min((r for r in ok if r["method"] == m), key=lambda r: r["seed"])
        try:
            manifest, arrays = load_bundle(Path(out) / r["run_dir"])
        except BundleError as e:
            ax.text(0.5, 0.5, f"{m}: {e}", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            continue
        rep = core_report(manifest, arrays)
        cores = [c for c in rep.cores if c.layer != "input"]
        x = np.arange(len(cores))
        syn = np.array([c.synapses for c in cores])
        budget = np.array([c.budget for c in cores])
        cap = np.array([c.capacity for c in cores])
        layers = [c.layer for c in cores]
        lcolor = _colors(sorted(set(layers), key=layers.index))
        ax.bar(x, syn, color=[lcolor[name] for name in layers], width=0.7)
        ax.hlines(budget, x - 0.4, x + 0.4, color="black", lw=1.8, label="budget K_c")
        ax.hlines(cap, x - 0.4, x + 0.4, color="red", lw=1.2, ls="--", label="capacity")
        for xi, s, b in zip(x, syn, budget):
            ax.text(xi, s, f"{100 * s / b:.0f}%" if b else "", ha="center", va="bottom", fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("synapses")
        ax.set_title(f"{m} (seed {r['seed']}): {int(syn.sum())} synapses on {len(cores)} cores, "
                     f"{'fits' if rep.fits else 'DOES NOT FIT'}", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(x, [f"{c.layer}\n{c.core}" for c in cores], fontsize=7)
    if not methods:
        axes[0][0].text(0.5, 0.5, f"no finished run at connectivity {connectivity:g}", ha="center", va="center")
        axes[0][0].set_axis_off()
    axes[-1][0].set_xlabel("core (layer / global core id); bar label: synapses as % of the core's budget")
    fig.suptitle(f"Per-core budget use at {100 * connectivity:g} % connectivity"
                 f"{': ' + title if title else ''}", fontsize=10)
    fig.savefig(path)
    return path


# --------------------------------------------------------------------- all
def plot_sweep(out: Path, out_dir: Optional[Path] = None,
               budget_connectivity: Optional[float] = None) -> List[Path]:
    """Write the three PNG files (into OUT/plots unless ``out_dir``) and refresh
    OUT/summary.json and summary.md. Returns the written paths."""
    out = Path(out)
    if not (out / RESULTS).is_dir():
        raise BundleError(f"{out}: no {RESULTS}/ folder; is it a sweep directory? "
                          f"(make one with `deepr-neuro sweep ... --out {out}`)")
    sweep = json.loads((out / SWEEP_JSON).read_text()) if (out / SWEEP_JSON).exists() else None
    records = load_results(out)
    title = _title(sweep)
    dest = Path(out_dir) if out_dir is not None else out / "plots"
    dest.mkdir(parents=True, exist_ok=True)
    written = [plot_accuracy(records, dest / ACCURACY_PNG, title),
               plot_rewiring(out, records, dest / REWIRING_PNG, title)]
    conn = budget_connectivity if budget_connectivity is not None else _default_budget_connectivity(records, sweep)
    if conn is not None:
        written.append(plot_budget_use(out, records, dest / BUDGET_PNG, conn, title))
    write_summary(out)
    written += [out / "summary.md", out / "summary.json"]
    return written
