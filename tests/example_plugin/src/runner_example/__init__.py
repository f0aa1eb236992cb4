"""An example runner plugin package: a tiny conv-net backbone and a scheduler that halves the lr every epoch.

Installed, it registers through ``[project.entry-points.runner]`` in its pyproject.toml; tests/test_plugins.py
installs it with pip and trains a recipe that names both components.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

import runner
from runner.components import Backbone, Component, Params, Preprocess, Schedule


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
    return Backbone(model, Preprocess(size=32, resize=36))


class HalveParams(Params):
    pass


def build_halve(params: HalveParams, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    """Halve every group's lr after each epoch."""
    return Schedule(torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5), "epoch")


@runner.hookimpl
def runner_backbones():
    return [Component("tiny_cnn", "a tiny conv net with BatchNorm (example plugin)", build_tiny_cnn, TinyCNNParams)]


@runner.hookimpl
def runner_schedulers():
    return [Component("halve", "halve the lr every epoch (example plugin)", build_halve, HalveParams)]
