"""Running a sweep: each trial an ordinary run (continued from its ``last.pt`` when interrupted), over the grid
or over optuna-sampled points with pruning, recorded in the sweep state after every change. Progress goes to a
display object the caller passes (the CLI's is ``runner.cli.sweep_display.SweepDisplay``); None shows nothing."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from runner import engine
from runner import recipes
from runner.errors import RunnerError
from runner.hookspecs import hookimpl
from runner.sweep.spec import Sweep, import_optuna, yaml_text, trial_name
from runner.sweep.state import FINISHED, new_entry, open_state, save_state, read_summary, is_finished, write_leaderboard
from runner.sweep.study import distribution, tell, open_study

PRUNED = "pruned by optuna"


class SweepInterrupted(Exception):
    """Ctrl-C during a trial: the sweep folder is consistent; the same command continues it (exit 130)."""

    exit_code = 130

    def __init__(self, message: str, folder: Path):
        self.folder = folder
        super().__init__(message)


def _load(ref, overrides: list[str], catalog_for, origin: Path | None = None):
    """A recipe loaded with overrides (errors labelled --grid) and the catalog made for it."""
    from runner import session

    return session.load(ref, overrides, origin=origin, label="--grid", catalog_for=catalog_for)


# -- running trials ------------------------------------------------------------------------------------------

class _Tracker:
    """Records the trial's run folder in the sweep state as soon as the run starts."""

    def __init__(self, sweep: Sweep, state: dict, entry: dict):
        self.sweep, self.state, self.entry = sweep, state, entry

    @hookimpl
    def runner_run_start(self, run):
        self.entry["folder"] = str(run.folder)
        save_state(self.sweep, self.state)


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
            run.stop(self.pruned)


def _record(entry: dict, summary: dict, pruned: str | None = None) -> None:
    stopped = pruned or summary.get("stopped")
    entry.update(status="pruned" if stopped and stopped.startswith(PRUNED) else "done",
                 best_val_acc=summary["best_val_acc"], best_epoch=summary["best_epoch"], wall_s=summary["wall_s"],
                 folder=summary["folder"], note=stopped or "")


def _run_trial(sweep: Sweep, state: dict, entry: dict, catalog_for, display, plugins=()) -> None:
    """Train one trial to its end (or continue it from last.pt) and record it; Ctrl-C -> SweepInterrupted."""
    summary = read_summary(entry.get("folder"))
    if summary is not None:  # it finished, but the sweep stopped before recording it
        _record(entry, summary)
        save_state(sweep, state)
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
    save_state(sweep, state)
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
        save_state(sweep, state)
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
        save_state(sweep, state)
        return
    pruned = next((p.pruned for p in plugins if isinstance(p, OptunaPruning) and p.pruned), None)
    _record(entry, summary, pruned)
    save_state(sweep, state)


def _after_trial(sweep: Sweep, state: dict, entry: dict, display) -> None:
    rows = write_leaderboard(sweep, state)
    if display is not None:
        display.trial_end(entry, sweep.total)
        display.leaderboard(rows, sweep)


def run(sweep: Sweep, catalog_for: Callable | None = None, display=None) -> list[dict]:
    """Run (or continue) the sweep; returns the leaderboard rows, best first."""
    from runner.plugins import load_catalog

    catalog_for = catalog_for or (lambda r: load_catalog(r.plugin_refs()))
    state = open_state(sweep)
    study = open_study(sweep, state) if sweep.kind == "optuna" else None  # a damaged optuna.db fails here
    if display is not None:
        display.begin(sweep, state)
    if study is None:
        _run_grid(sweep, state, catalog_for, display)
    else:
        _run_optuna(sweep, state, study, catalog_for, display)
    rows = write_leaderboard(sweep, state)
    if display is not None:
        display.end(rows, sweep, state)
    return rows


def _run_grid(sweep: Sweep, state: dict, catalog_for, display) -> None:
    entries = {t["trial"]: t for t in state["trials"]}
    names: set[str] = set()
    for number, texts in enumerate(sweep.combos, 1):
        entry = entries.get(number)
        if entry is None:
            overrides = {a.key: recipes.parse_override(t, "--grid")[1] for a, t in zip(sweep.axes, texts)}
            name = trial_name(sweep.name, overrides)
            name = name if name not in names else f"{name}-{number}"
            entry = new_entry(number, name, sweep.axes, texts)
            state["trials"].append(entry)
            state["trials"].sort(key=lambda t: t["trial"])
        names.add(entry["name"])
        if is_finished(entry):
            if display is not None:
                display.skipped(entry, sweep.total)
            continue
        _run_trial(sweep, state, entry, catalog_for, display)
        _after_trial(sweep, state, entry, display)


# -- optuna --------------------------------------------------------------------------------------------------

def _run_optuna(sweep: Sweep, state: dict, study, catalog_for, display) -> None:
    optuna = import_optuna()
    trials = study.get_trials(deepcopy=False)
    # seeded by the recipe seed, offset by the trials so far: a continued study does not redraw the first points
    study.sampler = optuna.samplers.TPESampler(seed=sweep.seed + len(trials))
    known = {t.get("optuna_number") for t in state["trials"]}
    for frozen in trials:  # asked for but never recorded: nothing ran
        if frozen.state == optuna.trial.TrialState.RUNNING and frozen.number not in known:
            study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
    distributions = {a.key: distribution(optuna, a) for a in sweep.axes}

    def execute(entry: dict, trial) -> None:
        pruning = OptunaPruning(trial) if trial is not None else None
        try:
            _run_trial(sweep, state, entry, catalog_for, display, [pruning] if pruning else [])
        except RunnerError as exc:
            if entry["status"] != "pending":  # it trained: a real problem, not a bad sampled point
                raise
            entry.update(status="failed", note=exc.problems[0] if exc.problems else str(exc))  # bad sampled point
            save_state(sweep, state)
        tell(optuna, study, entry)
        _after_trial(sweep, state, entry, display)

    for entry in list(state["trials"]):
        if is_finished(entry):
            tell(optuna, study, entry)
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
        texts = [f"{a.key}={yaml_text(v)}" for a, v in zip(sweep.axes, values)]
        name = trial_name(sweep.name, dict(zip((a.key for a in sweep.axes), values)), number)
        entry = new_entry(number, name, sweep.axes, texts, optuna_number=trial.number)
        state["trials"].append(entry)
        save_state(sweep, state)
        execute(entry, trial)
