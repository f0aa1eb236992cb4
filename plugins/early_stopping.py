"""Built-in lifecycle plugin with its own recipe section: ``early_stopping: {patience, min_delta, monitor}``.

It watches the epoch metrics and asks the run to stop once the monitored value has not improved by ``min_delta``
for ``patience`` epochs. Losses improve downward, accuracies upward. Off unless the recipe has the section.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from runner.api import Params, Section, hookimpl

RUNNER_API = "1.0"


class EarlyStopping(Params):
    """Stop when the monitored metric has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int = Field(3, gt=0, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")
    monitor: Literal["val_acc", "val_loss", "train_loss", "train_acc"] = Field("val_acc", description="metric to watch")


@hookimpl
def runner_recipe_sections():
    return [Section("early_stopping", "stop when the monitored metric stops improving", EarlyStopping)]


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    rule = run.section("early_stopping")
    if rule is None:
        return
    value = metrics[rule.monitor]
    sign = -1 if rule.monitor.endswith("loss") else 1
    state = run.state.setdefault("early_stopping", {"best": None, "since": 0})
    if state["best"] is None or sign * (value - state["best"]) > rule.min_delta:
        state["best"], state["since"] = value, 0
        return
    state["since"] += 1
    if state["since"] >= rule.patience:
        run.stop(f"early stopping: {rule.monitor} has not improved for {rule.patience} epochs")
