"""Command line: ``deepr-neuro profiles|train|report|export|import|estimate|simulate|crosscheck|sweep|plot``.

Every user mistake ends as one ``error:`` line naming the file, field and fix
(exit status 2), never a traceback. Lava and Brian2 are imported only by the
commands that run them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from deepr_neuro import __version__
from deepr_neuro.errors import ConfigError, DeeprError


# The training flags of train and sweep, listed once: (setting, help). A setting is a
# TrainingSpec field (its type and choices come from there) or a run setting of
# RUN_FLAG_TYPES; TrainingSpec fields and "dataset" override the model spec.
TRAINING_FLAGS = (
    ("dataset", "digits | fashion-mnist | mnist (default: the spec's)"),
    ("data_dir", "directory with IDX files (mnist; fashion-mnist elsewhere than Debian's)"),
    ("epochs", None),
    ("batch_size", None),
    ("lr", "initial learning rate"),
    ("lr_decay", "learning rate factor per epoch"),
    ("optimizer", None),
    ("method", "DEEP R variant, or a baseline: dense, fixed-sparse, prune-retrain, l1"),
    ("l1_alpha", "L1 strength of the l1 baseline"),
    ("dense_lr", "learning rate of dense, prune-retrain and l1 (default: spec's)"),
    ("qat_epochs", "train the last N epochs with quantized weights in the forward pass "
                   "(straight-through; budgets still enforced)"),
    ("prune_epoch_fraction", "prune-retrain: share of epochs trained dense before pruning"),
    ("alpha", "L1 coefficient on active connections"),
    ("noise", "noise scale sigma (temperature T = lr sigma^2 / 2)"),
    ("theta_min", "soft-DEEP R clip (default: reference rule of thumb)"),
    ("seed", None),
    ("val_fraction", "share of training data held out for validation"),
    ("connectivity", "whole network's fraction of connections; scales the spec's per-layer targets "
                     "(0.0133 = the paper's LeNet budgets, 1.0 = dense)"),
    ("weight_bits", "weight width for the memory budget (default: profile's)"),
)
RUN_FLAG_TYPES = {"dataset": str, "data_dir": str, "connectivity": float, "weight_bits": int}
# sweep takes these its own way (--methods, a base --seed, a list of --connectivity)
SWEEP_OWN_FLAGS = ("method", "seed", "connectivity")


def _spec_overrides(args, skip=()) -> dict:
    """The flags that override the model spec (None: not given, the spec's value stays)."""
    from deepr_neuro.training.model_spec import TrainingSpec

    return {name: getattr(args, name) for name, _ in TRAINING_FLAGS
            if (name in TrainingSpec.model_fields or name == "dataset") and name not in skip}


def _add_training_flags(p: argparse.ArgumentParser, skip=()) -> None:
    """One argparse option a TRAINING_FLAGS row: type or choices from TrainingSpec."""
    import typing

    from deepr_neuro.training.model_spec import TrainingSpec

    for name, help_text in TRAINING_FLAGS:
        if name in skip:
            continue
        kw = {} if help_text is None else {"help": help_text}
        if name in RUN_FLAG_TYPES:
            if RUN_FLAG_TYPES[name] is not str:
                kw["type"] = RUN_FLAG_TYPES[name]
        else:
            ann = TrainingSpec.model_fields[name].annotation
            if typing.get_origin(ann) is typing.Literal:
                kw["choices"] = list(typing.get_args(ann))
            else:
                kw["type"] = next(t for t in (int, float) if t is ann or t in typing.get_args(ann))
        p.add_argument("--" + name.replace("_", "-"), **kw)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, help="hardware profile YAML (e.g. hardware_profiles/loihi.yaml)")
    p.add_argument("--model", required=True, help="model spec YAML (e.g. models/digits_mlp.yaml)")
    p.add_argument("--out", required=True, help="run directory to write (e.g. runs/digits)")
    _add_training_flags(p)
    p.add_argument("--resume", action="store_true", help="continue the run directory's last checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run directory once the new run is complete "
                        "(only a deepr-neuro run is ever replaced)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_profiles(args) -> int:
    from deepr_neuro.hardware.profile import list_profiles, load_profile

    paths = list_profiles(args.dir)
    if not paths:
        print(f"no profiles in {args.dir}")
        return 1
    bad = 0
    print(f"{'profile':<28} {'cores':>6} {'neurons/core':>13} {'axons/core':>11} {'synapses/core @8b':>18}  status")
    for path in paths:
        try:
            p = load_profile(path)
            cap = p.synapse_capacity(weight_bits=None)
            print(f"{str(path):<28} {p.cores:>6} {p.neurons_per_core:>13} {p.input_axons_per_core:>11} "
                  f"{cap:>18}  ok")
        except DeeprError as e:
            bad += 1
            print(f"{str(path):<28} {'':>6} {'':>13} {'':>11} {'':>18}  INVALID\n    {e}")
    return 1 if bad else 0


def cmd_train(args) -> int:
    """Train under the run directory's lock (see rundir.py: a second process refuses at once)."""
    from deepr_neuro.store.rundir import DirLock, check_out_path

    check_out_path(Path(args.out))
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite: continue the run (--resume) or replace it "
                          "(--overwrite), not both")
    with DirLock(Path(args.out), what="run"):
        return _train_locked(args)


def _train_locked(args) -> int:
    from deepr_neuro.training.datasets import load_dataset
    from deepr_neuro.training.model_spec import check_model_fits_data, load_model_spec
    from deepr_neuro.hardware.profile import load_profile
    from deepr_neuro.hardware.report import core_report
    from deepr_neuro.store.bundle import load_bundle
    from deepr_neuro.store.rundir import Target
    from deepr_neuro.training.trainer import TrainSettings, build_plan, train

    profile = load_profile(args.profile)
    spec = load_model_spec(args.model)
    spec = spec.with_overrides(**_spec_overrides(args))
    settings = TrainSettings.from_spec(spec, data_dir=args.data_dir, connectivity=args.connectivity,
                                       weight_bits=args.weight_bits)
    out = Path(args.out)
    # everything is checked before the run directory is touched: an --overwrite that fails keeps the old run
    target = Target(out, overwrite=args.overwrite, resume=args.resume)
    args.replacing = target.replacing  # what a Ctrl-C leaves (main() says so)
    for note in target.notes:
        print(f"note: {out}: {note}", file=sys.stderr)
    build_plan(profile, spec, settings)  # a network that cannot fit must not cost the old run
    data = load_dataset(settings.dataset, data_dir=args.data_dir, val_fraction=settings.val_fraction,
                        seed=settings.seed)
    check_model_fits_data(spec, data)  # before the run directory is touched
    print(f"data: {data.name}: {len(data.y_train)} train / {len(data.y_val)} validation / "
          f"{len(data.y_test)} test samples, {data.n_features} features")

    from deepr_neuro.training.trainer import log_line

    def on_epoch(r, bar):
        log_line(f"epoch {r['epoch']:>3}  lr {r['lr']:.4g}  loss {r['train_loss']:.4f}  "
              f"val {100 * r['val_accuracy']:.2f} %  test {100 * r['test_accuracy']:.2f} %  "
              f"rewired {sum(r['rewired'])} {r['rewired']}  {r['seconds']:.1f} s "
              f"({100 * r['seconds_update_and_rewiring'] / max(r['seconds'], 1e-9):.0f} % update+rewiring)", bar)

    work = target.begin()  # out itself, or a sibling .NAME.new-PID while replacing an old run
    try:
        trainer = train(profile, spec, settings, data, work, resume=args.resume, progress=not args.no_progress,
                        profile_path=args.profile, spec_path=args.model, on_epoch=on_epoch)
    except BaseException:
        target.abort()  # the old run stays as it was
        raise
    target.commit()
    trainer.out_dir = out
    plan = trainer.plan
    print(f"mapped onto {plan.cores_used} of {plan.total_cores} cores; "
          f"{plan.total_budget} connections (budget per layer: {[lp.budget for lp in plan.layers]})")
    m = trainer.manifest()["metrics"]
    print(f"test accuracy {100 * m['test_accuracy']:.2f} % (validation {100 * m['val_accuracy']:.2f} %); "
          f"bundle written to {out}/")
    manifest, arrays = load_bundle(out)
    fit = core_report(manifest, arrays)
    print(fit.to_table())
    return 0 if fit.fits else 1  # the table's verdict is the exit status (as `report`)


def cmd_report(args) -> int:
    from deepr_neuro.store.bundle import load_bundle
    from deepr_neuro.hardware.report import core_report

    manifest, arrays = load_bundle(Path(args.run))
    result = core_report(manifest, arrays)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.to_table())
    return 0 if result.fits else 1


def _interrupted(command: str, run: str) -> int:
    """Ctrl-C in a deployment command: the bundle is untouched (writes are atomic)."""
    print(f"interrupted; {run} is unchanged; run `deepr-neuro {command} {run}` again", file=sys.stderr)
    return 130


def cmd_export(args) -> int:
    from deepr_neuro.pipeline import export_run
    from deepr_neuro.store.rundir import DirLock

    if args.to == "nir":
        from deepr_neuro.interop_pipeline import export_nir_cli
        return export_nir_cli(args)
    if args.out is not None:
        raise ConfigError("--out: only for --to nir (--to lava writes into the run directory)")
    try:
        # under the run's lock: an export never races a train --resume / --overwrite of the same run
        with DirLock(Path(args.run), what="run", flag="run"):
            summary = export_run(Path(args.run), steps=args.steps, target=args.to,
                                 calibration_samples=args.calibration_samples, progress=not args.no_progress)
    except KeyboardInterrupt:
        return _interrupted("export", args.run)
    print(summary)
    return 0


def cmd_import(args) -> int:
    from deepr_neuro.interop_pipeline import import_nir_file

    text, fits = import_nir_file(Path(args.file), args.profile, as_json=args.json)
    print(text)
    return 0 if fits else 1


def cmd_estimate(args) -> int:
    from deepr_neuro.interop_pipeline import estimate_run

    try:
        print(estimate_run(Path(args.run), steps=args.steps, samples=args.samples, as_json=args.json,
                           profile_path=args.profile))
    except KeyboardInterrupt:
        return _interrupted("estimate", args.run)
    return 0


def cmd_simulate(args) -> int:
    from deepr_neuro.pipeline import simulate_run

    try:
        text, ok = simulate_run(Path(args.run), backend=args.backend, samples=args.samples, steps=args.steps,
                                as_json=args.json)
    except KeyboardInterrupt:
        return _interrupted("simulate", args.run)
    print(text)
    return 0 if ok else 1


def cmd_crosscheck(args) -> int:
    from deepr_neuro.pipeline import crosscheck_run

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    try:
        text, agree = crosscheck_run(Path(args.run), samples=args.samples, steps=args.steps, backends=backends,
                                     as_json=args.json)
    except KeyboardInterrupt:
        return _interrupted("crosscheck", args.run)
    print(text)
    return 0 if agree else 1


def cmd_sweep(args) -> int:
    from deepr_neuro.experiments.sweep import SweepConfig, parse_float_list, parse_name_list, run_sweep

    overrides = {k: v for k, v in _spec_overrides(args, skip=SWEEP_OWN_FLAGS).items() if v is not None}
    config = SweepConfig(profile_path=args.profile, model_path=args.model, out=args.out,
                         methods=parse_name_list(args.methods),
                         connectivities=parse_float_list(args.connectivity), seeds=args.seeds,
                         base_seed=args.seed, overrides=overrides, data_dir=args.data_dir,
                         weight_bits=args.weight_bits)
    try:
        outcome = run_sweep(config, workers=args.workers, scheduler=args.scheduler,
                            progress=not args.no_progress, overwrite=args.overwrite)
    except KeyboardInterrupt:
        if args.overwrite:
            print(f"interrupted; a sweep that was in {args.out} before is untouched (the unfinished new one "
                  "was discarded)", file=sys.stderr)
        else:
            print(f"interrupted; run the same command again to continue the sweep (finished cells are kept in "
                  f"{args.out}/results/, cells in flight resume from their checkpoints)", file=sys.stderr)
        return 130
    from deepr_neuro.store.sweep_layout import SUMMARY_MD

    print((Path(args.out) / SUMMARY_MD).read_text(), end="")
    print(f"{len(outcome.ran)} cells trained now, {len(outcome.reused)} already done, "
          f"{len(outcome.skipped)} skipped now, {len(outcome.failed)} failed; results in {args.out}/results/, "
          f"plots: deepr-neuro plot {args.out}")
    if outcome.failed:
        print("failed cells (run the same command again to retry them): " + ", ".join(outcome.failed),
              file=sys.stderr)
    return 0 if outcome.ok else 1


def cmd_plot(args) -> int:
    from deepr_neuro.experiments.plots import plot_sweep

    written = plot_sweep(Path(args.sweep), out_dir=Path(args.to) if args.to else None,
                         budget_connectivity=args.budget_connectivity)
    for path in written:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from deepr_neuro.store.bundle_check import MAX_STEPS

    parser = argparse.ArgumentParser(
        prog="deepr-neuro",
        description="Train very sparse networks with DEEP R under neuromorphic chip budgets; "
                    "deploy to Lava, cross-check in Brian2.")
    parser.add_argument("--version", action="version", version=f"deepr-neuro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profiles", help="list and validate the shipped hardware profiles")
    p.add_argument("--dir", default="hardware_profiles", help="folder of profile YAML files")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("train", help="train with DEEP R under the profile's per-core budgets")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("report", help="per-core budget table of a run (exit 1 if it does not fit)")
    p.add_argument("run", help="run directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="quantize and convert a run to an integer spiking network")
    p.add_argument("run")
    p.add_argument("--to", default="lava", choices=["lava", "nir"],
                   help="deployment target: lava (the run's integer bundle) or nir (a NIR file, see --out)")
    p.add_argument("--out", default=None, help="--to nir: file to write (default RUN/network.nir)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"time steps per sample, 1..{MAX_STEPS} (default 100)")
    p.add_argument("--calibration-samples", type=int, default=3000,
                   help="validation samples (>= 1) simulated to calibrate thresholds (more: slower, steadier)")
    p.add_argument("--no-progress", action="store_true", help="no progress messages")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="map a NIR file onto a profile's chip and check every core's budget")
    p.add_argument("file", help="NIR file (nir.write, nir 1.0.x)")
    p.add_argument("--profile", required=True, help="hardware profile YAML")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("estimate", help="energy, latency and NeuroBench metrics per inference (estimates)")
    p.add_argument("run")
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="steps per sample to tabulate, each 1..%d (default 20 50 100 200)" % MAX_STEPS)
    p.add_argument("--samples", type=int, default=None, help="first N >= 1 test samples (default: all)")
    p.add_argument("--profile", default=None,
                   help="profile YAML with the energy block (default: the run's own profile)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("simulate", help="run the exported network on the test set")
    p.add_argument("run")
    p.add_argument("--backend", default="emulator", choices=["emulator", "lava", "brian2", "brian2-float"])
    p.add_argument("--samples", type=int, default=None, help="first N >= 1 test samples (default: all)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"override time steps per sample, 1..{MAX_STEPS} (default: the export's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("crosscheck", help="emulator vs Lava vs Brian2 on the same samples")
    p.add_argument("run")
    p.add_argument("--samples", type=int, default=20, help="first N >= 1 test samples (default 20)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"time steps per sample, 1..{MAX_STEPS} (default: the export's)")
    p.add_argument("--backends", help="comma-separated subset, e.g. emulator,brian2,brian2-float "
                                      "(default: emulator,lava,brian2,brian2-float)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_crosscheck)

    p = sub.add_parser("sweep", help="grid connectivity x method x seed, in parallel; resumable")
    p.add_argument("--profile", required=True, help="hardware profile YAML (e.g. hardware_profiles/loihi.yaml)")
    p.add_argument("--model", required=True, help="model spec YAML (e.g. models/lenet300_100.yaml)")
    p.add_argument("--out", required=True, help="sweep directory (a rerun continues it)")
    p.add_argument("--connectivity", required=True,
                   help="comma-separated whole-network fractions, e.g. 0.005,0.01,0.0133,0.02,0.05,0.1,1.0")
    p.add_argument("--methods", default="deepr",
                   help="comma-separated training methods, e.g. deepr,soft-deepr,global-deepr (default deepr)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per cell: base seed, base+1, ... (default 1)")
    p.add_argument("--seed", type=int, help="base seed (default: the spec's)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: all cores; 1 = in this process)")
    p.add_argument("--scheduler", help="Dask scheduler address tcp://HOST:PORT: run the cells on that cluster "
                                       "(workers need the same sweep directory path)")
    _add_training_flags(p, skip=SWEEP_OWN_FLAGS)
    p.add_argument("--overwrite", action="store_true",
                   help="start the sweep over; the old sweep directory is replaced once the new sweep is done "
                        "(only a deepr-neuro sweep is ever replaced)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("plot", help="PNG plots and a Markdown table of a sweep directory")
    p.add_argument("sweep", help="sweep directory (deepr-neuro sweep --out)")
    p.add_argument("--to", help="folder for the PNG files (default: SWEEP/plots)")
    p.add_argument("--budget-connectivity", type=float,
                   help="connectivity whose runs the per-core budget plot shows (default: the spec's own, "
                        "or the sparsest with results)")
    p.set_defaults(func=cmd_plot)
    return parser


def _interrupted_message(args) -> str:
    """What survives a Ctrl-C depends on the command (only train has --resume)."""
    if args.command == "train":
        if getattr(args, "replacing", False):
            return (f"interrupted; the old run in {args.out} is untouched (the unfinished new one was "
                    "discarded); run the same command again to replace it")
        return "interrupted; continue the run from its last checkpoint with the same command plus --resume"
    if args.command == "sweep":
        return f"interrupted; run the same command again (the sweep in {args.out} keeps its finished cells)"
    return "interrupted; run the command again"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeeprError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted_message(args), file=sys.stderr)
        return 130
    except OSError as e:  # unreadable file, permission denied, disk full, read-only directory
        where = f"{_cut(e.filename)}: " if e.filename else ""
        reason = e.strerror or str(e) or type(e).__name__
        print(f"error: {where}{_cut(reason)} ({_errno_name(e)}); files that were there before are kept; "
              "fix the file's permissions or free space and run the command again", file=sys.stderr)
        return 2


def _cut(value, n: int = 300) -> str:
    text = str(value)
    return text if len(text) <= n else text[:n] + "..."


def _errno_name(e: OSError) -> str:
    import errno

    return errno.errorcode.get(e.errno, "OSError") if e.errno is not None else type(e).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
