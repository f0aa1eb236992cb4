"""The one error type users see: a message per problem, printed without a traceback, exit code 2."""
from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Where:
    """A place in a recipe a message can point at: file, 1-based line and column."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


class RunnerError(Exception):
    """Bad input: each problem is one line, `where: what (suggestion)`; the CLI exits with `exit_code`."""

    exit_code = 2

    def __init__(self, *problems: str):
        # one line each, whatever a user's key or value held (a key may contain a newline)
        self.problems = [p.replace("\r", "\\r").replace("\n", "\\n") for p in problems if p]
        super().__init__("\n".join(self.problems))


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    scored = []
    for choice in {str(c) for c in choices}:
        matcher = difflib.SequenceMatcher(None, str(word), choice)
        if matcher.real_quick_ratio() >= 0.6 and matcher.ratio() >= 0.6:
            scored.append((-matcher.ratio(), choice))  # ties go to the first in sorted order (lite0, not lite2)
    return f" (did you mean '{min(scored)[1]}'?)" if scored else ""


class PluginError(RunnerError):
    """A plugin's own user error (a bad parameter, a file it cannot use): one line naming the plugin, exit 2.

    Raise it from a component's ``build`` or a hook; the engine prefixes the plugin and component it came from.
    Any other exception from a plugin is a bug in it and shows its traceback."""
