"""A sweep's state on disk: ``sweep.json`` (the sweep and every trial, rewritten atomically after each change),
the trial entries and their statuses, and the leaderboard computed from them (``leaderboard.csv``,
``leaderboard.json``, ``best.yaml``)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from runner import recipes
from runner.errors import RunnerError
from runner.runfolder import save_json, save_text
from runner.sweep.spec import Axis, Sweep, shown_value

STATE = "sweep.json"
FINISHED = ("done", "pruned", "diverged", "failed")
"""Trial statuses a re-run skips; ``running`` and ``interrupted`` trials continue."""


# -- sweep.json and its trials -------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def open_state(sweep: Sweep) -> dict:
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


def save_state(sweep: Sweep, state: dict) -> None:
    save_json(state, sweep.folder / STATE)


def new_entry(number: int, name: str, axes: list[Axis], texts: list[str], **extra) -> dict:
    overrides = {a.key: _plain(recipes.parse_override(t, "--grid")[1]) for a, t in zip(axes, texts)}
    return {"trial": number, "name": name, "overrides": overrides, "override_texts": texts, "status": "pending",
            "folder": None, "best_val_acc": None, "best_epoch": None, "wall_s": None, "note": "", **extra}


def read_summary(folder: str | None) -> dict | None:
    path = Path(folder) / "summary.json" if folder else None
    if path is None or not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_finished(entry: dict) -> bool:
    """Finished and still there: a done trial whose run folder lost its summary.json runs again."""
    if entry["status"] not in FINISHED:
        return False
    return entry["status"] not in ("done", "pruned") or read_summary(entry.get("folder")) is not None


# -- the leaderboard -----------------------------------------------------------------------------------------

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
        overrides = " ".join(f"{k}={shown_value(v)}" for k, v in (row["overrides"] or {}).items())
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
