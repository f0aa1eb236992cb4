"""``runner list``, ``show``, ``plugins`` and ``new-plugin``: the components and plugins there are, as tables that
keep every name whole (or as lists on a narrow screen), or as JSON."""
from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.padding import Padding
from rich.text import Text

from runner.cli import KEEP, WORDS, WRAP, Rows, app, catalog_with_plugins, console, handled, print_json, print_rows
from runner.errors import RunnerError
from runner.kinds import KINDS

KIND_ALIASES = {"datasets": "dataset", "backbones": "backbone", "freeze_policies": "freeze", "freeze_policy": "freeze",
                "freeze-policy": "freeze", "freezes": "freeze", "optimizers": "optimizer", "optim": "optimizer",
                "schedulers": "scheduler"}
"""Other words people use for a kind: accepted silently. The kind's own name is the recipe key (``freeze``)."""


def _kind(word: str) -> str:
    kind = KIND_ALIASES.get(word.lower().replace(" ", "_"), word.lower())
    if kind not in KINDS:
        import difflib

        close = difflib.get_close_matches(word.lower(), [*KINDS, *KIND_ALIASES], n=1, cutoff=0.6)
        hint = f" (did you mean '{KIND_ALIASES.get(close[0], close[0])}'?)" if close else ""
        raise RunnerError(f"unknown component kind '{word}'{hint}; kinds: {', '.join(KINDS)}")
    return kind


def _entries(catalog, kinds):
    """(kind, the name that picks it, entry) for every component: ``plugin:name`` where two plugins offer a name."""
    for k in kinds:
        for name in catalog.names(k):
            for entry in catalog.clashes[k].get(name) or [catalog.entries[k][name]]:
                yield k, (f"{entry.plugin}:{name}" if name in catalog.clashes[k] else name), entry


@app.command("list")
def list_(kind: Annotated[Optional[str], typer.Argument(help="one kind: dataset, backbone, freeze, optimizer or "
                                                                "scheduler")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="print the components as JSON: kind, name, plugin, "
                                                               "summary, parameters' JSON schema")] = False):
    """List every component by kind, with the plugin that provides it."""
    with handled():
        kinds = [_kind(kind)] if kind else list(KINDS)
        catalog = catalog_with_plugins()
        found = list(_entries(catalog, kinds))
        if as_json:
            print_json([{"kind": k, "name": entry.component.name, "plugin": entry.plugin,
                         "summary": entry.component.summary, "params": entry.component.params.model_json_schema()}
                        for k, _, entry in found])
            return
        columns = [("name", KEEP), ("plugin", KEEP), ("summary", WRAP)]
        table = Rows(*([("kind", KEEP)] if kind is None else []), *columns, key=1 if kind else 2,
                     narrow=lambda: _grouped(found))
        for k, shown, entry in found:
            table.add_row(*([k] if kind is None else []), shown, entry.plugin, entry.component.summary)
        print_rows(table)


def _grouped(found):
    """``runner list`` on a narrow screen: a heading per kind and plugin, then each name and its summary."""
    groups: dict[tuple[str, str], list] = {}
    for k, shown, entry in found:
        groups.setdefault((k, entry.plugin), []).append((shown, entry.component.summary))
    for (k, plugin), rows in groups.items():
        yield Text.assemble((k, "bold"), "  ", (f"from {plugin}", "dim"))
        inner = Rows(("name", KEEP), ("summary", WRAP), show_header=False)
        for row in rows:
            inner.add_row(*row)
        yield Padding(inner, (0, 0, 0, 2))


# -- parameter types as a person writes them -------------------------------------------------------------------------

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def type_text(annotation: Any, metadata: list | tuple = ()) -> str:
    """``float > 0 | 'auto'``, ``int >= 1``, ``'standard' | 'none'``, ``bool``, ``str | None``,
    ``tuple[float, float]``: a pydantic field's annotation and its constraints (annotated_types metadata)."""
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        extra = [m for item in args[1:] for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
        return type_text(args[0], [*metadata, *extra])
    if origin in (typing.Union, types.UnionType):
        numeric = [a for a in args if a in (int, float)]
        return " | ".join(type_text(a, metadata if a in numeric or not numeric else ()) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(v) for v in args)
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is typing.Any:
        return "any"
    if origin in (list, tuple, set, frozenset, dict) or origin is not None:
        name = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else type_text(a) for a in args)
        return _bounded(f"{name}[{inner}]" if args else name, metadata)
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return annotation.__name__
        if issubclass(annotation, Path):
            return "path"
        return _bounded(annotation.__name__, metadata)
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def _bounded(name: str, metadata) -> str:
    """``float > 0``, ``0 <= float <= 1``, ``list[str] (length >= 1)`` from annotated_types constraints."""
    lower = upper = None
    notes = []
    for item in metadata:
        for attr, sign in _BOUNDS.items():
            value = getattr(item, attr, None)
            if value is not None:
                if attr in ("gt", "ge"):
                    lower = (sign, value)
                else:
                    upper = (sign, value)
        if getattr(item, "multiple_of", None) is not None:
            notes.append(f"multiple of {item.multiple_of}")
        if getattr(item, "min_length", None) is not None:
            notes.append(f"length >= {item.min_length}")
        if getattr(item, "max_length", None) is not None:
            notes.append(f"length <= {item.max_length}")
    if lower and upper:
        flipped = {">": "<", ">=": "<="}[lower[0]]
        text = f"{lower[1]} {flipped} {name} {upper[0]} {upper[1]}"
    elif lower or upper:
        sign, value = lower or upper
        text = f"{name} {sign} {value}"
    else:
        text = name
    return f"{text} ({', '.join(notes)})" if notes else text


def _default(info) -> Any:
    from pydantic_core import PydanticUndefined

    if info.is_required():
        return PydanticUndefined
    return info.get_default(call_default_factory=True)


def field_rows(model, prefix: str = "") -> list[dict]:
    """One dict per field of a pydantic model (name, type, default, required, help); a nested model's fields
    follow it as ``key.field``."""
    from pydantic import BaseModel

    rows = []
    for field, info in model.model_fields.items():
        nested = [a for a in (info.annotation, *typing.get_args(info.annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        default = _default(info)
        rows.append({"name": prefix + field, "type": type_text(info.annotation, info.metadata),
                     "required": info.is_required(), "default": None if info.is_required() or nested else default,
                     "help": info.description or "", "nested": bool(nested)})
        for sub in (field_rows(nested[0], f"{prefix}{field}.") if nested else []):
            rows.append(sub)
    return rows


def _shown_default(row: dict) -> str:
    if row["required"]:
        return "required"
    if row["nested"]:
        return "-"
    return repr(row["default"])


def _fields_table(title: str, model, prefix: str = "") -> Rows:
    table = Rows((title, KEEP), ("type", WORDS), ("default", KEEP), ("help", WRAP))
    for row in field_rows(model, prefix):
        table.add_row(row["name"], row["type"], _shown_default(row), row["help"])
    return table


def _jsonable(rows: list[dict]) -> list[dict]:
    import json

    def plain(value):
        try:
            json.dumps(value)
            return value
        except (TypeError, ValueError):
            return repr(value)

    return [{k: plain(v) for k, v in row.items() if k != "nested"} for row in rows]


@app.command()
def show(kind: Annotated[str, typer.Argument(help="component kind (dataset, backbone, freeze, optimizer, "
                                                  "scheduler), or 'settings' for the run settings")],
         name: Annotated[Optional[str], typer.Argument(help="component name (plugin:name where two plugins offer "
                                                            "it)")] = None,
         as_json: Annotated[bool, typer.Option("--json", help="print the parameters as JSON")] = False):
    """Show a component's parameters (or the recipe's run settings): type, default and help."""
    with handled():
        if kind == "settings":
            _show_settings(as_json)
            return
        k = _kind(kind)
        if name is None:
            raise RunnerError(f"runner show {k} needs a component name; runner list {k} shows them")
        catalog = catalog_with_plugins()
        entry = catalog.entry(k, name)
        component = entry.component
        if as_json:
            print_json({"kind": k, "name": name, "plugin": entry.plugin, "summary": component.summary,
                        "params": _jsonable(field_rows(component.params)),
                        "schema": component.params.model_json_schema()})
            return
        console.print(Text.assemble((f"{k} {name}", "bold"), f" ({entry.plugin}): {component.summary}"))
        print_rows(_fields_table("parameter", component.params))


def _show_settings(as_json: bool) -> None:
    from runner.recipes import Settings

    catalog = catalog_with_plugins()
    sections = sorted(catalog.sections.items())
    if as_json:
        print_json({"settings": _jsonable(field_rows(Settings)),
                    "sections": [{"name": name, "plugin": plugin, "summary": section.summary,
                                  "on_by_default": section.on_by_default,
                                  "params": _jsonable(field_rows(section.params, f"{name}."))}
                                 for name, (section, plugin) in sections]})
        return
    console.print(Text.assemble(("run settings", "bold"), ": the recipe's keys beside its component sections"))
    print_rows(_fields_table("setting", Settings))
    for section_name, (section, plugin) in sections:
        default = "on unless `{0}: false`" if section.on_by_default else "off unless the recipe has `{0}:`"
        console.print(Text.assemble("\n", (section_name, "bold"), f" ({plugin}): {section.summary}; "
                                    f"{default.format(section_name)}"))
        print_rows(_fields_table("setting", section.params, prefix=f"{section_name}."))


@app.command()
def plugins(strict: Annotated[bool, typer.Option("--strict", help="a plugin that fails to load is an error")] = False,
            as_json: Annotated[bool, typer.Option("--json", help="print the plugins as JSON")] = False):
    """List every loaded plugin: where it comes from, the hooks it implements, the components it adds."""
    with handled():
        catalog = catalog_with_plugins(strict=strict, lenient=True)
        added: dict[str, list[str]] = {}
        for kind in KINDS:
            entries = [*catalog.entries[kind].values(), *(e for es in catalog.clashes[kind].values() for e in es[1:])]
            for entry in entries:
                added.setdefault(entry.plugin, []).append({"kind": kind, "name": entry.component.name})
        sections: dict[str, list[str]] = {}
        for section_name, (_, plugin) in sorted(catalog.sections.items()):
            sections.setdefault(plugin, []).append(section_name)
        found = []
        for name, info in catalog.plugins.info.items():
            plugin = None if info.error else catalog.pm.get_plugin(name)
            hooks = sorted(h.name for h in catalog.pm.get_hookcallers(plugin) or []) if plugin is not None else []
            found.append({"name": name, "source": info.source, "error": info.error, "hooks": hooks,
                          "components": added.get(name, []), "sections": sections.get(name, [])})
        if as_json:
            print_json(found)
            return
        table = Rows(("plugin", KEEP), ("from", KEEP), ("hooks", WRAP), ("adds", WRAP))
        for row in found:
            if row["error"]:
                table.add_row(row["name"], row["source"], "", Text(row["error"], style="red"))
                continue
            adds = [f"{c['kind']} {c['name']}" for c in row["components"]] + [f"section {s}" for s in row["sections"]]
            shown = ", ".join(adds[:6]) + (f" and {len(adds) - 6} more" if len(adds) > 6 else "")
            table.add_row(row["name"], row["source"], ", ".join(row["hooks"]), shown)
        print_rows(table)


@app.command("new-plugin")
def new_plugin(name: Annotated[str, typer.Argument(help="package name, e.g. runner-mybackbone")],
               kind: Annotated[str, typer.Option(metavar="KIND", help="backbone, dataset, freeze, optimizer, scheduler or hooks")] = "backbone",
               into: Annotated[str, typer.Option(metavar="FOLDER", help="folder to create the package in")] = "."):
    """Write a pip-installable plugin package: pyproject with the entry point, one component, one test."""
    from runner.scaffold import new_plugin as scaffold
    with handled():
        root = scaffold(name, kind, Path(into))
        console.print(f"wrote {root}: cd {root} && pip install -e . && pytest")
