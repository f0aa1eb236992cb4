"""``runner list``, ``show``, ``plugins`` and ``new-plugin``: the components and plugins there are, as tables."""
from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from runner.cli import catalog_with_plugins, app, console, handled
from runner.types import KINDS
from runner.errors import RunnerError, did_you_mean

KIND_ALIASES = {"datasets": "dataset", "backbones": "backbone", "freeze_policies": "freeze", "freeze_policy": "freeze",
                "freezes": "freeze", "optimizers": "optimizer", "schedulers": "scheduler", "optim": "optimizer"}
KIND_TITLES = {"freeze": "freeze policy"}


def _kind(word: str) -> str:
    kind = KIND_ALIASES.get(word, word)
    if kind not in KINDS:
        raise RunnerError(f"unknown component kind '{word}'{did_you_mean(word, [*KINDS, *KIND_ALIASES])}; "
                          f"kinds: {', '.join(KINDS)}")
    return kind


@app.command("list")
def list_(kind: Annotated[Optional[str], typer.Argument(help="one kind: datasets, backbones, freeze, ...")] = None):
    """List every component by kind, with the plugin that provides it."""
    with handled():
        kinds = [_kind(kind)] if kind else list(KINDS)
        catalog = catalog_with_plugins()
        table = Table("kind", "name", "plugin", "summary")
        table.columns[0].no_wrap = True
        for k in kinds:
            for name in catalog.names(k):
                for entry in catalog.clashes[k].get(name) or [catalog.entries[k][name]]:
                    shown = f"{entry.plugin}:{name}" if name in catalog.clashes[k] else name
                    table.add_row(KIND_TITLES.get(k, k), shown, _short_plugin(entry.plugin),
                                  entry.component.summary)
        console.print(table)


def _short_plugin(name: str) -> str:
    """Built-in plugins by their module's last part (``optim (built-in)``): the table fits 80 columns."""
    return f"{name.removeprefix('runner_plugins.')} (built-in)" if name.startswith("runner_plugins.") else name


def _type_name(annotation) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


@app.command()
def show(kind: Annotated[str, typer.Argument(help="component kind, or 'settings' for the run settings")],
         name: Annotated[Optional[str], typer.Argument(help="component name")] = None):
    """Show a component's parameters (or the recipe's run settings): type, default and help."""
    with handled():
        if kind == "settings":
            from runner.recipes import Settings
            console.print("[bold]run settings[/]: the recipe's keys beside its component sections")
            console.print(_fields_table("setting", Settings))
            catalog = catalog_with_plugins()
            for section_name, (section, plugin) in sorted(catalog.sections.items()):
                default = "on unless `{0}: false`" if section.on_by_default else "off unless the recipe has `{0}:`"
                console.print(f"\n[bold]{section_name}[/] ({plugin}): {section.summary}; "
                              f"{default.format(section_name)}", highlight=False)
                console.print(_fields_table("setting", section.params, prefix=f"{section_name}."))
            return
        k = _kind(kind)
        if name is None:
            raise RunnerError(f"runner show {kind} needs a component name; runner list {kind} shows them")
        catalog = catalog_with_plugins()
        component = catalog.get(k, name)
        console.print(f"[bold]{KIND_TITLES.get(k, k)} {name}[/] ({catalog.entry(k, name).plugin}): "
                      f"{component.summary}")
        console.print(_fields_table("parameter", component.params))


def _fields_table(title: str, model, prefix: str = "") -> Table:
    """One row per field of a pydantic model; nested models (early_stopping, lr_find) as ``key.field`` rows."""
    from pydantic import BaseModel

    table = Table(title, "type", "default", "help")
    for field, info in model.model_fields.items():
        default = "required" if info.is_required() else repr(info.default)
        nested = [a for a in (info.annotation, *typing.get_args(info.annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        table.add_row(prefix + field, nested[0].__name__ if nested else _type_name(info.annotation),
                      "-" if nested else default, info.description or "")
        for sub, sub_info in (nested[0].model_fields.items() if nested else ()):
            table.add_row(f"  {field}.{sub}", _type_name(sub_info.annotation), repr(sub_info.default),
                          sub_info.description or "")
    return table


@app.command()
def plugins(strict: Annotated[bool, typer.Option("--strict", help="a plugin that fails to load is an error")] = False):
    """List every loaded plugin: where it comes from, the hooks it implements, the components it adds."""
    with handled():
        catalog = catalog_with_plugins(strict=strict, lenient=True)
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
    from runner.scaffold import new_plugin as scaffold
    with handled():
        root = scaffold(name, kind, Path(into))
        console.print(f"wrote {root}: cd {root} && pip install -e . && pytest")
