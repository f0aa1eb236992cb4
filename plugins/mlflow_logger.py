"""MLflow logging, wired the way a third-party plugin is: registered through the ``runner`` entry-point group in
pyproject.toml, written against ``runner.api`` alone, MLflow imported only when a recipe asks for it
(``pip install 'runner-transfer[mlflow]'``; mlflow-skinny is enough).

Off unless the recipe has the section::

    mlflow: {tracking_uri: sqlite:///runs/mlflow.db, experiment: ants-bees}   # or `mlflow: true` for the defaults

Each run becomes an MLflow run (named after its run folder) that holds the resolved recipe as params (dotted keys,
values as text, cut to MLflow's limits), the epoch metrics with ``step=epoch`` (train/val loss and accuracy,
``lr/<group>`` per parameter group, seconds, images_per_s), ``best_val_acc`` at its epoch, and at the end
``best.pt`` and the run folder's PNG pictures as artifacts. By default everything stays beside the run folders:
the tracking store is ``<runs folder>/mlflow.db`` (SQLite), artifacts go to ``<runs folder>/mlruns-artifacts``,
and the experiment is the recipe's name (a sweep's trials: the sweep folder's name, one store for the runs
folder). A resumed run continues its MLflow run. A run that stops without ending (Ctrl-C, a diverging loss) is
marked KILLED (FAILED when it diverged) when the process exits. If logging fails mid-run (a tracking server gone),
the plugin warns once and training goes on.
"""
from __future__ import annotations

import atexit
import json
import logging
import re
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from runner.api import Params, PluginError, Section, hookimpl

RUNNER_API = "1.0"
INSTALL = "pip install 'runner-transfer[mlflow]'"
ARTIFACTS = "mlruns-artifacts"
STORE = "mlflow.db"
# MLflow's limits (mlflow.utils.validation), here so that the plugin imports without MLflow
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
PARAMS_PER_BATCH = 100
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s")
ACTIVE: dict[str, "Tracked"] = {}
"""Run folder -> its MLflow run, from run start to run end."""


class MLflow(Params):
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI (default: sqlite:///<runs folder>/"
                                                          "mlflow.db, a local SQLite store beside the run folders)")
    experiment: Optional[str] = Field(None, description="experiment name (default: the recipe's name; a sweep's "
                                                        "trials: the sweep folder's name)")
    artifact_location: Optional[str] = Field(None, description="artifact location of a new experiment (default: "
                                                               "mlruns-artifacts beside a local SQLite store; the "
                                                               "server's own for a remote one)")
    artifacts: bool = Field(True, description="log best.pt and the run folder's PNG pictures when the run ends")


class Tracked:
    """An MLflow run being logged: the client, its id, what the recipe asked for."""

    def __init__(self, client, run_id: str, settings: MLflow, folder: Path):
        self.client, self.run_id, self.settings, self.folder = client, run_id, settings, folder


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def flatten(recipe: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.01}}`` -> ``{"optimizer.lr": 0.01}``; lists and empty mappings stay values."""
    out: dict[str, Any] = {}
    for key, value in recipe.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def mlflow_key(key: str) -> str:
    """A param or metric name MLflow accepts on every system: letters, digits, ``_ - . /`` and spaces, no empty
    or dot-only path parts, at most 250 characters."""
    key = re.sub(r"[^\w.\- /]", "_", str(key))
    parts = [part if part.strip(".").strip() else "_" for part in key.split("/")]
    return "/".join(parts)[:MAX_KEY] or "_"


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps artifacts: a folder beside a local SQLite store, else the server's choice."""
    if not uri.startswith("sqlite:///"):
        return None
    database = uri[len("sqlite:///"):].split("?")[0]
    if not database or database == ":memory:":
        return None
    return (Path(database).resolve().parent / ARTIFACTS).as_uri()


def _quiet_store_logs() -> None:
    """MLflow's SQLite store announces its table migrations at INFO on first use; a run's display is no place
    for them."""
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:300]


@hookimpl
def runner_recipe_sections():
    return [Section("mlflow", "log each run to MLflow: the recipe as params, the epoch metrics, best.pt and the "
                              "pictures (needs the mlflow extra)", MLflow)]


@hookimpl
def runner_run_start(run):
    settings = run.section("mlflow")
    if settings is None or not run.is_main:
        return
    try:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise PluginError(f"mlflow: logging to MLflow needs it installed: {INSTALL}") from None
    _quiet_store_logs()
    sweep = run.folder.parent if (run.folder.parent / "sweep.json").is_file() else None
    root = (sweep or run.folder).parent
    uri = settings.tracking_uri or f"sqlite:///{(root / STORE).resolve()}"
    experiment = settings.experiment or (sweep.name if sweep is not None else run.name)
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment(client, experiment, settings.artifact_location or artifact_root(uri), uri)
        run_id = _continued(client, run, uri)
        if run_id is None:
            tags = {"runner.folder": str(run.folder), "runner.recipe": run.name}
            if sweep is not None:
                tags["runner.sweep"] = sweep.name
            run_id = client.create_run(experiment_id, run_name=run.folder.name, tags=tags).info.run_id
            params: dict[str, str] = {}
            for key, value in flatten(run.recipe).items():
                params.setdefault(mlflow_key(key), _text(value)[:MAX_PARAM_VALUE])
            entities = [Param(key, value) for key, value in params.items()]
            for start in range(0, len(entities), PARAMS_PER_BATCH):
                client.log_batch(run_id, params=entities[start:start + PARAMS_PER_BATCH])
    except PluginError:
        raise
    except Exception as exc:  # MLflow raises many types (MlflowException, OSError, requests, sqlalchemy)
        raise PluginError(f"mlflow: cannot log to {uri}: {_one_line(exc)}") from None
    run.state["mlflow"] = {"run_id": run_id, "tracking_uri": uri}
    ACTIVE[str(run.folder)] = Tracked(client, run_id, settings, run.folder)
    _close_at_exit()


def _experiment(client, name: str, artifact_location: str | None, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except Exception:  # another process created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        raise PluginError(f"mlflow: experiment '{name}' is deleted in {uri}: restore it or give another "
                          "mlflow.experiment")
    return found.experiment_id


def _continued(client, run, uri: str) -> str | None:
    """The MLflow run a resumed run logged to before, marked running again; None for a new run."""
    before = run.state.get("mlflow") if run.resumed else None
    if not isinstance(before, dict) or before.get("tracking_uri") != uri or not before.get("run_id"):
        return None
    try:
        client.get_run(before["run_id"])
        client.update_run(before["run_id"], status="RUNNING")
    except Exception:  # gone from the store: log a new run
        return None
    return before["run_id"]


def _failed(tracked: Tracked, what: str, exc: BaseException) -> None:
    ACTIVE.pop(str(tracked.folder), None)
    warnings.warn(f"mlflow: {what} failed, logging to MLflow stopped for this run (it trains on; its metrics are "
                  f"in {tracked.folder}/metrics.jsonl): {_one_line(exc)}", RuntimeWarning, stacklevel=2)


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    tracked = ACTIVE.get(str(run.folder))
    if tracked is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = {key: metrics[key] for key in EPOCH_METRICS if key in metrics}
    for name, lr in zip(run.group_names, metrics.get("lr", [])):
        values[f"lr/{name}"] = lr
    try:
        tracked.client.log_batch(tracked.run_id, metrics=[Metric(mlflow_key(key), float(value), now, epoch)
                                                          for key, value in values.items()])
    except Exception as exc:
        _failed(tracked, f"logging epoch {epoch}", exc)


@hookimpl(trylast=True)  # after the pictures plugin has drawn curves.png and predictions.png
def runner_run_end(run, summary):
    tracked = ACTIVE.get(str(run.folder))
    if tracked is None:
        return
    client, run_id = tracked.client, tracked.run_id
    try:
        if isinstance(summary.get("best_epoch"), int) and summary["best_epoch"] > 0:
            client.log_metric(run_id, "best_val_acc", float(summary["best_val_acc"]), step=summary["best_epoch"])
        if summary.get("stopped"):
            client.set_tag(run_id, "runner.stopped", str(summary["stopped"])[:5000])
        if tracked.settings.artifacts:
            for path in [run.folder / "best.pt", *sorted(run.folder.glob("*.png"))]:
                if path.is_file():
                    client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")
    except Exception as exc:
        _failed(tracked, "logging the run's end", exc)
        return
    ACTIVE.pop(str(run.folder), None)


_registered: list[bool] = []


def _close_at_exit() -> None:
    if not _registered:
        _registered.append(True)
        atexit.register(close_open_runs)


def close_open_runs() -> None:
    """Runs that never reached their end (Ctrl-C, a diverging loss): KILLED, or FAILED when the run folder says it
    diverged. Called when the process exits."""
    for folder, tracked in list(ACTIVE.items()):
        status = "FAILED" if (Path(folder) / "diverged.json").exists() else "KILLED"
        try:
            tracked.client.set_terminated(tracked.run_id, status)
        except Exception:
            pass
        ACTIVE.pop(folder, None)
