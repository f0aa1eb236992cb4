"""The ``runner`` command line: the typer app, its global options (--debug, --plugin), how errors are shown, and
the helpers every command uses to load recipes and catalogs. The commands live one group per module
(``components``, ``recipes``, ``train``, ``sweep``, ``model``); rendering with rich lives in this package only."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from runner.errors import RunnerError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer-learning runs for image classification from YAML recipes.")
console = Console()
errors = Console(stderr=True, highlight=False)
state: dict = {"debug": False, "plugins": []}


@contextlib.contextmanager
def handled():
    """RunnerError -> its lines on stderr and exit 2; Ctrl-C -> exit 130; tracebacks only with --debug."""
    try:
        yield
    except RunnerError as exc:
        if state["debug"]:
            raise
        shown = exc.problems[:20]  # a screenful; the rest would hide the first, which usually explains them
        for problem in shown:
            errors.print(Text("error: ", style="red") + Text(problem), soft_wrap=True)
        if len(exc.problems) > len(shown):
            errors.print(Text("error: ", style="red") + Text(f"... and {len(exc.problems) - len(shown)} more problems"))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        from runner.engine import RunInterrupted

        if state["debug"]:
            raise
        if isinstance(exc, RunInterrupted):
            resume = f"; continue with: runner resume {exc.folder}" if exc.resumable else ""
            errors.print(f"interrupted: {exc}{resume}", soft_wrap=True)
        else:
            errors.print("interrupted")
        raise typer.Exit(130) from None


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
         plugin: Annotated[list[str], typer.Option("--plugin", help="plugin file or module to load; repeatable")] = []
         ) -> None:
    state["debug"] = debug
    state["plugins"] = list(plugin)
    from runner import distributed
    if not distributed.is_main():  # under torchrun only rank 0 speaks
        console.quiet = errors.quiet = True


def warn(message: str) -> None:
    errors.print(Text("warning: ", style="yellow") + Text(message), soft_wrap=True)


def catalog_with_plugins(recipe=None, strict: bool = False, lenient: bool = False):
    """The catalog with --plugin files and, given a loaded recipe, its ``plugins:``; load failures are warned
    (``lenient``: a failing --plugin too, rather than an error)."""
    from runner import session

    return session.catalog([*state["plugins"], *(recipe.plugin_refs() if recipe else [])], strict=strict, warn=warn,
                           lenient=lenient)


def load_with_catalog(recipe, overrides: list[str], origin: Path | None = None):
    """The recipe, validated against a catalog that includes its own ``plugins:``, and that catalog."""
    from runner import session

    return session.load(recipe, overrides, state["plugins"], origin=origin, warn=warn)


def load_resumed(folder: str):
    """A run folder's resolved recipe and catalog (plugin files only when --plugin names them)."""
    from runner import session

    loaded, catalog, _ = session.load_run_folder(folder, state["plugins"], warn=warn)
    return loaded, catalog


def entry() -> None:
    app()


# the command modules register their commands on ``app`` as they are imported, so they come after it
from runner.cli import components, recipes, train, sweep, model  # noqa: E402,F401,I001

HELP_ORDER = ("list", "show", "plugins", "new-plugin", "validate", "plan", "run", "resume", "sweep", "lr-find",
              "predict", "evaluate", "export")
"""The order ``runner --help`` lists the commands in (typer lists them as registered)."""


def _help_place(command) -> int:
    name = command.name or command.callback.__name__
    return HELP_ORDER.index(name) if name in HELP_ORDER else len(HELP_ORDER)


app.registered_commands.sort(key=_help_place)
