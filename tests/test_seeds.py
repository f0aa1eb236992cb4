"""Several seeds of one recipe: ``runner run RECIPE --seeds N`` and ``runner.run(..., seeds=N)`` run seeds 0..N-1 as
ordinary run folders side by side and report mean ± std of best and final val accuracy in ``seeds.json``."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.cli import app
from runner.engine.loop import seed_summary
from test_engine import write_recipe

NO_PICTURES = {"batch": False, "curves": False, "predictions": 0}


def tiny(tmp_path, imagefolder, **more) -> str:
    return write_recipe(tmp_path, imagefolder, epochs=1, pictures=NO_PICTURES,
                        dataset={"name": "imagefolder", "root": str(imagefolder), "batch_size": 4, "workers": 0,
                                 "augment": "none"}, **more)


def test_cli_seeds_writes_seeds_json_with_mean_and_std(tmp_path, imagefolder):
    result = CliRunner().invoke(app, ["run", tiny(tmp_path, imagefolder), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").glob("recipe-seeds-*")
    data = json.loads((folder / "seeds.json").read_text())
    assert data["seeds"] == [0, 1] and [r["seed"] for r in data["runs"]] == [0, 1]
    runs = sorted(p for p in folder.iterdir() if p.is_dir())
    assert [p.name.split("-")[1] for p in runs] == ["seed0", "seed1"]
    for run, row in zip(runs, data["runs"]):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["seed"] == row["seed"] and row["folder"] == str(run)
        assert json.loads((run / "recipe.yaml").read_text().split("seed: ")[1].split("\n")[0]) == row["seed"]
    best = [r["best_val_acc"] for r in data["runs"]]
    assert data["best_val_acc"]["mean"] == pytest.approx(statistics.fmean(best))
    assert data["best_val_acc"]["std"] == pytest.approx(statistics.stdev(best))
    assert data["final_val_acc"]["n"] == 2 and data["final_val_acc"]["std"] >= 0
    shown = " ".join(result.output.split())  # rich wraps lines at the terminal width
    assert f"best val acc {data['best_val_acc']['mean']:.4f} ± {data['best_val_acc']['std']:.4f}" in shown
    assert "mean ± sample std over seeds 0..1" in shown and "seeds.json" in shown


def test_cli_seeds_refuses_resume_and_bad_counts(tmp_path, imagefolder):
    result = CliRunner().invoke(app, ["run", tiny(tmp_path, imagefolder), "--seeds", "2", "--resume", "x"])
    assert result.exit_code == 2 and "--seeds runs the recipe once per seed" in result.output
    result = CliRunner().invoke(app, ["run", tiny(tmp_path, imagefolder), "--seeds", "0"])
    assert result.exit_code == 2


def test_python_api_seeds_returns_the_aggregate_and_results(tmp_path, imagefolder):
    import runner

    out = runner.run(tiny(tmp_path, imagefolder), seeds=2, progress=False)
    assert [r.summary["seed"] for r in out["results"]] == [0, 1]
    assert Path(out["folder"], "seeds.json").is_file()
    assert out["best_val_acc"]["n"] == 2 and set(out["best_val_acc"]) == {"mean", "std", "min", "max", "n"}


def test_seed_summary_of_one_run_has_zero_spread():
    one = seed_summary([{"seed": 4, "best_val_acc": 0.9, "final_val_acc": 0.8, "best_epoch": 2, "wall_s": 1.0}])
    assert one["best_val_acc"] == {"mean": 0.9, "std": 0.0, "min": 0.9, "max": 0.9, "n": 1}
    assert one["final_val_acc"]["mean"] == 0.8 and one["seeds"] == [4]
