"""Built-in lifecycle plugin: per-epoch metrics in the run folder, ``metrics.jsonl`` and ``metrics.csv``.

On by default; ``metrics: false`` in a recipe turns it off, ``metrics: {csv: false}`` keeps only the JSON lines.
"""
from __future__ import annotations

import csv

from pydantic import Field

from runner.api import Params, Section, append_jsonl, hookimpl

RUNNER_API = "1.0"


class MetricsFiles(Params):
    jsonl: bool = Field(True, description="write metrics.jsonl, one JSON object per epoch (curves.png reads it)")
    csv: bool = Field(True, description="write metrics.csv, one row per epoch, one lr column per group")


def flat(metrics: dict) -> dict:
    """One column per value: the list of per-group lrs becomes lr, lr_1, lr_2..."""
    row = {k: v for k, v in metrics.items() if k != "lr"}
    for i, lr in enumerate(metrics.get("lr", [])):
        row["lr" if i == 0 else f"lr_{i}"] = lr
    return row


@hookimpl
def runner_recipe_sections():
    return [Section("metrics", "per-epoch metrics files in the run folder", MetricsFiles, on_by_default=True)]


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    files = run.section("metrics")
    if files is None or not run.is_main:
        return
    if files.jsonl:
        append_jsonl(metrics, run.folder / "metrics.jsonl")
    if not files.csv:
        return
    path = run.folder / "metrics.csv"
    row = flat(metrics)
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
