"""Built-in freeze policies: which parameters train and when. Each decides a set of parameter names (and, for
``gradual``, the epoch each layer group joins) and hands it to :func:`runner.api.freeze_plan`, which sets
``requires_grad``, holds the frozen part's BatchNorm in eval mode (``bn: frozen``) and lays out the optimizer's
parameter groups with their learning-rate scales (``backbone_lr_mult``, ``layer_decay``) -- the same helper a
plugin's policy uses.

Groups come from the backbone (resnet stages, EfficientNet blocks, ViT blocks, or the backbone's own
``layer_groups``).
"""
from __future__ import annotations

from pydantic import Field

from runner.api import Backbone, Component, FreezeParams, FreezePlan, PluginError, did_you_mean, freeze_plan, hookimpl


def build_none(params: FreezeParams, backbone: Backbone) -> FreezePlan:
    return freeze_plan(backbone, params, [n for n, _ in backbone.model.named_parameters()])


def build_all_but_head(params: FreezeParams, backbone: Backbone) -> FreezePlan:
    return freeze_plan(backbone, params, backbone.groups()[-1].params)


class UpToParams(FreezeParams):
    module: str = Field(description="freeze every parameter up to and including this module (dotted name, e.g. "
                                    "layer2 or blocks.3), in registration order")


def build_up_to(params: UpToParams, backbone: Backbone) -> FreezePlan:
    names = [n for n, _ in backbone.model.named_parameters()]
    inside = [i for i, n in enumerate(names) if n.startswith(params.module + ".")]
    if not inside:
        tops = [n for n, _ in backbone.model.named_modules() if n]
        raise PluginError(f"freeze.module: no module '{params.module}' with parameters in the backbone"
                          f"{did_you_mean(params.module, tops)}")
    return freeze_plan(backbone, params, names[inside[-1] + 1:])


class GradualParams(FreezeParams):
    start: int = Field(1, ge=0, description="epochs that train the head alone before the first group unfreezes")
    every: int = Field(1, ge=0, description="epochs between unfreezing one more group, from the head backward; "
                                            "0: the whole backbone unfreezes at once after `start`")
    groups: int | None = Field(None, gt=0, description="unfreeze at most this many backbone groups (default: all)")


def build_gradual(params: GradualParams, backbone: Backbone) -> FreezePlan:
    groups = dict(backbone.groups())
    body = [name for name in groups if name != "head"][::-1]  # nearest the head first
    body = body[: params.groups] if params.groups else body
    schedule = {name: params.start + 1 + (k * params.every) for k, name in enumerate(body)}
    trains = [*groups["head"], *(n for g in body for n in groups[g])]
    return freeze_plan(backbone, params, trains, schedule)


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
