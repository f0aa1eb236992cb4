"""What components are and what they build: the data types shared by the engine and every plugin."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict
from torch import nn

KINDS = ("dataset", "backbone", "freeze", "optimizer", "scheduler")
"""Component kinds, in the order a recipe is built; each has a ``runner_<plural>`` hook."""

HOOK_OF_KIND = {
    "dataset": "runner_datasets",
    "backbone": "runner_backbones",
    "freeze": "runner_freeze_policies",
    "optimizer": "runner_optimizers",
    "scheduler": "runner_schedulers",
}


class Params(BaseModel):
    """Base for component parameter models: unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


@dataclass(frozen=True)
class Component:
    """A named, documented builder: its recipe section is validated against ``params`` before it builds."""

    name: str
    summary: str
    build: Callable[..., Any]
    params: type[Params] = Params


@dataclass(frozen=True)
class Preprocess:
    """How a backbone's weights expect images: resize, crop, interpolation, normalisation."""

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"


def replace_last_linear(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the model's last ``nn.Linear`` (in registration order) for a fresh one with ``num_classes`` outputs.

    That is the classifier for torchvision's and timm's classification models, whichever attribute holds it
    (``fc``, ``classifier``, ``classifier.1``, ``heads.head``, ``head.fc``...).
    """
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    parent_name, _, attr = last.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = getattr(parent, attr)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    setattr(parent, attr, new)
    return new


@dataclass
class Backbone:
    """A pretrained model and its preprocessing; ``reset_head(n)`` installs and returns an n-class head."""

    model: nn.Module
    preprocess: Preprocess = field(default_factory=Preprocess)
    reset_head: Callable[[int], nn.Module] | None = None
    head: nn.Module | None = None

    def replace_head(self, num_classes: int) -> nn.Module:
        reset = self.reset_head or (lambda n: replace_last_linear(self.model, n))
        self.head = reset(num_classes)
        return self.head


@dataclass
class Data:
    """Train and val datasets yielding ``(image_tensor, class_index)``, their class names, loader settings."""

    classes: list[str]
    train: Any
    val: Any
    batch_size: int
    val_batch_size: int
    workers: int = 0
    augmented: bool = True
    """Whether the training transform is random (so cached features are views, not exact)."""


@dataclass
class Schedule:
    """A learning-rate scheduler and whether it is stepped per epoch or per optimizer step."""

    scheduler: Any = None
    interval: Literal["epoch", "step"] = "epoch"
