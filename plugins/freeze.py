"""Built-in freeze policies: which parameters train, and BatchNorm layers of the frozen part held in eval mode.

``bn: frozen`` (the default) keeps the frozen part's BatchNorm running statistics fixed even while the model is in
train mode and after any parent ``.train()`` call: on small datasets, letting a frozen trunk's statistics drift
to a few hundred images costs accuracy (Lightning #15062, pytorch #66073). ``bn: train`` lets them update.
"""
from __future__ import annotations

import types
from typing import Literal

from pydantic import Field
from torch import nn

from runner.components import Backbone, Component, Params
from runner.errors import RunnerError, did_you_mean
from runner.hookspecs import hookimpl

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def _stay_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def hold_eval(module: nn.Module) -> None:
    """Put ``module`` in eval mode for good: a later ``.train()`` on it or a parent leaves it in eval."""
    module.eval()
    module.train = types.MethodType(_stay_eval, module)


class FreezeParams(Params):
    bn: Literal["frozen", "train"] = Field("frozen", description="frozen: BatchNorm layers of the frozen part stay in "
                                                                "eval mode (running statistics fixed); train: they update")


def apply_freeze(model: nn.Module, frozen: set[str], bn: str) -> list[dict]:
    """Freeze the parameters named in ``frozen``; return the one parameter group of the rest."""
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    if bn == "frozen":
        for module in model.modules():
            params = list(module.parameters(recurse=False))
            if isinstance(module, BN_TYPES) and params and not any(p.requires_grad for p in params):
                hold_eval(module)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise RunnerError("the freeze policy leaves no parameter to train")
    return [{"name": "trainable", "params": trainable}]


def build_none(params: FreezeParams, backbone: Backbone) -> list[dict]:
    return apply_freeze(backbone.model, set(), params.bn)


def build_all_but_head(params: FreezeParams, backbone: Backbone) -> list[dict]:
    head = {id(p) for p in backbone.head.parameters()}
    frozen = {n for n, p in backbone.model.named_parameters() if id(p) not in head}
    return apply_freeze(backbone.model, frozen, params.bn)


class UpToParams(FreezeParams):
    module: str = Field(description="freeze every parameter up to and including this module (dotted name, e.g. "
                                    "layer2 or blocks.3), in registration order")


def build_up_to(params: UpToParams, backbone: Backbone) -> list[dict]:
    names = [n for n, _ in backbone.model.named_parameters()]
    inside = [i for i, n in enumerate(names) if n.startswith(params.module + ".")]
    if not inside:
        tops = [n for n, _ in backbone.model.named_modules() if n]
        raise RunnerError(f"freeze.module: no module '{params.module}' with parameters in the backbone"
                          f"{did_you_mean(params.module, tops)}")
    return apply_freeze(backbone.model, set(names[: inside[-1] + 1]), params.bn)


@hookimpl
def runner_freeze_policies():
    return [
        Component("none", "train every parameter (the tutorial's 'finetuning the convnet')", build_none, FreezeParams),
        Component("all_but_head", "train only the new head: the backbone as a fixed feature extractor",
                  build_all_but_head, FreezeParams),
        Component("up_to", "freeze the leading modules up to a named one, train the rest", build_up_to, UpToParams),
    ]
