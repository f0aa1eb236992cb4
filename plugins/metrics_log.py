"""Built-in lifecycle plugin: one JSON line of metrics per epoch in the run folder's ``metrics.jsonl``."""
from __future__ import annotations

from runner.hookspecs import hookimpl
from runner.runfolder import append_jsonl


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    append_jsonl(metrics, run.folder / "metrics.jsonl")
