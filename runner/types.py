"""What components are and what they build: the data types shared by the engine and every plugin."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, NamedTuple, Sequence

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from runner.kinds import HOOK_OF_KIND, KINDS  # noqa: F401 (part of this module's names)

if TYPE_CHECKING:  # torch is imported where a component is built, not to read the catalog
    from torch import nn



def _admits_bool(annotation) -> bool:
    import typing

    if annotation is bool or annotation is typing.Any:
        return True
    return any(_admits_bool(arg) for arg in typing.get_args(annotation))


class Params(BaseModel):
    """Base for component parameter models: unknown keys are errors, never silently dropped, and ``true``/``false``
    are never read as 1/0 where a number is expected (``batch_size: true`` is a mistake, not a batch of one)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value, info: ValidationInfo):
        if isinstance(value, bool) and info.field_name in cls.model_fields and \
                not _admits_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a {_kind_of(cls.model_fields[info.field_name].annotation)}, not {str(value).lower()}")
        return value


def _kind_of(annotation) -> str:
    import typing

    names = {int: "whole number", float: "number", str: "text"}
    if annotation in names:
        return names[annotation]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return names.get(args[0], "value") if args else "value"


@dataclass(frozen=True)
class Component:
    """A named, documented builder: its recipe section is validated against ``params`` before it builds.

    ``build`` is called with the validated ``params`` instance first, then the arguments of its kind (see
    :mod:`runner.hookspecs`).
    """

    name: str
    summary: str
    build: Callable[..., Any]
    params: type[Params] = Params
    """The parameter model; or a function of no arguments that returns it, called on first use, for a model
    derived from a heavy library (torch's optimizer signatures) so that listing the catalog does not import it."""
    classes: Callable[..., list[str]] | None = None
    """Datasets only, optional: ``classes(params, base_dir)`` names the classes without reading images."""

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if name == "params" and not isinstance(value, type):
            value = value()
            if not (isinstance(value, type) and issubclass(value, BaseModel)):
                raise TypeError(f"component {object.__getattribute__(self, 'name')!r}: its params function returned "
                                f"{value!r}, not a Params model")
            object.__setattr__(self, "params", value)
        return value


@dataclass(frozen=True)
class Section:
    """A recipe section a plugin owns (``early_stopping: {patience: 3}``), validated like a component's.

    ``on_by_default``: whether the section applies to a recipe that does not name it (with its defaults). A recipe
    switches any section off with ``key: false`` (or ``null``) and on with its defaults with ``key: true``.
    """

    name: str
    summary: str
    params: type[Params] = Params
    on_by_default: bool = False


class LayerGroup(NamedTuple):
    """Consecutive parameters that unfreeze and take a learning rate together: a stage, a block, the head."""

    name: str
    params: list[str]
    """Parameter names (``model.named_parameters()``) in this group."""


@dataclass(frozen=True)
class Preprocess:
    """How a backbone's weights expect images: resize, crop, interpolation, normalisation."""

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    def eval_transform(self):
        """Resize, center crop, tensor, normalise: how val, predict and evaluate see an image."""
        from torchvision import transforms

        from runner.images import NormalizedTensor

        interp = transforms.InterpolationMode(self.interpolation)
        return transforms.Compose([transforms.Resize(self.resize, interpolation=interp),
                                   transforms.CenterCrop(self.size), NormalizedTensor(self.mean, self.std)])

    def tta_transform(self, mode: str):
        """Test-time views of an image as one (views, 3, size, size) tensor: ``flip`` the eval view and its
        mirror, ``crops`` torchvision's ten crops (four corners and centre, and their mirrors); ``none`` one."""
        from torchvision import transforms

        from runner.images import NormalizedTensor

        interp = transforms.InterpolationMode(self.interpolation)
        tensor = NormalizedTensor(self.mean, self.std)
        if mode == "none":
            return transforms.Compose([self.eval_transform(), _Stack((_identity,))])
        if mode == "flip":
            return transforms.Compose([self.eval_transform(), _Stack((_identity, _hflip))])
        if mode == "crops":
            return transforms.Compose([transforms.Resize(self.resize, interpolation=interp),
                                       transforms.TenCrop(self.size), _Stack((tensor,), each=True)])
        raise ValueError(f"unknown test-time augmentation {mode!r}; expected none, flip or crops")


def _identity(x):
    return x


def _hflip(x):
    return x.flip(-1)


@dataclass(frozen=True)
class _Stack:
    """Stack views of an input: ``fns`` applied to it, or with ``each`` the one fn to each of a tuple of crops."""

    fns: tuple
    each: bool = False

    def __call__(self, x):
        import torch

        if self.each:
            return torch.stack([self.fns[0](crop) for crop in x])
        return torch.stack([fn(x) for fn in self.fns])


def find_head(model: nn.Module) -> nn.Module:
    """The model's classifier as :func:`replace_last_linear` sees it: its last ``nn.Linear``."""
    from torch import nn

    heads = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier")
    return heads[-1]


def replace_last_linear(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the model's last ``nn.Linear`` (in registration order) for a fresh one with ``num_classes`` outputs.

    That is the classifier for torchvision's and timm's classification models, whichever attribute holds it
    (``fc``, ``classifier``, ``classifier.1``, ``heads.head``, ``head.fc``...).
    """
    from torch import nn

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


def _is_block_list(module: nn.Module) -> bool:
    """A Sequential/ModuleList of at least 4 parameterised children: stages or blocks worth unfreezing one by one."""
    from torch import nn

    return isinstance(module, (nn.Sequential, nn.ModuleList)) and sum(
        1 for child in module.children() if next(child.parameters(), None) is not None) >= 4


def default_layer_groups(model: nn.Module, head: nn.Module) -> list[LayerGroup]:
    """The model's parameters in consecutive groups from input to output, the head last: ``(name, param names)``.

    Top-level children are units; the first list of four or more blocks found in a child -- timm's ``blocks``
    and ``stages``, torchvision's ``features`` and ``encoder.layers`` -- is split into one unit per block.
    Consecutive small modules without parameterised children (a stem conv and its norm) share a unit. Works for
    any torchvision or timm model.
    """
    head_ids = {id(p) for p in head.parameters()}
    units: list[tuple[str, list[str], bool]] = []  # (name, parameter names, is a small leaf-like module)

    def own(prefix: str, module: nn.Module, recurse: bool) -> list[str]:
        return [f"{prefix}{n}" for n, p in module.named_parameters(recurse=recurse) if id(p) not in head_ids]

    def add(prefix: str, module: nn.Module, split: bool) -> None:
        names = own(prefix + ".", module, True)
        if not names:
            return
        if split and _is_block_list(module):
            for child_name, child in module.named_children():
                add(f"{prefix}.{child_name}", child, False)
            return
        if split and any(_is_block_list(m) for m in module.modules()):
            direct = own(prefix + ".", module, False)
            if direct:
                units.append((prefix, direct, True))
            for child_name, child in module.named_children():
                add(f"{prefix}.{child_name}", child, True)
            return
        leafish = not any(next(c.parameters(), None) is not None for c in module.children())
        units.append((prefix, names, leafish))

    direct = own("", model, False)
    if direct:
        units.append(("params", direct, True))
    for name, child in model.named_children():
        add(name, child, True)
    groups: list[LayerGroup] = []
    previous_leafish = False
    for name, params, leafish in units:
        if leafish and previous_leafish:
            groups[-1] = LayerGroup(f"{groups[-1].name}+{name}", groups[-1].params + params)
        else:
            groups.append(LayerGroup(f"{name}.rest" if name == "head" else name, params))
        previous_leafish = leafish
    return [*groups, LayerGroup("head", [n for n, p in model.named_parameters() if id(p) in head_ids])]


@dataclass
class Backbone:
    """A pretrained model and the preprocessing its weights expect; what a backbone component builds.

    The engine replaces the classifier for the dataset's classes with ``replace_head(n)``: ``reset_head(n)`` when
    given (it installs and returns the new head), else the model's last ``nn.Linear`` is swapped. ``head`` is that
    module once replaced; before, :meth:`groups` takes the last ``nn.Linear`` as the head.

    ``layer_groups``: the model's body in consecutive groups from input to head, for policies that unfreeze or
    scale learning rates group by group. Each :class:`LayerGroup` lists module or parameter names (a module
    stands for all its parameters); the head group is added last. Left out, groups come from the model's layout
    (:func:`default_layer_groups`). A callable returning the groups is accepted too.
    """

    model: nn.Module
    preprocess: Preprocess = field(default_factory=Preprocess)
    reset_head: Callable[[int], nn.Module] | None = None
    head: nn.Module | None = None
    layer_groups: Sequence[LayerGroup | tuple[str, Sequence[str]]] | Callable[[], list] | None = None

    def replace_head(self, num_classes: int) -> nn.Module:
        """Install and return a fresh ``num_classes``-way head (the engine calls this once the classes are known)."""
        reset = self.reset_head or (lambda n: replace_last_linear(self.model, n))
        self.head = reset(num_classes)
        return self.head

    def groups(self) -> list[LayerGroup]:
        """Parameter names in consecutive groups from input to head; the last group is the head, named ``head``."""
        head = self.head if self.head is not None else find_head(self.model)
        if self.layer_groups is None:
            return default_layer_groups(self.model, head)
        given = self.layer_groups() if callable(self.layer_groups) else self.layer_groups
        return _resolve_groups(self.model, head, [LayerGroup(str(n), list(members)) for n, members in given])


def _resolve_groups(model: nn.Module, head: nn.Module, given: list[LayerGroup]) -> list[LayerGroup]:
    """Module names expanded to their parameters, the head's parameters in the head group alone; every other
    parameter must be in exactly one group (a group list that leaves some out would freeze them silently)."""
    from runner.errors import PluginError

    names = [n for n, _ in model.named_parameters()]
    head_names = {n for n, p in model.named_parameters() if any(p is q for q in head.parameters())}
    seen: dict[str, str] = {}
    groups = []
    for group in given:
        if group.name == "head":
            continue
        params = []
        for member in group.params:
            found = [n for n in names if n == member or n.startswith(member + ".")] if member else []
            if not found:
                raise PluginError(f"layer group '{group.name}': no module or parameter '{member}' in the model")
            for n in found:
                if n in head_names:
                    continue
                if n in seen and seen[n] != group.name:
                    raise PluginError(f"parameter {n} is in layer groups '{seen[n]}' and '{group.name}'")
                seen[n] = group.name
                params.append(n)
        groups.append(LayerGroup(group.name, params))
    missing = [n for n in names if n not in seen and n not in head_names]
    if missing:
        raise PluginError(f"layer groups leave out {len(missing)} parameter(s), e.g. {', '.join(missing[:3])}: "
                          "every parameter but the head's belongs to one group")
    return [*groups, LayerGroup("head", [n for n in names if n in head_names])]


@dataclass
class FreezePlan:
    """What a freeze policy decides, once, at the start of a run.

    ``groups`` are the optimizer's parameter groups for the whole run (dicts with ``params``, ``name`` and an
    ``lr_scale``), laid out up front so optimizer state stays loadable after an unfreeze step; parameters that do
    not train yet have ``requires_grad=False`` and no gradient, so the optimizer skips them. ``on_epoch(epoch)``
    is called before each epoch and returns True when it changed what trains.
    """

    groups: list[dict]
    """The optimizer's parameter groups: ``{"params": [...], "name": "layer4", "lr_scale": 0.1}``."""
    on_epoch: Callable[[int], bool] | None = None
    """Called with each epoch (from 1) before it trains; returns True when it changed what trains."""
    schedule: dict[str, int] = field(default_factory=dict)
    """Group name -> first epoch it trains, for groups that start frozen (shown by ``runner plan``)."""


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
    skipped: list[str] = field(default_factory=list)
    """Files left out as unreadable, with why (shown in the run summary)."""
    preprocess: Preprocess | None = None
    """Set by a dataset that sizes images itself (e.g. 28-pixel images at 112 rather than 224): it replaces the
    backbone's preprocessing for the run, its checkpoints, predict and evaluate."""


@dataclass
class Schedule:
    """A learning-rate scheduler and whether it is stepped per epoch or per optimizer step."""

    scheduler: Any = None
    interval: Literal["epoch", "step"] = "epoch"
