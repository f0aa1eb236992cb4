"""The MLflow plugin against a real local SQLite tracking store, read back with MLflow's own client: the recipe as
params, the epoch metrics, best.pt and the pictures as artifacts; a resumed run continues its MLflow run; without
MLflow installed the plugin still loads and a recipe naming ``mlflow:`` is a one-line error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import runner
from runner.api import hookimpl
from runner.cli import app
from test_engine import write_recipe

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

cli = CliRunner()
INSTALL = "pip install 'runner-transfer[mlflow]'"


class Interrupt:
    @hookimpl
    def runner_batch_end(self, run, epoch, phase, batch, size):
        if epoch == 2:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Two runs logged to the default store (runs/mlflow.db): one straight through, one interrupted then
    resumed; trained from an empty working directory that must stay empty."""
    from conftest import make_imagefolder

    tmp = tmp_path_factory.mktemp("mlflow")
    data = make_imagefolder(tmp / "data")
    recipe = write_recipe(tmp, data, epochs=2, mlflow={"experiment": "tiny"})
    cwd, work = Path.cwd(), tmp / "cwd"
    work.mkdir()
    saved = os.environ.get("MLFLOW_DISABLE_TELEMETRY")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no usage reports from a test
    os.chdir(work)
    try:
        result = runner.run(recipe, progress=False)
        with pytest.raises(KeyboardInterrupt) as info:
            runner.run(recipe, overrides={"name": "resumed"}, plugins=[Interrupt()], progress=False)
        resumed = runner.run(None, resume=info.value.folder, progress=False)
    finally:
        os.chdir(cwd)
        if saved is None:
            os.environ.pop("MLFLOW_DISABLE_TELEMETRY", None)
        else:
            os.environ["MLFLOW_DISABLE_TELEMETRY"] = saved
    client = MlflowClient(f"sqlite:///{tmp / 'runs' / 'mlflow.db'}")
    return tmp, result, resumed, client


def _mlflow_run(client, folder: Path):
    experiment = client.get_experiment_by_name("tiny")
    (found,) = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == folder.name]
    return found


def test_a_run_logs_its_recipe_metrics_and_artifacts_to_a_local_sqlite_store(logged):
    tmp, result, _, client = logged
    found = _mlflow_run(client, result.folder)
    assert found.info.status == "FINISHED"
    params = found.data.params
    assert params["optimizer.lr"] == "0.05" and params["optimizer.name"] == "sgd" and params["epochs"] == "2"
    assert params["backbone.model"] == "test_efficientnet" and params["mlflow.experiment"] == "tiny"
    assert all(isinstance(v, str) for v in params.values())
    rows = [json.loads(line) for line in (result.folder / "metrics.jsonl").read_text().splitlines()]
    for key in ("val_acc", "val_loss", "train_loss", "train_acc", "images_per_s", "seconds"):
        history = client.get_metric_history(found.info.run_id, key)
        assert sorted((m.step, m.value) for m in history) == [(r["epoch"], pytest.approx(r[key])) for r in rows]
    lrs = client.get_metric_history(found.info.run_id, "lr/head")
    assert sorted((m.step, m.value) for m in lrs) == [(r["epoch"], pytest.approx(r["lr"][0])) for r in rows]
    assert found.data.metrics["best_val_acc"] == pytest.approx(result.best_val_acc)
    assert found.data.tags["runner.folder"] == str(result.folder)
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"best.pt", "curves.png", "batch.png", "predictions.png"} <= artifacts
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.artifact_location == (tmp / "runs" / "mlruns-artifacts").resolve().as_uri()
    assert (tmp / "runs" / "mlruns-artifacts").is_dir()
    assert list((tmp / "cwd").iterdir()) == []  # nothing in the working directory (no ./mlruns)


def test_a_resumed_run_continues_its_mlflow_run(logged):
    _, _, resumed, client = logged
    found = _mlflow_run(client, resumed.folder)
    assert found.info.status == "FINISHED"
    history = client.get_metric_history(found.info.run_id, "val_acc")
    # one MLflow run for the folder (_mlflow_run unpacks exactly one), epoch 1 logged before the interrupt
    assert sorted((m.step, m.value) for m in history) == [(r["epoch"], pytest.approx(r["val_acc"]))
                                                          for r in resumed.metrics] and len(history) == 2


def test_runs_lists_the_runs_and_leaves_the_mlflow_store_out(logged):
    tmp = logged[0]
    result = cli.invoke(app, ["runs", str(tmp / "runs"), "--json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(r["status"] for r in rows) == ["finished", "finished"]


def test_the_plugin_loads_without_mlflow_and_a_recipe_naming_it_fails_in_one_line(tmp_path, imagefolder,
                                                                                  monkeypatch):
    blocked = "import sys; sys.modules['mlflow'] = None; "
    probe = subprocess.run([sys.executable, "-c", blocked + "import runner_plugins.mlflow_logger as m; "
                            "from runner.plugins import load_catalog; c = load_catalog(); "
                            "print(m.RUNNER_API, 'mlflow' in c.sections, [f.error for f in c.plugins.failures])"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["1.0", "True", "[]"]
    for name in [n for n in sys.modules if n == "mlflow" or n.startswith("mlflow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    recipe = write_recipe(tmp_path, imagefolder, epochs=1, mlflow=True)
    result = cli.invoke(app, ["run", recipe], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert INSTALL in line and "Traceback" not in result.output


def test_mlflow_keys_are_valid_mlflow_names():
    from mlflow.utils.validation import _validate_param_name

    from runner_plugins.mlflow_logger import artifact_root, mlflow_key

    for key in ("optimizer.lr", "lr/blocks.6", "a:b", "../x", "weird key!", "x" * 400, "", "a//b", "/abs"):
        name = mlflow_key(key)
        _validate_param_name(name)
        assert len(name) <= 250
    assert artifact_root("sqlite:////data/runs/mlflow.db") == "file:///data/runs/mlruns-artifacts"
    assert artifact_root("http://mlflow.example:5000") is None
