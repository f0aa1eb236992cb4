"""The on-screen report of a run, as a lifecycle plugin the CLI registers: a progress bar per phase with
images/s, a table growing one row per epoch, and a closing summary."""
from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from runner.hookspecs import hookimpl


def plan_table(data: dict) -> Table:
    table = Table("group", "modules", "parameters", "trains", "lr", "wd", "BatchNorm",
                  title=f"{data['recipe']}: {data['trainable']:,} of {data['total']:,} parameters train",
                  title_justify="left")
    for index in (0, 2, 3, 4, 6):  # the modules column is the one that wraps
        table.columns[index].no_wrap = True
    table.columns[1].overflow = "fold"
    for row in data["rows"]:
        table.add_row(row["group"], row["modules"], f"{row['parameters']:,}", row["trains"],
                      _plan_lr(row),
                      f"{row['weight_decay']:.3g}" if row["trains"] != "never" else "-", row["batchnorm"])
    return table


class RichReport:
    def __init__(self, console: Console):
        self.console = console
        self.live: Live | None = None
        self.table: Table | None = None
        self.progress = Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:>7} img/s"), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, int] = {}

    @hookimpl
    def runner_run_start(self, run):
        s = run.recipe.settings
        dtype = str(run.autocast_dtype).replace("torch.", "") if run.autocast_dtype else "fp32"
        trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in run.model.parameters())
        self.console.print(
            f"[bold]{run.recipe.name}[/]: {len(run.data.train)} train / {len(run.data.val)} val images, "
            f"{len(run.classes)} classes; {trainable:,} of {total:,} parameters trainable; "
            f"{run.device} {dtype}; {s.epochs} epochs -> {run.folder}")
        self.console.print(f"precision: {run.precision_note}; feature cache: {run.cache_note}", highlight=False)
        if not run.epoch:  # a fresh run shows its plan; a resumed one has shown it
            from runner.plan import plan

            self.console.print(plan_table(plan(run)))
        if run.data.skipped:
            self.console.print(f"[yellow]skipped {len(run.data.skipped)} unreadable image(s)[/], e.g. "
                               f"{run.data.skipped[0]}", highlight=False)
        self.table = Table(title=None, show_edge=False)
        for column in ("epoch", "train loss", "train acc", "val loss", "val acc", "lr", "s", "img/s", ""):
            self.table.add_column(column, justify="right")
        for phase, loader in (("train", run.train_loader), ("val", run.val_loader)):
            self.tasks[phase] = self.progress.add_task(phase, total=len(loader.dataset), rate="")
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
                           f"{m['val_acc']:.4f}", f"{m['lr'][0]:.2g}", f"{m['seconds']:.1f}",
                           f"{m['images_per_s']:.0f}", "[green]best[/]" if m["best"] else "")
        if self.live is None:
            self.console.print(f"epoch {epoch}/{run.recipe.settings.epochs}: train loss {m['train_loss']:.4f} "
                               f"acc {m['train_acc']:.4f}, val loss {m['val_loss']:.4f} acc {m['val_acc']:.4f}, "
                               f"lr {m['lr'][0]:.2g}, {m['seconds']:.1f} s{' best' if m['best'] else ''}")

    @hookimpl
    def runner_run_end(self, run, summary):
        self.stop()
        self.console.print(f"[bold green]best val acc {summary['best_val_acc']:.4f}[/] at epoch "
                           f"{summary['best_epoch']} of {summary['epochs']}; {summary['wall_s']:.1f} s; "
                           f"run folder {summary['folder']}")

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
