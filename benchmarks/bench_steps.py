"""Latency vs accuracy: SNN test accuracy of an exported run for 10..200 steps per sample.

    .venv/bin/python benchmarks/bench_steps.py RUN_DIR [--steps-list 10,20,50,100,200] [--png out.png]

Runs the exported (calibrated) integer network on the whole test set with the
bit-exact NumPy emulator for each number of steps; prints a Markdown table and
writes a PNG plot (default RUN_DIR/steps_accuracy.png).
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepr_neuro.convert.accuracy import steps_accuracy_table  # noqa: E402
from deepr_neuro.pipeline import load_integer_network, run_dataset  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--steps-list", default="10,20,50,100,200")
    ap.add_argument("--png", help="plot file (default RUN/steps_accuracy.png)")
    args = ap.parse_args()
    manifest, _, net = load_integer_network(Path(args.run))
    data = run_dataset(manifest)
    steps = [int(s) for s in args.steps_list.split(",")]
    t0 = time.perf_counter()
    rows = steps_accuracy_table(net, data.x_test, data.y_test, steps)
    acc = manifest["snn"]["accuracy"]
    print(f"{data.name}: float {100 * acc['float_test']:.2f} %, quantized {100 * acc['quantized_test']:.2f} %, "
          f"network calibrated for {manifest['snn']['steps_per_sample']} steps "
          f"({len(data.y_test)} test samples, {time.perf_counter() - t0:.1f} s)\n")
    print("| steps per sample | SNN test accuracy | output spikes per sample |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| {r['steps']} | {100 * r['accuracy']:.2f} % | {r['mean_output_spikes']:.1f} |")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=120)
    ax.plot([r["steps"] for r in rows], [100 * r["accuracy"] for r in rows], "o-", label="SNN (emulator)")
    ax.axhline(100 * acc["float_test"], color="gray", ls="--", label="float ANN")
    ax.set_xscale("log")
    ax.set_xlabel("time steps per sample")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{data.name}: latency vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(args.png or Path(args.run) / "steps_accuracy.png")
    fig.savefig(out)
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
