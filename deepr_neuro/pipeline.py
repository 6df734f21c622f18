"""Run-directory level deployment: export, simulate and cross-check a trained run.

Glue between the bundle, the data set it was trained on, the spiking
conversion and the simulator backends. The data set is reloaded with the
run's own settings and checked against the sha256 in the manifest, so the
figures are always about the data the network was trained on.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from deepr_neuro.store.bundle import check_bundle, load_bundle, save_bundle
from deepr_neuro.store.bundle_check import MAX_STEPS
from deepr_neuro.errors import BundleError, ConfigError, DataError

CALIBRATION_SAMPLES = 5000  # training images used for threshold normalisation
DEFAULT_STEPS = 100


def run_dataset(manifest: Dict):
    """The data set a run was trained on, split exactly as in training."""
    from deepr_neuro.training.datasets import load_dataset

    t = manifest["training"]
    data = load_dataset(manifest["dataset"]["name"], data_dir=t.get("data_dir"),
                        val_fraction=t["val_fraction"], seed=t["seed"])
    want = manifest["dataset"].get("sha256")
    if want and data.sha256 != want:
        raise DataError(f"data set {data.name!r} differs from the one the run was trained on "
                        f"(sha256 {data.sha256[:12]}... vs manifest {want[:12]}...)")
    return data


def check_steps(steps, flag: str = "--steps") -> int:
    """Steps per sample: an integer in 1..MAX_STEPS (a documented bound, not a silent default)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
        raise ConfigError(f"{flag}: must be an integer from 1 to {MAX_STEPS} time steps per sample "
                          f"(got {str(steps)[:40]})")
    return int(steps)


def check_samples(samples, flag: str = "--samples") -> int:
    """A number of samples: a positive integer (0 and negatives are refused, never reinterpreted)."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ConfigError(f"{flag}: must be a positive number of samples (got {str(samples)[:40]})")
    return int(samples)


def load_integer_graph(run_dir: Path):
    """(manifest, arrays, IntegerGraph) of an exported run (version 1 or 2), after every
    bundle check (fit included); each population keeps its cores from the bundle."""
    from deepr_neuro.store.codec import integer_graph_from_arrays

    manifest, arrays = load_bundle(run_dir, need_fit=True)
    if "snn" not in manifest:
        raise BundleError(f"{run_dir}: not exported yet; run `deepr-neuro export {run_dir}` first")
    graph = integer_graph_from_arrays(arrays, manifest["graph"])
    if is_recurrent(manifest):
        from deepr_neuro.convert.recurrent import spike_graph_from_manifest
        graph = spike_graph_from_manifest(graph, manifest, f"{run_dir}/manifest.json")
    return manifest, arrays, graph


def is_recurrent(manifest: Dict) -> bool:
    """A recurrent run (the R1/R2 contract): model.kind 'recurrent' or a 'recurrent' block."""
    return (manifest.get("model") or {}).get("kind") == "recurrent" or "recurrent" in manifest


def runnable(graph):
    """What the backends run: a chain graph as the chain IntegerNetwork (bit for bit what
    version 1 ran), any other graph as it is (backends that run graphs accept it)."""
    from deepr_neuro.store.codec import graph_to_chain

    return graph_to_chain(graph) if graph.is_chain else graph


def load_integer_network(run_dir: Path):
    """(manifest, arrays, network to simulate) of an exported run: :func:`load_integer_graph`,
    with a chain graph handed over as the chain network the backends run."""
    manifest, arrays, graph = load_integer_graph(run_dir)
    return manifest, arrays, runnable(graph)


def activity_table(net, result) -> Tuple[str, Dict]:
    """Per-inference spikes and synaptic operations per population."""
    from deepr_neuro.network.integer_network import as_graph
    from deepr_neuro.simulate.activity import synops

    act = synops(net, result)
    names = as_graph(net).names
    lines = [f"{'layer':<8} {'neurons':>8} {'spikes/inference':>17} {'synops/inference':>17}"]
    for name, n, s, o in zip(names, net.sizes, act.spikes, act.synops):
        lines.append(f"{name:<8} {n:>8} {s:>17.1f} {o:>17.1f}")
    lines.append(f"{'total':<8} {sum(net.sizes):>8} {act.total_spikes:>17.1f} {act.total_synops:>17.1f}")
    return "\n".join(lines), {"spikes_per_inference": dict(zip(names, act.spikes.tolist())),
                              "synops_per_inference": dict(zip(names, act.synops.tolist())),
                              "total_spikes": act.total_spikes, "total_synops": act.total_synops}


def say_to(progress: bool):
    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)
    return say


CALIBRATION_VAL_SAMPLES = 3000  # validation samples the threshold calibration simulates


def export_run(run_dir: Path, steps: Optional[int] = None, target: str = "lava",
               weight_bits: Optional[int] = None,
               calibration_samples: Optional[int] = CALIBRATION_VAL_SAMPLES,
               progress: bool = False) -> str:
    """Quantize + convert a trained run; add the integer network to its bundle.

    The bundle is written in format version 2 (a version-1 run is upgraded, atomically:
    the trained arrays are renamed, never changed). Conversion handles chains (MLPs);
    another graph is refused with a clear error.

    Weights are quantized to ``weight_bits``, by default the width the run was
    trained and budgeted for (``train --weight-bits``, manifest
    ``training.weight_bits``), else the profile's default: the exported
    network always fits the memory the fit check measured. The new bundle
    passes every load check before it is written (the old one stays
    otherwise).
    """
    from deepr_neuro.simulate.backends import get_backend
    from deepr_neuro.convert.conversion import convert
    from deepr_neuro.convert.calibration import calibrate
    from deepr_neuro.convert.accuracy import quantized_ann_accuracy
    from deepr_neuro.hardware.chip_format import ChipFormat
    from deepr_neuro.store.codec import chain_cores, float_projections_from_arrays, integer_graph_to_arrays
    from deepr_neuro.hardware.profile import HardwareProfile
    from deepr_neuro.convert.quantize import float_accuracy

    run_dir = Path(run_dir)
    given_steps = steps
    steps = DEFAULT_STEPS if steps is None else check_steps(steps)
    if calibration_samples is not None:
        check_samples(calibration_samples, "--calibration-samples")
    if target != "lava":
        raise ConfigError(f"--to: unknown deployment target {str(target)[:40]!r}; the one target is 'lava'")
    manifest, arrays = load_bundle(run_dir, need_fit=True, for_export=True)
    if is_recurrent(manifest):
        from deepr_neuro.convert.recurrent import export_recurrent
        _no_steps(given_steps, run_dir)
        return export_recurrent(run_dir, manifest, arrays, weight_bits=weight_bits, target=target, say=say_to(progress))
    profile = HardwareProfile.from_dict(manifest["profile"], source=manifest.get("profile_path") or "manifest")
    if weight_bits is None:
        weight_bits = manifest["training"].get("weight_bits")
    if weight_bits is not None and weight_bits not in profile.weight_bits_allowed:
        raise ConfigError(f"weight_bits: {weight_bits}-bit weights are not offered by the profile "
                          f"(weight_bits_allowed: {profile.weight_bits_allowed})")

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    graph = manifest["graph"]
    names = [p["name"] for p in graph["populations"]]
    chain = len(graph["projections"]) == len(names) - 1 and graph["readout"] == names[-1] and all(
        q["pre"] == names[i] and q["post"] == names[i + 1] for i, q in enumerate(graph["projections"]))
    if not chain:
        raise ConfigError(f"{run_dir}: export converts feed-forward chains (MLPs); this bundle's graph has "
                          "recurrent or skip projections, which the conversion does not handle yet")
    data = run_dataset(manifest)
    layers = float_projections_from_arrays(arrays, graph)
    rng = np.random.default_rng(0)
    n_cal = min(CALIBRATION_SAMPLES, len(data.y_train))
    calib_idx = np.sort(rng.choice(len(data.y_train), n_cal, replace=False))
    calib = data.x_train[calib_idx]
    net, snn = convert(layers, calib, profile=profile, steps=steps, num_weight_bits=weight_bits,
                       names=[q["name"] for q in graph["projections"]])
    # Threshold / output-bias calibration on held-out data, never the test set: the
    # validation split, topped up with training images when it is smaller than
    # ``calibration_samples`` (digits' 143 validation images over-fit the search:
    # test SNN 94.7 % on them alone, 96.1 % topped up to the training set).
    x_cal, y_cal = data.x_val, data.y_val
    want = calibration_samples if calibration_samples is not None else max(len(data.y_val), 1)
    extra = min(max(0, want - len(data.y_val)), len(data.y_train))
    cal_source = f"validation set ({len(data.y_val)} samples)"
    if extra:
        idx = np.sort(np.random.default_rng(1).choice(len(data.y_train), extra, replace=False))
        x_cal = np.concatenate([data.x_val, data.x_train[idx]])
        y_cal = np.concatenate([data.y_val, data.y_train[idx]])
        cal_source += f" + {extra} training samples"
    fmt = ChipFormat.from_profile(profile, num_weight_bits=weight_bits)
    say(f"export: calibrating thresholds on {min(len(y_cal), calibration_samples or len(y_cal))} samples "
        f"x {steps} steps (Ctrl-C stops; the bundle is unchanged until the end)")
    t_cal = time.perf_counter()
    net, cal_info = calibrate(net, x_cal, y_cal, steps, fmt=fmt, max_samples=calibration_samples)
    cal_info = dict(cal_info, data=cal_source, seconds=time.perf_counter() - t_cal)
    snn = dict(snn, calibration=cal_info)
    say(f"export: simulating the {len(data.y_test)} test samples x {steps} steps")
    t0 = time.perf_counter()
    result = get_backend("emulator").run(net, data.x_test, steps)
    t_sim = time.perf_counter() - t0
    acc = {
        "float_val": float_accuracy(layers, data.x_val, data.y_val) if len(data.y_val) else None,
        "float_test": float_accuracy(layers, data.x_test, data.y_test),
        "quantized_test": quantized_ann_accuracy(net, data.x_test, data.y_test),
        "snn_test": float(np.mean(result.predictions() == data.y_test)),
    }
    act_text, act = activity_table(net, result)
    snn = dict(snn, steps_per_sample=steps, target=target,
               readout="class = output neuron with most spikes over all steps; ties go to the lowest index",
               accuracy=acc, activity=act, emulator_seconds_test_set=t_sim)
    new_manifest = {**manifest, "snn": snn}
    new_arrays = {**arrays, **integer_graph_to_arrays(named_graph(net, graph, chain_cores(graph, arrays)))}
    check_bundle(run_dir, new_manifest, new_arrays, need_fit=True)
    save_bundle(run_dir, new_manifest, new_arrays)
    lines = [f"exported {run_dir} for {target}: {len(net.layers)} Sparse+LIF layers, "
             f"{snn.get('num_weight_bits', net.layers[0].num_weight_bits)}-bit weights, {steps} steps per sample",
             f"{'accuracy on ' + data.name + ' test set':<40} {'':>3}",
             f"  float ANN        {100 * acc['float_test']:6.2f} %",
             f"  quantized ANN    {100 * acc['quantized_test']:6.2f} %",
             f"  SNN (emulator)   {100 * acc['snn_test']:6.2f} %   ({len(data.y_test)} samples in {t_sim:.1f} s)",
             "", act_text]
    return "\n".join(lines)


def named_graph(net, graph_block: Dict, cores):
    """The graph of a converted chain, with the bundle's population names and cores."""
    from dataclasses import replace

    from deepr_neuro.network.integer_network import chain_to_graph

    g = chain_to_graph(net, cores)
    names = [p["name"] for p in graph_block["populations"]]
    pops = tuple(replace(p, name=n) for p, n in zip(g.populations, names))
    projs = tuple(replace(q, pre=names[i], post=names[i + 1]) for i, q in enumerate(g.projections))
    return replace(g, populations=pops, projections=projs, readout=graph_block["readout"])


def simulate_run(run_dir: Path, backend: str = "emulator", samples: Optional[int] = None,
                 steps: Optional[int] = None, as_json: bool = False) -> Tuple[str, bool]:
    """Run the exported network on the first ``samples`` test samples."""
    from deepr_neuro.simulate.backends import get_backend

    run_dir = Path(run_dir)
    if samples is not None:
        check_samples(samples)
    if steps is not None:
        check_steps(steps)
    manifest, _, net = load_integer_network(run_dir)
    if is_recurrent(manifest):
        return simulate_recurrent(run_dir, manifest, net, backend, samples, steps, as_json)
    data = run_dataset(manifest)
    steps = check_steps(steps if steps is not None else manifest["snn"]["steps_per_sample"])
    n = len(data.y_test) if samples is None else min(int(samples), len(data.y_test))
    if n < 1:
        raise DataError(f"data set {data.name!r}: the test set is empty; nothing to simulate")
    x, y = data.x_test[:n], data.y_test[:n]
    sim = get_backend(backend)
    t0 = time.perf_counter()
    result = sim.run(net, x, steps)
    seconds = time.perf_counter() - t0
    acc = float(np.mean(result.predictions() == y))
    act_text, act = activity_table(net, result)
    figures = {"backend": backend, "samples": n, "steps": steps, "accuracy": acc, "seconds": seconds,
               "seconds_per_sample": seconds / max(n, 1), **act}
    if as_json:
        return json.dumps(figures, indent=2), True
    text = (f"{backend}: {n} test samples x {steps} steps: accuracy {100 * acc:.2f} %, "
            f"{seconds:.2f} s ({1000 * seconds / max(n, 1):.2f} ms per sample)\n" + act_text)
    return text, True


def crosscheck_run(run_dir: Path, samples: int = 20, steps: Optional[int] = None,
                   backends: Optional[List[str]] = None, as_json: bool = False) -> Tuple[str, bool]:
    """Emulator vs Lava vs Brian2 (integer and float) on the same test samples."""
    from deepr_neuro.simulate.crosscheck import crosscheck

    run_dir = Path(run_dir)
    check_samples(samples)
    if steps is not None:
        check_steps(steps)
    manifest, _, net = load_integer_network(run_dir)
    if is_recurrent(manifest):
        return crosscheck_recurrent(run_dir, manifest, net, samples, steps, backends, as_json)
    data = run_dataset(manifest)
    steps = check_steps(steps if steps is not None else manifest["snn"]["steps_per_sample"])
    n = min(int(samples), len(data.y_test))
    if n < 1:
        raise DataError(f"data set {data.name!r}: the test set is empty; nothing to compare")
    report = crosscheck(net, data.x_test[:n], data.y_test[:n], steps, backends=backends or None)
    if as_json:
        return json.dumps(report.to_json(), indent=2), report.integer_backends_agree
    return report.to_table(), report.integer_backends_agree


def _no_steps(steps, run_dir) -> None:
    if steps is not None:
        raise ConfigError(f"--steps: {run_dir} is a recurrent run; each sample runs its own frames x "
                          "steps_per_frame steps (the bundle's encoding), so --steps is not taken")


def simulate_recurrent(run_dir: Path, manifest: Dict, graph, backend: str, samples: Optional[int],
                       steps: Optional[int], as_json: bool) -> Tuple[str, bool]:
    """The first ``samples`` test sequences through a backend: each sample its own n*S steps,
    batches sorted by length; class = largest final v of the readout."""
    from deepr_neuro.convert.recurrent import activity, load_run_sequences, run_sequences
    from deepr_neuro.simulate.backends import get_backend

    _no_steps(steps, run_dir)
    data = load_run_sequences(manifest)
    n = len(data.y_test) if samples is None else min(int(samples), len(data.y_test))
    if n < 1:
        raise DataError(f"data set {data.name!r}: the test set is empty; nothing to simulate")
    sim = get_backend(backend)
    S = int(graph.encoding.steps_per_frame)
    t0 = time.perf_counter()
    v, counts, _, _ = run_sequences(sim, graph, data.x_test[:n], data.len_test[:n])
    seconds = time.perf_counter() - t0
    acc = float(np.mean(np.argmax(v, axis=1) == data.y_test[:n]))
    act = activity(graph, counts, data.len_test[:n] * S)
    figures = {"backend": backend, "samples": n, "steps_per_frame": S, "readout": "final_v",
               "accuracy": acc, "seconds": seconds, "seconds_per_sample": seconds / n, **act}
    if as_json:
        return json.dumps(figures, indent=2), True
    lines = [f"{backend}: {n} test sequences x (frames x {S} steps): accuracy {100 * acc:.2f} %, "
             f"{seconds:.2f} s ({1000 * seconds / n:.2f} ms per sample)",
             f"{'population':<10} {'neurons':>8} {'spikes/inference':>17} {'synops/inference':>17}"]
    for p in graph.populations:
        lines.append(f"{p.name:<10} {p.n:>8} {act['spikes_per_inference'][p.name]:>17.1f} "
                     f"{act['synops_per_inference'][p.name]:>17.1f}")
    return "\n".join(lines), True


def crosscheck_recurrent(run_dir: Path, manifest: Dict, graph, samples: int, steps: Optional[int],
                         backends, as_json: bool) -> Tuple[str, bool]:
    """Every backend on the first ``samples`` test sequences, one batch of max(n_i)*S steps:
    identical spikes in every population and step and identical final v across integer backends."""
    from deepr_neuro.convert.recurrent import load_run_sequences
    from deepr_neuro.simulate.crosscheck import DEFAULT_BACKENDS, crosscheck

    _no_steps(steps, run_dir)
    data = load_run_sequences(manifest)
    n = min(int(samples), len(data.y_test))
    if n < 1:
        raise DataError(f"data set {data.name!r}: the test set is empty; nothing to compare")
    S = int(graph.encoding.steps_per_frame)
    L = data.len_test[:n].astype(np.int64)
    T = int(L.max())
    spikes = graph.encoding.encode(data.x_test[:n, :T], L)
    report = crosscheck(graph, spikes, data.y_test[:n], T * S, backends=backends or DEFAULT_BACKENDS,
                        n_steps=L * S)
    if as_json:
        return json.dumps(report.to_json(), indent=2), report.integer_backends_agree
    return report.to_table(), report.integer_backends_agree
