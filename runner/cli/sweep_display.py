"""How ``runner sweep`` shows a sweep: a line per trial and per epoch, and the leaderboard as a rich table after
each trial. ``SweepDisplay`` is the display object ``runner.sweep.run`` calls, and a lifecycle plugin of each run."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

from runner.cli import KEEP, NUMBER, Rows
from runner.hookspecs import hookimpl
from runner.sweep import FINISHED, Sweep, best_trial, is_finished, shown_value


def leaderboard_table(rows: list[dict], title: str | None = None) -> Rows:
    """The leaderboard: a column per swept key, best val accuracy first; values and folder names never cut."""
    keys = list(dict.fromkeys(k for row in rows for k in (row["overrides"] or {})))
    last = [k.rsplit(".", 1)[-1] for k in keys]
    headers = [short if last.count(short) == 1 and short != "name" else key for key, short in zip(keys, last)]
    table = Rows(("trial", NUMBER), *((h, KEEP) for h in headers), ("val acc", NUMBER), ("epoch", NUMBER),
                 ("s", NUMBER), ("status", KEEP), ("run folder", KEEP), title=title)
    for row in rows:
        overrides = row["overrides"] or {}
        acc = "" if row["best_val_acc"] is None else f"{row['best_val_acc']:.4f}"
        style = {"done": "green", "pruned": "yellow", "diverged": "red", "failed": "red"}.get(row["status"], "")
        table.add_row(str(row["trial"]), *(shown_value(overrides[k]) if k in overrides else "" for k in keys), acc,
                      "" if row["best_epoch"] is None else str(row["best_epoch"]),
                      "" if row["wall_s"] is None else f"{row['wall_s']:.1f}",
                      Text(row["status"], style=style), Path(row["folder"]).name if row["folder"] else "")
    return table


class SweepDisplay:
    """Readable progress of a sweep: a line per trial and per epoch, and the leaderboard after each trial."""

    def __init__(self, console: Console):
        self.console = console
        self.shown = False

    def begin(self, sweep: Sweep, state: dict) -> None:
        what = (" x ".join(f"{len(a.texts)} {a.key}" for a in sweep.axes) if sweep.kind == "grid"
                else f"optuna TPE over {', '.join(a.key for a in sweep.axes)}")
        done = sum(is_finished(t) for t in state["trials"])
        again = f"; {done} finished before" if done else ""
        self.console.print(f"[bold]sweep[/] {sweep.name}: {sweep.total} trials ({what}) in {sweep.folder}{again}",
                           highlight=False, soft_wrap=True)

    def skipped(self, entry: dict, total: int) -> None:
        acc = "" if entry.get("best_val_acc") is None else f", val acc {entry['best_val_acc']:.4f}"
        self.console.print(f"trial {entry['trial']}/{total} {entry['name']}: skipped, {entry['status']} "
                           f"before{acc}", highlight=False, soft_wrap=True)

    def trial_start(self, entry: dict, total: int, resume: Path | None) -> None:
        overrides = " ".join(f"{k}={shown_value(v)}" for k, v in entry["overrides"].items())
        how = f", continuing {resume} from its last.pt" if resume else ""
        self.console.print(f"[bold]trial {entry['trial']}/{total}[/] {overrides}{how}", highlight=False,
                           soft_wrap=True)

    @hookimpl
    def runner_run_start(self, run):
        self.console.print(f"  {run.name}: {len(run.dataset('train'))} train / {len(run.dataset('val'))} val images, "
                           f"{run.epochs} epochs -> {run.folder}", highlight=False, soft_wrap=True)

    @hookimpl
    def runner_epoch_end(self, run, epoch, metrics):
        m = metrics
        self.console.print(f"  epoch {epoch}/{run.epochs}: train loss {m['train_loss']:.4f} "
                           f"acc {m['train_acc']:.4f}, val loss {m['val_loss']:.4f} acc {m['val_acc']:.4f}, "
                           f"{m['seconds']:.1f} s{' best' if m['best'] else ''}", highlight=False, soft_wrap=True)

    def trial_end(self, entry: dict, total: int) -> None:
        acc = "" if entry.get("best_val_acc") is None else f": best val acc {entry['best_val_acc']:.4f} at epoch " \
                                                          f"{entry['best_epoch']}"
        note = f" ({entry['note']})" if entry.get("note") else ""
        self.console.print(f"trial {entry['trial']}/{total} {entry['status']}{acc}{note}", highlight=False,
                           soft_wrap=True)

    def leaderboard(self, rows: list[dict], sweep: Sweep) -> None:
        finished = sum(r["status"] in FINISHED for r in rows)
        self.shown = True
        self.console.print(leaderboard_table(rows, f"leaderboard: {finished} of {sweep.total} trials"), crop=False)

    def end(self, rows: list[dict], sweep: Sweep, state: dict) -> None:
        if not self.shown and rows:  # nothing ran this time: show where the sweep stands
            self.leaderboard(rows, sweep)
        best = best_trial(state)
        if best is None:
            self.console.print(f"no trial finished; leaderboard in {sweep.folder}", highlight=False, soft_wrap=True)
            return
        self.console.print(f"[bold green]best: trial {best['trial']}[/] "
                           f"{' '.join(f'{k}={shown_value(v)}' for k, v in best['overrides'].items())}, "
                           f"val acc {best['best_val_acc']:.4f}; run folder {best['folder']}", highlight=False,
                           soft_wrap=True)
        self.console.print(f"leaderboard: {sweep.folder / 'leaderboard.csv'}, {sweep.folder / 'leaderboard.json'}; "
                           f"best recipe: {sweep.folder / 'best.yaml'}", highlight=False, soft_wrap=True)
