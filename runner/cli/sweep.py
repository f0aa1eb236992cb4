"""``runner sweep``: a recipe trained over a grid (or optuna-sampled trials), shown as it goes; the work is
``runner.sweep``'s, the display ``runner.cli.sweep_display``'s."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.text import Text

from runner.cli import app, console, errors, handled, state


SWEEP_HELP = ("Train a recipe over a grid of overrides (or optuna-sampled trials), ranked in a leaderboard; the same "
              "command again skips finished trials and continues an interrupted one.")


@app.command(help=SWEEP_HELP)  # one line: typer's help keeps a docstring's line breaks
def sweep(recipe: Annotated[str, typer.Argument(help="recipe file or packaged recipe name")],
          grid: Annotated[list[str], typer.Option("--grid", metavar="KEY=V1,V2", help="key.path=v1,v2,... (YAML "
                                                  "values); repeatable: every combination trains")] = [],
          set_: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help="override for every trial, "
                                                  "key.path=value")] = [],
          out: Annotated[Optional[str], typer.Option("--out", metavar="FOLDER", help="sweep folder (default: "
                                                     "<output>/sweep-<recipe>-<hash>, found again by the same "
                                                     "command)")] = None,
          optuna: Annotated[Optional[int], typer.Option("--optuna", metavar="N", help="sample N trials with "
                                                        "optuna's TPE (needs optuna: the sweep extra)")] = None,
          range_: Annotated[list[str], typer.Option("--range", metavar="KEY=LOW:HIGH", help="with --optuna: "
                                                    "key=low:high[:log] or key=a,b,c; repeatable")] = []):
    """``runner sweep``: see SWEEP_HELP."""
    from runner import sweep as sweeps
    from runner.cli.sweep_display import SweepDisplay
    from runner.plugins import load_catalog

    warned: set[str] = set()

    def catalog_for(loaded):  # a fresh catalog per trial; each plugin failure warned once
        catalog = load_catalog([*state["plugins"], *loaded.plugin_refs()])
        for failure in catalog.plugins.failures:
            if failure.error not in warned:
                warned.add(failure.error)
                errors.print(Text("warning: ", style="yellow") + Text(failure.error), soft_wrap=True)
        return catalog

    with handled():
        plan_ = sweeps.prepare(recipe, grid, set_, optuna, range_, out, catalog_for)
        try:
            sweeps.run(plan_, catalog_for, SweepDisplay(console))
        except sweeps.SweepInterrupted as exc:
            again = sweeps.command_line(recipe, grid, set_, out, optuna, range_, state["plugins"])
            errors.print(f"{exc}; continue with the same command: {again}", soft_wrap=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
