"""Deploying a trained recurrent spiking network: float vs deployed accuracy, emulator vs Lava speed.

Trains H6's recurrent network (``training.recurrent``: ``--n-rec`` CUBA LIF,
dense or at ``--connectivity`` fixed random masks, ``--epochs`` on spoken
digits, 4 steps per frame), writes it as a bundle per the R1/R2 contract
(tests/recurrent_bundle.py), exports it (``pipeline.export_run``: spike-source
input, final-v readout, 8-bit weights) and reports

* float, quantized-float and deployed (integer, emulator) accuracy on the FULL
  spoken-digits test set (600 sequences);
* emulator vs Lava fixed_pt wall time on the same ``--lava-samples`` test
  sequences of the trained network (ratio in one run; Lava's first sample
  includes its compile), and that both give identical spikes in every
  population and step and identical final v (and Brian2 integer on
  ``--brian2-samples``).

    .venv/bin/python benchmarks/bench_recurrent_deploy.py [--n-rec 128] [--epochs 10]
        [--lava-samples 10] [--brian2-samples 50] [--run-dir DIR]
    .venv/bin/python benchmarks/bench_recurrent_deploy.py --trained RUN [RUN ...]

``--trained``: instead of training here, take runs trained by ``deepr-neuro
train`` or ``sweep`` (e.g. the cells of ``benchmarks/results/sweep_spoken_digits_v4``),
export a copy of each (the run itself is left as it is) and report the same figures.

Prints figures only; no assertion.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from recurrent_bundle import write_recurrent_bundle  # noqa: E402

from deepr_neuro.convert.recurrent import run_sequences  # noqa: E402
from deepr_neuro.network.frame_encoding import FrameEncoding  # noqa: E402
from deepr_neuro.pipeline import export_run, load_integer_graph  # noqa: E402
from deepr_neuro.simulate.backends import get_backend  # noqa: E402
from deepr_neuro.simulate.crosscheck import crosscheck  # noqa: E402
from deepr_neuro.store.bundle import read_manifest  # noqa: E402
from deepr_neuro.training.recurrent import LifParams, RecurrentModel, RecurrentSpec, train_recurrent  # noqa: E402
from deepr_neuro.training.sequences import load_sequences  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-rec", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--connectivity", type=float, default=None, help="fixed random masks (default dense)")
    ap.add_argument("--steps-per-frame", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lava-samples", type=int, default=10)
    ap.add_argument("--brian2-samples", type=int, default=50)
    ap.add_argument("--run-dir", default=None, help="keep the bundle here (default: a temporary directory)")
    ap.add_argument("--plot", default=None, help="write a figure (PNG): accuracies and emulator vs Lava time")
    ap.add_argument("--trained", nargs="+", default=None, metavar="RUN",
                    help="trained recurrent runs to export (copies) instead of training one here")
    args = ap.parse_args(argv)
    if args.trained:
        return deploy_trained([Path(r) for r in args.trained], args)

    data = load_sequences("spoken-digits", seed=args.seed)
    enc = FrameEncoding(steps_per_frame=args.steps_per_frame, scale=2.0, signed=True)
    spec = RecurrentSpec(n_in=enc.n_channels(data.n_features), n_rec=args.n_rec, n_out=data.n_classes,
                         encoding=enc, rec=LifParams.from_tau(4.0, 16.0))
    masks = None
    if args.connectivity is not None:
        rng = np.random.default_rng(args.seed)
        masks = {k: (rng.random(m.shape) < args.connectivity) & m for k, m in spec.potential().items()}
    model = RecurrentModel.init(spec, seed=args.seed, in_scale=3.0, rec_scale=1.0, out_scale=0.1, masks=masks)
    t0 = time.perf_counter()
    res = train_recurrent(model, data, epochs=args.epochs, lr=3e-3, batch_size=32, seed=args.seed,
                          log=lambda s: print("  " + s, flush=True))
    print(f"trained {args.n_rec} LIF, {args.epochs} epochs in {time.perf_counter() - t0:.1f} s "
          f"(best epoch {res.best_epoch}): float test {100 * res.test_accuracy:.2f} %")

    run = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="rsnn_")) / "run"
    write_recurrent_bundle(run, model, data, rec_cores=4, seed=args.seed)
    print(export_run(run))
    acc = read_manifest(run)["snn"]["accuracy"]
    _, _, g = load_integer_graph(run)
    figures = {**timings(g, enc, data, args), "n_rec": args.n_rec, "epochs": args.epochs,
               "connectivity": args.connectivity, "accuracy_full_test_set": acc,
               "deployed_minus_float_points": 100 * (acc["snn_test"] - acc["float_test"])}
    print(json.dumps(figures, indent=2))
    if args.plot:
        plot(figures, args.plot)
    return 0


def deploy_trained(runs, args) -> int:
    """Export a copy of each trained run; float vs deployed accuracy on the full test set, and
    emulator vs Lava (and Brian2) on the first run."""
    import shutil

    from deepr_neuro.errors import DeeprError
    from deepr_neuro.pipeline import is_recurrent

    for run in runs:  # every run readable and recurrent before anything is copied or exported
        try:
            if not is_recurrent(read_manifest(run)):
                raise DeeprError(f"{run}: not a recurrent run (kind: recurrent); this script deploys those")
        except (DeeprError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="rsnn_deploy_"))
    try:
        return _deploy_copies(runs, tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _deploy_copies(runs, tmp: Path, args) -> int:
    import shutil

    rows = []
    for i, run in enumerate(runs):
        copy = tmp / f"{i}_{run.name}"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.lock"))
        export_run(copy)
        acc = read_manifest(copy)["snn"]["accuracy"]
        row = {"run": str(run), "float_test": acc["float_test"], "snn_test": acc["snn_test"],
               "deployed_minus_float_points": 100 * (acc["snn_test"] - acc["float_test"])}
        rows.append(row)
        print(f"{run}: float {100 * acc['float_test']:.2f} % -> deployed {100 * acc['snn_test']:.2f} % "
              f"({row['deployed_minus_float_points']:+.2f} points)", flush=True)
    manifest = read_manifest(tmp / f"0_{runs[0].name}")
    e = manifest["recurrent"]["encoding"]
    enc = FrameEncoding(steps_per_frame=e["steps_per_frame"], scale=e["scale"], signed=e["signed"])
    _, _, g = load_integer_graph(tmp / f"0_{runs[0].name}")
    data = load_sequences(manifest["dataset"]["name"], seed=int(manifest["seed"]))
    figures = {"runs": rows, **timings(g, enc, data, args)}
    print(json.dumps(figures, indent=2))
    return 0


def timings(g, enc, data, args) -> dict:
    """Emulator vs Lava wall time on the first test sequences, and spike identity (+ Brian2)."""
    n = min(args.lava_samples, len(data.y_test))
    x, L = data.x_test[:n], data.len_test[:n]
    t0 = time.perf_counter()
    v_emu, _, _, _ = run_sequences(get_backend("emulator"), g, x, L, batch_size=1)
    t_emu1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    v_emu_b, _, _, _ = run_sequences(get_backend("emulator"), g, x, L)
    t_emu = time.perf_counter() - t0
    lava = get_backend("lava")
    t0 = time.perf_counter()
    v_lava, _, _, _ = run_sequences(lava, g, x, L, batch_size=n)
    t_lava = time.perf_counter() - t0
    steps = int(L.sum()) * enc.steps_per_frame
    T = int(L.max())
    spikes = enc.encode(x[:, :T], L)
    rep = crosscheck(g, spikes, data.y_test[:n], T * enc.steps_per_frame, backends=("emulator", "lava"),
                     n_steps=L * enc.steps_per_frame)
    nb = min(args.brian2_samples, len(data.y_test))
    Lb = data.len_test[:nb]
    Tb = int(Lb.max())
    rep_b2 = crosscheck(g, enc.encode(data.x_test[:nb, :Tb], Lb), data.y_test[:nb], Tb * enc.steps_per_frame,
                        backends=("emulator", "brian2"), n_steps=Lb * enc.steps_per_frame)
    return {
        "lava_samples": n, "lava_padded_steps": n * T * enc.steps_per_frame, "sample_steps": steps,
        "emulator_seconds_one_by_one": t_emu1, "emulator_seconds_batched": t_emu, "lava_seconds": t_lava,
        "lava_over_emulator_one_by_one": t_lava / t_emu1, "lava_over_emulator_batched": t_lava / t_emu,
        "lava_identical_spikes_and_final_v": rep.integer_backends_agree,
        "lava_same_final_v_as_emulator": bool(np.array_equal(v_lava, v_emu) and np.array_equal(v_emu, v_emu_b)),
        "brian2_samples": nb, "brian2_identical_spikes_and_final_v": rep_b2.integer_backends_agree,
        "brian2_seconds": rep_b2.runs["brian2"].seconds,
    }


def plot(f, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = f["accuracy_full_test_set"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = ["float", "quantized float", "deployed (emulator)"]
    vals = [100 * acc["float_test"], 100 * acc["quantized_test"], 100 * acc["snn_test"]]
    a.bar(names, vals, color=["#777", "#9ab", "#36a"])
    for i, v in enumerate(vals):
        a.text(i, v + 0.3, f"{v:.2f} %", ha="center", fontsize=8)
    a.set_ylim(min(vals) - 5, 100)
    a.set_ylabel("spoken digits test accuracy (%)")
    a.set_title(f"{f['n_rec']} recurrent LIF, " + ("dense" if f["connectivity"] is None
                                                    else f"{100 * f['connectivity']:.0f} % fixed masks"), fontsize=9)
    a.tick_params(axis="x", labelsize=8)
    t = [f["emulator_seconds_batched"], f["emulator_seconds_one_by_one"], f["lava_seconds"]]
    b.bar(["emulator\n(batched)", "emulator\n(one by one)", "Lava fixed_pt"], t, color=["#36a", "#69c", "#c63"])
    b.set_yscale("log")
    b.set_ylabel(f"seconds for {f['lava_samples']} test sequences")
    b.set_title(f"Lava / emulator: {f['lava_over_emulator_one_by_one']:.0f}x (one by one), "
                f"{f['lava_over_emulator_batched']:.0f}x (batched)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
