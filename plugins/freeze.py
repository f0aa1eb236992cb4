"""Built-in freeze policies: which parameters train and when, the optimizer's parameter groups with their
learning-rate scales, and BatchNorm layers of the frozen part held in eval mode.

``bn: frozen`` (the default) keeps the frozen part's BatchNorm running statistics fixed even while the model is in
train mode and after any parent ``.train()`` call: on small datasets, letting a frozen trunk's statistics drift
to a few hundred images costs accuracy (Lightning #15062, pytorch #66073). ``bn: train`` lets them update.

Groups come from the backbone (resnet stages, EfficientNet blocks, ViT blocks; see
``runner.components.default_layer_groups``). Discriminative learning rates: the head trains at the optimizer's
``lr``, the backbone at ``lr * backbone_lr_mult``, and with ``layer_decay: d`` each group toward the input at d
times the one above it. Every group is in the optimizer from the first step, so optimizer state saved after an
unfreeze step loads into a fresh run (the failure behind Lightning #6891).
"""
from __future__ import annotations

import types
from typing import Literal

from pydantic import Field
from torch import nn

from runner.components import Backbone, Component, FreezePlan, Params
from runner.errors import RunnerError, did_you_mean
from runner.hookspecs import hookimpl

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def _stay_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def hold_eval(module: nn.Module) -> None:
    """Put ``module`` in eval mode for good: a later ``.train()`` on it or a parent leaves it in eval."""
    module.eval()
    module.train = types.MethodType(_stay_eval, module)


def release(module: nn.Module) -> None:
    """Undo :func:`hold_eval`: the module follows its parent's train/eval mode again."""
    module.__dict__.pop("train", None)


def is_held(module: nn.Module) -> bool:
    return "train" in module.__dict__


class FreezeParams(Params):
    bn: Literal["frozen", "train"] = Field("frozen", description="frozen: BatchNorm layers of the frozen part stay in "
                                                                "eval mode (running statistics fixed); train: they update")
    backbone_lr_mult: float = Field(1.0, gt=0, description="the backbone's lr as a multiple of the head's")
    layer_decay: float = Field(1.0, gt=0, le=1, description="each layer group toward the input trains at this times "
                                                            "the lr of the group above it (1: no decay)")


class Freezer:
    """Applies a policy's decisions: requires_grad per parameter, held BatchNorm, groups with lr scales."""

    def __init__(self, backbone: Backbone, params: FreezeParams):
        self.model, self.params = backbone.model, params
        self.layer_groups = backbone.groups()
        self.by_name = dict(self.model.named_parameters())

    def set_trainable(self, trainable: set[str]) -> None:
        for name, param in self.by_name.items():
            param.requires_grad_(name in trainable)
        if self.params.bn != "frozen":
            return
        for module in self.model.modules():
            own = list(module.parameters(recurse=False))
            if not isinstance(module, BN_TYPES) or not own:
                continue
            frozen = not any(p.requires_grad for p in own)
            if frozen and not is_held(module):
                hold_eval(module)
            elif not frozen and is_held(module):
                release(module)

    def plan(self, ever_trains: set[str], schedule: dict[str, int] | None = None) -> FreezePlan:
        """Groups of every parameter that trains at some epoch; ``schedule``: group -> first epoch it trains."""
        schedule = schedule or {}
        count = len(self.layer_groups)
        groups = []
        for index, (name, names) in enumerate(self.layer_groups):
            params = [self.by_name[n] for n in names if n in ever_trains]
            if not params:
                continue
            scale = 1.0 if name == "head" else self.params.backbone_lr_mult * self.params.layer_decay ** (count - 1 - index)
            groups.append({"name": name, "params": params, "lr_scale": scale})
        if not groups:
            raise RunnerError("the freeze policy leaves no parameter to train")
        delayed = {n for group in schedule for n in self._names(group)}
        self.set_trainable(ever_trains - delayed)

        def on_epoch(epoch: int) -> bool:
            starting = [g for g, first in schedule.items() if first == epoch]
            if starting:
                trainable = {n for n, p in self.by_name.items() if p.requires_grad}
                self.set_trainable(trainable | {n for g in starting for n in self._names(g)})
            return bool(starting)

        return FreezePlan(groups, on_epoch if schedule else None, dict(schedule))

    def _names(self, group: str) -> list[str]:
        return dict(self.layer_groups)[group]


def build_none(params: FreezeParams, backbone: Backbone) -> FreezePlan:
    freezer = Freezer(backbone, params)
    return freezer.plan(set(freezer.by_name))


def build_all_but_head(params: FreezeParams, backbone: Backbone) -> FreezePlan:
    freezer = Freezer(backbone, params)
    return freezer.plan(set(dict(freezer.layer_groups)["head"]))


class UpToParams(FreezeParams):
    module: str = Field(description="freeze every parameter up to and including this module (dotted name, e.g. "
                                    "layer2 or blocks.3), in registration order")


def build_up_to(params: UpToParams, backbone: Backbone) -> FreezePlan:
    names = [n for n, _ in backbone.model.named_parameters()]
    inside = [i for i, n in enumerate(names) if n.startswith(params.module + ".")]
    if not inside:
        tops = [n for n, _ in backbone.model.named_modules() if n]
        raise RunnerError(f"freeze.module: no module '{params.module}' with parameters in the backbone"
                          f"{did_you_mean(params.module, tops)}")
    return Freezer(backbone, params).plan(set(names[inside[-1] + 1:]))


class GradualParams(FreezeParams):
    start: int = Field(1, ge=0, description="epochs that train the head alone before the first group unfreezes")
    every: int = Field(1, ge=0, description="epochs between unfreezing one more group, from the head backward; "
                                            "0: the whole backbone unfreezes at once after `start`")
    groups: int | None = Field(None, gt=0, description="unfreeze at most this many backbone groups (default: all)")


def build_gradual(params: GradualParams, backbone: Backbone) -> FreezePlan:
    freezer = Freezer(backbone, params)
    body = [name for name, _ in freezer.layer_groups if name != "head"][::-1]  # nearest the head first
    body = body[: params.groups] if params.groups else body
    schedule = {name: params.start + 1 + (k * params.every) for k, name in enumerate(body)}
    trains = set(dict(freezer.layer_groups)["head"]) | {n for g in body for n in dict(freezer.layer_groups)[g]}
    return freezer.plan(trains, schedule)


@hookimpl
def runner_freeze_policies():
    return [
        Component("none", "train every parameter (the tutorial's 'finetuning the convnet')", build_none, FreezeParams),
        Component("all_but_head", "train only the new head: the backbone as a fixed feature extractor",
                  build_all_but_head, FreezeParams),
        Component("up_to", "freeze the leading modules up to a named one, train the rest", build_up_to, UpToParams),
        Component("gradual", "head first, then unfreeze the backbone group by group from the head backward "
                             "(ULMFiT, Lightning's BackboneFinetuning; every: 0 is linear-probe-then-finetune)",
                  build_gradual, GradualParams),
    ]
