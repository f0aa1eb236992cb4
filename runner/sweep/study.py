"""The optuna side of a sweep: opening its study in ``optuna.db`` (a damaged or foreign file is one error line,
found before anything trains), the search space of its axes, and telling optuna how each trial ended."""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from runner.errors import RunnerError
from runner.sweep.spec import Axis, Sweep, import_optuna
from runner.sweep.state import STATE

STUDY = "optuna.db"
OPTUNA_TABLES = ("studies", "trials")
"""Tables every optuna RDB storage has; a SQLite file without them belongs to another program."""


def open_study(sweep: Sweep, state: dict):
    """The sweep's study, created the first time. A file that is no optuna study this sweep can continue
    (garbage, truncated, empty, another program's database, fewer trials than sweep.json records) is one
    RunnerError naming it, raised before any trial trains."""
    optuna = import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = sweep.folder / STUDY
    afresh = f"to start the sweep afresh, delete it and {STATE} beside it, or give another --out"
    problem = _damage(path)
    if problem:
        raise RunnerError(f"{path}: {problem}; {afresh}")
    storage = f"sqlite:///{path.resolve()}"
    try:
        study = optuna.create_study(study_name="runner-sweep", storage=storage, direction="maximize",
                                    load_if_exists=True, pruner=optuna.pruners.MedianPruner())
        known = len(study.get_trials(deepcopy=False))
    except Exception as exc:  # whatever optuna or SQLAlchemy make of the file, the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunnerError(f"{path}: cannot be opened as an optuna study ({reason}); {afresh}") from exc
    lost = [t["trial"] for t in state["trials"] if t.get("optuna_number") is not None and t["optuna_number"] >= known]
    if lost:
        raise RunnerError(f"{path}: holds {known} optuna trials, fewer than {STATE} records (its trial {lost[0]} "
                          f"is not there); {afresh}")
    return study


def _damage(path: Path) -> str | None:
    """What is wrong with an existing optuna.db, read-only and before optuna opens it; None when nothing is
    (or there is no file yet: optuna creates it)."""
    if not path.exists():
        return None
    if path.is_file() and path.stat().st_size == 0:
        return "an empty file, not an optuna study"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            tables = sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    except sqlite3.Error as exc:
        return f"not a readable SQLite database ({exc})"
    if check != "ok":
        return f"a damaged SQLite database ({check})"
    if not set(OPTUNA_TABLES) <= set(tables):
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        return f"a SQLite database without optuna's tables (it holds {shown or 'none'})"
    return None


def distribution(optuna, axis: Axis):
    if axis.kind == "categorical":
        return optuna.distributions.CategoricalDistribution(axis.values)
    if axis.kind == "int":
        return optuna.distributions.IntDistribution(axis.low, axis.high, log=axis.log)
    return optuna.distributions.FloatDistribution(axis.low, axis.high, log=axis.log)


def tell(optuna, study, entry: dict) -> None:
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
