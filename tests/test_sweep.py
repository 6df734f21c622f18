"""Sweeps: grid expansion, resumability, skipped cells, summary statistics, plots,
local process pool and Dask cluster giving the same results as one process."""
import json
import shutil
from pathlib import Path

import pytest

from deepr_neuro.cli import main
from deepr_neuro.errors import ConfigError
from deepr_neuro.experiments.sweep import Cell, SweepConfig, cell_name, expand_grid, parse_float_list, run_sweep
from deepr_neuro.experiments.summary import load_results, summarize, summary_markdown

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits_mlp.yaml"
TINY = ROOT / "hardware_profiles" / "tiny_test.yaml"

METHODS = ["deepr", "soft-deepr", "dense"]
CONNS = [0.05, 1.0]


@pytest.fixture(scope="module")
def small_profile(tmp_path_factory):
    """tiny_test with half the synapses per core: digits_mlp fits at 5 %, not at 100 %."""
    text = TINY.read_text()
    text = text.replace("synapses_per_core: 2048", "synapses_per_core: 1024")
    text = text.replace("synapse_memory_bits_per_core: 65536", "synapse_memory_bits_per_core: 32768")
    path = tmp_path_factory.mktemp("profile") / "small.yaml"
    path.write_text(text)
    return path


def _config(profile, out, methods=METHODS, conns=CONNS, seeds=2, epochs=2):
    return SweepConfig(profile_path=str(profile), model_path=str(DIGITS), out=str(out), methods=list(methods),
                       connectivities=list(conns), seeds=seeds, overrides={"epochs": epochs})


@pytest.fixture(scope="module")
def swept(tmp_path_factory, small_profile):
    """One tiny sweep in this process: 12 cells, 4 trained (deepr, soft-deepr at 5 %, 2 seeds), 8 skipped."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    outcome = run_sweep(_config(small_profile, out), workers=1, progress=False)
    return out, outcome


def _mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}


def _copy(swept, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(swept[0], out)
    return out


# ------------------------------------------------------------------ grid
def test_expand_grid_is_seed_major_and_drops_duplicates():
    cells = expand_grid(["deepr", "l1"], [0.01, 1.0, 0.01], [3, 4])
    assert len(cells) == 2 * 2 * 2
    assert cells[0] == Cell("deepr", 0.01, 3) and cells[1] == Cell("l1", 0.01, 3)
    assert [c.seed for c in cells] == [3, 3, 3, 3, 4, 4, 4, 4]
    assert cells[2].name == "deepr_c1_s3"
    assert cell_name("soft-deepr", 0.0133, 0) == "soft-deepr_c0.0133_s0"
    assert len({c.name for c in cells}) == len(cells)


def test_grid_errors_name_the_flag():
    with pytest.raises(ConfigError, match="--connectivity"):
        expand_grid(["deepr"], [0.0], [0])
    with pytest.raises(ConfigError, match="--methods"):
        expand_grid([], [0.1], [0])
    with pytest.raises(ConfigError, match="--connectivity: 'x'"):
        parse_float_list("0.1,x")
    assert parse_float_list("0.005, 0.01,1.0") == [0.005, 0.01, 1.0]


def test_unknown_method_is_refused_before_anything_runs(tmp_path, small_profile):
    with pytest.raises(ConfigError, match="--methods: 'deepR'"):
        run_sweep(_config(small_profile, tmp_path / "o", methods=["deepR"]), workers=1, progress=False)
    assert not (tmp_path / "o" / "results").exists()


# ------------------------------------------------------------------ results and skipped cells
def test_sweep_writes_one_result_per_cell_and_skips_impossible_ones(swept):
    out, outcome = swept
    assert outcome.ok and len(outcome.cells) == 12
    assert sorted(outcome.ran) == sorted(f"{m}_c0.05_s{s}" for m in ("deepr", "soft-deepr") for s in (0, 1))
    assert len(outcome.skipped) == 8
    records = {r["cell"]: r for r in load_results(out)}
    assert len(records) == 12
    r = records["deepr_c0.05_s1"]
    assert r["status"] == "ok" and r["seed"] == 1 and r["method"] == "deepr" and r["connectivity"] == 0.05
    assert len(r["K"]) == 3 and sum(r["K"]) == r["connections"]  # deepr keeps exactly K
    assert len(r["history"]) == 2 and len(r["rewired_per_epoch"]) == 2 and 0 <= r["test_accuracy"] <= 1
    assert r["seconds"] > 0 and r["steps_per_epoch"] > 0
    assert (out / r["run_dir"] / "manifest.json").exists()  # a normal run directory with its bundle
    assert "only connectivity 1.0" in records["dense_c0.05_s0"]["reason"]
    assert records["deepr_c1_s0"]["status"] == "skipped"
    assert records["deepr_c1_s0"]["reason"].startswith("BudgetError") and "cores" in records["deepr_c1_s0"]["reason"]
    assert records["dense_c1_s0"]["reason"].startswith("BudgetError")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cells_done"] == 4 and summary["cells_skipped"] == 8
    md = (out / "summary.md").read_text()
    assert "| 5 % |" in md and "skipped [" in md and "BudgetError" in md


def test_rerun_runs_only_the_cell_whose_result_is_missing(swept, tmp_path, small_profile):
    out = _copy(swept, tmp_path)
    before = _mtimes(out)
    (out / "results" / "soft-deepr_c0.05_s1.json").unlink()
    shutil.rmtree(out / "cells" / "soft-deepr_c0.05_s1")
    outcome = run_sweep(_config(small_profile, out), workers=1, progress=False)
    assert outcome.ran == ["soft-deepr_c0.05_s1"] and outcome.skipped == []
    assert len(outcome.reused) == 11
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if k != "soft-deepr_c0.05_s1.json"} == \
        {k: v for k, v in before.items() if k != "soft-deepr_c0.05_s1.json"}
    old = {r["cell"]: r for r in load_results(swept[0])}["soft-deepr_c0.05_s1"]
    new = {r["cell"]: r for r in load_results(out)}["soft-deepr_c0.05_s1"]
    assert new["test_accuracy"] == old["test_accuracy"]  # seeded: the same run again
    # nothing missing: nothing runs
    again = run_sweep(_config(small_profile, out), workers=1, progress=False)
    assert again.ran == [] and len(again.reused) == 12 and _mtimes(out) == after


def test_cell_killed_in_flight_resumes_from_its_checkpoint(swept, tmp_path, small_profile):
    from deepr_neuro.experiments.sweep import _cell_objects, cell_task
    from deepr_neuro.training.datasets import load_dataset
    from deepr_neuro.training.trainer import train

    out = _copy(swept, tmp_path)
    cfg = _config(small_profile, out)
    name = "deepr_c0.05_s0"
    (out / "results" / f"{name}.json").unlink()
    shutil.rmtree(out / "cells" / name)
    # the sweep was killed after the cell's first epoch: a checkpoint, no bundle, no result
    task = cell_task(cfg, Cell("deepr", 0.05, 0))
    profile, spec, settings = _cell_objects(task)
    data = load_dataset("digits", val_fraction=settings.val_fraction, seed=0)
    train(profile, spec, settings, data, out / "cells" / name, progress=False, stop_after_epochs=1)
    outcome = run_sweep(cfg, workers=1, progress=False)
    assert outcome.ran == [name]
    new = {r["cell"]: r for r in load_results(out)}[name]
    old = {r["cell"]: r for r in load_results(swept[0])}[name]
    assert new["resumed_from"] == 1
    assert new["test_accuracy"] == old["test_accuracy"]
    assert [h["train_loss"] for h in new["history"]] == [h["train_loss"] for h in old["history"]]


def test_finished_bundle_without_result_is_not_trained_again(swept, tmp_path, small_profile):
    out = _copy(swept, tmp_path)
    (out / "results" / "deepr_c0.05_s1.json").unlink()
    manifest = out / "cells" / "deepr_c0.05_s1" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    outcome = run_sweep(_config(small_profile, out), workers=1, progress=False)
    assert outcome.ran == ["deepr_c0.05_s1"]
    assert manifest.stat().st_mtime_ns == stamp
    assert {r["cell"]: r for r in load_results(out)}["deepr_c0.05_s1"]["resumed_from"] == "bundle"


def test_rerun_with_other_training_settings_is_refused(swept, tmp_path, small_profile):
    out = _copy(swept, tmp_path)
    with pytest.raises(ConfigError, match="epochs: 2 in the sweep vs 3 now"):
        run_sweep(_config(small_profile, out, epochs=3), workers=1, progress=False)


def test_a_sweep_written_before_a_setting_existed_continues_while_it_keeps_its_default(swept, tmp_path,
                                                                                        small_profile):
    """sweep.json from an older version lacks a newer setting (adam_per_connection): the same
    flags continue it; the setting at another value is refused as any other change."""
    out = _copy(swept, tmp_path)
    path = out / "sweep.json"
    rec = json.loads(path.read_text())
    del rec["settings"]["adam_per_connection"]
    path.write_text(json.dumps(rec))
    outcome = run_sweep(_config(small_profile, out), workers=1, progress=False)
    assert outcome.ran == [] and len(outcome.reused) == 12
    rec = json.loads(path.read_text())
    del rec["settings"]["adam_per_connection"]
    rec["settings"]["epochs"] = 99
    path.write_text(json.dumps(rec))
    with pytest.raises(ConfigError, match="epochs: 99 in the sweep vs 2 now"):
        run_sweep(_config(small_profile, out), workers=1, progress=False)


# ------------------------------------------------------------------ summary statistics
def test_summary_statistics_over_seeds():
    def rec(method, c, seed, acc, status="ok"):
        r = {"cell": cell_name(method, c, seed), "method": method, "connectivity": c, "seed": seed,
             "status": status, "reason": None if status == "ok" else "BudgetError: too big"}
        if status == "ok":
            r.update(test_accuracy=acc, val_accuracy=acc - 0.01, K=[10, 5], connections=15, fraction=c,
                     seconds=1.0, rewired_per_epoch=[[3, 1], [1, 0]])
        return r

    records = [rec("deepr", 0.1, 0, 0.80), rec("deepr", 0.1, 1, 0.90), rec("deepr", 0.1, 2, 0.85),
               rec("l1", 0.1, 0, 0.70), rec("dense", 0.1, 0, None, status="skipped")]
    s = summarize(records)
    rows = {(r["method"], r["connectivity"]): r for r in s["rows"]}
    t = rows[("deepr", 0.1)]["test_accuracy"]
    assert rows[("deepr", 0.1)]["n"] == 3
    assert t["mean"] == pytest.approx(0.85) and t["std"] == pytest.approx(0.05)  # sample std (ddof 1)
    assert t["min"] == 0.80 and t["max"] == 0.90
    assert rows[("l1", 0.1)]["test_accuracy"]["std"] is None  # one seed: no spread
    assert rows[("dense", 0.1)]["n"] == 0 and rows[("dense", 0.1)]["reason"].startswith("BudgetError")
    assert [r["method"] for r in s["rows"]] == ["dense", "deepr", "l1"]  # METHOD_ORDER
    md = summary_markdown(s)
    assert "85.00 ± 5.00 (3)" in md and "70.00 (1)" in md and "skipped [1]" in md
    assert "[1] BudgetError: too big" in md
    assert "diverged" not in md


def test_summary_flags_seeds_whose_training_diverged():
    def rec(seed, losses, acc):
        return {"cell": cell_name("deepr", 1.0, seed), "method": "deepr", "connectivity": 1.0, "seed": seed,
                "status": "ok", "reason": None, "test_accuracy": acc, "val_accuracy": acc, "K": [10],
                "connections": 10, "fraction": 1.0, "seconds": 1.0, "rewired_per_epoch": [[0]],
                "history": [{"epoch": e + 1, "train_loss": v} for e, v in enumerate(losses)]}

    s = summarize([rec(0, [2.0, 1.0], 0.85), rec(1, [2.0, float("nan")], 0.10), rec(2, [2.0, 0.9], 0.86)])
    assert s["rows"][0]["diverged_seeds"] == [1]
    md = summary_markdown(s)
    assert "(3) [1 diverged]" in md and "[N diverged]: in N of the seeds" in md


# ------------------------------------------------------------------ plots
def test_plot_writes_readable_pngs_and_the_table(swept, tmp_path):
    out = _copy(swept, tmp_path)
    (out / "summary.md").unlink()
    assert main(["plot", str(out)]) == 0
    for name in ("accuracy_vs_connectivity.png", "rewiring.png", "budget_use.png"):
        data = (out / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "| 5 % |" in (out / "summary.md").read_text()


def test_plot_refuses_a_directory_that_is_no_sweep(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no results/ folder" in capsys.readouterr().err


# ------------------------------------------------------------------ parallel paths
def _core(records):
    return {r["cell"]: (r["status"], r.get("test_accuracy"), r.get("K"),
                        [h["train_loss"] for h in r.get("history", [])]) for r in records}


def test_local_process_pool_gives_the_same_results(swept, tmp_path, small_profile):
    outcome = run_sweep(_config(small_profile, tmp_path / "pool"), workers=2, progress=False)
    assert outcome.ok and len(outcome.ran) == 4
    assert _core(load_results(tmp_path / "pool")) == _core(load_results(swept[0]))


def test_dask_local_cluster_gives_the_same_results(swept, tmp_path, small_profile):
    from dask.distributed import LocalCluster

    out = tmp_path / "dask"
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        outcome = run_sweep(_config(small_profile, out), scheduler=cluster.scheduler_address, progress=False)
        assert outcome.ok and len(outcome.ran) == 4 and len(outcome.skipped) == 8
        assert _core(load_results(out)) == _core(load_results(swept[0]))
        # resumable the same way: only the missing cell goes to the cluster
        (out / "results" / "deepr_c0.05_s0.json").unlink()
        shutil.rmtree(out / "cells" / "deepr_c0.05_s0")
        again = run_sweep(_config(small_profile, out), scheduler=cluster.scheduler_address, progress=False)
        assert again.ran == ["deepr_c0.05_s0"] and len(again.reused) == 11
    assert _core(load_results(out)) == _core(load_results(swept[0]))


# ------------------------------------------------------------------ command line
def test_cli_sweep_then_plot(tmp_path, small_profile, capsys):
    out = tmp_path / "cli"
    argv = ["sweep", "--profile", str(small_profile), "--model", str(DIGITS), "--connectivity", "0.05",
            "--methods", "deepr,fixed-sparse", "--epochs", "1", "--workers", "1", "--no-progress",
            "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| 5 % |" in text and "2 cells trained now" in text
    assert main(argv[:-2] + ["--out", str(out), "--epochs", "2"]) == 2  # other settings: refused
    assert "other settings" in capsys.readouterr().err
    assert main(["plot", str(out)]) == 0
