"""Built-in lifecycle plugin: the recipe's ``early_stopping: {patience, min_delta, monitor}``.

It watches the epoch metrics and asks the engine to stop (``run.stop``) once the monitored value has not improved
by ``min_delta`` for ``patience`` epochs. Losses improve downward, accuracies upward.
"""
from __future__ import annotations

from runner.hookspecs import hookimpl


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    rule = run.recipe.settings.early_stopping
    if rule is None:
        return
    value = metrics[rule.monitor]
    sign = -1 if rule.monitor.endswith("loss") else 1
    state = run.plugin_state.setdefault("early_stopping", {"best": None, "since": 0})
    if state["best"] is None or sign * (value - state["best"]) > rule.min_delta:
        state["best"], state["since"] = value, 0
        return
    state["since"] += 1
    if state["since"] >= rule.patience:
        run.stop = f"early stopping: {rule.monitor} has not improved for {rule.patience} epochs"
