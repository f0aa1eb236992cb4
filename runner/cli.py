"""The ``runner`` command line: parse arguments, call the library, render with rich. Nothing else lives here."""
from __future__ import annotations

import contextlib
import sys
import typing
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.components import KINDS
from runner.errors import RunnerError, did_you_mean

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer-learning runs for image classification from YAML recipes.")
console = Console()
errors = Console(stderr=True, highlight=False)
state: dict = {"debug": False, "plugins": []}

KIND_ALIASES = {"datasets": "dataset", "backbones": "backbone", "freeze_policies": "freeze", "freeze_policy": "freeze",
                "freezes": "freeze", "optimizers": "optimizer", "schedulers": "scheduler", "optim": "optimizer"}
KIND_TITLES = {"freeze": "freeze policy"}


@contextlib.contextmanager
def handled():
    """RunnerError -> its lines on stderr and exit 2; Ctrl-C -> exit 130; tracebacks only with --debug."""
    try:
        yield
    except RunnerError as exc:
        if state["debug"]:
            raise
        for problem in exc.problems:
            errors.print(Text("error: ", style="red") + Text(problem), soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        errors.print("interrupted")
        raise typer.Exit(130) from None


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
         plugin: Annotated[list[str], typer.Option("--plugin", help="plugin file or module to load; repeatable")] = []
         ) -> None:
    state["debug"] = debug
    state["plugins"] = list(plugin)


def _kind(word: str) -> str:
    kind = KIND_ALIASES.get(word, word)
    if kind not in KINDS:
        raise RunnerError(f"unknown component kind '{word}'{did_you_mean(word, [*KINDS, *KIND_ALIASES])}; "
                          f"kinds: {', '.join(KINDS)}")
    return kind


def _catalog(recipe=None, strict: bool = False):
    """The catalog with --plugin files and, given a loaded recipe, its ``plugins:``; load failures are warned."""
    from runner.plugins import load_catalog
    catalog = load_catalog([*state["plugins"], *(recipe.plugin_refs() if recipe else [])], strict=strict)
    for failure in catalog.plugins.failures:
        errors.print(Text("warning: ", style="yellow") + Text(failure.error), soft_wrap=True)
    return catalog


@app.command("list")
def list_(kind: Annotated[Optional[str], typer.Argument(help="one kind: datasets, backbones, freeze, ...")] = None):
    """List every component by kind, with the plugin that provides it."""
    with handled():
        kinds = [_kind(kind)] if kind else list(KINDS)
        catalog = _catalog()
        table = Table("kind", "name", "plugin", "summary")
        for column in table.columns[:3]:
            column.no_wrap = True
        for k in kinds:
            for name in catalog.names(k):
                for entry in catalog.clashes[k].get(name) or [catalog.entries[k][name]]:
                    shown = f"{entry.plugin}:{name}" if name in catalog.clashes[k] else name
                    table.add_row(KIND_TITLES.get(k, k), shown, entry.plugin, entry.component.summary)
        console.print(table)


def _type_name(annotation) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


@app.command()
def show(kind: Annotated[str, typer.Argument(help="component kind")],
         name: Annotated[str, typer.Argument(help="component name")]):
    """Show a component's parameters: type, default and help."""
    with handled():
        k = _kind(kind)
        catalog = _catalog()
        component = catalog.get(k, name)
        console.print(f"[bold]{KIND_TITLES.get(k, k)} {name}[/] ({catalog.entry(k, name).plugin}): "
                      f"{component.summary}")
        table = Table("parameter", "type", "default", "help")
        for field, info in component.params.model_fields.items():
            default = "required" if info.is_required() else repr(info.default)
            table.add_row(field, _type_name(info.annotation), default, info.description or "")
        console.print(table)


@app.command()
def plugins(strict: Annotated[bool, typer.Option("--strict", help="a plugin that fails to load is an error")] = False):
    """List every loaded plugin: where it comes from, the hooks it implements, the components it adds."""
    with handled():
        catalog = _catalog(strict=strict)
        added: dict[str, list[str]] = {}
        for kind in KINDS:
            entries = [*catalog.entries[kind].values(), *(e for es in catalog.clashes[kind].values() for e in es[1:])]
            for entry in entries:
                added.setdefault(entry.plugin, []).append(f"{KIND_TITLES.get(kind, kind)} {entry.component.name}")
        table = Table("plugin", "from", "hooks", "components")
        for name, info in catalog.plugins.info.items():
            if info.error:
                table.add_row(name, info.source, "", Text(info.error, style="red"))
                continue
            hooks = sorted(h.name for h in catalog.pm.get_hookcallers(catalog.pm.get_plugin(name)) or [])
            components = added.get(name, [])
            shown = ", ".join(components[:6]) + (f" and {len(components) - 6} more" if len(components) > 6 else "")
            table.add_row(name, info.source, ", ".join(hooks), shown)
        console.print(table)


@app.command("new-plugin")
def new_plugin(name: Annotated[str, typer.Argument(help="package name, e.g. runner-mybackbone")],
               kind: Annotated[str, typer.Option(help="backbone, dataset, freeze, optimizer, scheduler or hooks")] = "backbone",
               into: Annotated[str, typer.Option(help="folder to create the package in")] = "."):
    """Write a pip-installable plugin package: pyproject with the entry point, one component, one test."""
    from pathlib import Path

    from runner.scaffold import new_plugin as scaffold
    with handled():
        root = scaffold(name, kind, Path(into))
        console.print(f"wrote {root}: cd {root} && pip install -e . && pytest")


@app.command()
def validate(recipe: Annotated[str, typer.Argument(help="recipe file or packaged recipe name")],
             set_: Annotated[list[str], typer.Option("--set", help="override, key.path=value (YAML value)")] = []):
    """Check a recipe and its components' parameters without training."""
    from runner import recipe as recipes
    with handled():
        loaded = recipes.load(recipe, set_, _catalog)
        console.print(f"{loaded.path}: ok")


@app.command()
def run(recipe: Annotated[str, typer.Argument(help="recipe file or packaged recipe name (e.g. extract)")],
        set_: Annotated[list[str], typer.Option("--set", help="override, key.path=value (YAML value); repeatable")] = []):
    """Train a recipe; writes a run folder with the resolved recipe, metrics and best weights."""
    from runner import engine, recipe as recipes
    from runner.report import RichReport
    with handled():
        made: dict = {}

        def catalog_for(loaded_recipe):
            made["catalog"] = _catalog(loaded_recipe)
            return made["catalog"]

        loaded = recipes.load(recipe, set_, catalog_for)
        catalog = made["catalog"]
        run_ = engine.build(loaded, catalog)
        report = RichReport(console)
        catalog.pm.register(report, name="runner.report")
        try:
            engine.fit(run_)
        finally:
            report.stop()


def entry() -> None:
    app()


if __name__ == "__main__":
    sys.exit(entry())
