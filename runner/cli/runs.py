"""``runner runs`` and ``runner compare``: the run folders at a glance, and runs side by side (parsing and
rendering only; the reading is ``runner.runs``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from runner.cli import app, console, handled, warn
from runner.errors import RunnerError

STYLES = {"finished": "green", "stopped": "yellow", "interrupted": "yellow", "diverged": "red", "running": "cyan",
          "broken": "red", "not a run": "dim", "sweep": "bold"}


def _acc(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _wall(seconds) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@app.command()
def runs(folder: Annotated[str, typer.Argument(help="runs folder (or one run or sweep folder)")] = "runs",
         as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False):
    """List the runs in a folder, newest first: status, best val accuracy, epochs, wall time, date.

    Sweep folders are listed with their trials. A run without summary.json whose files changed within the last 2
    minutes (or 3 of its slowest epochs) shows as running; nothing on disk says whether its process still lives."""
    from runner import runs as reading

    with handled():
        rows = reading.flat_rows(reading.scan(folder))
        if as_json:
            print(json.dumps([row.to_dict() for row in rows], indent=2))
            return
        if not rows:
            console.print(f"no runs in {folder}", highlight=False)
            return
        table = Table("run", "recipe", "status", "best val acc", "epochs", "wall", "date")
        for column in (table.columns[0], *table.columns[3:]):
            column.no_wrap = True
        table.columns[2].overflow = "fold"
        for row in rows:
            name = f"  └ {row.name}" if row.sweep else row.name
            best = "" if row.best_val_acc is None else (
                _acc(row.best_val_acc) + (f" @ {row.best_epoch}" if row.best_epoch is not None else ""))
            if row.kind == "sweep":
                best = f"{best} (best trial)" if best else ""
                epochs = f"{row.trials_run}/{row.trials_total} trials"
            else:
                epochs = "" if row.epochs_done is None else (
                    f"{row.epochs_done}/{row.epochs}" if row.epochs else str(row.epochs_done))
            style = STYLES.get(row.status, "")
            table.add_row(Text(name, style="dim" if row.kind == "other" else ""), row.recipe or "",
                          Text(row.detail or row.status, style=style), best, epochs, _wall(row.wall_s),
                          row.date.strftime("%Y-%m-%d %H:%M") if row.date else "")
        console.print(table)
        counted = [r for r in rows if r.kind == "run"]
        broken = sum(r.status == "broken" for r in rows)
        console.print(f"{len(counted)} run{'s' if len(counted) != 1 else ''} in {folder}"
                      + (f", {broken} broken" if broken else ""), highlight=False)


@app.command()
def compare(folders: Annotated[list[str], typer.Argument(help="run folders (two or more), or one sweep folder")],
            out: Annotated[Optional[str], typer.Option("--out", metavar="PATH", help="folder (or .png file) for compare.png "
                                                                     "(default: the current folder)")] = None,
            as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False):
    """Runs side by side: the resolved recipe keys that differ, best and final metrics, and compare.png with
    their val accuracy and val loss curves overlaid."""
    from runner import runs as reading

    with handled():
        chosen = reading.runs_to_compare(folders)
        result = reading.compare(chosen)
        picture = Path(out) if out and out.lower().endswith(".png") else Path(out or ".") / "compare.png"
        result["picture"] = str(picture)
        for run in chosen:
            if run.problems:
                warn(f"{run.folder}: {'; '.join(run.problems)}")
            if not run.metrics:
                warn(f"{run.folder}: no metrics to plot")
        if as_json:
            print(json.dumps(result, indent=2))
        else:
            _print_comparison(chosen, result)
        try:  # after the tables: a picture that cannot be written must not lose them
            picture.parent.mkdir(parents=True, exist_ok=True)
            reading.plot_compare(chosen, picture, result["differs"])
        except (RunnerError, OSError) as exc:
            detail = exc.problems[0] if isinstance(exc, RunnerError) else f"{picture}: {exc.strerror or exc}"
            warn(f"{detail}; the comparison above stands")
            return
        if not as_json:
            console.print(f"curves: {picture}", highlight=False)


def _print_comparison(chosen, result: dict) -> None:
    from runner.runs import METRIC_ROWS, shown

    heads = [run.name for run in chosen]
    if result["differs"]:
        table = Table("recipe key", *heads, title="recipe keys that differ", title_justify="left")
        table.columns[0].no_wrap = True
        for row in result["differs"]:
            table.add_row(row["key"], *(Text("-", style="dim") if i in row["absent"] else shown(v)
                                        for i, v in enumerate(row["values"])))
        console.print(table)
    else:
        console.print("the runs' resolved recipes are the same", highlight=False)
    table = Table("metric", *heads, title="metrics", title_justify="left")
    table.columns[0].no_wrap = True
    for key, title in METRIC_ROWS:
        values = result["metrics"][key]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        best = None
        if key in ("best_val_acc", "final_val_acc", "final_train_acc") and numbers:
            best = max(numbers)
        elif key in ("final_val_loss", "final_train_loss") and numbers:
            best = min(numbers)
        cells = []
        for value in values:
            if value is None:
                cells.append("")
            elif key == "wall_s":
                cells.append(_wall(value))
            elif isinstance(value, float):
                cells.append(Text(f"{value:.4f}", style="bold green" if value == best and len(set(numbers)) > 1
                                  else ""))
            else:
                cells.append(str(value))
        table.add_row(title, *cells)
    console.print(table)
