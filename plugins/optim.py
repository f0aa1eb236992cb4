"""Built-in optimizers and learning-rate schedulers.

Named ones (``sgd``, ``adam``, ``adamw``; ``step``, ``cosine``, ``onecycle``, ``none``) with documented defaults,
and every other ``torch.optim`` optimizer and ``torch.optim.lr_scheduler`` scheduler by class name (``RAdam``,
``ExponentialLR``...), its parameters validated from its signature. Every scheduler takes a linear warmup in front
(``warmup`` in ``warmup_unit``) and scales each parameter group from its own lr, so layer-wise lrs set by the
freeze policy survive the schedule (the bug of timm PR #2532).
"""
from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, create_model

from runner.api import Component, Params, Schedule, hookimpl

# -- optimizers ---------------------------------------------------------------------------------------------------


class OptimizerParams(Params):
    no_decay_norm_bias: bool = Field(False, description="no weight decay on biases and normalisation weights "
                                                        "(every 1-d parameter)")


PositiveFloat = Annotated[float, Field(gt=0)]
LR_HELP = "learning rate; auto: the lr finder's suggestion, found before training (see lr_find)"


class SGDParams(OptimizerParams):
    lr: PositiveFloat | Literal["auto"] = Field(0.01, description=LR_HELP)
    momentum: float = Field(0.9, ge=0, description="momentum factor")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty")
    nesterov: bool = Field(False, description="Nesterov momentum")


class AdamParams(OptimizerParams):
    lr: PositiveFloat | Literal["auto"] = Field(0.001, description=LR_HELP)
    betas: tuple[float, float] = Field((0.9, 0.999), description="running average coefficients")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")


class AdamWParams(AdamParams):
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay")


def split_no_decay(groups: list[dict]) -> list[dict]:
    """Each group twice: its >1-d parameters, then its 1-d ones (biases, norm weights) with weight_decay 0."""
    out = []
    for group in groups:
        decay = [p for p in group["params"] if p.ndim > 1]
        flat = [p for p in group["params"] if p.ndim <= 1]
        if decay:
            out.append({**group, "params": decay})
        if flat:
            out.append({**group, "params": flat, "name": f"{group.get('name', 'group')}/no_decay", "weight_decay": 0.0})
    return out


def optimizer_builder(name: str):
    """A builder of ``torch.optim.<name>``: torch is imported when a run builds it, not to list the catalog."""
    def build(params: OptimizerParams, param_groups: list[dict]):
        import torch

        kwargs = params.model_dump(exclude={"no_decay_norm_bias"}, exclude_none=True)
        groups = split_no_decay(param_groups) if params.no_decay_norm_bias else param_groups
        return getattr(torch.optim, name)(groups, **kwargs)
    return build


# -- signature-derived parameter models ---------------------------------------------------------------------------

def _plain(annotation: Any) -> Any:
    """A pydantic-friendly version of a torch annotation: Tensor -> float, unions simplified, else Any."""
    if getattr(annotation, "__module__", None) == "torch" and getattr(annotation, "__name__", None) == "Tensor":
        return float
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = tuple(dict.fromkeys(_plain(a) for a in typing.get_args(annotation)))
        return args[0] if len(args) == 1 else Union[args]  # noqa: UP007
    if origin is tuple:
        return tuple[tuple(_plain(a) for a in typing.get_args(annotation))]  # type: ignore[misc]
    if annotation in (float, int, bool, str, type(None)):
        return annotation
    if origin is Literal:
        return annotation
    return Any


def signature_params(cls, base: type[Params], skip: tuple[str, ...], optional: tuple[str, ...] = ()) -> type[Params]:
    """A Params model of ``cls.__init__``'s keyword arguments (types from its annotations, defaults from it)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: fall back to the defaults' types
        hints = {}
    fields = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = _plain(hints.get(name, type(p.default) if p.default not in (p.empty, None) else Any))
        if p.default is p.empty and name not in optional:
            fields[name] = (annotation, Field(description=f"{cls.__name__} argument {name}"))
        else:
            default = None if p.default is p.empty else p.default
            fields[name] = (Union[annotation, None] if default is None else annotation,  # noqa: UP007
                            Field(default, description=f"{cls.__name__} argument {name}"))
    return create_model(f"{cls.__name__}Params", __base__=base, **fields)


def public_classes(module: str, exclude: set[str]) -> list[str]:
    """The class names in ``module.__all__``, read from its source so that listing them imports nothing (torch
    takes seconds to import); imported where the source does not spell ``__all__`` out."""
    top, *rest = module.split(".")
    try:
        base = Path(importlib.util.find_spec(top).submodule_search_locations[0]).joinpath(*rest)
        source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        tree = ast.parse(source.read_text(encoding="utf-8"))
        names = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                     and any(getattr(target, "id", None) == "__all__" for target in node.targets))
    except (AttributeError, TypeError, IndexError, OSError, SyntaxError, ValueError, StopIteration):
        names = list(getattr(importlib.import_module(module), "__all__", []))
    return [name for name in names if name[:1].isupper() and name not in exclude]


def lazy_signature_params(module: str, name: str, base: type[Params], skip: tuple[str, ...],
                          optional: tuple[str, ...] = ()):
    """The params function of a component whose model comes from ``module.name``'s signature: built on first use."""
    return lambda: signature_params(getattr(importlib.import_module(module), name), base, skip, optional)


def torch_optimizers() -> list[Component]:
    exclude = {"Optimizer", "LBFGS", "SparseAdam"}  # LBFGS, SparseAdam: a closure / sparse gradients, not this loop
    return [Component(name, f"torch.optim.{name} (arguments from its signature)", optimizer_builder(name),
                      lazy_signature_params("torch.optim", name, OptimizerParams, ("params",)))
            for name in public_classes("torch.optim", exclude)]


# -- schedulers ---------------------------------------------------------------------------------------------------


class SchedulerParams(Params):
    warmup: int = Field(0, ge=0, description="linear warmup length in front of the schedule")
    warmup_unit: Literal["epochs", "steps"] = Field("epochs", description="unit of warmup")


@functools.cache
def warmup_class() -> type:
    """The Warmup scheduler class, defined on first use: it subclasses torch's, and torch is imported only by a
    run that builds a schedule."""
    import torch

    class Warmup(torch.optim.lr_scheduler.LRScheduler):
        """Linear warmup over ``warmup_steps`` optimizer steps, then ``main`` stepped per step or per epoch.

        Each group ramps to its own base lr, so per-group (layer-wise) lrs are kept; the main schedule starts after
        the warmup. Stepped once per optimizer step.
        """

        def __init__(self, optimizer, main, main_interval: str, warmup_steps: int, steps_per_epoch: int):
            self.main, self.main_interval = main, main_interval
            self.warmup_steps, self.steps_per_epoch = warmup_steps, steps_per_epoch
            self.targets = [group["lr"] for group in optimizer.param_groups]
            super().__init__(optimizer)

        def get_lr(self):
            n = self.last_epoch
            if n < self.warmup_steps:
                return [lr * (n + 1) / (self.warmup_steps + 1) for lr in self.targets]
            if n == self.warmup_steps:
                return list(self.targets)
            return [group["lr"] for group in self.optimizer.param_groups]

        def step(self, epoch=None):
            super().step()
            after = self.last_epoch - self.warmup_steps
            if self.main is not None and after > 0 and (
                    self.main_interval == "step" or after % self.steps_per_epoch == 0):
                self.main.step()

        def state_dict(self):
            state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "main")}
            state["main"] = self.main.state_dict() if self.main is not None else None
            return state

        def load_state_dict(self, state_dict):
            state = dict(state_dict)
            main = state.pop("main")
            self.__dict__.update(state)
            if self.main is not None and main is not None:
                self.main.load_state_dict(main)

    return Warmup


def with_warmup(params: SchedulerParams, optimizer, schedule: Schedule, steps_per_epoch: int) -> Schedule:
    if not params.warmup:
        return schedule
    steps = params.warmup * (steps_per_epoch if params.warmup_unit == "epochs" else 1)
    return Schedule(warmup_class()(optimizer, schedule.scheduler, schedule.interval, steps, steps_per_epoch), "step")


class StepParams(SchedulerParams):
    step_size: int = Field(7, gt=0, description="epochs between decays")
    gamma: float = Field(0.1, gt=0, description="factor the lr is multiplied by at each decay")


class CosineParams(SchedulerParams):
    eta_min: float = Field(0.0, ge=0, description="lowest learning rate, reached at the last step")


class OneCycleParams(SchedulerParams):
    pct_start: float = Field(0.25, gt=0, lt=1, description="fraction of the run spent raising the lr")
    div_factor: float = Field(25.0, gt=0, description="start lr = max lr / div_factor")
    final_div_factor: float = Field(1e4, gt=0, description="final lr = start lr / final_div_factor")


def build_step(params: StepParams, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    main = Schedule(lr_scheduler().StepLR(optimizer, params.step_size, params.gamma), "epoch")
    return with_warmup(params, optimizer, main, steps_per_epoch)


def _after_warmup(params: SchedulerParams, epochs: int, steps_per_epoch: int) -> int:
    warm = params.warmup * (steps_per_epoch if params.warmup_unit == "epochs" else 1)
    return max(epochs * steps_per_epoch - warm, 1)


def build_cosine(params: CosineParams, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    total = _after_warmup(params, epochs, steps_per_epoch)
    main = Schedule(lr_scheduler().CosineAnnealingLR(optimizer, total, params.eta_min), "step")
    return with_warmup(params, optimizer, main, steps_per_epoch)


def build_onecycle(params: OneCycleParams, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    max_lr = [group["lr"] for group in optimizer.param_groups]  # each group peaks at its own lr
    main = Schedule(lr_scheduler().OneCycleLR(
        optimizer, max_lr, total_steps=_after_warmup(params, epochs, steps_per_epoch), pct_start=params.pct_start,
        div_factor=params.div_factor, final_div_factor=params.final_div_factor), "step")
    return with_warmup(params, optimizer, main, steps_per_epoch)


def build_none(params: SchedulerParams, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    return with_warmup(params, optimizer, Schedule(None), steps_per_epoch)


PER_STEP = {"OneCycleLR", "CyclicLR"}


def lr_scheduler():
    """``torch.optim.lr_scheduler``, imported when a schedule is built."""
    return importlib.import_module("torch.optim.lr_scheduler")


def torch_scheduler_builder(name: str):
    def build(params: SchedulerParams, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
        cls = getattr(lr_scheduler(), name)
        kwargs = params.model_dump(exclude={"warmup", "warmup_unit"}, exclude_none=True)
        if name == "OneCycleLR":
            kwargs.setdefault("max_lr", [group["lr"] for group in optimizer.param_groups])
            if "epochs" not in kwargs:
                kwargs.setdefault("total_steps", _after_warmup(params, epochs, steps_per_epoch))
        main = Schedule(cls(optimizer, **kwargs), "step" if name in PER_STEP else "epoch")
        return with_warmup(params, optimizer, main, steps_per_epoch)
    return build


def torch_schedulers() -> list[Component]:
    exclude = {"LRScheduler", "LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "ReduceLROnPlateau"}
    return [Component(name, f"torch's {name}, per {'step' if name in PER_STEP else 'epoch'} (arguments from its "
                            "signature)", torch_scheduler_builder(name),
                      lazy_signature_params("torch.optim.lr_scheduler", name, SchedulerParams,
                                            ("optimizer", "last_epoch", "verbose"), optional=("max_lr",)))
            for name in public_classes("torch.optim.lr_scheduler", exclude)]


@hookimpl
def runner_optimizers():
    return [
        Component("sgd", "stochastic gradient descent with momentum", optimizer_builder("SGD"), SGDParams),
        Component("adam", "Adam", optimizer_builder("Adam"), AdamParams),
        Component("adamw", "Adam with decoupled weight decay", optimizer_builder("AdamW"), AdamWParams),
        *torch_optimizers(),
    ]


@hookimpl
def runner_schedulers():
    return [
        Component("step", "multiply the lr by gamma every step_size epochs (the tutorial's StepLR)", build_step,
                  StepParams),
        Component("cosine", "cosine annealing to eta_min over the whole run, stepped per batch", build_cosine,
                  CosineParams),
        Component("onecycle", "one cycle (fastai's fit_one_cycle): up then down, each group to its own lr, per batch",
                  build_onecycle, OneCycleParams),
        Component("none", "constant learning rate", build_none, SchedulerParams),
        *torch_schedulers(),
    ]
