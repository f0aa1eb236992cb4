"""Built-in lifecycle plugin: per-epoch metrics in the run folder, ``metrics.jsonl`` and ``metrics.csv``.

On by default; ``metrics: false`` in a recipe turns it off, ``metrics: {csv: false}`` keeps only the JSON lines.
"""
from __future__ import annotations

import csv

from pydantic import Field

from runner.api import Params, Section, hookimpl

RUNNER_API = "1.0"


class MetricsFiles(Params):
    jsonl: bool = Field(True, description="write metrics.jsonl, one JSON object per epoch (curves.png reads it)")
    csv: bool = Field(True, description="write metrics.csv, one row per epoch, an lr column per parameter group "
                                        "(lr_head, lr_blocks.6...)")


def flat(metrics: dict, group_names: list[str] | None = None) -> dict:
    """One column per value: the list of per-group lrs becomes a column per group, ``lr_<group name>``
    (``lr_head``, ``lr_blocks.6``; ``lr_<index>`` for a group without a name)."""
    row = {k: v for k, v in metrics.items() if k != "lr"}
    names = list(group_names or [])
    for i, lr in enumerate(metrics.get("lr", [])):
        row[f"lr_{names[i] if i < len(names) else i}"] = lr
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
        from runner.api import append_jsonl  # runner.runfolder imports torch: not when the plugin is only listed

        append_jsonl(metrics, run.folder / "metrics.jsonl")
    if not files.csv:
        return
    path = run.folder / "metrics.csv"
    row = flat(metrics, run.group_names)
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
