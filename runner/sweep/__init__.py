"""Sweeps: one recipe trained many times, over every combination of ``--grid`` values or over ``--optuna N``
sampled trials, each an ordinary run with its own run folder; a leaderboard ranks them.

The sweep folder holds ``sweep.json`` (what the sweep is and the state of every trial, rewritten atomically after
each change), one run folder per trial, ``leaderboard.csv`` and ``leaderboard.json`` (rewritten after every trial,
the JSON with the best trial's resolved recipe), ``best.yaml`` and, for optuna, the study in ``optuna.db``. The
folder's name hashes the resolved recipe, the grid (or ranges) and the ``--set`` overrides, so running the same
command again finds it: finished trials are skipped and an interrupted one continues from its ``last.pt``.

The package: ``spec`` (what a sweep is, parsed and validated), ``state`` (sweep.json and the leaderboard),
``study`` (optuna's side) and ``driver`` (running the trials). Nothing here prints; the CLI passes a display.
"""
from runner.sweep.driver import PRUNED, OptunaPruning, SweepInterrupted, run
from runner.sweep.spec import (OPTUNA_MISSING, Axis, Sweep, command_line, parse_grid, parse_ranges, prepare,
                               shown_value, trial_name)
from runner.sweep.state import COLUMNS, FINISHED, STATE, best_trial, is_finished, leaderboard, write_leaderboard
from runner.sweep.study import STUDY, open_study

__all__ = ["Axis", "COLUMNS", "FINISHED", "OPTUNA_MISSING", "OptunaPruning", "PRUNED", "STATE", "STUDY", "Sweep",
           "SweepInterrupted", "best_trial", "command_line", "is_finished", "leaderboard", "open_study",
           "parse_grid", "parse_ranges", "prepare", "run", "shown_value", "trial_name", "write_leaderboard"]
