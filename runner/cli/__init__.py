"""The ``runner`` command line: the typer app, its global options (--debug, --plugin, --version), how errors are
shown, and the helpers every command uses to load recipes and catalogs and to show rows. The commands live one group
per module (``components``, ``recipes``, ``train``, ``sweep``, ``model``); rendering with rich lives in this package
only. Nothing here imports torch: ``runner --help`` and every ``COMMAND --help`` answer at once."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, Iterable, Optional

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from runner.errors import RunnerError

GLOBAL_OPTIONS = {"--debug": False, "--plugin": True, "--version": False}
"""The options that go before the command, and whether each takes a value."""


TYPE_METAVARS = {"int": "N", "float": "NUMBER"}


def _readable_metavars(params: list) -> list:
    """Option metavars as a person writes them: none for an option that takes no value (no ``<bool>``), N or NUMBER
    for numbers, TEXT otherwise (never typer's ``<list[str]>``)."""
    for param in params:
        if param.metavar is not None or param.param_type_name != "option":
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
        else:
            annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
            param.metavar = TYPE_METAVARS.get(getattr(annotation, "__name__", ""), "TEXT")
    return params


def _plain_help() -> bool:
    """Help into a pipe or a file is click's plain text: no box drawing, and no rich help renderer to import."""
    return not console.is_terminal


def _format_plain_help(click_help, command, ctx, formatter) -> None:
    """click's own help of ``command``, its text without rich's markup escapes (``runner-transfer\\[serve]``)."""
    text = command.help
    command.help = text.replace("\\[", "[") if text else text
    try:
        click_help(ctx, formatter)
    finally:
        command.help = text


class _RunnerHelp:
    """What every ``runner`` command and group shows in its help: readable metavars, and plain text into a pipe."""

    def get_params(self, ctx):
        return _readable_metavars(super().get_params(ctx))

    def format_help(self, ctx, formatter):
        if _plain_help():  # click's own formatter: the class after typer's in the method order
            typer_class = next(c for c in type(self).__mro__ if c in (TyperCommand, TyperGroup))
            return _format_plain_help(super(typer_class, self).format_help, self, ctx, formatter)
        return super().format_help(ctx, formatter)


class RunnerCommand(_RunnerHelp, TyperCommand):
    def get_short_help_str(self, limit: int = 45) -> str:
        """The whole first sentence in ``runner --help`` (wrapped there), never one cut with '...'."""
        return super().get_short_help_str(limit=1000)


class RunnerGroup(_RunnerHelp, TyperGroup):
    """The ``runner`` group: a global option given after the command is a one-line error saying where it goes,
    and output cut short by a closed pipe (``runner list | head -1``) ends quietly with exit code 0."""

    def invoke(self, ctx):
        _misplaced_global_option(self, ctx, [*ctx._protected_args, *ctx.args])
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _stdout_to_devnull()
            raise typer.Exit(0) from None


def _misplaced_global_option(group, ctx, args: list[str]) -> None:
    if not args:
        return
    command = group.get_command(ctx, args[0])
    own = {opt for param in getattr(command, "params", []) for opt in (*param.opts, *param.secondary_opts)}
    for token in args[1:]:
        if token == "--":
            return
        name = token.split("=", 1)[0]
        if name in GLOBAL_OPTIONS and name not in own:
            shown = token
            if GLOBAL_OPTIONS[name] and "=" not in token:
                after = args[args.index(token) + 1:]
                shown += f" {after[0]}" if after and not after[0].startswith("-") else " VALUE"
            errors.print(Text("error: ", style="red") + Text(
                f"{name} is a global option: put it before the command, e.g. runner {shown} {args[0]} ..."),
                soft_wrap=True)
            raise typer.Exit(2)


def _stdout_to_devnull() -> None:
    """The reader of our output has gone (``| head``): further writes, and the flush at exit, go nowhere (Python's
    documented recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test's captured stdout)
        pass


app = typer.Typer(cls=RunnerGroup, add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
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
        # under torchrun every process says why it stopped, not only rank 0: any of them may stop first, and
        # torchrun then ends the others, perhaps before they could say it
        rank = int(os.environ.get("RANK", "0") or 0)
        label, quiet, errors.quiet = ("error: " if rank == 0 else f"error (process {rank}): "), errors.quiet, False
        try:
            for problem in shown:
                errors.print(Text(label, style="red") + Text(problem), soft_wrap=True)
            if len(exc.problems) > len(shown):
                errors.print(Text(label, style="red") + Text(f"... and {len(exc.problems) - len(shown)} more problems"))
        finally:
            errors.quiet = quiet
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


def _version(value: bool) -> None:
    if value:
        from runner import __version__

        print(f"runner {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
         plugin: Annotated[list[str], typer.Option("--plugin", metavar="FILE|MODULE",
                                                   help="plugin file or module to load; repeatable")] = [],
         version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                         help="print runner's version and exit")] = None,
         ) -> None:
    state["debug"] = debug
    state["plugins"] = list(plugin)
    # under torchrun only rank 0 speaks (as runner.distributed.is_main, read from the environment: the process
    # group is not joined yet, and importing torch here would slow every command)
    if int(os.environ.get("RANK", "0") or 0) != 0:
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


def _stdout_is_devnull() -> bool:
    try:
        out, null = os.fstat(sys.stdout.fileno()), os.stat(os.devnull)
        return (out.st_dev, out.st_ino) == (null.st_dev, null.st_ino)
    except (OSError, ValueError, AttributeError):
        return False


def entry() -> None:
    """``runner``: the app, and a reader that goes away (``runner show ... | head -1``) ends it quietly with exit
    code 0, as git does. rich meets the closed pipe first: it points stdout at os.devnull and exits with 1.

    When the command is done, the objects alive are frozen out of the garbage collector (``gc.freeze``): Python's
    shutdown otherwise runs full collections over all of them, ~470,000 once torch, timm and matplotlib are
    imported, ~2-3 s of a ``runner run`` on a 2-core CPU after its work is done. Shutdown still runs the atexit
    handlers and frees modules by reference count; only cycles among those objects are left to the process's end."""
    try:
        _command()
    finally:
        import gc

        gc.freeze()


def _command() -> None:
    to_devnull = _stdout_is_devnull()
    try:
        app()
    except SystemExit as exc:
        if exc.code not in (0, None) and not to_devnull and _stdout_is_devnull():
            raise SystemExit(0) from None
        try:  # the last output is flushed here: a reader that has gone is no error
            sys.stdout.flush()
        except BrokenPipeError:
            _stdout_to_devnull()
            raise SystemExit(0) from None
        raise
    except BrokenPipeError:
        _stdout_to_devnull()
        raise SystemExit(0) from None


# -- rows on screen ------------------------------------------------------------------------------------------------

KEEP, WRAP, WORDS, NUMBER = "keep", "wrap", "words", "number"
"""How a column of :class:`Rows` shows its cells: KEEP (names, paths) whole on one line; WRAP (prose) wraps, folding
a word longer than the column; WORDS (a list of names) wraps between names, never inside one; NUMBER whole and
right-aligned."""
WRAP_MIN = 20
"""The narrowest a prose column gets before the rows are shown as a list instead of a table."""


class Rows:
    """Rows shown as a table when the table fits the width, else as a list (each row's key cells on a line, the
    other cells below as ``header: value``), or as ``narrow`` gives. Names, paths and numbers are never cut or
    wrapped; prose wraps. On a terminal a rule under the header; in a pipe or a file plain columns, no box drawing.

    ``columns``: ``(header, how)`` pairs, ``how`` one of KEEP, WRAP, WORDS, NUMBER; ``key``: how many leading columns
    head a row in the list layout; ``narrow``: a function giving the renderables to show instead of the list."""

    def __init__(self, *columns: tuple[str, str], title: str | None = None, key: int = 1, narrow=None,
                 show_header: bool = True):
        self.columns = list(columns)
        self.title, self.key, self.narrow, self.show_header = title, key, narrow, show_header
        self.rows: list[list[Text]] = []

    def add_row(self, *cells) -> None:
        """Cells are plain text (no markup: a file named ``a[b].jpg`` stays so) or rich ``Text``."""
        self.rows.append([cell if isinstance(cell, Text) else Text(str(cell)) for cell in cells])

    def widths(self) -> list[int]:
        """Each column's narrowest: a kept column its widest cell, a list of names its longest name, a prose
        column WRAP_MIN (or less when every cell is shorter)."""
        out = []
        for index, (header, how) in enumerate(self.columns):
            lines = [line for row in self.rows for line in row[index].plain.splitlines()]
            header_width = cell_len(header) if self.show_header else 0
            widest = max([cell_len(line) for line in lines] + [header_width])
            if how == WRAP:
                out.append(max(min(WRAP_MIN, widest), header_width))
            elif how == WORDS:
                out.append(max([cell_len(word) for line in lines for word in line.split()] + [header_width]))
            else:
                out.append(widest)
        return out

    def table(self, terminal: bool = True) -> Table:
        table = Table(title=self.title, title_justify="left", show_header=self.show_header, show_edge=False,
                      box=box.SIMPLE_HEAD if terminal else None, pad_edge=False)
        for (header, how), width in zip(self.columns, self.widths()):
            if how in (WRAP, WORDS):
                table.add_column(header, overflow="fold", min_width=width)
            else:
                table.add_column(header, no_wrap=True, min_width=width, justify="right" if how == NUMBER else "left")
        for row in self.rows:
            table.add_row(*row)
        return table

    def fits(self, console: Console, width: int) -> bool:
        """Whether the table fits ``width`` with every kept column whole and each wrapping one at its narrowest."""
        n = len(self.columns)
        separators = n - 1 if console.is_terminal else 0  # the box's column separators (blank in SIMPLE_HEAD)
        return sum(self.widths()) + 2 * (n - 1) + separators <= width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.fits(console, options.max_width):
            yield self.table(console.is_terminal)
        elif self.narrow is not None:
            yield from self.narrow()
        else:
            yield from self.as_list()

    def as_list(self) -> Iterable:
        """Each row's key cells on a line, then its other cells as indented ``header: value`` lines. A name or path
        longer than the screen stays on one line (print with ``crop=False``, as :func:`print_rows` does): the terminal
        wraps it, and a pipe gets it whole."""
        if self.title:
            yield Text(self.title)
        for row in self.rows:
            head = Text("  ").join(row[:self.key]) if self.key else Text("-")
            head.no_wrap, head.overflow = True, "ignore"
            yield head
            for (header, how), cell in zip(self.columns[self.key:], row[self.key:]):
                if not cell.plain:
                    continue
                line = Text.assemble((f"{header}: ", "dim"), cell)
                if how in (WRAP, WORDS):
                    yield Padding(line, (0, 0, 0, 4))
                else:
                    yield Text.assemble("    ", line, no_wrap=True, overflow="ignore")


def print_rows(renderable, out: Console | None = None) -> None:
    """Print rows (a :class:`Rows` or what holds one) so that nothing is cut: a line longer than the screen is
    left for the terminal to wrap rather than cropped."""
    (out or console).print(renderable, crop=False)


def print_json(data) -> None:
    """``data`` as one line of JSON on stdout (no colour, no wrapping: for programs)."""
    import json

    print(json.dumps(data))


# the command modules register their commands on ``app`` as they are imported, so they come after it
from runner.cli import components, recipes, train, sweep, model, serve, runs  # noqa: E402,F401,I001

HELP_ORDER = ("list", "show", "plugins", "new-plugin", "validate", "plan", "run", "resume", "sweep", "lr-find",
              "predict", "evaluate", "export", "serve", "runs", "compare")
"""The order ``runner --help`` lists the commands in (typer lists them as registered)."""


def _help_place(command) -> int:
    name = command.name or command.callback.__name__
    return HELP_ORDER.index(name) if name in HELP_ORDER else len(HELP_ORDER)


app.registered_commands.sort(key=_help_place)
for _info in app.registered_commands:  # flags show no <bool> in any command's help
    if _info.cls in (None, TyperCommand):
        _info.cls = RunnerCommand
