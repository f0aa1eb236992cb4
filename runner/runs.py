"""Reading run folders after the fact: what ``runner runs`` lists and ``runner compare`` sets side by side.

Nothing here trains or writes a run folder, and nothing fails on a damaged one: every file a run folder may hold
(``recipe.yaml``, ``metrics.jsonl``/``metrics.csv``, ``best.pt``, ``last.pt``, ``summary.json``, a sweep's
``sweep.json``) is read defensively, and whatever cannot be read becomes a line in :attr:`RunInfo.problems`.
Checkpoints are read through :mod:`runner.checkpoint` only.

A run's status, in this order:

* ``summary.json`` (written when a run ends) -> ``finished``, or ``stopped`` (early stopping, optuna pruning...: its
  ``stopped`` reason), or ``diverged`` when that reason starts with "diverged";
* else ``diverged`` when the engine left a ``diverged.json`` marker newer than ``last.pt``'s epoch, when the sweep
  that ran it recorded the trial as diverged (or failed), or when the last metrics row has a non-finite loss;
* else ``running`` when the run looks alive: one of its files (``metrics.jsonl``, ``last.pt``, ``best.pt``,
  ``recipe.yaml``, pictures) changed within :data:`RUNNING_WINDOW_S` seconds, or within three times its slowest
  epoch when epochs are slower than that. This is a heuristic: nothing on disk says whether the process still
  lives. A run killed a minute ago reads as running for a little while, and a run whose first epoch (or feature
  extraction) takes longer than the window reads as interrupted until that epoch ends;
* else ``interrupted`` at epoch ``last.pt``'s epoch + 1 (at epoch 1 when no epoch finished);
* ``broken`` whenever a file is damaged or missing (no ``recipe.yaml``, a ``best.pt`` that is not a checkpoint,
  metrics that are not JSON...); the problems say which, and what could be read is still reported.
"""
from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from runner.errors import RunnerError

RUNNING_WINDOW_S = 120.0
"""A run without summary.json whose files changed this recently (seconds) is shown as running."""
RUN_FILES = ("recipe.yaml", "metrics.jsonl", "metrics.csv", "best.pt", "last.pt", "summary.json")
"""Any of these makes a folder a run folder (a damaged one if recipe.yaml is missing)."""
DIVERGED_MARKER = "diverged.json"
"""``{"epoch": k, "message": ...}``: the run's training loss turned non-finite during epoch k."""
SWEEP_FILES = {"sweep.json", "leaderboard.csv", "leaderboard.json", "best.yaml", "optuna.db", "optuna.db-journal"}
COMPANIONS = re.compile(r"^(mlflow\.db(-journal|-wal|-shm)?|mlruns|mlruns-artifacts|.*lr_find\.(png|json))$")
"""What else lives in a runs folder (the MLflow plugin's store, ``runner lr-find`` pictures): not listed."""
STAMP = re.compile(r"-(\d{8}-\d{6})(?:-\d+)?$")
PLOT_METRICS = (("val_acc", "val accuracy"), ("val_loss", "val loss"))


@dataclass
class RunInfo:
    """One row of ``runner runs``: a run folder, a sweep folder, or something else found among them."""

    folder: Path
    kind: str = "run"
    """``run``, ``sweep`` or ``other`` (not a run folder)."""
    status: str = "broken"
    """finished, stopped, interrupted, diverged, running, broken; ``sweep`` for a sweep; ``not a run``."""
    detail: str = ""
    """The status in words: ``interrupted at epoch 3``, ``stopped early: ...``, ``broken: best.pt: ...``."""
    recipe: str | None = None
    best_val_acc: float | None = None
    best_epoch: int | None = None
    epochs_done: int | None = None
    epochs: int | None = None
    """The epochs the recipe asks for."""
    final: dict[str, Any] = field(default_factory=dict)
    """The last epoch's metrics row (``epoch``, ``train_loss``, ``val_acc``...)."""
    wall_s: float | None = None
    """From summary.json when the run ended; else the sum of its epochs' seconds (train and val only)."""
    date: datetime | None = None
    started_ns: int = 0
    """recipe.yaml's modification time (written once, when the run starts): orders runs whose folder names carry
    the same second."""
    problems: list[str] = field(default_factory=list)
    sweep: str | None = None
    """The sweep folder's name, for a sweep's trial."""
    trials: list["RunInfo"] = field(default_factory=list)
    """A sweep's trial runs (newest first)."""
    trials_run: int | None = None
    """A sweep's trial run folders found."""
    trials_total: int | None = None
    """A sweep's trials, as its sweep.json lists them (at least those found)."""
    metrics: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """One dict per epoch, as metrics.jsonl holds them (not in :meth:`to_dict`)."""
    resolved: dict[str, Any] | None = field(default=None, repr=False)
    """The run's resolved recipe (recipe.yaml), not in :meth:`to_dict`."""

    @property
    def name(self) -> str:
        return self.folder.name

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready row: every field but the metrics history, the recipe and the trials."""
        return {"name": self.name, "folder": str(self.folder), "kind": self.kind, "sweep": self.sweep,
                "recipe": self.recipe, "status": self.status, "detail": self.detail,
                "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch, "epochs_done": self.epochs_done,
                "epochs": self.epochs, "trials_run": self.trials_run, "trials_total": self.trials_total,
                "final": _plain(self.final), "wall_s": self.wall_s,
                "date": self.date.isoformat(timespec="seconds") if self.date else None,
                "problems": list(self.problems)}


def _plain(value: Any) -> Any:
    """JSON-safe: non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _short(exc: BaseException | str, path: Path) -> str:
    """An error message about ``path`` as a problem of its run folder: the file's name, not its full path."""
    text = exc.problems[0] if isinstance(exc, RunnerError) and exc.problems else str(exc)
    text = text.replace(f"{path}: ", "").replace(str(path), path.name)
    return f"{path.name}: {text.splitlines()[0] if text else type(exc).__name__}"[:300]


# -- reading the files of one run ----------------------------------------------------------------------------

def _read_json(path: Path, problems: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(_short(f"not readable JSON ({exc})", path))
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: holds a {type(data).__name__}, not an object")
        return None
    return data


def read_recipe(folder: Path, problems: list[str]) -> dict | None:
    """The run's resolved recipe from recipe.yaml, or None (with a problem when the file is missing or bad)."""
    path = folder / "recipe.yaml"
    if not path.is_file():
        problems.append("no recipe.yaml")
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        problems.append(f"recipe.yaml: not readable YAML ({str(exc).splitlines()[0][:150]})")
        return None
    if not isinstance(data, dict):
        problems.append(f"recipe.yaml: holds a {type(data).__name__}, not a recipe")
        return None
    return data


def read_metrics(folder: Path, problems: list[str]) -> list[dict[str, Any]]:
    """The epochs' metrics (metrics.jsonl, else metrics.csv), one per epoch: a resumed run that wrote an epoch
    twice keeps the later row."""
    rows: list[dict[str, Any]] = []
    jsonl, table = folder / "metrics.jsonl", folder / "metrics.csv"
    try:
        if jsonl.is_file():
            for number, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    problems.append(f"metrics.jsonl: line {number} is not JSON")
                    break
                if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                    problems.append(f"metrics.jsonl: line {number} is not an epoch's metrics")
                    break
                rows.append(row)
        elif table.is_file():
            with open(table, newline="", encoding="utf-8") as f:
                for number, raw in enumerate(csv.DictReader(f), 2):
                    row = _csv_row(raw)
                    if row is None:
                        problems.append(f"metrics.csv: line {number} is not an epoch's metrics")
                        break
                    rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"{(jsonl if jsonl.is_file() else table).name}: not readable ({exc})"[:300])
    by_epoch = {row["epoch"]: row for row in rows}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _csv_row(raw: dict) -> dict | None:
    """A metrics.csv row as metrics.jsonl has it: numbers, and the lr columns (lr, lr_1...) as one list."""
    row: dict[str, Any] = {}
    lrs: dict[int, float] = {}
    try:
        for key, value in raw.items():
            if key is None or value is None:
                return None
            if key == "best":
                row[key] = value == "True"
            elif key == "lr" or re.fullmatch(r"lr_\d+", key):
                lrs[0 if key == "lr" else int(key[3:])] = float(value)
            elif key == "epoch":
                row[key] = int(value)
            else:
                row[key] = float(value)
    except ValueError:
        return None
    if "epoch" not in row:
        return None
    row["lr"] = [lrs[i] for i in sorted(lrs)]
    return row


def _checkpoint(path: Path, kind: str, problems: list[str]) -> dict | None:
    from runner import checkpoint

    if not path.exists():
        return None
    try:
        return checkpoint.load(path, kind)
    except RunnerError as exc:
        problems.append(_short(exc, path))
        return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _date(folder: Path) -> datetime | None:
    """When the run started: the folder name's stamp (``name-YYYYmmdd-HHMMSS``), else its recipe's mtime."""
    match = STAMP.search(folder.name)
    if match:
        try:
            return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")
        except ValueError:
            pass
    for path in (folder / "recipe.yaml", folder):
        try:
            return datetime.fromtimestamp(path.stat().st_mtime).replace(microsecond=0)
        except OSError:
            continue
    return None


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _newest_change(folder: Path) -> float | None:
    """The newest modification time among the files a training process writes (top level of the folder)."""
    times = []
    try:
        for path in folder.iterdir():
            if path.is_file():
                times.append(path.stat().st_mtime)
    except OSError:
        return None
    return max(times) if times else None


def is_run_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in RUN_FILES)


def is_sweep_folder(folder: Path) -> bool:
    return folder.is_dir() and (folder / "sweep.json").is_file()


def read_run(folder: str | Path, now: float | None = None, sweep_entry: dict | None = None) -> RunInfo:
    """One run folder, read without failing: its status (see the module's doc), best and last metrics, epochs,
    wall time and date, and the problems found. ``now`` (a time.time()) decides "running";
    ``sweep_entry`` is the trial's entry in its sweep's sweep.json, when it is a sweep's trial."""
    folder = Path(folder)
    info = RunInfo(folder=folder, date=_date(folder), started_ns=_mtime_ns(folder / "recipe.yaml"))
    if not is_run_folder(folder):
        info.kind, info.status = "other", "not a run"
        try:
            empty = folder.is_dir() and not any(folder.iterdir())
        except OSError:
            empty = False
        info.detail = ("not a run folder: " + ("empty" if empty else "a file" if folder.is_file() else
                                               "no recipe.yaml, metrics or checkpoints"))
        return info
    problems = info.problems
    info.resolved = read_recipe(folder, problems)
    summary = _read_json(folder / "summary.json", problems)
    info.metrics = read_metrics(folder, problems)
    best = _checkpoint(folder / "best.pt", "best", problems)
    last = _checkpoint(folder / "last.pt", "last", problems) if summary is None else None
    marker = _read_json(folder / DIVERGED_MARKER, problems)

    recipe = info.resolved or {}
    named = [recipe.get("name"), (summary or {}).get("recipe")]
    info.recipe = next((n for n in named if isinstance(n, str)), None)
    epochs = (summary or {}).get("epochs", recipe.get("epochs"))
    info.epochs = epochs if isinstance(epochs, int) else None
    info.final = dict(info.metrics[-1]) if info.metrics else {}
    good = [m for m in info.metrics if _finite(m.get("val_acc"))]
    if summary is not None and _finite(summary.get("best_val_acc")) and summary["best_val_acc"] >= 0:
        info.best_val_acc, info.best_epoch = summary["best_val_acc"], summary.get("best_epoch")
    elif best is not None and _finite(best.get("val_acc")):
        info.best_val_acc, info.best_epoch = best["val_acc"], best.get("epoch")
    elif good:
        top = max(good, key=lambda m: m["val_acc"])
        info.best_val_acc, info.best_epoch = top["val_acc"], top["epoch"]
    if summary is not None and isinstance(summary.get("epochs_run"), int):
        info.epochs_done = summary["epochs_run"]
    elif last is not None and isinstance(last.get("epoch"), int):
        info.epochs_done = last["epoch"]
    else:
        info.epochs_done = info.metrics[-1]["epoch"] if info.metrics else 0
    if summary is not None and _finite(summary.get("wall_s")):
        info.wall_s = summary["wall_s"]
    elif any(_finite(m.get("seconds")) for m in info.metrics):
        info.wall_s = round(sum(m["seconds"] for m in info.metrics if _finite(m.get("seconds"))), 2)
    if summary is not None and best is None and not (folder / "best.pt").exists():
        problems.append("no best.pt")

    status, detail = _status(info, summary, last, marker, sweep_entry, now)
    if problems:
        info.status, info.detail = "broken", f"broken: {'; '.join(problems)} (otherwise: {detail})"
    else:
        info.status, info.detail = status, detail
    return info


def _without_folder(message: Any, folder: Path) -> str:
    """A message about the run, its folder's path left out (the row already names the folder)."""
    text = " ".join(str(message or "").split())
    for shown_as in {str(folder), str(folder.resolve())}:
        text = text.replace(shown_as + "/", "").replace(shown_as, "the run folder")
    return text


def _status(info: RunInfo, summary: dict | None, last: dict | None, marker: dict | None, sweep_entry: dict | None,
            now: float | None) -> tuple[str, str]:
    done = info.epochs_done or 0
    if summary is not None:
        stopped = summary.get("stopped")
        if isinstance(stopped, str) and stopped.startswith("diverged"):
            return "diverged", stopped
        if stopped:
            return "stopped", f"stopped early: {stopped}"
        return "finished", "finished"
    if marker is not None and (not isinstance(marker.get("epoch"), int) or marker["epoch"] > done):
        at = marker.get("epoch") if isinstance(marker.get("epoch"), int) else done + 1
        note = _without_folder(marker.get("message"), info.folder)
        return "diverged", f"diverged at epoch {at}" + (f": {note}" if note else "")
    if sweep_entry is not None and sweep_entry.get("status") in ("diverged", "failed"):
        note = _without_folder(sweep_entry.get("note"), info.folder)
        word = sweep_entry["status"]
        return word if word == "diverged" else "broken", \
            f"{word} at epoch {done + 1} (sweep.json)" + (f": {note}" if note else "")
    final = info.metrics[-1] if info.metrics else {}
    if any(key in final and not _finite(final[key]) for key in ("train_loss", "val_loss")):
        return "diverged", f"diverged at epoch {final['epoch']} (non-finite loss)"
    changed = _newest_change(info.folder)
    slowest = max((m["seconds"] for m in info.metrics if _finite(m.get("seconds"))), default=0.0)
    window = max(RUNNING_WINDOW_S, 3 * slowest)
    all_done = info.epochs is not None and done >= info.epochs
    if changed is not None and (time.time() if now is None else now) - changed <= window:
        of = f" of {info.epochs}" if info.epochs else ""
        return "running", "running (after its last epoch)" if all_done else f"running (epoch {done + 1}{of})"
    if last is None and not (info.folder / "last.pt").exists():
        return "interrupted", "interrupted at epoch 1 (no epoch finished)"
    if all_done:
        return "interrupted", f"interrupted after its last epoch ({done}): no summary.json"
    return "interrupted", f"interrupted at epoch {done + 1}"


# -- sweeps and runs folders ---------------------------------------------------------------------------------

def _sweep_entries(state: dict | None) -> dict[str, dict]:
    """sweep.json's trial entries by their run folder's name."""
    entries = {}
    trials = (state or {}).get("trials")
    for trial in trials if isinstance(trials, list) else []:
        if isinstance(trial, dict) and isinstance(trial.get("folder"), str):
            entries[Path(trial["folder"]).name] = trial
    return entries


def read_sweep(folder: str | Path, now: float | None = None) -> RunInfo:
    """A sweep folder as one row (its trials' count by status, its best trial) with its trials in ``trials``."""
    folder = Path(folder)
    info = RunInfo(folder=folder, kind="sweep", status="sweep")
    state = _read_json(folder / "sweep.json", info.problems)
    entries = _sweep_entries(state)
    info.trials = _newest_first([read_run(child, now, entries.get(child.name)) for child in _children(folder)
                                 if child.is_dir() and child.name not in SWEEP_FILES])
    for trial in info.trials:
        trial.sweep = folder.name
    if state is not None:
        info.recipe = Path(str(state.get("recipe") or "")).stem or None
    runs = [t for t in info.trials if t.kind == "run"]
    info.recipe = info.recipe or next((t.recipe for t in runs if t.recipe), None)
    counts: dict[str, int] = {}
    for trial in runs:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    listed = (state or {}).get("trials")
    total = max(len(listed) if isinstance(listed, list) else 0, len(runs))
    ranked = [t for t in runs if t.best_val_acc is not None]
    if ranked:
        top = max(ranked, key=lambda t: t.best_val_acc)
        info.best_val_acc, info.best_epoch = top.best_val_acc, top.best_epoch
    info.trials_run, info.trials_total = len(runs), total
    walls = [t.wall_s for t in runs if t.wall_s is not None]
    info.wall_s = round(sum(walls), 2) if walls else None
    dates = [t.date for t in runs if t.date]
    info.date = min(dates) if dates else _date(folder)
    what = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    info.detail = f"sweep: {len(runs)} of {total} trials" + (f" ({what})" if what else "")
    if info.problems:
        info.status, info.detail = "broken", f"broken: {'; '.join(info.problems)} (otherwise: {info.detail})"
    return info


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def _newest_first(rows: list[RunInfo]) -> list[RunInfo]:
    """Runs and sweeps newest first, then what is not a run (by name)."""
    runs = sorted((r for r in rows if r.kind != "other"), key=lambda r: (r.date or datetime.min, r.started_ns, r.name),
                  reverse=True)
    return runs + sorted((r for r in rows if r.kind == "other"), key=lambda r: r.name)


def scan(folder: str | Path = "runs", now: float | None = None) -> list[RunInfo]:
    """Every run in a runs folder, newest first (a sweep with its trials in ``trials``); ``folder`` may also be
    one run folder or one sweep folder. A RunnerError only when ``folder`` itself is missing."""
    folder = Path(folder)
    if not folder.exists():
        raise RunnerError(f"{folder}: no such folder (runs go to the recipe's output:, runs by default)")
    if not folder.is_dir():
        raise RunnerError(f"{folder}: not a folder; give a runs folder, a run folder or a sweep folder")
    if is_sweep_folder(folder):
        return [read_sweep(folder, now)]
    if is_run_folder(folder):
        return [read_run(folder, now)]
    rows = []
    for child in _children(folder):
        if COMPANIONS.match(child.name):
            continue
        rows.append(read_sweep(child, now) if is_sweep_folder(child) else read_run(child, now))
    return _newest_first(rows)


def flat_rows(rows: list[RunInfo]) -> list[RunInfo]:
    """Rows with each sweep followed by its trials: the order ``runner runs`` shows them in."""
    return [r for row in rows for r in (row, *row.trials)]


# -- comparing runs ------------------------------------------------------------------------------------------

def flatten(recipe: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.01}}`` -> ``{"optimizer.lr": 0.01}``; lists and empty mappings stay values."""
    if not isinstance(recipe, dict) or (prefix and not recipe):
        return {prefix.rstrip("."): recipe} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in recipe.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else
                   {f"{prefix}{key}": value})
    return out


def shown(value: Any) -> str:
    """A recipe value as a short text: strings bare, the rest as JSON (null, true, 0.001, [1, 2])."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(_plain(value))
    except (TypeError, ValueError):
        return str(value)


ABSENT = object()


def runs_to_compare(paths: list[str | Path], now: float | None = None) -> list[RunInfo]:
    """The runs named: run folders, and for a sweep folder its trials (oldest first, as they ran)."""
    runs: list[RunInfo] = []
    for ref in paths:
        path = Path(ref)
        if not path.exists():
            raise RunnerError(f"{path}: no such run folder")
        if is_sweep_folder(path):
            trials = [t for t in read_sweep(path, now).trials if t.kind == "run"]
            if not trials:
                raise RunnerError(f"{path}: a sweep with no trial run folders yet")
            runs.extend(reversed(trials))
        elif is_run_folder(path):
            runs.append(read_run(path, now))
        else:
            raise RunnerError(f"{path}: not a run folder (no recipe.yaml, metrics or checkpoints) nor a sweep "
                              "folder")
    if len(runs) < 2:
        raise RunnerError("compare needs two runs or more (or a sweep folder with two trials or more)")
    return runs


METRIC_ROWS = (("best_val_acc", "best val acc"), ("best_epoch", "best epoch"), ("final_val_acc", "final val acc"),
               ("final_val_loss", "final val loss"), ("final_train_acc", "final train acc"),
               ("final_train_loss", "final train loss"), ("epochs_done", "epochs done"), ("wall_s", "wall s"),
               ("status", "status"))


def compare(runs: list[RunInfo]) -> dict[str, Any]:
    """What ``runner compare`` shows, as data: the runs, the resolved recipe keys whose values differ (absent
    where a run's recipe lacks the key), and best and final metrics side by side (lists in the runs' order)."""
    flats = [flatten(run.resolved or {}) for run in runs]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    differs = []
    for key in keys:
        values = [flat.get(key, ABSENT) for flat in flats]
        if any(shown(v) != shown(values[0]) or (v is ABSENT) != (values[0] is ABSENT) for v in values):
            differs.append({"key": key, "values": [None if v is ABSENT else _plain(v) for v in values],
                            "absent": [i for i, v in enumerate(values) if v is ABSENT]})
    metrics: dict[str, list] = {}
    for key, _ in METRIC_ROWS:
        if key.startswith("final_"):
            metrics[key] = [_plain(run.final.get(key[len("final_"):])) for run in runs]
        else:
            metrics[key] = [getattr(run, key) for run in runs]
    return {"runs": [run.to_dict() for run in runs], "differs": differs, "metrics": metrics}


def plot_compare(runs: list[RunInfo], path: str | Path, differs: list[dict] | None = None) -> Path:
    """``compare.png``: each run's val accuracy and val loss per epoch, overlaid (one line per run, labelled with
    its folder and the values that set it apart)."""
    from runner.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(7 * len(PLOT_METRICS), 4.8))
    told = [d for d in differs or [] if d["key"] not in ("name", "output")][:3]
    for i, run in enumerate(runs):
        apart = ", ".join(f"{d['key']}={'-' if i in d['absent'] else shown(d['values'][i])}" for d in told)
        label = run.name + (f" ({apart})" if apart else "")
        for ax, (key, _) in zip(axes, PLOT_METRICS):
            points = [(m["epoch"], m[key]) for m in run.metrics if _finite(m.get(key))]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
    for ax, (_, title) in zip(axes, PLOT_METRICS):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=1 if len(labels) > 3 else len(labels),
                   bbox_to_anchor=(0.5, -0.02 - 0.05 * (len(labels) if len(labels) > 3 else 1)), fontsize=9,
                   frameon=False)
    path = Path(path)
    save_figure(fig, path)  # a RunnerError saying why when it cannot be written
    return path
