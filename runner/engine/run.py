"""A training run's parts and the small steps every loop over it shares: autocast, moving a batch to the
device, which module a batch goes through, predictions of the evaluated weights."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from runner.types import Backbone, Data, FreezePlan, Schedule
from runner.errors import RunnerError
from runner.recipes import Recipe


class TrainingDiverged(RunnerError):
    """A NaN or infinite training loss: the run stops; best.pt and last.pt keep the last good epoch."""

    exit_code = 3


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a notebook's interrupt) during training, raised once the run folder is consistent: ``last.pt``
    holds the last finished epoch, if any. A KeyboardInterrupt, so a program sees the interrupt it expects."""

    exit_code = 130

    def __init__(self, folder: Path, epoch: int):
        self.folder, self.epoch = folder, epoch
        self.resumable = epoch > 1 and (Path(folder) / "last.pt").is_file()
        held = f"last.pt holds epoch {epoch - 1}" if self.resumable else "no epoch had finished: nothing to resume"
        super().__init__(f"interrupted during epoch {epoch}; {held}")


@dataclass
class Progress:
    """What changes as a run trains, and what last.pt keeps of it."""

    folder: Path | None = None
    epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"val_acc": -1.0, "epoch": -1})
    stop: str | None = None
    """Set through ``RunView.stop`` to end the run after the current epoch; the text says why."""
    plugin_state: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    final_val_acc: float | None = None
    """The val accuracy of the last epoch run in this process (None when a resume had no epoch left)."""


@dataclass
class Run:
    """A training run: the components built from its recipe (fixed once built, but for the loaders and
    optimizer an unfreeze or the lr finder swaps), and its :class:`Progress`. Internal: lifecycle hooks see a
    :class:`runner.api.RunView` of it."""

    recipe: Recipe
    resolved: dict[str, Any]
    device: torch.device
    autocast_dtype: torch.dtype | None
    """Autocast dtype for validation and feature extraction (None: fp32)."""
    backbone: Backbone
    data: Data
    freeze_plan: FreezePlan
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    train_loader: DataLoader
    val_loader: DataLoader
    hook: Any
    compiled: nn.Module | None = None
    """``torch.compile`` of the model when the recipe asks for it; it shares the model's parameters."""
    ddp: nn.Module | None = None
    """The trained module in DistributedDataParallel when torchrun started several processes."""
    train_dtype: torch.dtype | None = None
    """Autocast dtype for training steps; precision auto keeps fp32 where reduced precision trains slower."""
    precision_note: str = ""
    image_loaders: tuple[DataLoader, DataLoader] | None = None
    cache: bool = False
    cache_note: str = ""
    trunk_pass: dict[str, Any] | None = None
    """The frozen trunk's pass of the feature cache when this run made one (summary.json): ``runtime``
    (``onnxruntime`` or ``torch``), ``why`` that one, ``transforms_ahead`` (whether a thread transformed the next
    batch while the trunk ran, as measured faster: :mod:`runner.feeding`; None where the pass was too short to
    measure), the image views it ran (``images``) and the ``seconds`` the features took (the pass, and reading or
    writing the cache)."""
    trunk_forward: Any = None
    """The head inputs of a batch of images as this run's trunk pass computed them (its runtime, its folded copy),
    set by the pass: :func:`predict` runs the head on them while the run trains on cached features."""
    val_fold: bool | None = None
    """Whether validation runs a BatchNorm-folded copy of the model (None: not yet checked on a first batch)."""
    ema: Any = None
    """``torch.optim.swa_utils.AveragedModel`` of the model when the recipe sets ``ema``."""
    lr_find: Any = None
    """The lr finder's result when the recipe's lr is auto (written to the run folder as lr_find.json/.png)."""
    mix: Any = None
    """The batch transform (torchvision's MixUp/CutMix) that mixes training images and labels, if any."""
    checkpoints: Any = None
    """The :class:`runner.checkpoint.Writer` of best.pt and last.pt, set when the epochs start."""
    solver: dict[str, Any] | None = None
    """``head_solver: lbfgs``: the penalty chosen, the iterations and the candidates tried (for summary.json)."""

    progress: Progress = field(default_factory=lambda: Progress())

    def __post_init__(self):
        from runner.lifecycle import RunView

        self.view = RunView(self)

    folder = property(lambda self: self.progress.folder, lambda self, v: setattr(self.progress, "folder", v))
    epoch = property(lambda self: self.progress.epoch, lambda self, v: setattr(self.progress, "epoch", v))
    stop = property(lambda self: self.progress.stop, lambda self, v: setattr(self.progress, "stop", v))
    best = property(lambda self: self.progress.best, lambda self, v: setattr(self.progress, "best", v))
    plugin_state = property(lambda self: self.progress.plugin_state,
                            lambda self, v: setattr(self.progress, "plugin_state", v))
    resumed = property(lambda self: self.progress.resumed, lambda self, v: setattr(self.progress, "resumed", v))
    final_val_acc = property(lambda self: self.progress.final_val_acc,
                             lambda self, v: setattr(self.progress, "final_val_acc", v))

    @property
    def model(self) -> nn.Module:
        return self.backbone.model

    @property
    def classes(self) -> list[str]:
        return self.data.classes


def autocast(run: Run, train: bool = False):
    dtype = run.train_dtype if train else run.autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(run.device.type, dtype=dtype)


def to_device(run: Run, inputs: torch.Tensor) -> torch.Tensor:
    inputs = inputs.to(run.device, non_blocking=True)
    if run.recipe.settings.channels_last and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def trained_module(run: Run) -> nn.Module:
    """What a batch goes through: the head alone on cached features, else the whole model (in DDP under torchrun)."""
    if run.ddp is not None:
        return run.ddp
    if run.cache:
        return run.backbone.head
    return run.compiled if run.compiled is not None else run.model


def head_name(run: Run) -> str:
    return next(name for name, module in run.model.named_modules() if module is run.backbone.head)


def evaluated_model(run: Run) -> nn.Module:
    """The weights that are validated and saved as best: the moving average when ``ema`` is on, else the model."""
    return run.ema.module if run.ema is not None else run.model


def evaluated_module(run: Run) -> nn.Module:
    if run.ema is None:
        return trained_module(run)
    return run.ema.module.get_submodule(head_name(run)) if run.cache else run.ema.module


def generators(run: Run) -> list[torch.Generator]:
    """The shuffling generators of the training loaders in use and held back (cached and image loaders)."""
    loaders = [run.train_loader, *(run.image_loaders[:1] if run.image_loaders else [])]
    return [loader.generator for loader in loaders if loader.generator is not None]


def eval_logits(run: Run, images: torch.Tensor) -> torch.Tensor:
    """The model's logits for a batch of images, on the run's device, under the eval autocast dtype."""
    with autocast(run):
        return run.model(to_device(run, images))


def predict(run: Run, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (on the CPU, fp32) for a batch of preprocessed images, in eval mode. While the run trains
    on cached features, the frozen trunk runs the way its pass did (:attr:`Run.trunk_forward`: ONNX Runtime or the
    folded copy, checked against the model on the pass's first batch) and the head on what it gives, as validation
    does: predictions.png's 16 images took 0.6 s through the plain model here, its first call at that batch."""
    run.model.eval()
    with torch.inference_mode():
        if run.cache and run.trunk_forward is not None:
            with autocast(run):
                logits = run.backbone.head(run.trunk_forward(images).to(run.device))
        else:
            logits = eval_logits(run, images)
        return logits.float().softmax(1).cpu()
