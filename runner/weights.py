"""Loading weights: files read weights-only (never arbitrary pickles), strict loads that say what differs."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import RunnerError

if TYPE_CHECKING:  # imported by the functions: a plugin that imports these names is listed without torch
    import torch


def load_state_dict(path: str | Path) -> dict:
    """Weights from a file, weights-only; ``{"model": sd}`` checkpoints too."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RunnerError(f"weights file {path} does not exist")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to a user
        raise RunnerError(f"weights file {path} cannot be loaded as weights: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise RunnerError(f"weights file {path} holds a {type(state).__name__}, not a state_dict")
    return state


def load_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """load_state_dict(strict=True) with a one-line error naming what differs."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        detail = "; ".join(lines)[:400]
        raise RunnerError(f"{source} does not fit {type(model).__name__}: {detail}") from None
