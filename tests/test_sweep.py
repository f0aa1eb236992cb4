"""runner sweep: real tiny runs over a grid (and optuna when installed), the leaderboard, re-runs that skip what
is finished and continue what was interrupted, and errors before anything trains."""
from __future__ import annotations

import csv
import json
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import make_imagefolder
from runner import sweep as sweeps
from runner.cli import app
from runner.errors import RunnerError
from test_engine import write_recipe

cli = CliRunner()
GRID = ["--grid", "optimizer.lr=0.01,0.1", "--grid", "dataset.batch_size=2,4"]


@pytest.fixture
def recipe(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_split=(4, 2))
    return write_recipe(tmp_path, data, epochs=1, cache="features", scheduler="none")


def sweep_folder(tmp_path):
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("sweep-recipe-")
    return folder


def run_folders(folder):
    return sorted(p for p in folder.iterdir() if p.is_dir())


def test_grid_sweep_trains_every_combination_and_a_rerun_skips_them(tmp_path, recipe):
    result = cli.invoke(app, ["sweep", recipe, *GRID])
    assert result.exit_code == 0, result.output
    folder = sweep_folder(tmp_path)
    runs = run_folders(folder)
    assert [p.name.rsplit("-", 2)[0] for p in runs] == [
        "recipe-lr0.01-bs2", "recipe-lr0.01-bs4", "recipe-lr0.1-bs2", "recipe-lr0.1-bs4"]
    for run in runs:  # ordinary run folders, each with its own resolved recipe
        assert (run / "summary.json").exists() and (run / "best.pt").exists()
    recipes = {p.name.rsplit("-", 2)[0]: yaml.safe_load((p / "recipe.yaml").read_text()) for p in runs}
    assert recipes["recipe-lr0.1-bs4"]["optimizer"]["lr"] == 0.1
    assert recipes["recipe-lr0.1-bs4"]["dataset"]["batch_size"] == 4
    assert recipes["recipe-lr0.1-bs4"]["output"] == str(folder)

    with open(folder / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
    assert list(rows[0]) == ["trial", "overrides", "best_val_acc", "best_epoch", "wall_s", "folder", "status"]
    board = json.loads((folder / "leaderboard.json").read_text())
    accs = [r["best_val_acc"] for r in board["rows"]]
    assert accs == sorted(accs, reverse=True)
    assert board["best"]["best_val_acc"] == max(accs)
    assert board["best"]["recipe"] == yaml.safe_load((folder / "best.yaml").read_text())
    assert board["best"]["recipe"] == yaml.safe_load(open(f"{board['best']['folder']}/recipe.yaml"))
    assert "leaderboard" in result.output and "best: trial" in result.output

    again = cli.invoke(app, ["sweep", recipe, *GRID])
    assert again.exit_code == 0, again.output
    assert again.output.count("skipped") == 4
    assert run_folders(folder) == runs and len(list((tmp_path / "runs").iterdir())) == 1


def test_a_grid_key_naming_no_field_fails_before_anything_runs(tmp_path, recipe):
    result = cli.invoke(app, ["sweep", recipe, "--grid", "optimizer.lrr=0.01,0.1", "--grid", "dataset.batch_size=2,4"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --grid optimizer.lrr=0.01,0.1: optimizer.lrr: unknown field (did you mean 'lr'?)"]
    assert not (tmp_path / "runs").exists()
    bad_value = cli.invoke(app, ["sweep", recipe, "--grid", "optimizer.lr=0.01,-1", "--set", "epochs=0"])
    assert bad_value.exit_code == 2 and not (tmp_path / "runs").exists()
    assert "--grid optimizer.lr=0.01,-1: optimizer.lr" in bad_value.output and "got -1" in bad_value.output
    assert "--set epochs=0: epochs:" in bad_value.output


@pytest.mark.parametrize("args, message", [
    (["--grid", "optimizer.lr=0.1,0.2", "--optuna", "3", "--range", "optimizer.lr=0.01:0.1"], "do not mix"),
    (["--range", "optimizer.lr=0.01:0.1"], "--range is for --optuna"),
    ([], "needs --grid"),
    (["--grid", "optimizer.lr=0.1", "--set", "optimizer.lr=0.2"], "also given by --set"),
])
def test_sweep_option_errors(tmp_path, recipe, args, message):
    result = cli.invoke(app, ["sweep", recipe, *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_optuna_missing_is_a_one_line_error(recipe, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed: import optuna raises ImportError
    result = cli.invoke(app, ["sweep", recipe, "--optuna", "3", "--range", "optimizer.lr=1e-3:1e-1:log"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: --optuna needs optuna: pip install 'runner-transfer[sweep]' (or pip install optuna)"]


def test_an_interrupted_sweep_continues_where_it_stopped(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_split=(4, 2))
    recipe = write_recipe(tmp_path, data, epochs=2, cache="features", scheduler="none")
    plugin = tmp_path / "ctrl_c.py"  # presses Ctrl-C at the end of the second trial's second epoch
    plugin.write_text("import runner\n\n@runner.hookimpl\ndef runner_epoch_end(run, epoch, metrics):\n"
                      "    if run.name.endswith('lr0.1') and epoch == 2:\n        raise KeyboardInterrupt\n")
    grid = ["--grid", "optimizer.lr=0.01,0.1,0.2"]
    result = cli.invoke(app, ["--plugin", str(plugin), "sweep", recipe, *grid])
    assert result.exit_code == 130, result.output
    assert "trial 2 of 3" in result.output and "continue with the same command: runner --plugin" in result.output
    assert "Traceback" not in result.output
    folder = sweep_folder(tmp_path)
    state = json.loads((folder / "sweep.json").read_text())
    assert [t["status"] for t in state["trials"]] == ["done", "interrupted"]
    first, second = run_folders(folder)
    assert torch.load(second / "last.pt", weights_only=True)["epoch"] == 1
    assert len(list(csv.DictReader(open(folder / "leaderboard.csv")))) == 2

    again = cli.invoke(app, ["sweep", recipe, *grid])
    assert again.exit_code == 0, again.output
    assert "trial 1/3 recipe-lr0.01: skipped" in again.output and f"continuing {second}" in again.output
    summary = json.loads((second / "summary.json").read_text())
    assert summary["resumed_at"] == 2 and summary["epochs_run"] == 2
    assert [json.loads(line)["epoch"] for line in (second / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert len(run_folders(folder)) == 3
    state = json.loads((folder / "sweep.json").read_text())
    assert [t["status"] for t in state["trials"]] == ["done", "done", "done"]
    assert len(json.loads((folder / "leaderboard.json").read_text())["rows"]) == 3


def test_optuna_sweep_samples_n_trials_and_a_rerun_adds_none(tmp_path, recipe):
    optuna = pytest.importorskip("optuna")
    args = ["sweep", recipe, "--optuna", "3", "--range", "optimizer.lr=1e-3:1e-1:log"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = sweep_folder(tmp_path)
    runs = run_folders(folder)
    assert len(runs) == 3 and all(p.name.startswith(f"recipe-t{i}-lr") for i, p in enumerate(runs, 1))
    board = json.loads((folder / "leaderboard.json").read_text())
    assert len(board["rows"]) == 3 and all(1e-3 <= r["overrides"]["optimizer.lr"] <= 1e-1 for r in board["rows"])
    for row in board["rows"]:  # the sampled value is what trained
        trained = yaml.safe_load(open(f"{row['folder']}/recipe.yaml"))
        assert trained["optimizer"]["lr"] == row["overrides"]["optimizer.lr"]

    again = cli.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("skipped") == 3 and run_folders(folder) == runs
    study = optuna.load_study(study_name="runner-sweep", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3


def test_grid_values_split_on_top_level_commas_and_trial_names():
    (axis,) = sweeps.parse_grid(["dataset.mean=[0.5,0.5,0.5],[0.4,0.4,0.4]"])
    assert axis.values == [[0.5, 0.5, 0.5], [0.4, 0.4, 0.4]]
    assert sweeps.trial_name("r", {"optimizer.lr": 0.003, "dataset.batch_size": 16, "optimizer.name": "adam"}) == \
        "r-lr0.003-bs16-adam"
    lr, bs, opt = sweeps.parse_ranges(["optimizer.lr=1e-4:1e-1:log", "dataset.batch_size=8:32",
                                       "optimizer.name=sgd,adam"])
    assert (lr.kind, lr.low, lr.log) == ("float", 1e-4, True) and (bs.kind, bs.low, bs.high) == ("int", 8, 32)
    assert opt.kind == "categorical" and opt.values == ["sgd", "adam"]


def _garbage(db, tmp_path):
    db.write_bytes(b"\x00not a database\xff" * 64)


def _truncated(db, tmp_path):  # a real optuna study cut in half, as a full disk or a killed copy leaves it
    optuna = pytest.importorskip("optuna")
    whole = tmp_path / "whole.db"
    study = optuna.create_study(study_name="runner-sweep", storage=f"sqlite:///{whole}", direction="maximize")
    for _ in range(3):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    data = whole.read_bytes()
    db.write_bytes(data[:len(data) // 2])


def _empty(db, tmp_path):
    db.write_bytes(b"")


def _other_program(db, tmp_path):  # a healthy SQLite file, but not optuna's: it must stay untouched
    import sqlite3
    from contextlib import closing
    with closing(sqlite3.connect(db)) as connection:
        connection.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO photos (name) VALUES ('cat.jpg')")
        connection.commit()


@pytest.mark.parametrize("damage, reason", [
    (_garbage, "not a readable SQLite database (file is not a database)"),
    (_truncated, "not a readable SQLite database (database disk image is malformed)"),
    (_empty, "an empty file, not an optuna study"),
    (_other_program, "a SQLite database without optuna's tables (it holds photos)"),
], ids=["garbage", "truncated", "empty", "other-program"])
def test_a_damaged_optuna_db_is_one_line_before_anything_trains(tmp_path, recipe, damage, reason):
    pytest.importorskip("optuna")
    folder = tmp_path / "my-sweep"
    folder.mkdir()
    db = folder / "optuna.db"
    damage(db, tmp_path)
    before = db.read_bytes()
    result = cli.invoke(app, ["sweep", recipe, "--optuna", "2", "--range", "optimizer.lr=1e-3:1e-1:log",
                              "--out", str(folder)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: {db}: {reason}; to start the sweep afresh, delete it and sweep.json beside it, or give another --out"]
    assert not [p for p in folder.iterdir() if p.is_dir()]  # no trial started
    assert db.read_bytes() == before  # optuna did not write into it


def test_a_study_with_fewer_trials_than_sweep_json_records_is_one_line(tmp_path, recipe):
    pytest.importorskip("optuna")  # e.g. optuna.db deleted alone: sweep.json still names its trials
    sweep = sweeps.prepare(recipe, optuna=2, ranges=["optimizer.lr=1e-3:1e-1:log"], out=tmp_path / "my-sweep")
    sweep.folder.mkdir()
    state = {"trials": [{"trial": 1, "optuna_number": 0, "status": "done"}]}
    with pytest.raises(RunnerError) as caught:
        sweeps.open_study(sweep, state)
    assert caught.value.problems == [
        f"{sweep.folder / 'optuna.db'}: holds 0 optuna trials, fewer than sweep.json records (its trial 1 is not "
        "there); to start the sweep afresh, delete it and sweep.json beside it, or give another --out"]
