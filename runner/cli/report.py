"""The on-screen report of a run, as a lifecycle plugin ``runner run`` registers: a progress bar per phase with
images/s, a table growing one row per epoch, and a closing summary; and the plan table (``runner plan``)."""
from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from runner.cli import KEEP, NUMBER, WORDS, WRAP, Rows
from runner.hookspecs import hookimpl


def plan_table(data: dict) -> Rows:
    """The plan as a table; on a screen too narrow for it, a line per group with its modules and numbers."""
    title = f"{data['recipe']}: {data['trainable']:,} of {data['total']:,} parameters train"
    table = Rows(("group", KEEP), ("modules", WORDS), ("parameters", NUMBER), ("trains", KEEP), ("lr", NUMBER),
                 ("wd", NUMBER), ("BatchNorm", KEEP), title=title, narrow=lambda: [_plan_lines(data, title)])
    for row in data["rows"]:
        table.add_row(row["group"], row["modules"], f"{row['parameters']:,}", row["trains"], _plan_lr(row),
                      _plan_wd(row), row["batchnorm"])
    return table


def _plan_lines(data: dict, title: str) -> Rows:
    lines = Rows(("group", KEEP), ("plan", WRAP), title=title, show_header=False)
    for row in data["rows"]:
        when = "never trains" if row["trains"] == "never" else f"trains {row['trains']}, lr {_plan_lr(row)}, " \
                                                               f"weight decay {_plan_wd(row)}"
        lines.add_row(row["group"], f"{row['parameters']:,} parameters in {row['modules']}; {when}; "
                                    f"BatchNorm {row['batchnorm']}")
    return lines


def _plan_wd(row: dict) -> str:
    return f"{row['weight_decay']:.3g}" if row["trains"] != "never" else "-"


class RichReport:
    def __init__(self, console: Console):
        self.console = console
        self.live: Live | None = None
        self.table: Table | None = None
        self.progress = Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:>7} img/s"), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, int] = {}
        self.head = -1

    @hookimpl
    def runner_run_start(self, run):
        trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in run.model.parameters())
        notes = run.notes
        self.head = run.group_names.index("head") if "head" in run.group_names else len(run.group_names) - 1
        self.say(
            f"[bold]{run.name}[/]: {len(run.dataset('train'))} train / {len(run.dataset('val'))} val images, "
            f"{len(run.classes)} classes; {trainable:,} of {total:,} parameters trainable; "
            f"{notes['device']}; {run.epochs} epochs -> {run.folder}")
        self.say(f"precision: {notes['precision']}; feature cache: {notes['cache']}", highlight=False)
        if not run.resumed:  # a fresh run shows its plan; a resumed one has shown it
            self.console.print(plan_table(run.plan()), crop=False)
        skipped = run.skipped
        if skipped:
            self.say(f"[yellow]skipped {len(skipped)} unreadable image(s)[/], e.g. {skipped[0]}",
                               highlight=False)
        self.table = Table(title=None, show_edge=False)
        for column in ("epoch", "train loss", "train acc", "val loss", "val acc", "head lr", "s", "img/s", ""):
            self.table.add_column(column, justify="right")
        for phase in ("train", "val"):
            self.tasks[phase] = self.progress.add_task(phase, total=run.size(phase), rate="")
        if self.console.is_terminal:  # a live table and bars on a terminal; plain lines in a log
            self.live = Live(Group(self.table, self.progress), console=self.console, refresh_per_second=4)
            self.live.start()

    @hookimpl
    def runner_batch_end(self, run, epoch, phase, batch, size):
        if self.live is None:
            return
        task = self.tasks[phase]
        if batch == 0:
            self.progress.reset(task, description=f"{phase} {epoch}")
        self.progress.advance(task, size)
        speed = self.progress.tasks[task].speed
        self.progress.update(task, rate=f"{speed:.0f}" if speed else "")

    @hookimpl
    def runner_epoch_end(self, run, epoch, metrics):
        m = metrics
        self.table.add_row(str(epoch), f"{m['train_loss']:.4f}", f"{m['train_acc']:.4f}", f"{m['val_loss']:.4f}",
                           f"{m['val_acc']:.4f}", f"{m['lr'][self.head]:.2g}", f"{m['seconds']:.1f}",
                           f"{m['images_per_s']:.0f}", "[green]best[/]" if m["best"] else "")
        if self.live is None:
            self.say(f"epoch {epoch}/{run.epochs}: train loss {m['train_loss']:.4f} "
                               f"acc {m['train_acc']:.4f}, val loss {m['val_loss']:.4f} acc {m['val_acc']:.4f}, "
                               f"head lr {m['lr'][self.head]:.2g}, {m['seconds']:.1f} s{' best' if m['best'] else ''}")

    @hookimpl
    def runner_run_end(self, run, summary):
        self.stop()
        self.say(f"[bold green]best val acc {summary['best_val_acc']:.4f}[/] at epoch "
                           f"{summary['best_epoch']} of {summary['epochs']}; {summary['wall_s']:.1f} s; "
                           f"run folder {summary['folder']}")

    def say(self, text: str, **options) -> None:
        """A line of the run's report: wrapped at word boundaries on a terminal; in a pipe or a log, one line per
        event, never broken at 80 columns (a grep finds it whole, a path stays whole)."""
        self.console.print(text, soft_wrap=not self.console.is_terminal, **options)

    def stop(self) -> None:
        if self.live is not None:
            for task in self.tasks.values():
                self.progress.update(task, visible=False)
            self.live.stop()
            self.live = None


def _plan_lr(row: dict) -> str:
    if row["trains"] == "never":
        return "-"
    if row["lr"] is None:  # lr: auto, before the lr finder ran
        return "auto" if row["lr_scale"] == 1 else f"auto x {row['lr_scale']:.3g}"
    return f"{row['lr']:.3g}"
