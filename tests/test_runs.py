"""``runner runs`` and ``runner compare`` on real run folders: finished, interrupted, diverged, still running, inside
a sweep, and damaged ones (garbage best.pt, unreadable metrics, no recipe.yaml, an empty folder, a stray file)."""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from PIL import Image
from typer.testing import CliRunner

import runner
from runner import runs as reading
from runner.api import hookimpl
from runner.cli import app
from runner.errors import RunnerError
from test_engine import write_recipe

cli = CliRunner()
ENV = {"COLUMNS": "200"}
HOUR_AGO = time.time() - 3600


class Interrupt:
    """Ctrl-C during epoch 2: last.pt keeps epoch 1."""

    @hookimpl
    def runner_batch_end(self, run, epoch, phase, batch, size):
        if epoch == 2:
            raise KeyboardInterrupt


def _age(folder, when=None) -> None:
    """Make a run folder look untouched for an hour (the runs were trained seconds ago), keeping the order its
    files were written in; ``when`` sets every time to one moment instead."""
    for path in [folder, *folder.iterdir()]:
        moment = when if when is not None else path.stat().st_mtime - 3600
        os.utime(path, (moment, moment))


def _only(runs, prefix):
    (folder,) = [p for p in runs.iterdir() if p.name.startswith(prefix + "-")]
    return folder


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory):
    """A runs folder with one run of each kind, trained once for the module."""
    from conftest import make_imagefolder

    tmp = tmp_path_factory.mktemp("runs-listing")
    data = make_imagefolder(tmp / "data")
    recipe = write_recipe(tmp, data, epochs=2)
    runs = tmp / "runs"
    runner.run(recipe, overrides={"name": "lr-a", "optimizer.lr": 0.05}, progress=False)
    runner.run(recipe, overrides={"name": "lr-b", "optimizer.lr": 0.01}, progress=False)
    with pytest.raises(KeyboardInterrupt):
        runner.run(recipe, overrides={"name": "interrupted", "epochs": 3}, plugins=[Interrupt()], progress=False)
    # epoch 1 trains at a sane lr; the scheduler then multiplies it by 1e30 and the loss blows up in epoch 2
    diverging = write_recipe(tmp / "diverging", data, freeze="none", epochs=3, output=str(runs),
                             optimizer={"name": "sgd", "lr": 0.01},
                             scheduler={"name": "step", "step_size": 1, "gamma": 1e30})
    with pytest.raises(RunnerError) as info:
        runner.run(diverging, overrides={"name": "diverged"}, progress=False)
    assert getattr(info.value, "exit_code", None) == 3
    diverged = _only(runs, "diverged")
    sweep = runs / "sweep-recipe-0123abcd"
    sweep.mkdir()
    trial_done = shutil.copytree(_only(runs, "lr-b"), sweep / "recipe-lr0.01-20250101-120000")
    trial_diverged = shutil.copytree(diverged, sweep / "recipe-lr1e30-20250101-120100")
    (trial_diverged / "diverged.json").unlink(missing_ok=True)  # the sweep's own record says it diverged
    (sweep / "sweep.json").write_text(json.dumps({
        "version": 1, "kind": "grid", "key": "0123abcd", "recipe": "recipe.yaml", "set": [], "axes": [],
        "trials": [{"trial": 1, "name": "recipe-lr0.01", "status": "done", "folder": str(trial_done)},
                   {"trial": 2, "name": "recipe-lr1e30", "status": "diverged", "folder": str(trial_diverged),
                    "note": "the training loss is nan at epoch 2, batch 1"}]}))
    if not (diverged / "diverged.json").exists():  # what the engine is asked to write when the loss diverges
        (diverged / "diverged.json").write_text(json.dumps({"epoch": 2, "message": info.value.problems[0]}))
    nan_run = shutil.copytree(_only(runs, "interrupted"), runs / "nan-20250101-000000")
    with open(nan_run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": float("nan"), "train_acc": 0.5, "val_loss": float("nan"),
                            "val_acc": 0.5, "lr": [1.0], "seconds": 1.0, "images_per_s": 1.0, "best": False}) + "\n")
    garbage = shutil.copytree(_only(runs, "lr-a"), runs / "garbage-best-20250102-000000")
    (garbage / "best.pt").write_bytes(b"garbage, not a checkpoint")
    torn = runs / "torn-metrics-20250103-000000"
    torn.mkdir()
    (torn / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": 0.5}\nnot json\n')
    (runs / "empty").mkdir()
    (runs / "notes.txt").write_text("a stray file")
    (runs / "mlflow.db").write_bytes(b"")  # the MLflow plugin's store lives here too: not listed
    for folder in [*runs.iterdir(), *sweep.iterdir()]:
        if folder.is_dir():
            _age(folder)
    return tmp


def _running_copy(tmp):
    """A run whose files just changed and that has no summary.json: still training, as far as anyone can tell."""
    folder = tmp / "runs" / "running"
    if not folder.exists():
        shutil.copytree(_only(tmp / "runs", "interrupted"), folder)
    _age(folder, time.time())
    return folder


def _rows(output: str) -> dict[str, str]:
    """The table's lines by run name."""
    found = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1]:
            found[cells[1].removeprefix("└ ").strip()] = line
    return found


def test_runs_lists_each_kind_of_folder_with_its_status(runs_folder, monkeypatch):
    runs = runs_folder / "runs"
    _running_copy(runs_folder)
    result = cli.invoke(app, ["runs", str(runs)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    rows = _rows(result.stdout)
    by_prefix = {prefix: next(line for name, line in rows.items() if name.startswith(prefix))
                 for prefix in ("lr-a-", "lr-b-", "interrupted-", "diverged-", "nan-", "garbage-best-",
                                "torn-metrics-", "sweep-recipe-", "recipe-lr0.01-", "recipe-lr1e30-")}
    assert "finished" in by_prefix["lr-a-"] and "2/2" in by_prefix["lr-a-"]
    assert "interrupted at epoch 2" in by_prefix["interrupted-"] and "1/3" in by_prefix["interrupted-"]
    assert "diverged at epoch 2" in by_prefix["diverged-"]
    assert "diverged at epoch 2 (non-finite loss)" in by_prefix["nan-"]
    assert "running (epoch 2 of 3)" in rows["running"]
    assert "broken" in by_prefix["garbage-best-"] and "best.pt" in by_prefix["garbage-best-"]
    assert "broken" in by_prefix["torn-metrics-"] and "no recipe.yaml" in by_prefix["torn-metrics-"]
    assert "not a run folder: empty" in rows["empty"]
    assert "not a run folder: a file" in rows["notes.txt"]
    assert "mlflow.db" not in rows
    assert "sweep: 2 of 2 trials" in by_prefix["sweep-recipe-"]
    assert "finished" in by_prefix["recipe-lr0.01-"] and "└" in by_prefix["recipe-lr0.01-"]
    assert "diverged" in by_prefix["recipe-lr1e30-"] and "sweep.json" in by_prefix["recipe-lr1e30-"]
    # newest first: the runs trained in this module, in the order they ran, before the hand-made older ones
    order = [reading.STAMP.sub("", name) for name in rows if name != "run"]
    assert order.index("diverged") < order.index("interrupted") < order.index("lr-b") < order.index("lr-a")
    assert order.index("lr-a") < order.index("torn-metrics") < order.index("garbage-best") < order.index("nan")
    monkeypatch.chdir(runs_folder)  # the default folder is ./runs
    again = cli.invoke(app, ["runs"], env=ENV)
    assert again.exit_code == 0 and _rows(again.stdout).keys() == rows.keys()


def test_runs_started_in_the_same_second_are_listed_in_the_order_they_started(tmp_path):
    """The folder names' stamps only tell seconds apart: recipe.yaml, written when a run starts, orders the rest."""
    runs = tmp_path / "runs"
    for name, started in (("zeta", HOUR_AGO), ("alpha", HOUR_AGO + 0.4)):
        folder = runs / f"{name}-20250101-120000"
        folder.mkdir(parents=True)
        (folder / "recipe.yaml").write_text(f"name: {name}\n")
        os.utime(folder / "recipe.yaml", (started, started))
    assert [row.name for row in reading.scan(runs)] == ["alpha-20250101-120000", "zeta-20250101-120000"]


def test_runs_json_round_trips_and_matches_the_library(runs_folder):
    runs = runs_folder / "runs"
    _running_copy(runs_folder)
    result = cli.invoke(app, ["runs", str(runs), "--json"], env=ENV)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows == [row.to_dict() for row in reading.flat_rows(reading.scan(runs))]
    assert json.loads(json.dumps(rows)) == rows
    by = {reading.STAMP.sub("", row["name"]): row for row in rows}  # "lr-a-20261201-201502" -> "lr-a"
    finished = by["lr-a"]
    metrics = [json.loads(line) for line in (runs / finished["name"] / "metrics.jsonl").read_text().splitlines()]
    assert finished["status"] == "finished" and finished["epochs_done"] == finished["epochs"] == 2
    assert finished["best_val_acc"] == max(m["val_acc"] for m in metrics)
    assert finished["final"]["val_acc"] == metrics[-1]["val_acc"] and finished["wall_s"] > 0
    assert finished["date"] and finished["problems"] == []
    assert (by["interrupted"]["status"], by["interrupted"]["epochs_done"]) == ("interrupted", 1)
    assert by["diverged"]["status"] == "diverged" and by["nan"]["status"] == "diverged"
    assert by["nan"]["final"]["train_loss"] is None  # NaN is not JSON: null
    assert by["running"]["status"] == "running"
    assert by["garbage-best"]["status"] == "broken" and by["garbage-best"]["problems"][0].startswith("best.pt: ")
    assert by["torn-metrics"]["problems"] == ["no recipe.yaml", "metrics.jsonl: line 2 is not JSON"]
    assert (by["empty"]["kind"], by["notes.txt"]["kind"]) == ("other", "other")
    trials = [row for row in rows if row["sweep"] == "sweep-recipe-0123abcd"]
    assert sorted(t["status"] for t in trials) == ["diverged", "finished"]
    sweep = by["sweep-recipe-0123abcd"]
    assert sweep["kind"] == "sweep" and sweep["best_val_acc"] is not None
    assert (sweep["trials_run"], sweep["trials_total"]) == (2, 2)


def test_running_is_decided_by_how_recently_the_files_changed(runs_folder):
    runs = runs_folder / "runs"
    folder = _only(runs, "interrupted")
    changed = max(p.stat().st_mtime for p in folder.iterdir() if p.is_file())
    assert reading.read_run(folder, now=changed + 60).detail == "running (epoch 2 of 3)"
    late = reading.read_run(folder, now=changed + reading.RUNNING_WINDOW_S + 1)
    assert (late.status, late.detail) == ("interrupted", "interrupted at epoch 2")
    assert reading.read_run(_only(runs, "lr-a"), now=changed).status == "finished"  # a summary: never running


def test_runs_on_one_run_folder_a_sweep_folder_and_a_missing_one(runs_folder):
    runs = runs_folder / "runs"
    one = cli.invoke(app, ["runs", str(_only(runs, "lr-a")), "--json"], env=ENV)
    assert one.exit_code == 0 and [r["status"] for r in json.loads(one.stdout)] == ["finished"]
    sweep = cli.invoke(app, ["runs", str(runs / "sweep-recipe-0123abcd"), "--json"], env=ENV)
    assert sweep.exit_code == 0 and [r["kind"] for r in json.loads(sweep.stdout)] == ["sweep", "run", "run"]
    missing = cli.invoke(app, ["runs", str(runs_folder / "nowhere")], env=ENV)
    assert missing.exit_code == 2 and "no such folder" in missing.output and "Traceback" not in missing.output
    empty = cli.invoke(app, ["runs", str(runs / "empty")], env=ENV)
    assert empty.exit_code == 0 and "no runs in" in empty.stdout  # an empty runs folder


def test_compare_shows_the_differing_keys_the_metrics_and_writes_compare_png(runs_folder, tmp_path):
    runs = runs_folder / "runs"
    a, b = _only(runs, "lr-a"), _only(runs, "lr-b")
    result = cli.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path)], env=ENV)
    assert result.exit_code == 0, result.output
    (lr_line,) = [line for line in result.stdout.splitlines() if "optimizer.lr" in line]
    assert "0.05" in lr_line and "0.01" in lr_line and lr_line.index("0.05") < lr_line.index("0.01")
    assert not any("dataset.root" in line for line in result.stdout.splitlines())  # the same in both: not shown
    for title in ("best val acc", "final val loss", "epochs done"):
        assert title in result.stdout
    with Image.open(tmp_path / "compare.png") as picture:
        assert picture.width >= 600
    as_json = cli.invoke(app, ["compare", str(a), str(b), "--json", "--out", str(tmp_path / "c.png")], env=ENV)
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    differs = {row["key"]: row["values"] for row in data["differs"]}
    assert differs["optimizer.lr"] == [0.05, 0.01] and differs["name"] == ["lr-a", "lr-b"]
    assert data["metrics"]["best_val_acc"] == [r["best_val_acc"] for r in data["runs"]]
    assert data["metrics"]["epochs_done"] == [2, 2] and (tmp_path / "c.png").is_file()


def test_compare_a_sweep_folder_compares_its_trials(runs_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # compare.png goes to the current folder by default
    sweep = runs_folder / "runs" / "sweep-recipe-0123abcd"
    result = cli.invoke(app, ["compare", str(sweep), "--json"], env=ENV)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["name"] for r in data["runs"]] == ["recipe-lr0.01-20250101-120000", "recipe-lr1e30-20250101-120100"]
    assert {"epochs", "scheduler.gamma", "freeze.name"} <= {row["key"] for row in data["differs"]}
    assert (tmp_path / "compare.png").is_file()


def test_compare_refuses_what_it_cannot_compare_in_one_line(runs_folder):
    runs = runs_folder / "runs"
    for args, message in ([[str(_only(runs, "lr-a"))], "two runs or more"],
                          [[str(_only(runs, "lr-a")), str(runs / "empty")], "not a run folder"],
                          [[str(_only(runs, "lr-a")), str(runs / "nowhere")], "no such run folder"]):
        result = cli.invoke(app, ["compare", *args], env=ENV)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_compare_takes_damaged_runs_with_a_warning(runs_folder, tmp_path):
    runs = runs_folder / "runs"
    result = cli.invoke(app, ["compare", str(_only(runs, "lr-a")), str(runs / "garbage-best-20250102-000000"),
                              str(runs / "torn-metrics-20250103-000000"), "--out", str(tmp_path)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "best.pt" in result.output and "Traceback" not in result.output
    assert (tmp_path / "compare.png").is_file()


def test_flatten_keeps_lists_and_empty_mappings_as_values():
    assert reading.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}, "f": None}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": {}, "f": None}
