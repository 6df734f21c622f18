"""Run one network on several backends and measure how far they agree.

A backend says itself whether it is exact (:attr:`Backend.exact`): the exact
("integer") backends (``emulator``, ``lava``, ``brian2``) implement the same
fixed-point arithmetic and must give the same spikes, bit for bit; approximate
ones such as ``brian2-float`` (a continuous-time reading, see
:mod:`deepr_neuro.simulate.brian2_backend`) are compared with the same measures but
are not expected to be identical. Nothing here decides by a backend's name.

Every backend runs the same samples from zero state with full spike trains
recorded. Each backend is compared with the reference (the emulator when it is
in the list, else the first backend), per layer:

* spike identity: share of (sample, step, neuron) entries that are identical;
* spike-count correlation: Pearson correlation of the per-(sample, neuron)
  spike counts (1.0 when both are constant and equal; ``None`` when undefined);
* the number of differing entries and the first one (sample, step, neuron);

and, per backend, classification agreement with the reference (share of
samples with the same predicted class, :meth:`SimResult.predictions`) and
accuracy against ``y`` when labels are given.

``report.integer_backends_agree`` is True only when at least two integer
backends ran on at least one sample and every integer backend in the run
finished and is identical to the reference in every layer, step and sample
(one integer backend alone compares nothing: not "agree"). A backend that fails is recorded with its error (and so makes the
integer backends disagree) rather than aborting the other runs.

    report = crosscheck(net, x, y, steps=100)
    print(report.to_table())
    json.dumps(report.to_json())
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from deepr_neuro.simulate.backends import Backend, SimResult, get_backend
from deepr_neuro.simulate.registry import unavailable_reason
from deepr_neuro.errors import ConfigError
from deepr_neuro.network.integer_network import IntegerNetwork, as_graph

DEFAULT_BACKENDS = ("emulator", "lava", "brian2", "brian2-float")


@dataclass
class BackendRun:
    """One backend's run: its result (None if it failed) and summary figures."""

    name: str
    exact: bool  # the backend's own Backend.exact: expected to be bit-identical
    seconds: float
    result: Optional[SimResult] = None
    error: Optional[str] = None
    accuracy: Optional[float] = None
    classification_agreement: Optional[float] = None  # vs the reference
    #: final-v readout identical to the reference's (None: no final-v readout, or not compared)
    readout_v_identical: Optional[bool] = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class LayerAgreement:
    """One layer of one backend compared with the reference backend."""

    backend: str
    layer: int
    layer_name: str
    n_neurons: int
    spike_identity: float  # share of (sample, step, neuron) entries identical
    count_correlation: Optional[float]
    mismatches: int  # number of differing (sample, step, neuron) entries
    first_mismatch: Optional[tuple]  # (sample, step, neuron) or None
    reference_spikes: int
    spikes: int

    @property
    def identical(self) -> bool:
        return self.mismatches == 0


@dataclass
class CrosscheckReport:
    reference: str
    n_samples: int
    steps: int
    layer_names: List[str]
    runs: Dict[str, BackendRun]
    layers: List[LayerAgreement] = field(default_factory=list)
    #: default backends left out because they cannot run here (name -> why)
    skipped: Dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------ verdicts
    @property
    def integer_backends(self) -> List[str]:
        return [name for name, run in self.runs.items() if run.exact]

    @property
    def compared(self) -> bool:
        """At least two integer backends ran (and the reference is one), on at least one sample."""
        ran = [n for n in self.integer_backends if self.runs[n].ok]
        return (self.n_samples >= 1 and self.steps >= 1 and len(ran) >= 2
                and self.reference in ran)

    @property
    def integer_backends_agree(self) -> bool:
        """True iff every integer backend ran and matches the reference exactly, and
        something was compared: at least two integer backends on at least one sample."""
        for name in self.integer_backends:
            if not self.runs[name].ok:
                return False
        if not self.runs[self.reference].ok or not self.compared:
            return False
        if any(run.exact and run.readout_v_identical is False for run in self.runs.values()):
            return False
        return all(a.identical for a in self.layers if self.runs[a.backend].exact)

    def verdict(self) -> str:
        """One line: what was compared and whether the integer backends agree."""
        ints = self.integer_backends
        if self.n_samples < 1 or self.steps < 1:
            return f"integer backends agree: NO (nothing compared: {self.n_samples} samples x {self.steps} steps)"
        if len(ints) < 2:
            return (f"integer backends agree: NO (nothing compared: {len(ints)} integer backend"
                    f"{'' if len(ints) == 1 else 's'} ({', '.join(ints) or 'none'}); give at least two, "
                    "e.g. --backends emulator,brian2)")
        return ("integer backends agree: " + ("yes" if self.integer_backends_agree else "NO")
                + f" ({', '.join(ints)} on {self.n_samples} samples x {self.steps} steps)")

    def agreement(self, backend: str) -> List[LayerAgreement]:
        return [a for a in self.layers if a.backend == backend]

    def _identical(self, name: str) -> Optional[bool]:
        """Same spikes as the reference everywhere (None if either run failed)."""
        if not (self.runs[name].ok and self.runs[self.reference].ok):
            return None
        if self.runs[name].readout_v_identical is False:
            return False
        return all(a.identical for a in self.agreement(name))

    # ------------------------------------------------------------- output
    def to_json(self) -> dict:
        def num(x):
            if x is None:
                return None
            x = float(x)
            return None if math.isnan(x) else x

        return {
            "reference": self.reference,
            "n_samples": self.n_samples,
            "steps": self.steps,
            "layers": list(self.layer_names),
            "integer_backends_agree": self.integer_backends_agree,
            "skipped": dict(self.skipped),
            "integer_backends_compared": [n for n in self.integer_backends if self.runs[n].ok]
            if self.compared else [],
            "backends": {
                name: {
                    "exact": run.exact,
                    "ok": run.ok,
                    "error": run.error,
                    "seconds": num(run.seconds),
                    "accuracy": num(run.accuracy),
                    "classification_agreement": num(run.classification_agreement),
                    "identical": self._identical(name),
                    "readout_v_identical": run.readout_v_identical,
                    "per_layer": [
                        {
                            "layer": a.layer,
                            "name": a.layer_name,
                            "neurons": a.n_neurons,
                            "spike_identity": num(a.spike_identity),
                            "count_correlation": num(a.count_correlation),
                            "mismatches": a.mismatches,
                            "first_mismatch": (list(a.first_mismatch)
                                               if a.first_mismatch is not None else None),
                            "reference_spikes": a.reference_spikes,
                            "spikes": a.spikes,
                        }
                        for a in self.agreement(name)
                    ],
                }
                for name, run in self.runs.items()
            },
        }

    def to_table(self) -> str:
        def pct(x):
            return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) \
                else f"{100.0 * x:.2f}%"

        def corr(x):
            return "n/a" if x is None else f"{x:.4f}"

        lines = [f"crosscheck: {self.n_samples} samples x {self.steps} steps, "
                 f"reference = {self.reference}", ""]
        head = f"{'backend':<14} {'kind':<7} {'time s':>8} {'accuracy':>9} {'class agr':>10}  status"
        lines += [head, "-" * len(head)]
        for name, run in self.runs.items():
            if not run.ok:
                status = f"FAILED: {run.error}"
            elif name == self.reference:
                status = "reference"
            else:
                same = self._identical(name)
                status = "identical" if same else (
                    "DIFFERS" if run.exact else "differs (not exact by design)")
                if run.readout_v_identical is not None:
                    status += "; final v " + ("identical" if run.readout_v_identical else "DIFFERS")
            lines.append(
                f"{name:<14} {'integer' if run.exact else 'float':<7} "
                f"{run.seconds:>8.2f} {pct(run.accuracy):>9} "
                f"{pct(run.classification_agreement):>10}  {status}")
        for name, why in self.skipped.items():
            lines.append(f"{name:<14} {'':<7} {'':>8} {'':>9} {'':>10}  skipped: {why}")
        if self.layers:
            lines += ["", "per layer vs " + self.reference + ":"]
            head = (f"{'backend':<14} {'layer':<12} {'neurons':>7} {'spike id':>9} "
                    f"{'count r':>8} {'mismatch':>9} {'spikes ref/this':>17}  first mismatch (sample, step, neuron)")
            lines += [head, "-" * len(head)]
            for a in self.layers:
                first = "-" if a.first_mismatch is None else str(tuple(a.first_mismatch))
                lines.append(
                    f"{a.backend:<14} {a.layer_name[:12]:<12} {a.n_neurons:>7} "
                    f"{pct(a.spike_identity):>9} {corr(a.count_correlation):>8} "
                    f"{a.mismatches:>9} {f'{a.reference_spikes}/{a.spikes}':>17}  {first}")
        lines += ["", self.verdict()]
        return "\n".join(lines)


# ---------------------------------------------------------------- measures

def count_correlation(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Pearson r of two count arrays; 1.0 if both constant and equal, None if undefined."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.size == 0:
        return None
    sa, sb = a.std(), b.std()
    if sa == 0 and sb == 0:
        return 1.0 if np.array_equal(a, b) else None
    if sa == 0 or sb == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def compare_layer(backend: str, layer: int, name: str, ref: SimResult,
                  other: SimResult) -> LayerAgreement:
    rs, os_ = ref.spikes[layer], other.spikes[layer]
    if rs.shape != os_.shape:  # a backend bug; report it as total disagreement
        return LayerAgreement(
            backend=backend, layer=layer, layer_name=name, n_neurons=int(rs.shape[2]),
            spike_identity=0.0, count_correlation=None, mismatches=max(int(rs.size), 1),
            first_mismatch=(0, 0, 0), reference_spikes=int(rs.sum()),
            spikes=int(os_.sum()))
    diff = rs != os_
    mismatches = int(diff.sum())
    first = tuple(int(i) for i in np.argwhere(diff)[0]) if mismatches else None
    return LayerAgreement(
        backend=backend, layer=layer, layer_name=name, n_neurons=int(rs.shape[2]),
        spike_identity=1.0 - mismatches / diff.size if diff.size else 1.0,
        count_correlation=count_correlation(ref.counts[layer], other.counts[layer]),
        mismatches=mismatches, first_mismatch=first,
        reference_spikes=int(rs.sum()), spikes=int(os_.sum()))


# ---------------------------------------------------------------- driver

def _resolve(backend: Union[str, Backend]) -> Backend:
    if isinstance(backend, Backend):
        return backend
    return get_backend(backend)


def crosscheck(net: IntegerNetwork, x_uint8: np.ndarray, y: Optional[np.ndarray],
               steps: int,
               backends: Optional[Sequence[Union[str, Backend]]] = None,
               reference: Optional[str] = None, n_steps=None) -> CrosscheckReport:
    """Run ``net`` on every backend with the same samples and compare them.

    ``backends`` holds registry names (:func:`deepr_neuro.simulate.backends.get_backend`)
    or Backend instances (their ``name`` labels them). ``reference`` defaults to
    ``"emulator"`` when present, else the first backend. ``y`` (labels) may be
    None, then accuracies are None. ``backends=None`` means DEFAULT_BACKENDS less
    those that cannot run here (Lava on Python 3.13+), listed in
    ``report.skipped`` with the reason; a backend named explicitly must run.
    A graph with a spike-source input takes spike
    trains (n_samples, steps, n_inputs) and ``n_steps`` (each sample's length);
    with a final-v readout, an integer backend must also give the reference's
    final v exactly.
    """
    skipped: Dict[str, str] = {}
    if backends is None:
        skipped = {n: r for n in DEFAULT_BACKENDS if (r := unavailable_reason(n)) is not None}
        backends = [n for n in DEFAULT_BACKENDS if n not in skipped]
    if not backends:
        raise ConfigError("crosscheck: backends: give at least one backend")
    spike_input = as_graph(net).input_kind == "spikes"
    x = np.asarray(x_uint8) if spike_input else np.atleast_2d(np.asarray(x_uint8))
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ConfigError(f"crosscheck: steps must be a positive integer (got {str(steps)[:40]})")
    if x.shape[0] < 1:
        raise ConfigError("crosscheck: no samples to compare; give at least one")
    if y is not None:
        y = np.asarray(y).ravel()
        if y.shape[0] != x.shape[0]:
            raise ConfigError(
                f"crosscheck: {x.shape[0]} samples but {y.shape[0]} labels")
    objs = [_resolve(b) for b in backends]
    names = [str(b.name) for b in objs]
    if len(set(names)) != len(names):
        raise ConfigError(f"crosscheck: backends: names must be unique (got {names})")
    for name, backend in zip(names, objs):
        exact = getattr(backend, "exact", None)
        if not isinstance(exact, (bool, np.bool_)):
            raise ConfigError(
                f"crosscheck: backend {name[:80]!r}: exact must be True (bit-exact integer "
                f"backend) or False (approximate); got {str(exact)[:80]!r}; set the class "
                "attribute Backend.exact")
    if reference is None:
        reference = "emulator" if "emulator" in names else names[0]
    if reference not in names:
        raise ConfigError(
            f"crosscheck: reference {reference!r} is not among the backends {names}")

    runs: Dict[str, BackendRun] = {}
    for name, backend in zip(names, objs):
        t0 = time.perf_counter()
        try:
            result = (backend.run(net, x, steps, record_spikes=True, n_steps=n_steps) if spike_input
                      else backend.run(net, x, steps, record_spikes=True))
            error = None
        except Exception as exc:  # recorded: a crashed backend is a disagreement
            result, error = None, f"{type(exc).__name__}: {exc}"
        run = BackendRun(name=name, exact=bool(backend.exact),
                         seconds=time.perf_counter() - t0, result=result, error=error)
        if result is not None and y is not None and y.size:
            run.accuracy = float(np.mean(result.predictions() == y))
        runs[name] = run

    layer_names = (["input"] + [layer.name for layer in net.layers] if isinstance(net, IntegerNetwork)
                   else list(as_graph(net).names))
    report = CrosscheckReport(reference=reference, n_samples=int(x.shape[0]),
                              steps=int(steps), layer_names=layer_names, runs=runs,
                              skipped=skipped)
    ref_run = runs[reference]
    if not ref_run.ok:
        return report
    ref_pred = ref_run.result.predictions()
    for name in names:
        run = runs[name]
        if not run.ok:
            continue
        run.classification_agreement = (
            float(np.mean(run.result.predictions() == ref_pred)) if ref_pred.size else None)
        if name == reference:
            continue
        if ref_run.result.readout_v is not None and run.exact:
            run.readout_v_identical = bool(run.result.readout_v is not None and np.array_equal(
                run.result.readout_v, ref_run.result.readout_v))
        for layer, lname in enumerate(layer_names):
            report.layers.append(compare_layer(name, layer, lname, ref_run.result, run.result))
    return report
