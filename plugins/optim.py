"""Built-in optimizers (sgd, adam, adamw) and learning-rate schedulers (step, cosine, none)."""
from __future__ import annotations

import torch
from pydantic import Field

from runner.components import Component, Params, Schedule
from runner.hookspecs import hookimpl


class SGDParams(Params):
    lr: float = Field(0.01, gt=0, description="learning rate")
    momentum: float = Field(0.9, ge=0, description="momentum factor")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty")
    nesterov: bool = Field(False, description="Nesterov momentum")


class AdamParams(Params):
    lr: float = Field(0.001, gt=0, description="learning rate")
    betas: tuple[float, float] = Field((0.9, 0.999), description="running average coefficients")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")


class AdamWParams(AdamParams):
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay")


def _optimizer(cls):
    def build(params, param_groups):
        return cls(param_groups, **params.model_dump())
    return build


class StepParams(Params):
    step_size: int = Field(7, gt=0, description="epochs between decays")
    gamma: float = Field(0.1, gt=0, description="factor the lr is multiplied by at each decay")


class CosineParams(Params):
    eta_min: float = Field(0.0, ge=0, description="lowest learning rate, reached at the last epoch")


def build_step(params: StepParams, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    return Schedule(torch.optim.lr_scheduler.StepLR(optimizer, params.step_size, params.gamma), "epoch")


def build_cosine(params: CosineParams, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    total = epochs * steps_per_epoch
    return Schedule(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total, params.eta_min), "step")


def build_none(params: Params, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    return Schedule(None)


@hookimpl
def runner_optimizers():
    return [
        Component("sgd", "stochastic gradient descent with momentum", _optimizer(torch.optim.SGD), SGDParams),
        Component("adam", "Adam", _optimizer(torch.optim.Adam), AdamParams),
        Component("adamw", "Adam with decoupled weight decay", _optimizer(torch.optim.AdamW), AdamWParams),
    ]


@hookimpl
def runner_schedulers():
    return [
        Component("step", "multiply the lr by gamma every step_size epochs (the tutorial's StepLR)", build_step,
                  StepParams),
        Component("cosine", "cosine annealing to eta_min over the whole run, stepped per batch", build_cosine,
                  CosineParams),
        Component("none", "constant learning rate", build_none),
    ]
