"""Built-in lifecycle plugin: per-epoch metrics in the run folder, ``metrics.jsonl`` and ``metrics.csv``."""
from __future__ import annotations

import csv

from runner.hookspecs import hookimpl
from runner.runfolder import append_jsonl


def flat(metrics: dict) -> dict:
    """One column per value: the list of per-group lrs becomes lr, lr_1, lr_2..."""
    row = {k: v for k, v in metrics.items() if k != "lr"}
    for i, lr in enumerate(metrics.get("lr", [])):
        row["lr" if i == 0 else f"lr_{i}"] = lr
    return row


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    append_jsonl(metrics, run.folder / "metrics.jsonl")
    path = run.folder / "metrics.csv"
    row = flat(metrics)
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
