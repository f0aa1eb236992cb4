"""``runner run``, ``resume`` and ``lr-find``: training a recipe (in this process with the live report, or in
several under torchrun) and the lr range test."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from runner.cli import load_resumed, load_with_catalog, app, console, handled, state
from runner.errors import RunnerError


@app.command()
def run(recipe: Annotated[Optional[str], typer.Argument(help="recipe file or packaged recipe name (e.g. extract)")] = None,
        set_: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help="override, key.path=value (YAML value); repeatable")] = [],
        resume: Annotated[Optional[str], typer.Option("--resume", metavar="FOLDER", help="run folder to continue from its last.pt")] = None,
        nproc: Annotated[int, typer.Option("--nproc", min=1, help="processes to train in, launched with torchrun "
                                                                  "(data-parallel; gloo on CPU, nccl on GPU)")] = 1,
        nnodes: Annotated[Optional[str], typer.Option(metavar="N|MIN:MAX", help="torchrun --nnodes (several machines)")] = None,
        node_rank: Annotated[Optional[int], typer.Option(help="torchrun --node-rank")] = None,
        master_addr: Annotated[Optional[str], typer.Option(metavar="HOST", help="torchrun --master-addr")] = None,
        master_port: Annotated[Optional[int], typer.Option(help="torchrun --master-port")] = None,
        seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="run the recipe with seeds 0..N-1 and "
                                                     "report mean ± std of best and final val accuracy (seeds.json)")] = None):
    """Train a recipe; writes a run folder with the resolved recipe, metrics, checkpoints and pictures."""
    with handled():
        if seeds is not None:
            if resume or nproc > 1 or nnodes:
                raise RunnerError("--seeds runs the recipe once per seed in this process: give a recipe, no --resume "
                                  "and no --nproc")
            if recipe is None:
                raise RunnerError("runner run --seeds needs a recipe (a file or a packaged name such as extract)")
            _train_seeds(recipe, set_, seeds)
        elif nproc > 1 or nnodes:
            _launch(recipe, set_, resume, nproc, nnodes, node_rank, master_addr, master_port)
        elif resume:
            if recipe or set_:
                raise RunnerError("--resume continues a run folder as it was: give no recipe and no --set")
            _train(None, [], resume)
        elif recipe is None:
            raise RunnerError("runner run needs a recipe (a file or a packaged name such as extract) or --resume")
        else:
            _train(recipe, set_, None)


def _launch(recipe, overrides, resume, nproc, nnodes, node_rank, master_addr, master_port) -> None:
    """Check the recipe here (bad input fails at once, exit 2), then run the same command under torchrun."""
    import subprocess

    from runner import distributed
    if resume:
        load_resumed(resume)
        argv = ["run", "--resume", resume]
    elif recipe is None:
        raise RunnerError("runner run needs a recipe (a file or a packaged name such as extract) or --resume")
    else:
        load_with_catalog(recipe, overrides)
        argv = ["run", recipe, *(a for o in overrides for a in ("--set", o))]
    flags = [*(["--debug"] if state["debug"] else []), *(a for p in state["plugins"] for a in ("--plugin", p))]
    command = distributed.torchrun_command(nproc, [*flags, *argv], nnodes, node_rank, master_addr, master_port)
    raise typer.Exit(subprocess.call(command))


@app.command("resume")
def resume_(folder: Annotated[str, typer.Argument(help="run folder holding last.pt")]):
    """Continue an interrupted run from its last finished epoch."""
    with handled():
        _train(None, [], folder)


def _train(recipe: str | None, overrides: list[str], resume: str | None) -> None:
    from runner import engine
    from runner.cli.report import RichReport

    if resume:
        loaded, catalog = load_resumed(resume)
    else:
        loaded, catalog = load_with_catalog(recipe, overrides)
    run_ = engine.build(loaded, catalog)
    report = RichReport(console)
    catalog.pm.register(report, name="runner.report")
    try:
        engine.fit(run_, Path(resume) if resume else None)
    finally:
        report.stop()
    from runner import distributed
    distributed.finish()  # not after a failure: the other processes may be inside a collective; torchrun ends them


def _train_seeds(recipe: str, overrides: list[str], count: int) -> None:
    """The recipe once per seed 0..count-1, each an ordinary run folder inside one ``<name>-seeds-<time>`` folder,
    then a table and mean ± std of best and final val accuracy, also written there as ``seeds.json``."""
    from runner import engine
    from runner.cli.report import RichReport
    from runner.engine.loop import seed_runs, seed_summary

    loaded, _ = load_with_catalog(recipe, overrides)  # bad input fails here, before any run
    name = loaded.name
    folder, per_seed = seed_runs(count, loaded.settings.output, name)
    summaries = []
    for changes in per_seed:
        loaded, catalog = load_with_catalog(recipe, overrides)
        loaded.settings = loaded.settings.model_copy(update=changes)
        console.print(f"[bold]seed {changes['seed']}[/] ({changes['seed'] + 1} of {count})")
        run_ = engine.build(loaded, catalog)
        report = RichReport(console)
        catalog.pm.register(report, name="runner.report")
        try:
            summaries.append(engine.fit(run_))
        finally:
            report.stop()
    result = seed_summary(summaries, folder, name)
    table = Table("seed", "best val acc", "best epoch", "final val acc", "wall s", title=f"{name}: {count} seeds")
    for row in result["runs"]:
        final = row["final_val_acc"]
        table.add_row(str(row["seed"]), f"{row['best_val_acc']:.4f}", str(row["best_epoch"]),
                      "" if final is None else f"{final:.4f}", f"{row['wall_s']:.1f}")
    console.print(table)
    best, final = result["best_val_acc"], result["final_val_acc"]
    shown = lambda s: f"{s['mean']:.4f} ± {s['std']:.4f}" if s["n"] else "n/a"  # noqa: E731
    console.print(f"[bold]best val acc {shown(best)}[/], final val acc {shown(final)} (mean ± sample std over "
                  f"seeds 0..{count - 1}); {folder}/seeds.json", highlight=False)


@app.command("lr-find")
def lr_find(recipe: Annotated[str, typer.Argument(help="recipe file or packaged recipe name")],
            set_: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help="override, key.path=value (YAML value)")] = []):
    """The lr range test: train briefly with an exponentially growing lr; table, suggestion and a PNG."""
    from runner import engine, lr_finder
    from runner.runfolder import save_json
    with handled():
        loaded, catalog = load_with_catalog(recipe, set_)
        run_ = engine.build(loaded, catalog, find_lr=False)
        if run_.cache:
            engine.prepare_features(run_)
        found = loaded.settings.lr_find
        result = lr_finder.find_lr(run_, found.start_lr, found.end_lr, found.steps, diverge=found.diverge)
        table = Table("lr", "smoothed loss", title=f"lr range test: {loaded.name}")
        shown = range(0, len(result.lrs), max(1, len(result.lrs) // 12))
        for i in sorted({*shown, len(result.lrs) - 1}):
            table.add_row(f"{result.lrs[i]:.2e}", f"{result.losses[i]:.4f}")
        console.print(table)
        console.print(f"{len(result.lrs)} steps; {result.stopped}")
        out = Path(loaded.settings.output) / f"{loaded.name}-lr_find"
        out.parent.mkdir(parents=True, exist_ok=True)
        save_json(result.as_dict(), out.with_suffix(".json"))
        lr_finder.plot(result, out.with_suffix(".png"))
        steep = f"; steepest fall at {result.steepest:.3g}" if result.steepest else ""
        console.print(f"[bold]suggested lr {result.suggestion:.3g}[/] ({result.how}{steep}); picture {out}.png; "
                      f"use it with --set optimizer.lr={result.suggestion:.3g} or optimizer: {{lr: auto}}")
