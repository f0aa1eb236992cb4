"""What a lifecycle hook sees of a run: :class:`RunView`, a narrow, documented window on it.

Hooks get this view, never the engine's own state, so the engine can change without breaking plugins: they read
the recipe, the folder, the classes, the epoch and the model, keep their own state, and may ask the run to stop.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from runner.types import Preprocess


class RunView:
    """A run as lifecycle hooks see it (``runner_run_start(run)``, ``runner_epoch_end(run, epoch, metrics)``...).

    Read-only but for :meth:`stop` and :attr:`state`. Every process of a multi-process run calls the hooks; only
    rank 0 (``run.is_main``) should write files.
    """

    __slots__ = ("_run",)

    def __init__(self, run):
        self._run = run

    def __repr__(self) -> str:
        return f"RunView({self.name!r}, epoch {self.epoch}, folder {self.folder})"

    @property
    def name(self) -> str:
        """The run's name (the recipe's ``name:`` or its file's stem)."""
        return self._run.recipe.name

    @property
    def recipe(self) -> dict[str, Any]:
        """The fully resolved recipe as a plain dict (a copy: changing it changes nothing)."""
        return copy.deepcopy(self._run.resolved)

    def section(self, name: str):
        """The validated params of a plugin's recipe section (see ``runner_recipe_sections``), or None when the
        recipe leaves it off."""
        return self._run.recipe.extras.get(name)

    @property
    def folder(self) -> Path:
        """The run folder (created before ``runner_run_start``)."""
        return self._run.folder

    @property
    def classes(self) -> list[str]:
        return list(self._run.classes)

    @property
    def epoch(self) -> int:
        """The epoch in progress or just ended (1-based); before training, the last finished one (0 when new)."""
        return self._run.epoch

    @property
    def epochs(self) -> int:
        """The number of epochs the recipe asks for."""
        return self._run.recipe.settings.epochs

    @property
    def resumed(self) -> bool:
        """Whether this run continues an earlier one from its ``last.pt``."""
        return self._run.resumed

    @property
    def seed(self) -> int:
        return self._run.recipe.settings.seed

    @property
    def model(self) -> nn.Module:
        """The model whose weights are validated (the moving average with ``ema``); read it, do not train it."""
        return self._run.ema.module if self._run.ema is not None else self._run.model

    @property
    def preprocess(self) -> Preprocess:
        """How the model's input images are resized, cropped and normalised."""
        return self._run.backbone.preprocess

    @property
    def device(self) -> torch.device:
        return self._run.device

    @property
    def group_names(self) -> list[str]:
        """The optimizer's parameter groups by name, in the order of ``metrics["lr"]``."""
        return [group.get("name", f"group{i}") for i, group in enumerate(self._run.optimizer.param_groups)]

    def dataset(self, split: str):
        """The ``train`` or ``val`` dataset of the run's images (items are ``(image_tensor, class_index)``)."""
        if split not in ("train", "val"):
            raise ValueError(f"split {split!r}: expected train or val")
        return getattr(self._run.data, split)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (CPU, fp32) of the evaluated model for a batch of preprocessed images."""
        from runner.engine import predict

        return predict(self._run, images)

    @property
    def state(self) -> dict[str, Any]:
        """A dict for plugins' own state, saved in ``last.pt`` and back on resume: use a key of your own, and plain
        values (numbers, strings, lists, dicts, tensors)."""
        return self._run.plugin_state

    def stop(self, reason: str) -> None:
        """Ask the run to end after the current epoch; ``reason`` is shown and kept in the summary's ``stopped``."""
        self._run.stop = str(reason)

    @property
    def stopping(self) -> str | None:
        """The reason given to :meth:`stop`, if any."""
        return self._run.stop

    @property
    def is_main(self) -> bool:
        """True in the process that writes files and prints (always, unless several processes train)."""
        from runner import distributed

        return distributed.is_main()

    # what the on-screen report shows

    @property
    def notes(self) -> dict[str, str]:
        """How the run was set up, in words: device, precision, feature cache."""
        run = self._run
        dtype = str(run.autocast_dtype).replace("torch.", "") if run.autocast_dtype else "fp32"
        return {"device": f"{run.device} {dtype}", "precision": run.precision_note, "cache": run.cache_note}

    @property
    def skipped(self) -> list[str]:
        """Image files the dataset left out as unreadable, with why."""
        return list(self._run.data.skipped)

    def size(self, phase: str) -> int:
        """Items one pass of ``train`` or ``val`` goes through (images, or cached feature rows)."""
        loader = self._run.train_loader if phase == "train" else self._run.val_loader
        return len(loader.dataset)

    def plan(self) -> dict[str, Any]:
        """The parameter groups this run trains, as ``runner plan`` shows them."""
        from runner.planning import plan

        return plan(self._run)
