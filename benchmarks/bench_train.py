"""Issue-2 figures: LeNet-300-100 at the paper's budget on Fashion-MNIST, per-core budgets on Loihi.

Prints test/validation accuracy, seconds per epoch, the share of step time in
the DEEP R update + rewiring, and peak memory (max RSS of this process).

    .venv/bin/python benchmarks/bench_train.py                 # the spec's defaults
    .venv/bin/python benchmarks/bench_train.py --epochs 1      # speed only
    .venv/bin/python benchmarks/bench_train.py --json out.json
"""
import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepr_neuro.training.datasets import load_dataset  # noqa: E402
from deepr_neuro.training.model_spec import load_model_spec  # noqa: E402
from deepr_neuro.hardware.profile import load_profile  # noqa: E402
from deepr_neuro.training.trainer import TrainSettings, check_invariants, train  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=str(ROOT / "hardware_profiles/loihi.yaml"))
    ap.add_argument("--model", default=str(ROOT / "models/lenet300_100.yaml"))
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--json", help="write the figures to this JSON file")
    args = ap.parse_args()

    profile = load_profile(args.profile)
    spec = load_model_spec(args.model).with_overrides(epochs=args.epochs, seed=args.seed, dataset=args.dataset)
    settings = TrainSettings.from_spec(spec)
    t0 = time.perf_counter()
    data = load_dataset(settings.dataset, val_fraction=settings.val_fraction, seed=settings.seed)
    t_load = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        def show(r, bar):
            print(f"epoch {r['epoch']:>2}: {r['seconds']:.2f} s, update+rewiring "
                  f"{100 * r['seconds_update_and_rewiring'] / r['seconds']:.0f} %, rewired {r['rewired']}, "
                  f"val {100 * r['val_accuracy']:.2f} %, test {100 * r['test_accuracy']:.2f} %", flush=True)
        tr = train(profile, spec, settings, data, Path(tmp) / "run", progress=False, on_epoch=show)
        check_invariants(tr.deepr, tr.plan, settings.method)
    hist = tr.history
    secs = [h["seconds"] for h in hist]
    share = sum(h["seconds_update_and_rewiring"] for h in hist) / sum(secs)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    budgets = [[c.budget for c in lp.cores] for lp in tr.plan.layers]
    figures = {
        "dataset": data.name, "settings": vars(settings), "per_core_budgets": budgets,
        "connections": sum(sum(b) for b in budgets),
        "test_accuracy": hist[-1]["test_accuracy"], "val_accuracy": hist[-1]["val_accuracy"],
        "seconds_per_epoch_mean": sum(secs) / len(secs), "seconds_per_epoch_min": min(secs),
        "update_and_rewiring_share": share, "peak_rss_mb": peak_mb, "data_load_seconds": t_load,
    }
    print(f"\n{data.name}, {spec.name}, {settings.method}/{settings.optimizer}, budgets per core {budgets}")
    print(f"test accuracy {100 * figures['test_accuracy']:.2f} % (validation {100 * figures['val_accuracy']:.2f} %)")
    print(f"seconds per epoch: mean {figures['seconds_per_epoch_mean']:.2f}, min {min(secs):.2f}; "
          f"update+rewiring share {100 * share:.0f} %; peak RSS {peak_mb:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
