"""Sweeps: one recipe trained many times, over every combination of ``--grid`` values or over ``--optuna N``
sampled trials, each an ordinary run with its own run folder; a leaderboard ranks them.

The sweep folder holds ``sweep.json`` (what the sweep is and the state of every trial, rewritten atomically after
each change), one run folder per trial, ``leaderboard.csv`` and ``leaderboard.json`` (rewritten after every trial,
the JSON with the best trial's resolved recipe), ``best.yaml`` and, for optuna, the study in ``optuna.db``. The
folder's name hashes the resolved recipe, the grid (or ranges) and the ``--set`` overrides, so running the same
command again finds it: finished trials are skipped and an interrupted one continues from its ``last.pt``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console
from rich.table import Table

from runner import engine
from runner import recipe as recipes
from runner.errors import RunnerError
from runner.hookspecs import hookimpl
from runner.runfolder import save_json, save_text

STATE = "sweep.json"
FINISHED = ("done", "pruned", "diverged", "failed")
"""Trial statuses a re-run skips; ``running`` and ``interrupted`` trials continue."""
PRUNED = "pruned by optuna"
OPTUNA_MISSING = "--optuna needs optuna: pip install 'runner[sweep]'"


class SweepInterrupted(Exception):
    """Ctrl-C during a trial: the sweep folder is consistent; the same command continues it (exit 130)."""

    exit_code = 130

    def __init__(self, message: str, folder: Path):
        self.folder = folder
        super().__init__(message)


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


# -- parsing ------------------------------------------------------------------------------------------------

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
        axes.append(Axis(key, option, [_yaml_text(low), _yaml_text(high)], [low, high], kind=kind, low=low,
                         high=high, log=log))
    return axes


def _yaml_text(value: Any) -> str:
    """A value as YAML text that reads back as the same value (PyYAML reads 1e-05 as a string, 1.0e-05 not)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


# -- validation and the sweep folder ------------------------------------------------------------------------

def _load(ref, overrides: list[str], catalog_for, origin: Path | None = None):
    """A recipe loaded with overrides (errors labelled --grid) and the catalog made for it."""
    made: dict = {}

    def catalog(loaded):
        made["catalog"] = catalog_for(loaded)
        return made["catalog"]

    loaded = recipes.load(ref, overrides, catalog, origin=origin, label="--grid")
    return loaded, made["catalog"]


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
        _import_optuna()
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
            loaded = recipes.load(recipe, sets + texts, cached_catalog, label="--grid")
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


# -- names and state ----------------------------------------------------------------------------------------

def _short(key: str) -> str:
    """optimizer.lr -> lr, dataset.batch_size -> bs, optimizer.name -> '' (the value says it)."""
    parts = key.split(".")
    last = parts[-1]
    if last == "name" and len(parts) > 1:
        return ""
    if "_" in last:
        return "".join(w[0] for w in last.split("_") if w)
    return last


def _shown_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def trial_name(recipe_name: str, overrides: dict[str, Any], number: int | None = None) -> str:
    """``<recipe>-lr0.01-bs16`` (optuna: ``<recipe>-t3-lr0.00123``), safe as a folder name."""
    tags = [f"{_short(k)}{_shown_value(v)}" for k, v in overrides.items()]
    if number is not None:
        tags.insert(0, f"t{number}")
    name = "-".join([recipe_name.replace("/", "_"), *tags])
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", name)[:120]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _open_state(sweep: Sweep) -> dict:
    path = sweep.folder / STATE
    if path.exists():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunnerError(f"{path}: cannot be read ({exc}); move it away to start the sweep afresh") from None
        if state.get("key") != sweep.key or state.get("kind") != sweep.kind:
            raise RunnerError(f"{sweep.folder} holds another sweep (a different recipe, grid, ranges or --set); "
                              "give another --out")
        return state
    try:
        sweep.folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunnerError(f"cannot create the sweep folder {sweep.folder}: {exc.strerror or exc}") from None
    state = {"version": 1, "kind": sweep.kind, "key": sweep.key, "recipe": sweep.recipe, "set": sweep.sets,
             "axes": [{"key": a.key, "option": a.option, "kind": a.kind} for a in sweep.axes], "trials": []}
    save_json(state, path)
    return state


def _save(sweep: Sweep, state: dict) -> None:
    save_json(state, sweep.folder / STATE)


# -- the leaderboard ----------------------------------------------------------------------------------------

COLUMNS = ("trial", "overrides", "best_val_acc", "best_epoch", "wall_s", "folder", "status")


def leaderboard(state: dict) -> list[dict]:
    """One row per trial, best val accuracy first (trials without one last, then by trial number)."""
    rows = [{**{c: t.get(c) for c in COLUMNS}, "name": t.get("name"), "note": t.get("note")}
            for t in state["trials"]]
    return sorted(rows, key=lambda r: (r["best_val_acc"] is None, -(r["best_val_acc"] or 0.0), r["trial"]))


def best_trial(state: dict) -> dict | None:
    done = [t for t in state["trials"] if t["status"] == "done" and t.get("best_val_acc") is not None]
    return max(done, key=lambda t: (t["best_val_acc"], -t["trial"])) if done else None


def write_leaderboard(sweep: Sweep, state: dict) -> list[dict]:
    """leaderboard.csv and leaderboard.json (with the best trial's resolved recipe) and best.yaml."""
    rows = leaderboard(state)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in rows:
        overrides = " ".join(f"{k}={_shown_value(v)}" for k, v in (row["overrides"] or {}).items())
        writer.writerow([row["trial"], overrides, *(("" if row[c] is None else row[c]) for c in COLUMNS[2:])])
    save_text(buffer.getvalue(), sweep.folder / "leaderboard.csv")
    best = best_trial(state)
    best_out = None
    if best is not None:
        recipe_file = Path(best["folder"]) / "recipe.yaml"
        text = recipe_file.read_text(encoding="utf-8") if recipe_file.exists() else ""
        best_out = {**{c: best.get(c) for c in COLUMNS}, "name": best.get("name"),
                    "recipe": yaml.safe_load(text) if text else None}
        if text:
            save_text(text, sweep.folder / "best.yaml")
    save_json({"sweep": str(sweep.folder), "kind": sweep.kind, "recipe": sweep.recipe, "metric": "best_val_acc",
               "trials": sweep.total, "rows": rows, "best": best_out}, sweep.folder / "leaderboard.json")
    return rows


# -- running trials -----------------------------------------------------------------------------------------

class _Tracker:
    """Records the trial's run folder in the sweep state as soon as the run starts."""

    def __init__(self, sweep: Sweep, state: dict, entry: dict):
        self.sweep, self.state, self.entry = sweep, state, entry

    @hookimpl
    def runner_run_start(self, run):
        self.entry["folder"] = str(run.folder)
        _save(self.sweep, self.state)


class OptunaPruning:
    """Reports each epoch's val_acc to the optuna trial and stops the run when optuna says to prune it."""

    def __init__(self, trial):
        self.trial = trial
        self.pruned: str | None = None

    @hookimpl
    def runner_epoch_end(self, run, epoch, metrics):
        self.trial.report(metrics["val_acc"], epoch)
        if self.trial.should_prune():
            self.pruned = f"{PRUNED} (val_acc {metrics['val_acc']:.4f} at epoch {epoch})"
            run.stop = self.pruned


def _summary(folder: str | None) -> dict | None:
    path = Path(folder) / "summary.json" if folder else None
    if path is None or not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _finished(entry: dict) -> bool:
    """Finished and still there: a done trial whose run folder lost its summary.json runs again."""
    if entry["status"] not in FINISHED:
        return False
    return entry["status"] not in ("done", "pruned") or _summary(entry.get("folder")) is not None


def _record(entry: dict, summary: dict, pruned: str | None = None) -> None:
    stopped = pruned or summary.get("stopped")
    entry.update(status="pruned" if stopped and stopped.startswith(PRUNED) else "done",
                 best_val_acc=summary["best_val_acc"], best_epoch=summary["best_epoch"], wall_s=summary["wall_s"],
                 folder=summary["folder"], note=stopped or "")


def _run_trial(sweep: Sweep, state: dict, entry: dict, catalog_for, display, plugins=()) -> None:
    """Train one trial to its end (or continue it from last.pt) and record it; Ctrl-C -> SweepInterrupted."""
    summary = _summary(entry.get("folder"))
    if summary is not None:  # it finished, but the sweep stopped before recording it
        _record(entry, summary)
        _save(sweep, state)
        return
    folder = Path(entry["folder"]) if entry.get("folder") else None
    resume = folder if folder is not None and (folder / "last.pt").exists() else None
    if resume is not None:
        last = engine.read_last(resume)
        loaded, catalog = _load(resume / "recipe.yaml", [], catalog_for, origin=Path(last["recipe_path"]))
    else:
        loaded, catalog = _load(sweep.recipe, sweep.sets + entry["override_texts"], catalog_for)
        loaded.settings = loaded.settings.model_copy(update={"name": entry["name"], "output": str(sweep.folder)})
        entry["folder"] = None
    entry.update(status="running", note="")
    _save(sweep, state)
    if display is not None:
        display.trial_start(entry, sweep.total, resume)
        catalog.pm.register(display)
    catalog.pm.register(_Tracker(sweep, state, entry))
    for plugin in plugins:
        catalog.pm.register(plugin)
    run = None
    try:
        run = engine.build(loaded, catalog)
        summary = engine.fit(run, resume)
    except (engine.RunInterrupted, KeyboardInterrupt) as exc:
        if run is not None and run.folder is not None:
            entry["folder"] = str(run.folder)
        entry["status"] = "interrupted"
        _save(sweep, state)
        write_leaderboard(sweep, state)
        epoch = exc.epoch - 1 if isinstance(exc, engine.RunInterrupted) else 0
        if epoch > 0:
            kept = f"its last.pt keeps epoch {epoch} and it continues from there"
        elif resume is not None:
            kept = "it continues from its last.pt"
        else:
            kept = "it starts again (no epoch had finished)"
        raise SweepInterrupted(f"interrupted in trial {entry['trial']} of {sweep.total} ({entry['name']}): {kept}; "
                               f"finished trials are kept in {sweep.folder}", sweep.folder) from None
    except engine.TrainingDiverged as exc:
        entry.update(status="diverged", note=exc.problems[0] if exc.problems else str(exc),
                     folder=str(run.folder) if run is not None and run.folder is not None else entry.get("folder"))
        _save(sweep, state)
        return
    pruned = next((p.pruned for p in plugins if isinstance(p, OptunaPruning) and p.pruned), None)
    _record(entry, summary, pruned)
    _save(sweep, state)


def _after_trial(sweep: Sweep, state: dict, entry: dict, display) -> None:
    rows = write_leaderboard(sweep, state)
    if display is not None:
        display.trial_end(entry, sweep.total)
        display.leaderboard(rows, sweep)


def run(sweep: Sweep, catalog_for: Callable | None = None, display=None) -> list[dict]:
    """Run (or continue) the sweep; returns the leaderboard rows, best first."""
    from runner.plugins import load_catalog

    catalog_for = catalog_for or (lambda r: load_catalog(r.plugin_refs()))
    state = _open_state(sweep)
    if display is not None:
        display.begin(sweep, state)
    if sweep.kind == "grid":
        _run_grid(sweep, state, catalog_for, display)
    else:
        _run_optuna(sweep, state, catalog_for, display)
    rows = write_leaderboard(sweep, state)
    if display is not None:
        display.end(rows, sweep, state)
    return rows


def _new_entry(number: int, name: str, axes: list[Axis], texts: list[str], **extra) -> dict:
    overrides = {a.key: _plain(recipes.parse_override(t, "--grid")[1]) for a, t in zip(axes, texts)}
    return {"trial": number, "name": name, "overrides": overrides, "override_texts": texts, "status": "pending",
            "folder": None, "best_val_acc": None, "best_epoch": None, "wall_s": None, "note": "", **extra}


def _run_grid(sweep: Sweep, state: dict, catalog_for, display) -> None:
    entries = {t["trial"]: t for t in state["trials"]}
    names: set[str] = set()
    for number, texts in enumerate(sweep.combos, 1):
        entry = entries.get(number)
        if entry is None:
            overrides = {a.key: recipes.parse_override(t, "--grid")[1] for a, t in zip(sweep.axes, texts)}
            name = trial_name(sweep.name, overrides)
            name = name if name not in names else f"{name}-{number}"
            entry = _new_entry(number, name, sweep.axes, texts)
            state["trials"].append(entry)
            state["trials"].sort(key=lambda t: t["trial"])
        names.add(entry["name"])
        if _finished(entry):
            if display is not None:
                display.skipped(entry, sweep.total)
            continue
        _run_trial(sweep, state, entry, catalog_for, display)
        _after_trial(sweep, state, entry, display)


# -- optuna -------------------------------------------------------------------------------------------------

def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise RunnerError(OPTUNA_MISSING) from None
    return optuna


def _distribution(optuna, axis: Axis):
    if axis.kind == "categorical":
        return optuna.distributions.CategoricalDistribution(axis.values)
    if axis.kind == "int":
        return optuna.distributions.IntDistribution(axis.low, axis.high, log=axis.log)
    return optuna.distributions.FloatDistribution(axis.low, axis.high, log=axis.log)


def _tell(optuna, study, entry: dict) -> None:
    """Tell optuna how the trial ended, unless it already knows (the sweep may have stopped in between)."""
    number = entry.get("optuna_number")
    if number is None:
        return
    frozen = study.get_trials(deepcopy=False)[number]
    if frozen.state != optuna.trial.TrialState.RUNNING:
        return
    if entry["status"] == "done":
        study.tell(number, entry["best_val_acc"])
    elif entry["status"] == "pruned":
        study.tell(number, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(number, state=optuna.trial.TrialState.FAIL)


def _run_optuna(sweep: Sweep, state: dict, catalog_for, display) -> None:
    optuna = _import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{(sweep.folder / 'optuna.db').resolve()}"
    study = optuna.create_study(study_name="runner-sweep", storage=storage, direction="maximize", load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner())
    trials = study.get_trials(deepcopy=False)
    # seeded by the recipe seed, offset by the trials so far: a continued study does not redraw the first points
    study.sampler = optuna.samplers.TPESampler(seed=sweep.seed + len(trials))
    known = {t.get("optuna_number") for t in state["trials"]}
    for frozen in trials:  # asked for but never recorded: nothing ran
        if frozen.state == optuna.trial.TrialState.RUNNING and frozen.number not in known:
            study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
    distributions = {a.key: _distribution(optuna, a) for a in sweep.axes}

    def execute(entry: dict, trial) -> None:
        pruning = OptunaPruning(trial) if trial is not None else None
        try:
            _run_trial(sweep, state, entry, catalog_for, display, [pruning] if pruning else [])
        except RunnerError as exc:
            if entry["status"] != "pending":  # it trained: a real problem, not a bad sampled point
                raise
            entry.update(status="failed", note=exc.problems[0] if exc.problems else str(exc))  # bad sampled point
            _save(sweep, state)
        _tell(optuna, study, entry)
        _after_trial(sweep, state, entry, display)

    for entry in list(state["trials"]):
        if _finished(entry):
            _tell(optuna, study, entry)
            if display is not None:
                display.skipped(entry, sweep.total)
            continue
        frozen = study.get_trials(deepcopy=False)[entry["optuna_number"]]
        trial = None
        if frozen.state == optuna.trial.TrialState.RUNNING:
            trial = optuna.trial.Trial(study, frozen._trial_id)  # continue reporting to the same trial
        execute(entry, trial)

    while sum(t["status"] in FINISHED for t in state["trials"]) < sweep.optuna:
        trial = study.ask(distributions)
        number = len(state["trials"]) + 1
        values = [trial.params[a.key] for a in sweep.axes]
        texts = [f"{a.key}={_yaml_text(v)}" for a, v in zip(sweep.axes, values)]
        name = trial_name(sweep.name, dict(zip((a.key for a in sweep.axes), values)), number)
        entry = _new_entry(number, name, sweep.axes, texts, optuna_number=trial.number)
        state["trials"].append(entry)
        _save(sweep, state)
        execute(entry, trial)


# -- display ------------------------------------------------------------------------------------------------

def leaderboard_table(rows: list[dict], title: str | None = None) -> Table:
    """The leaderboard as a rich table: a column per swept key, best val accuracy first."""
    keys = list(dict.fromkeys(k for row in rows for k in (row["overrides"] or {})))
    last = [k.rsplit(".", 1)[-1] for k in keys]
    headers = [short if last.count(short) == 1 and short != "name" else key for key, short in zip(keys, last)]
    table = Table("trial", *headers, "val acc", "epoch", "s", "status", "run folder", title=title,
                  title_justify="left")
    for column in table.columns[:-1]:
        column.no_wrap = True
    table.columns[-1].overflow = "fold"
    table.columns[-1].min_width = 12
    for row in rows:
        overrides = row["overrides"] or {}
        acc = "" if row["best_val_acc"] is None else f"{row['best_val_acc']:.4f}"
        style = {"done": "green", "pruned": "yellow", "diverged": "red", "failed": "red"}.get(row["status"], "")
        table.add_row(str(row["trial"]), *(_shown_value(overrides[k]) if k in overrides else "" for k in keys), acc,
                      "" if row["best_epoch"] is None else str(row["best_epoch"]),
                      "" if row["wall_s"] is None else f"{row['wall_s']:.1f}",
                      f"[{style}]{row['status']}[/]" if style else row["status"],
                      Path(row["folder"]).name if row["folder"] else "")
    return table


class SweepDisplay:
    """Readable progress of a sweep: a line per trial and per epoch, and the leaderboard after each trial."""

    def __init__(self, console: Console):
        self.console = console
        self.shown = False

    def begin(self, sweep: Sweep, state: dict) -> None:
        what = (" x ".join(f"{len(a.texts)} {a.key}" for a in sweep.axes) if sweep.kind == "grid"
                else f"optuna TPE over {', '.join(a.key for a in sweep.axes)}")
        done = sum(_finished(t) for t in state["trials"])
        again = f"; {done} finished before" if done else ""
        self.console.print(f"[bold]sweep[/] {sweep.name}: {sweep.total} trials ({what}) in {sweep.folder}{again}",
                           highlight=False, soft_wrap=True)

    def skipped(self, entry: dict, total: int) -> None:
        acc = "" if entry.get("best_val_acc") is None else f", val acc {entry['best_val_acc']:.4f}"
        self.console.print(f"trial {entry['trial']}/{total} {entry['name']}: skipped, {entry['status']} "
                           f"before{acc}", highlight=False, soft_wrap=True)

    def trial_start(self, entry: dict, total: int, resume: Path | None) -> None:
        overrides = " ".join(f"{k}={_shown_value(v)}" for k, v in entry["overrides"].items())
        how = f", continuing {resume} from its last.pt" if resume else ""
        self.console.print(f"[bold]trial {entry['trial']}/{total}[/] {overrides}{how}", highlight=False,
                           soft_wrap=True)

    @hookimpl
    def runner_run_start(self, run):
        self.console.print(f"  {run.recipe.name}: {len(run.data.train)} train / {len(run.data.val)} val images, "
                           f"{run.recipe.settings.epochs} epochs -> {run.folder}", highlight=False, soft_wrap=True)

    @hookimpl
    def runner_epoch_end(self, run, epoch, metrics):
        m = metrics
        self.console.print(f"  epoch {epoch}/{run.recipe.settings.epochs}: train loss {m['train_loss']:.4f} "
                           f"acc {m['train_acc']:.4f}, val loss {m['val_loss']:.4f} acc {m['val_acc']:.4f}, "
                           f"{m['seconds']:.1f} s{' best' if m['best'] else ''}", highlight=False, soft_wrap=True)

    def trial_end(self, entry: dict, total: int) -> None:
        acc = "" if entry.get("best_val_acc") is None else f": best val acc {entry['best_val_acc']:.4f} at epoch " \
                                                          f"{entry['best_epoch']}"
        note = f" ({entry['note']})" if entry.get("note") else ""
        self.console.print(f"trial {entry['trial']}/{total} {entry['status']}{acc}{note}", highlight=False,
                           soft_wrap=True)

    def leaderboard(self, rows: list[dict], sweep: Sweep) -> None:
        finished = sum(r["status"] in FINISHED for r in rows)
        self.shown = True
        self.console.print(leaderboard_table(rows, f"leaderboard: {finished} of {sweep.total} trials"))

    def end(self, rows: list[dict], sweep: Sweep, state: dict) -> None:
        if not self.shown and rows:  # nothing ran this time: show where the sweep stands
            self.leaderboard(rows, sweep)
        best = best_trial(state)
        if best is None:
            self.console.print(f"no trial finished; leaderboard in {sweep.folder}", highlight=False, soft_wrap=True)
            return
        self.console.print(f"[bold green]best: trial {best['trial']}[/] "
                           f"{' '.join(f'{k}={_shown_value(v)}' for k, v in best['overrides'].items())}, "
                           f"val acc {best['best_val_acc']:.4f}; run folder {best['folder']}", highlight=False,
                           soft_wrap=True)
        self.console.print(f"leaderboard: {sweep.folder / 'leaderboard.csv'}, {sweep.folder / 'leaderboard.json'}; "
                           f"best recipe: {sweep.folder / 'best.yaml'}", highlight=False, soft_wrap=True)
