"""What a sweep is: its axes (``--grid`` values or ``--range`` bounds), the validated :class:`Sweep` with its
folder and trials, the trials' names, and the command line that continues it. Nothing here trains or writes."""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from runner import recipes, session
from runner.errors import RunnerError

OPTUNA_MISSING = "--optuna needs optuna: pip install 'runner-transfer[sweep]' (or pip install optuna)"


@dataclass
class Axis:
    """One ``--grid key=v1,v2`` (``texts`` as typed, ``values`` parsed as YAML) or ``--range``."""

    key: str
    option: str
    """The option as typed, ``--grid key=...``, for error messages."""
    texts: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    kind: str = "grid"
    """grid, or for ranges: int, float, categorical."""
    low: Any = None
    high: Any = None
    log: bool = False


@dataclass
class Sweep:
    """A validated sweep: where it lives and the trials it holds (grid) or samples (optuna)."""

    recipe: str
    sets: list[str]
    folder: Path
    key: str
    name: str
    seed: int
    axes: list[Axis]
    combos: list[list[str]]
    """Grid: the override texts of each trial, in order (itertools.product of the axes)."""
    optuna: int | None = None
    """Optuna: trials to have finished in all."""

    @property
    def kind(self) -> str:
        return "optuna" if self.optuna is not None else "grid"

    @property
    def total(self) -> int:
        return self.optuna if self.optuna is not None else len(self.combos)


# -- parsing -------------------------------------------------------------------------------------------------

def _split_values(text: str) -> list[str]:
    """``a,b,[c,d]`` -> ``a``, ``b``, ``[c,d]``: commas inside brackets or quotes do not split."""
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += char
    parts.append(current.strip())
    return parts


def parse_grid(items: list[str]) -> list[Axis]:
    """``key=v1,v2,...`` per item; each value parsed as YAML, as ``--set`` parses it."""
    axes: list[Axis] = []
    for item in items:
        key, _ = recipes.parse_override(item, "--grid")
        _, _, values = item.partition("=")
        texts = _split_values(values)
        if not values.strip() or any(not t for t in texts):
            raise RunnerError(f"--grid {item}: expected key.path=v1,v2,... (an empty value)")
        if key in (a.key for a in axes):
            raise RunnerError(f"--grid {item}: {key} is given twice; put all its values in one --grid")
        axes.append(Axis(key, f"--grid {item}", texts, [recipes.parse_override(f"{key}={t}", "--grid")[1]
                                                        for t in texts]))
    return axes


def _number(text: str, item: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise RunnerError(f"--range {item}: '{text}' is not a number") from None
    if not math.isfinite(value):
        raise RunnerError(f"--range {item}: '{text}' is not a finite number")
    return value


def parse_ranges(items: list[str]) -> list[Axis]:
    """``key=low:high`` (int when both ends are), ``key=low:high:log``, or ``key=a,b,c`` (categorical)."""
    axes: list[Axis] = []
    for item in items:
        key, _ = recipes.parse_override(item, "--range")
        _, _, spec = item.partition("=")
        spec = spec.strip()
        if key in (a.key for a in axes):
            raise RunnerError(f"--range {item}: {key} is given twice")
        option = f"--range {item}"
        if "," in spec:
            texts = _split_values(spec)
            values = [recipes.parse_override(f"{key}={t}", "--range")[1] for t in texts]
            if any(not t for t in texts) or any(not isinstance(v, (str, int, float, bool)) for v in values):
                raise RunnerError(f"{option}: categorical values must be plain numbers, words or booleans")
            axes.append(Axis(key, option, texts, values, kind="categorical"))
            continue
        parts = spec.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip() != "log"):
            raise RunnerError(f"{option}: expected low:high, low:high:log or a,b,c "
                              "(e.g. optimizer.lr=1e-4:1e-1:log)")
        low, high = _number(parts[0].strip(), item), _number(parts[1].strip(), item)
        log = len(parts) == 3
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        if kind == "float":
            low, high = float(low), float(high)
        if not low < high:
            raise RunnerError(f"{option}: the low end must be below the high end")
        if log and low <= 0:
            raise RunnerError(f"{option}: a log range needs a low end above 0")
        axes.append(Axis(key, option, [yaml_text(low), yaml_text(high)], [low, high], kind=kind, low=low,
                         high=high, log=log))
    return axes


def yaml_text(value: Any) -> str:
    """A value as YAML text that reads back as the same value (PyYAML reads 1e-05 as a string, 1.0e-05 not)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise RunnerError(OPTUNA_MISSING) from None
    return optuna


# -- validation ----------------------------------------------------------------------------------------------

def prepare(recipe: str, grid: list[str] = (), sets: list[str] = (), optuna: int | None = None,
            ranges: list[str] = (), out: str | Path | None = None, catalog_for: Callable | None = None) -> Sweep:
    """Parse and validate a sweep: every grid combination (or each range's ends and choices) is loaded and
    checked like ``--set`` before anything trains; all problems are reported at once. Writes nothing."""
    from runner.plugins import load_catalog

    catalog_for = catalog_for or (lambda r: load_catalog(r.plugin_refs()))
    sets = list(sets)
    if optuna is not None:
        if grid:
            raise RunnerError("--grid and --optuna do not mix: give --grid values to train every combination, or "
                              "--optuna N with --range key=low:high to sample N trials")
        if optuna < 1:
            raise RunnerError(f"--optuna {optuna}: expected a number of trials, 1 or more")
        if not ranges:
            raise RunnerError("--optuna needs at least one --range key=low:high[:log] or --range key=a,b,c")
        import_optuna()
        axes = parse_ranges(list(ranges))
        base = [a.texts[0] for a in axes]
        points = [base] + [base[:i] + [t] + base[i + 1:] for i, a in enumerate(axes) for t in a.texts[1:]]
    else:
        if ranges:
            raise RunnerError("--range is for --optuna N; with --grid give the values: --grid key=v1,v2")
        if not grid:
            raise RunnerError("runner sweep needs --grid key=v1,v2,... (or --optuna N with --range)")
        axes = parse_grid(list(grid))
        points = [list(p) for p in itertools.product(*(a.texts for a in axes))]
    set_keys = {recipes.parse_override(s)[0]: s for s in sets}
    for axis in axes:
        if axis.key in set_keys:
            raise RunnerError(f"{axis.option}: {axis.key} is also given by --set {set_keys[axis.key]}; keep one")

    catalogs: dict = {}

    def cached_catalog(loaded):  # one catalog for all checks (unless a point changes the recipe's plugins)
        refs = tuple(loaded.plugin_refs())
        if refs not in catalogs:
            catalogs[refs] = catalog_for(loaded)
        return catalogs[refs]

    problems: list[str] = []
    resolved: list[dict] = []
    first = None
    for point in points:
        texts = [f"{a.key}={t}" for a, t in zip(axes, point)]
        shown = {f"--grid {s}: ": f"--set {s}: " for s in sets}
        shown.update({f"--grid {t}: ": f"{a.option}: " for a, t in zip(axes, texts)})
        try:
            loaded, _ = session.load(recipe, sets + texts, label="--grid", catalog_for=cached_catalog)
        except RunnerError as exc:
            for problem in exc.problems:
                for prefix, option in shown.items():
                    if problem.startswith(prefix):
                        problem = option + problem[len(prefix):]
                        break
                if problem not in problems:
                    problems.append(problem)
            continue
        first = first or loaded
        resolved.append(loaded.resolved())
    if problems:
        raise RunnerError(*problems)

    spec = {"recipe": resolved, "axes": [[a.kind, a.key, a.texts] for a in axes], "set": sets}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:8]
    folder = Path(out) if out else Path(first.settings.output) / f"sweep-{first.name.replace('/', '_')}-{key}"
    combos = [[f"{a.key}={t}" for a, t in zip(axes, p)] for p in points] if optuna is None else []
    return Sweep(recipe=str(recipe), sets=sets, folder=folder, key=key, name=first.name, seed=first.settings.seed,
                 axes=axes, combos=combos, optuna=optuna)


# -- names ---------------------------------------------------------------------------------------------------

def _short(key: str) -> str:
    """optimizer.lr -> lr, dataset.batch_size -> bs, optimizer.name -> '' (the value says it)."""
    parts = key.split(".")
    last = parts[-1]
    if last == "name" and len(parts) > 1:
        return ""
    if "_" in last:
        return "".join(w[0] for w in last.split("_") if w)
    return last


def shown_value(value: Any) -> str:
    """A swept value as trial names, the leaderboard and the display show it: 0.001, true, [1,2]."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def trial_name(recipe_name: str, overrides: dict[str, Any], number: int | None = None) -> str:
    """``<recipe>-lr0.01-bs16`` (optuna: ``<recipe>-t3-lr0.00123``), safe as a folder name."""
    tags = [f"{_short(k)}{shown_value(v)}" for k, v in overrides.items()]
    if number is not None:
        tags.insert(0, f"t{number}")
    name = "-".join([recipe_name.replace("/", "_"), *tags])
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", name)[:120]


def command_line(recipe: str, grid: list[str] = (), sets: list[str] = (), out: str | None = None,
                 optuna: int | None = None, ranges: list[str] = (), plugins: list[str] = ()) -> str:
    """The ``runner sweep`` command that made this sweep, as a shell line: run again, it continues the sweep."""
    words = ["runner", *(w for p in plugins for w in ("--plugin", p)), "sweep", recipe,
             *(w for g in grid for w in ("--grid", g)), *(w for s in sets for w in ("--set", s)),
             *(["--out", out] if out else []), *(["--optuna", str(optuna)] if optuna is not None else []),
             *(w for r in ranges for w in ("--range", r))]
    return shlex.join(words)
