"""Run-directory level NIR export / import and the energy-latency estimate (top layer, beside pipeline.py).

``export_nir_run``: the exported integer network of a run, with its core placement, as a NIR
file. ``import_nir_file``: a NIR file (ours or another tool's) as an integer graph, checked
against a profile's per-core budgets. ``estimate_run``: energy, latency and NeuroBench metrics
per inference on the run's test set, for several steps per sample beside accuracy.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from deepr_neuro.errors import ConfigError, DataError

DEFAULT_STEP_TABLE = (20, 50, 100, 200)
CHUNK = 200  # samples simulated (with spike trains) at a time


def run_graph(run_dir: Path):
    """(manifest, network to simulate, graph with the bundle's core placement) of an exported run
    (bundle version 1 or 2; every bundle check first)."""
    from deepr_neuro.pipeline import load_integer_graph

    manifest, _, graph = load_integer_graph(Path(run_dir))
    return manifest, graph, graph


def export_nir_run(run_dir: Path, out: Optional[Path] = None) -> str:
    """Write the run's integer network as NIR (default RUN/network.nir); return a summary."""
    from deepr_neuro.interop.nir_io import graph_to_nir, pop_key, write_nir

    run_dir = Path(run_dir)
    manifest, net, g = run_graph(run_dir)
    out = Path(out) if out is not None else run_dir / "network.nir"
    if out.is_dir():
        raise ConfigError(f"--out {str(out)[:200]}: is a directory; give a file name such as network.nir")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {str(out)[:200]}: the folder {str(out.parent)[:200]} does not exist; create it")
    input_meta = None
    if getattr(g, "input_kind", "bias") == "spikes":
        input_meta = spike_input_meta(manifest)
    size = write_nir(g, out, input_meta)
    ng = graph_to_nir(g, input_meta)
    kinds: Dict[str, int] = {}
    for node in ng.nodes.values():
        kinds[type(node).__name__] = kinds.get(type(node).__name__, 0) + 1
    text = (f"wrote {out} ({size} bytes, NIR {_nir_version()}): "
            + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) + f", {len(ng.edges)} edges\n"
            "exact chip integers (weights, du, dv, vth, bias, cores, encoding) are in node metadata; the NIR "
            "fields are the forward-Euler reading at dt = 1e-4 s (see deepr_neuro/interop/nir_io.py); "
            "each Lava projection's one-step delay is not in the NIR fields")
    if input_meta is not None:
        text += ("\nspike-source input: the Input node's metadata holds the frame encoding (steps_per_frame, "
                 "scale, signed) and the run's normalisation (norm_mean, norm_std); the readout "
                 f"{pop_key(g.readout)!r} is a CubaLI integrator: class = argmax of its v after each sample's "
                 "last step")
    return text


def spike_input_meta(manifest: Dict) -> Dict:
    """Extra metadata of a recurrent run's NIR Input: the data set and the normalisation of its frames."""
    rec = manifest.get("recurrent") or {}
    norm = rec.get("normalisation") or {}
    meta: Dict = {"dataset": str((manifest.get("dataset") or {}).get("name", "?"))}
    if "mean" in norm and "std" in norm:
        meta["norm_mean"] = np.asarray(norm["mean"], np.float64)
        meta["norm_std"] = np.asarray(norm["std"], np.float64)
        meta["normalisation"] = "(x - norm_mean) / norm_std per feature, then the frame encoding"
    else:
        meta["normalisation"] = "none: the frames enter the encoding as the data set gives them (e.g. pixel / 255)"
    return meta


def export_nir_cli(args) -> int:
    """``export RUN --to nir [--out FILE]`` under the run's lock (it reads the bundle)."""
    from deepr_neuro.store.rundir import DirLock

    if args.steps is not None:
        raise ConfigError("--steps: only for --to lava (a NIR file holds the network, not a run length)")
    with DirLock(Path(args.run), what="run", flag="run"):
        print(export_nir_run(Path(args.run), Path(args.out) if args.out else None))
    return 0


def _nir_version() -> str:
    try:
        import nir
        return str(getattr(nir, "version", "1.0"))
    except ImportError:  # pragma: no cover
        return "?"


def import_nir_file(path: Path, profile_path: str, as_json: bool = False) -> Tuple[str, bool]:
    """Read a NIR file, map it onto the profile's chip and check every core's budget."""
    from deepr_neuro.hardware.profile import load_profile
    from deepr_neuro.interop.fit import check_fit
    from deepr_neuro.interop.nir_io import nir_to_graph, place, read_nir

    profile = load_profile(profile_path)
    g = nir_to_graph(read_nir(path), profile=profile)
    if any(p.core is None for p in g.populations):
        import dataclasses
        g = dataclasses.replace(g, populations=tuple(place(list(g.populations), profile)))
    report = check_fit(g, profile)
    spikes = getattr(g, "input_kind", "bias") == "spikes"
    if as_json:
        return json.dumps({"file": str(path), "input_kind": getattr(g, "input_kind", "bias"),
                           "readout_kind": getattr(g, "readout_kind", "spike_count"),
                           "populations": [[p.name, p.n] for p in g.populations],
                           "projections": [[q.name, q.pre, q.post, int(np.asarray(q.weights).size)]
                                           for q in g.projections], **report.to_json()}, indent=2), report.fits
    head = (f"{path}: {len(g.populations)} populations ({', '.join(f'{p.name} {p.n}' for p in g.populations)}), "
            f"{len(g.projections)} projections, {sum(int(np.asarray(q.weights).size) for q in g.projections)} "
            f"synapses, readout {g.readout!r}; profile {profile_path}")
    if spikes:
        enc = g.encoding
        head += (f"\nspike-source input {g.input.name!r} (frame encoding: {int(enc.steps_per_frame)} steps per frame, "
                 f"scale {float(enc.scale):g}, signed {bool(enc.signed)}), final-v readout {g.readout!r}")
    return head + "\n" + report.to_table(profile), report.fits


def estimate_run(run_dir: Path, steps: Optional[Sequence[int]] = None, samples: Optional[int] = None,
                 as_json: bool = False, profile_path: Optional[str] = None) -> str:
    """Energy / latency / NeuroBench per inference on the run's test set at each steps-per-sample.

    The profile is the run's own (its manifest's copy) unless ``profile_path`` names another
    (e.g. a newer file with an ``energy:`` block); the run's core placement is used either way.
    A recurrent run is run as ``simulate`` runs it and gives one row, at the exported steps per
    frame (it was trained at that S; ``steps`` is refused)."""
    from deepr_neuro.estimate.cost import PRESILICON_NOTE
    from deepr_neuro.hardware.profile import HardwareProfile
    from deepr_neuro.pipeline import check_samples, check_steps, run_dataset

    from deepr_neuro.pipeline import is_recurrent

    run_dir = Path(run_dir)
    if steps is not None and not isinstance(steps, (list, tuple)):
        steps = [steps]
    steps_list = [check_steps(s) for s in (steps or DEFAULT_STEP_TABLE)]
    if len(set(steps_list)) != len(steps_list):
        raise ConfigError(f"--steps: each value once (got {steps_list})")
    if samples is not None:
        check_samples(samples)
    manifest, net, g = run_graph(run_dir)
    recurrent = is_recurrent(manifest)
    if recurrent and steps:
        raise ConfigError(f"--steps: {str(run_dir)[:200]} is a recurrent run; each sample runs its own frames x "
                          "steps_per_frame steps (the bundle's encoding, the S it was trained at), so --steps "
                          "is not taken")
    if profile_path is not None:
        from deepr_neuro.hardware.profile import load_profile
        profile = load_profile(profile_path)
        if profile.cores < manifest["profile"]["cores"] or profile.neurons_per_core < manifest["profile"]["neurons_per_core"]:
            raise ConfigError(f"--profile {str(profile_path)[:200]}: {profile.cores} cores x {profile.neurons_per_core} "
                              f"neurons cannot hold the run's placement (made for {manifest['profile']['name']!r}); "
                              "give the run's own chip's profile")
    else:
        profile = _run_profile(run_dir, manifest, HardwareProfile)
    if recurrent:
        from deepr_neuro.convert.recurrent import load_run_sequences
        data = load_run_sequences(manifest)
    else:
        data = run_dataset(manifest)
    n = len(data.y_test) if samples is None else min(int(samples), len(data.y_test))
    if n < 1:
        raise DataError(f"data set {data.name!r}: the test set is empty; nothing to estimate")
    x, y = data.x_test[:n], data.y_test[:n]
    rows = []
    if recurrent:
        S = int(g.encoding.steps_per_frame)
        acc, est = _estimate_recurrent(g, x, data.len_test[:n], y, profile)
        rows.append((S, acc, est))
    else:
        for s in steps_list:
            acc, est = _estimate_chain(net, g, x, y, profile, s)
            rows.append((s, acc, est))
    if as_json:
        if recurrent:
            return json.dumps({"run": str(run_dir), "profile": profile.name, "samples": n, "readout": "final_v",
                               "steps_per_frame": rows[0][0],
                               "steps_per_inference": "each sample its own frames x steps_per_frame; figures are "
                                                      "means over samples of their own steps",
                               "by_steps": [{"steps_per_frame": s, "accuracy": a, **e.to_json()}
                                            for s, a, e in rows]}, indent=2)
        return json.dumps({"run": str(run_dir), "profile": profile.name, "samples": n,
                           "exported_steps_per_sample": manifest["snn"].get("steps_per_sample"),
                           "by_steps": [{"steps": s, "accuracy": a, **e.to_json()} for s, a, e in rows]}, indent=2)
    est0 = rows[0][2]
    lines = []
    if est0.source:
        lines.append("NOTE: " + PRESILICON_NOTE.format(source=f"{profile.name}: " + est0.source[:160] + "..."))
    else:
        lines.append(f"NOTE: profile {profile.name!r} ({profile.source}) has no energy block: energy and latency are "
                     "not estimated (no invented figures), operation counts and NeuroBench metrics are. The block is "
                     f"read from the run's profile file ({str(manifest.get('profile_path'))[:200]}) when it is found "
                     "and describes the same chip; else pass --profile FILE")
    if recurrent:
        lines.append(f"{run_dir}: {n} test sequences of {data.name} (recurrent, spike-source input, final-v readout), "
                     f"per inference (one sample, its own frames x {rows[0][0]} steps, mean "
                     f"{rows[0][2].steps:.1f} steps); 'steps' = steps per frame (the exported S; --steps is not taken):")
    else:
        lines.append(f"{run_dir}: {n} test samples of {data.name}, per inference (one sample):")
    lines.append(f"{'steps':>5} {'accuracy':>9} {'energy uJ':>10} {'neuron %':>9} {'synops %':>9} {'msgs %':>7} "
                 f"{'latency us':>11} {'inf/s':>9} {'synops':>10} {'spikes':>8} {'bottleneck':>11}")
    for s, acc, e in rows:
        if e.energy_pj:
            tot = e.energy_pj["total"]
            en = (f"{tot / 1e6:>10.3f} {100 * e.energy_pj['neuron_updates'] / tot:>8.1f}% "
                  f"{100 * e.energy_pj['synaptic_ops'] / tot:>8.1f}% {100 * e.energy_pj['spike_messages'] / tot:>6.1f}% "
                  f"{e.latency_us:>11.2f} {e.inferences_per_s:>9.0f}")
            bn = f"core {e.bottleneck_core}"
        else:
            en = f"{'-':>10} {'-':>9} {'-':>9} {'-':>7} {'-':>11} {'-':>9}"
            bn = "-"
        lines.append(f"{s:>5} {100 * acc:>8.2f}% {en} {e.synaptic_ops:>10.0f} {e.spikes:>8.0f} {bn:>11}")
    s, acc, e = rows[min(range(len(rows)), key=lambda i: abs(rows[i][0] - 100))]
    nb = e.neurobench
    macs = nb["synaptic_operations_effective_macs"]
    at = f"{s} steps per frame" if recurrent else f"{s} steps"
    lines.append(f"NeuroBench-style at {at}: footprint {nb['footprint_bytes']:.0f} bytes, connection sparsity "
                 f"{nb['connection_sparsity']:.4f}, activation sparsity {nb['activation_sparsity']:.4f}, "
                 f"effective ACs {nb['synaptic_operations_effective_acs']:.0f}, effective MACs "
                 f"{'-' if macs is None else format(macs, '.0f')}, dense {nb['synaptic_operations_dense']:.0f}")
    if e.energy_pj:
        lines.append(f"at {at}: {e.step_ns:.0f} ns per step (slowest core + barrier over {e.tiles_used} tiles); "
                     f"core {e.bottleneck_core} is the slowest in {100 * e.bottleneck_share:.0f} % of steps; "
                     f"{e.cores_used} cores")
    for note in e.notes:
        lines.append("note: " + note)
    return "\n".join(lines)


def _run_profile(run_dir: Path, manifest: Dict, cls):
    """The run's profile (its manifest's copy). The energy block is not stored in manifests (so
    runs, sweeps and checkpoints stay byte-identical), so it is read from the profile file the run
    was trained with, when that file still describes the same chip."""
    from deepr_neuro.hardware.profile import load_profile, profile_to_dict

    profile = cls.from_dict(manifest["profile"], source=f"{run_dir}/manifest.json (field 'profile')")
    path = manifest.get("profile_path")
    if isinstance(path, str) and Path(path).is_file():
        try:
            current = load_profile(path)
        except ConfigError:
            return profile
        if current.energy is not None and profile_to_dict(current) == profile_to_dict(profile):
            return current
    return profile


def _estimate_chain(net, g, x, y, profile, steps):
    """The emulator runs the chain network (and, once backends take graphs, the graph itself)."""
    from deepr_neuro.estimate.cost import combine, estimate
    from deepr_neuro.simulate.backends import get_backend

    emu = get_backend("emulator")
    parts, correct = [], 0
    for lo in range(0, len(x), CHUNK):
        xs = x[lo:lo + CHUNK]
        res = emu.run(net, xs, steps, record_spikes=True)
        parts.append(estimate(g, res, profile, steps, x_uint8=xs))
        correct += int(np.sum(res.predictions() == y[lo:lo + CHUNK]))
    return correct / len(x), combine(parts)


def _estimate_recurrent(g, x, lengths, y, profile):
    """As ``simulate`` runs a recurrent run (pipeline.simulate_recurrent): frames encoded to
    spike trains, batches sorted by length, each sample its own n_i * S steps; class = the
    largest final v. Costs count each sample's own steps only (cost.estimate's ``n_steps``)."""
    from deepr_neuro.convert.recurrent import run_sequences
    from deepr_neuro.estimate.cost import combine, estimate
    from deepr_neuro.simulate.backends import get_backend

    S = int(g.encoding.steps_per_frame)
    v, _, results, order = run_sequences(get_backend("emulator"), g, x, lengths, record_spikes=True)
    L = np.asarray(lengths, np.int64)[order]
    parts, lo = [], 0
    for res in results:
        n_b = res.spikes[0].shape[0]
        parts.append(estimate(g, res, profile, res.steps, n_steps=L[lo:lo + n_b] * S))
        lo += n_b
    acc = float(np.mean(np.argmax(v, axis=1) == np.asarray(y)))
    return acc, combine(parts)
