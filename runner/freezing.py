"""What every freeze policy needs: the shared parameters (``bn``, ``backbone_lr_mult``, ``layer_decay``), helpers
that freeze modules and hold their BatchNorm in eval mode, and :func:`freeze_plan`, which turns "these parameters
train (from these epochs)" into the optimizer's parameter groups. The built-in policies are written with these
alone, so a plugin's policy behaves the same way.

Frozen BatchNorm stays in eval mode for good (``bn: frozen``): its running statistics do not move even under a
later ``model.train()`` -- letting a frozen trunk's statistics drift to a few hundred images costs accuracy
(Lightning #15062, pytorch #66073). Every group is in the optimizer from the first step, so optimizer state saved
after an unfreeze loads into a fresh run (Lightning #6891).
"""
from __future__ import annotations

import types
from typing import TYPE_CHECKING, Iterable, Literal

from pydantic import Field

from runner.types import Backbone, FreezePlan, Params
from runner.errors import PluginError

if TYPE_CHECKING:
    from torch import nn


class FreezeParams(Params):
    """Parameters every freeze policy takes; subclass it for a policy's own."""

    bn: Literal["frozen", "train"] = Field("frozen", description="frozen: BatchNorm layers of the frozen part stay in "
                                                                "eval mode (running statistics fixed); train: they update")
    backbone_lr_mult: float = Field(1.0, gt=0, description="the backbone's lr as a multiple of the head's")
    layer_decay: float = Field(1.0, gt=0, le=1, description="each layer group toward the input trains at this times "
                                                            "the lr of the group above it (1: no decay)")


def _batchnorms(modules: Iterable[nn.Module]) -> list[nn.Module]:
    from torch import nn

    return [m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _stay_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    from torch import nn

    return nn.Module.train(self, False)


def hold_batchnorm_eval(modules: Iterable[nn.Module]) -> None:
    """Put every BatchNorm layer in ``modules`` in eval mode for good: a later ``.train()`` on it or on any parent
    leaves it in eval, so its running statistics stay as loaded. ``runner plan`` shows such layers as held."""
    for module in _batchnorms(modules):
        module.eval()
        module.train = types.MethodType(_stay_eval, module)


def release_batchnorm(modules: Iterable[nn.Module]) -> None:
    """Undo :func:`hold_batchnorm_eval`: the BatchNorm layers follow their parent's train/eval mode again."""
    for module in _batchnorms(modules):
        module.__dict__.pop("train", None)


def is_held(module: nn.Module) -> bool:
    """Whether ``module`` is held in eval mode by :func:`hold_batchnorm_eval`."""
    return "train" in module.__dict__


def freeze(modules: Iterable[nn.Module], bn: Literal["frozen", "train"] = "frozen") -> None:
    """No gradients for the parameters of ``modules``; with ``bn="frozen"`` their BatchNorm held in eval mode."""
    modules = list(modules)
    for module in modules:
        module.requires_grad_(False)
    if bn == "frozen":
        hold_batchnorm_eval(modules)


def unfreeze(modules: Iterable[nn.Module]) -> None:
    """Gradients again for the parameters of ``modules``, and their BatchNorm follows train/eval mode."""
    modules = list(modules)
    for module in modules:
        module.requires_grad_(True)
    release_batchnorm(modules)


class _Freezer:
    """Applies a policy's decisions: requires_grad per parameter, held BatchNorm, groups with lr scales."""

    def __init__(self, backbone: Backbone, params: FreezeParams):
        self.model, self.params = backbone.model, params
        self.layer_groups = backbone.groups()
        self.by_name = dict(self.model.named_parameters())

    def set_trainable(self, trainable: set[str]) -> None:
        from torch import nn

        for name, param in self.by_name.items():
            param.requires_grad_(name in trainable)
        if self.params.bn != "frozen":
            return
        for module in self.model.modules():
            own = list(module.parameters(recurse=False))
            if not isinstance(module, nn.modules.batchnorm._BatchNorm) or not own:
                continue
            frozen = not any(p.requires_grad for p in own)
            if frozen and not is_held(module):
                hold_batchnorm_eval([module])
            elif not frozen and is_held(module):
                release_batchnorm([module])

    def plan(self, ever_trains: set[str], schedule: dict[str, int]) -> FreezePlan:
        count = len(self.layer_groups)
        groups = []
        for index, (name, names) in enumerate(self.layer_groups):
            params = [self.by_name[n] for n in names if n in ever_trains]
            if not params:
                continue
            scale = 1.0 if name == "head" else self.params.backbone_lr_mult * self.params.layer_decay ** (count - 1 - index)
            groups.append({"name": name, "params": params, "lr_scale": scale})
        if not groups:
            raise PluginError("the freeze policy leaves no parameter to train")
        by_group = dict(self.layer_groups)
        unknown = sorted(set(schedule) - set(by_group))
        if unknown:
            raise PluginError(f"the freeze schedule names no layer group {unknown}; groups: {', '.join(by_group)}")
        delayed = {n for group in schedule for n in by_group[group]}
        self.set_trainable(ever_trains - delayed)

        def on_epoch(epoch: int) -> bool:
            starting = [g for g, first in schedule.items() if first == epoch]
            if starting:
                trainable = {n for n, p in self.by_name.items() if p.requires_grad}
                self.set_trainable(trainable | {n for g in starting for n in by_group[g]})
            return bool(starting)

        return FreezePlan(groups, on_epoch if schedule else None, dict(schedule))


def freeze_plan(backbone: Backbone, params: FreezeParams, trains: Iterable[str],
                schedule: dict[str, int] | None = None) -> FreezePlan:
    """The :class:`FreezePlan` for a policy's decision, honouring ``bn``, ``backbone_lr_mult`` and ``layer_decay``.

    ``trains``: the names of every parameter that trains at some epoch (``model.named_parameters()``);
    ``schedule``: layer group name -> the first epoch that group trains, for groups that start frozen. Parameters
    that train from the start get ``requires_grad``; the rest are frozen (their BatchNorm held, with ``bn:
    frozen``) until their epoch. One optimizer group per layer group, the head at the optimizer's lr, each group
    below it at ``backbone_lr_mult * layer_decay ** distance``.
    """
    return _Freezer(backbone, params).plan(set(trains), dict(schedule or {}))
