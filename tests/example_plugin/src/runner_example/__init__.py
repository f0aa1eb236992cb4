"""runner-example: the reference third-party runner plugin package.

It adds one component of several kinds and a lifecycle plugin with its own recipe section, written against
``runner.api`` alone, as any plugin should be:

- backbone ``tiny_cnn``: a tiny conv net with BatchNorm that names its own layer groups (``stem``, ``block``);
- freeze policy ``first_groups``: freeze the first N of the backbone's layer groups, built on ``FreezeParams`` and
  ``freeze_plan`` (so ``bn``, ``backbone_lr_mult`` and ``layer_decay`` work, and the frozen part's BatchNorm is
  held in eval mode);
- scheduler ``halve``: halve every group's learning rate after each epoch;
- recipe section ``log_every: {every: 1}`` (off unless a recipe has it): one line per ``every`` epochs in
  ``example.log`` in the run folder.

Installed, it registers through ``[project.entry-points.runner]`` in its pyproject.toml; tests/test_plugins.py
installs it with pip, tests/test_example_plugin.py trains with it.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from runner.api import (Backbone, Component, FreezeParams, FreezePlan, LayerGroup, Params, PluginError, Preprocess,
                        Schedule, Section, freeze_plan, hookimpl)

RUNNER_API = "1.0"


# -- a backbone with its own layer groups ------------------------------------------------------------------------

class TinyCNNParams(Params):
    width: int = Field(8, gt=0, description="channels of the conv layers")


def build_tiny_cnn(params: TinyCNNParams) -> Backbone:
    """Two conv blocks with BatchNorm, global pooling and a 1000-way linear head (replaced by the engine)."""
    w = params.width
    model = nn.Sequential(
        nn.Conv2d(3, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, 1000),
    )
    # module names (a module stands for all its parameters), from the input up; the head is added as "head"
    groups = [LayerGroup("stem", ["0", "1"]), LayerGroup("block", ["3", "4"])]
    return Backbone(model, Preprocess(size=32, resize=36), layer_groups=groups)


# -- a freeze policy on FreezeParams and freeze_plan ---------------------------------------------------------------

class FirstGroupsParams(FreezeParams):
    groups: int = Field(1, ge=0, description="how many of the backbone's layer groups to freeze, from the input")


def build_first_groups(params: FirstGroupsParams, backbone: Backbone) -> FreezePlan:
    """Freeze the first ``groups`` layer groups; the rest and the head train. With ``bn: frozen`` (the default)
    ``freeze_plan`` holds the frozen groups' BatchNorm in eval mode, so their running statistics stay as loaded."""
    *body, head = backbone.groups()
    if params.groups > len(body):
        raise PluginError(f"freeze.groups: {params.groups} is more than the backbone's {len(body)} layer groups "
                          f"({', '.join(g.name for g in body)})")
    trains = [name for group in body[params.groups:] for name in group.params] + head.params
    return freeze_plan(backbone, params, trains)


# -- a scheduler -----------------------------------------------------------------------------------------------------

class HalveParams(Params):
    pass


def build_halve(params: HalveParams, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    """Halve every group's lr after each epoch."""
    return Schedule(torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5), "epoch")


# -- a lifecycle plugin with its own recipe section -------------------------------------------------------------------

class LogEvery(Params):
    every: int = Field(1, gt=0, description="write a line every this many epochs")
    file: str = Field("example.log", pattern=r"^[\w.-]+$", description="the file's name in the run folder")


@hookimpl
def runner_recipe_sections():
    return [Section("log_every", "a line in example.log every few epochs (example plugin)", LogEvery)]


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    wanted = run.section("log_every")
    if wanted is None or epoch % wanted.every or not run.is_main:
        return
    logged = run.state.setdefault("log_every", {"lines": 0})  # saved in last.pt, so a resumed run counts on
    logged["lines"] += 1
    with open(run.folder / wanted.file, "a", encoding="utf-8") as f:
        f.write(f"{run.name} epoch {epoch}/{run.epochs}: val_acc {metrics['val_acc']:.4f} "
                f"(line {logged['lines']})\n")


# -- the component hooks -------------------------------------------------------------------------------------------

@hookimpl
def runner_backbones():
    return [Component("tiny_cnn", "a tiny conv net with BatchNorm and its own layer groups (example plugin)",
                      build_tiny_cnn, TinyCNNParams)]


@hookimpl
def runner_freeze_policies():
    return [Component("first_groups", "freeze the first N layer groups, train the rest (example plugin)",
                      build_first_groups, FirstGroupsParams)]


@hookimpl
def runner_schedulers():
    return [Component("halve", "halve the lr every epoch (example plugin)", build_halve, HalveParams)]
