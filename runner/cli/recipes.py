"""``runner validate`` and ``runner plan``: a recipe checked, and the parameter groups it trains, without
training."""
from __future__ import annotations

from typing import Annotated

import typer

from runner.cli import app, console, handled, load_with_catalog, print_json, print_rows


@app.command()
def validate(recipe: Annotated[str, typer.Argument(help="recipe file or packaged recipe name")],
             set_: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE",
                                                     help="override, key.path=value (YAML value)")] = []):
    """Check a recipe and its components' parameters without training."""
    with handled():
        loaded, _ = load_with_catalog(recipe, set_)
        console.print(f"{loaded.path}: ok", soft_wrap=True, highlight=False)


@app.command()
def plan(recipe: Annotated[str, typer.Argument(help="recipe file or packaged recipe name")],
         set_: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE",
                                                 help="override, key.path=value (YAML value)")] = [],
         as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False):
    """Show, before any training, the parameter groups a recipe trains: size, when, lr, weight decay, BatchNorm."""
    from runner import engine
    from runner.cli.report import plan_table
    with handled():
        loaded, catalog = load_with_catalog(recipe, set_)
        data = engine.plan(loaded, catalog)
        if as_json:
            print_json(data)
        else:
            print_rows(plan_table(data))
