"""The one checkpoint format, versioned, read and written by everything: fit and resume, predict, evaluate,
export, serving and sweeps.

``best.pt`` holds the weights that validated best and all needed to use them: classes, preprocessing, the resolved
recipe. ``last.pt`` adds everything to continue training as if never stopped: optimizer, scheduler, RNG and
data-order states, plugins' state. Both load with ``torch.load(..., weights_only=True)``: no pickle ever runs code,
and a file that would need one is refused, never retried unsafely.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from runner.errors import RunnerError

if TYPE_CHECKING:
    from runner.engine.run import Run

FORMAT = "runner-checkpoint"
VERSION = 1
"""Bumped when a key changes meaning; files without a version are the format before it was versioned (0)."""
MODEL_KEYS = ("model", "classes", "preprocess", "recipe")
TRAINING_KEYS = ("epoch", "optimizer", "scheduler", "best", "rng", "generators", "train_dtype", "plugin_state")


def _weights(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def best_state(run: Run, epoch: int, val_acc: float) -> dict[str, Any]:
    """What best.pt holds: the evaluated weights (the moving average with ``ema``) and how to use them."""
    from runner.engine.run import evaluated_model

    return {**_about(run, epoch, val_acc), "model": _weights(evaluated_model(run))}


def _about(run: Run, epoch: int, val_acc: float) -> dict[str, Any]:
    """Everything of best.pt but the weights."""
    return {
        "format": FORMAT, "version": VERSION, "kind": "best",
        "classes": list(run.classes),
        "preprocess": dataclasses.asdict(run.backbone.preprocess),
        "recipe": run.resolved,
        "recipe_path": str(run.recipe.origin or run.recipe.path.resolve()),
        "epoch": epoch,
        "val_acc": val_acc,
    }


def last_state(run: Run, epoch: int) -> dict[str, Any]:
    """What last.pt holds: everything to continue after ``epoch`` as if never stopped."""
    import torch

    from runner.engine.run import generators

    scheduler = run.schedule.scheduler
    return {
        **_about(run, epoch, run.best["val_acc"]), "kind": "last",
        "model": _weights(run.model),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "best": dict(run.best),
        "rng": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators(run)],
        "train_dtype": str(run.train_dtype) if run.train_dtype else None,
        "plugin_state": run.plugin_state,
    }


def save(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous file."""
    from runner.runfolder import save_torch

    save_torch(state, path)


WRITE_EVERY_S = 10.0
"""Checkpoints of epochs that end sooner than this after the previous write wait in memory (see :class:`Writer`)."""


class Writer:
    """best.pt and last.pt of a run, written at most every ``every_s`` seconds while epochs are quick.

    An epoch that ends ``every_s`` or more after the previous write is written at once. A quicker one (a head on
    cached features trains an epoch in milliseconds, and each write is the whole model, fsynced) is kept in memory
    and written with the next write that is due, or by :meth:`flush`, which the loop calls when the run ends, on
    Ctrl-C and on any error: when a run stops, the files hold its last finished epoch. Only a killed process
    (SIGKILL, power loss) can leave them up to ``every_s`` seconds of epochs behind.
    """

    def __init__(self, folder: Path, every_s: float = WRITE_EVERY_S):
        self.folder, self.every_s = Path(folder), every_s
        self.pending: dict[str, dict[str, Any]] = {}
        self.written_at = float("-inf")

    def put(self, kind: Literal["best", "last"], state: dict[str, Any]) -> None:
        """Hand over an epoch's ``best`` state (a copy already) when it improved, then its ``last`` one: the last
        ends the epoch, and is written with any held best when a write is due."""
        if kind == "best":
            self.pending["best"] = state
        elif time.monotonic() - self.written_at >= self.every_s:
            self.pending["last"] = state
            self.flush()
        else:  # held until written: a copy, so the optimizer's next steps do not change it (the weights are a
            # copy already: last_state clones them)
            held = copy.deepcopy({key: value for key, value in state.items() if key != "model"})
            self.pending["last"] = {**held, "model": state["model"]}

    def flush(self) -> None:
        """Write what is held (best.pt first: a last.pt never names a best epoch whose file is missing)."""
        for kind in ("best", "last"):
            state = self.pending.pop(kind, None)
            if state is not None:
                save(state, self.folder / f"{kind}.pt")
        self.written_at = time.monotonic()


def load(path: str | Path, kind: Literal["best", "last"] = "best") -> dict[str, Any]:
    """A checkpoint file's contents, checked: any file that is not a runner checkpoint of this kind (empty,
    damaged, someone else's torch file, a bare tensor, a pickle that needs code to load, a newer format) is a
    one-line :class:`RunnerError` saying so."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise RunnerError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise RunnerError(f"{path}: empty file (0 bytes), not a runner checkpoint; the process writing it may "
                          "have been killed")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunnerError(f"{path}: not a runner checkpoint: it holds Python objects that only an unsafe load could "
                          "read, and runner never runs code from a file") from None
    except Exception as exc:  # torch raises many types for a damaged file; all mean the same to a user
        detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise RunnerError(f"{path}: not a readable checkpoint ({detail[:200]})") from None
    if not isinstance(state, dict):
        raise RunnerError(f"{path}: holds a {type(state).__name__}, not a runner checkpoint")
    version = state.get("version", 0) if state.get("format", FORMAT) == FORMAT else None
    if version is None or not isinstance(version, int):
        raise RunnerError(f"{path}: not a runner checkpoint (format {state.get('format')!r})")
    if version > VERSION:
        raise RunnerError(f"{path}: written by a newer runner (checkpoint format {version}; this one reads up to "
                          f"{VERSION}): upgrade runner")
    needed = MODEL_KEYS + (TRAINING_KEYS if kind == "last" else ())
    missing = [key for key in needed if key not in state]
    if missing:
        what = "a last.pt to resume from" if kind == "last" and not set(MODEL_KEYS) - set(state) else \
            "a runner checkpoint"
        raise RunnerError(f"{path}: not {what} (no {', '.join(missing)})")
    return state


def read_last(folder: str | Path) -> dict[str, Any]:
    """``folder/last.pt``, checked, or a one-line RunnerError saying why the run cannot be resumed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunnerError(f"{folder}: no such run folder" if not folder.exists() else
                          f"{folder}: not a run folder (give the folder that holds last.pt)")
    if not (folder / "last.pt").is_file():
        raise RunnerError(f"{folder}: no last.pt to resume from: the run stopped before its first epoch ended; "
                          "start it again with runner run")
    return load(folder / "last.pt", "last")
