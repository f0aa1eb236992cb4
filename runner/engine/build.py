"""Turning a validated recipe into a ready :class:`Run`: components built in order (backbone, dataset, freeze
policy, optimizer, scheduler), loaders, the feature-cache and precision decisions, the lr finder."""
from __future__ import annotations

import dataclasses
import functools
import math
import time

import torch
from torch.utils.data import DataLoader

from runner import distributed, feature_cache
from runner.types import Backbone, Data, FreezePlan
from runner.engine.run import Run, eval_logits, to_device
from runner.errors import PluginError, RunnerError
from runner.hardware import faster_training_dtype, resolve_device, resolve_precision
from runner.plugins import Catalog
from runner.recipes import Recipe, validate_components


class Components:
    """The recipe's components, each built with its validated params; what a build returns is checked, and a
    plugin's :class:`PluginError` comes out naming the plugin and component."""

    RETURNS = {"backbone": "Backbone", "dataset": "Data", "freeze": "FreezePlan", "optimizer": "Optimizer",
               "scheduler": "Schedule"}

    def __init__(self, recipe: Recipe, catalog: Catalog):
        validate_components(recipe, catalog)
        self.recipe, self.params = recipe, recipe.params
        self.entries = {kind: catalog.entry(kind, recipe.sections[kind]["name"]) for kind in recipe.params}

    def make(self, kind: str, *args, params=None):
        entry = self.entries[kind]
        try:
            made = entry.component.build(self.params[kind] if params is None else params, *args)
        except PluginError as exc:
            raise PluginError(*(f"plugin {entry.plugin}: {kind} '{entry.component.name}': {problem}"
                                for problem in exc.problems)) from None
        if not any(cls.__name__ == self.RETURNS[kind] for cls in type(made).__mro__):
            raise PluginError(f"plugin {entry.plugin}: {kind} '{entry.component.name}' built a "
                              f"{type(made).__name__}, expected a {self.RETURNS[kind]}")
        return made

    def classes(self) -> list[str] | None:
        """The dataset's class names without reading images, when its component can tell."""
        entry = self.entries["dataset"]
        if entry.component.classes is None:
            return None
        return list(entry.component.classes(self.params["dataset"], self.recipe.base_dir))


def build_model(parts: Components, device: torch.device, classes: list[str], backbone: Backbone | None = None):
    """The backbone with a head for ``classes``, on ``device``, and its freeze plan."""
    backbone = backbone or parts.make("backbone")
    backbone.replace_head(len(classes))
    model = backbone.model.to(device)
    if parts.recipe.settings.channels_last:
        model.to(memory_format=torch.channels_last)
    return backbone, parts.make("freeze", backbone)


def build(recipe: Recipe, catalog: Catalog, find_lr: bool = True) -> Run:
    """Turn a validated recipe into a ready Run: model with its new head, data, frozen parts, optimizer.

    With ``optimizer.lr: auto`` the lr finder runs here unless ``find_lr`` is False (the placeholder lr stays)."""
    if recipe.settings.head_solver == "lbfgs" and recipe.settings.epochs != 1:
        # the head is solved once: the run is one epoch (so the report, recipe.yaml and resume say so)
        recipe = dataclasses.replace(recipe, settings=recipe.settings.model_copy(update={"epochs": 1}))
    parts = Components(recipe, catalog)
    settings, params = recipe.settings, recipe.params
    torch.manual_seed(settings.seed)
    distributed.init(settings.device)
    device = distributed.device_for(resolve_device(settings.device))

    backbone: Backbone = parts.make("backbone")
    data: Data = parts.make("dataset", backbone.preprocess, recipe.base_dir)
    if data.preprocess is not None:
        backbone.preprocess = data.preprocess
    backbone, plan = build_model(parts, device, data.classes, backbone)
    model = backbone.model
    train_loader, val_loader = loaders(data.train, data.val, data, settings.seed, recipe, device)
    steps_per_epoch = math.ceil(len(train_loader) / settings.accumulate)
    auto_lr = getattr(params["optimizer"], "lr", None) == "auto"
    optimizer, schedule = optimizer_and_schedule(parts, plan, steps_per_epoch, LR_PLACEHOLDER if auto_lr else None)
    run = Run(recipe=recipe, resolved=recipe.resolved(), device=device,
              autocast_dtype=resolve_precision(settings.precision, device), backbone=backbone, data=data,
              freeze_plan=plan, optimizer=optimizer, schedule=schedule, train_loader=train_loader,
              val_loader=val_loader, hook=catalog.pm.hook if distributed.is_main() else distributed.Silent())
    run.mix = _batch_mixer(settings, len(data.classes))
    run.cache, run.cache_note = _cache_decision(run)
    if settings.head_solver == "lbfgs":
        _check_solvable(run)
    # measured in rank 0 alone (the others would contend for its cores and skew it), then the same everywhere
    run.train_dtype, run.precision_note = distributed.from_main(
        _training_precision(run) if distributed.is_main() else None)
    if settings.ema is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        run.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema), use_buffers=True)
    if settings.compile:
        run.compiled = torch.compile(model)
    if auto_lr and find_lr and settings.head_solver == "sgd":  # L-BFGS has no lr to find
        _choose_lr(run, parts, steps_per_epoch)
    wrap_for_processes(run)
    return run


def plan(recipe: Recipe, catalog: Catalog) -> dict:
    """``runner plan``'s data: the model and its parameter groups built, the data not read (class names come from
    the dataset component when it can name them without reading images; else the dataset is built)."""
    import types

    from runner.planning import plan as plan_of

    parts = Components(recipe, catalog)
    torch.manual_seed(recipe.settings.seed)
    backbone = parts.make("backbone")
    classes = parts.classes()
    if classes is None:
        data = parts.make("dataset", backbone.preprocess, recipe.base_dir)
        classes = data.classes
    backbone, freeze_plan = build_model(parts, torch.device("cpu"), classes, backbone)
    auto_lr = getattr(recipe.params["optimizer"], "lr", None) == "auto"
    optimizer, _ = optimizer_and_schedule(parts, freeze_plan, 1, LR_PLACEHOLDER if auto_lr else None)
    shape = types.SimpleNamespace(model=backbone.model, optimizer=optimizer, freeze_plan=freeze_plan,
                                  resolved=recipe.resolved(), recipe=recipe)
    return plan_of(shape)


def loaders(train, val, data: Data, seed: int, recipe: Recipe, device: torch.device,
             workers: int | None = None, collate=None) -> tuple[DataLoader, DataLoader]:
    """Shuffled train and ordered val loaders; under torchrun each process loads its share (DistributedSampler
    for training, every val item once over all processes) and ``batch_size`` stays the global batch."""
    workers = data.workers if workers is None else workers
    args = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                collate_fn=collate)
    if not distributed.active():
        return (DataLoader(train, batch_size=data.batch_size, shuffle=True,
                           generator=torch.Generator().manual_seed(seed), **args),
                DataLoader(val, batch_size=data.val_batch_size, shuffle=False, **args))
    from torch.utils.data.distributed import DistributedSampler

    n = distributed.world()
    if data.batch_size % n:
        raise RunnerError(f"{recipe.where('dataset.batch_size')}: dataset.batch_size {data.batch_size} is the "
                          f"global batch and must divide by the {n} processes; try {data.batch_size // n * n or n}")
    return (DataLoader(train, batch_size=data.batch_size // n, sampler=DistributedSampler(train, seed=seed), **args),
            DataLoader(val, batch_size=-(-data.val_batch_size // n), sampler=distributed.Shard(len(val)), **args))


def wrap_for_processes(run: Run) -> None:
    """Under torchrun, the trained module (model, or head on cached features) in DistributedDataParallel; called
    again whenever what trains changes, since DDP registers the parameters that need gradients when it wraps."""
    if not distributed.active():
        return
    from torch.nn.parallel import DistributedDataParallel

    module = run.backbone.head if run.cache else (run.compiled if run.compiled is not None else run.model)
    ids = [run.device.index] if run.device.type == "cuda" else None
    run.ddp = DistributedDataParallel(module, device_ids=ids)


LR_PLACEHOLDER = 1e-3
"""The lr an ``lr: auto`` optimizer is built with until the lr finder has chosen (the finder sets its own)."""


def optimizer_and_schedule(parts: Components, plan: FreezePlan, steps_per_epoch: int, lr: float | None):
    """The optimizer over the freeze plan's groups (each at its own lr scale, at ``lr`` if given) and its schedule."""
    params = parts.params["optimizer"]
    params = params if lr is None else params.model_copy(update={"lr": lr})
    groups = [dict(group) for group in plan.groups]  # torch keeps and fills in the dicts it is given
    optimizer = parts.make("optimizer", groups, params=params)
    for group in optimizer.param_groups:  # discriminative lrs, before any scheduler records its base lrs
        group["lr"] *= group.get("lr_scale", 1.0)
    return optimizer, parts.make("scheduler", optimizer, parts.recipe.settings.epochs, steps_per_epoch)


def _choose_lr(run: Run, parts: Components, steps_per_epoch: int) -> None:
    """``lr: auto``: run the range test (on cached features when the run uses them), then build the optimizer and
    schedule at the suggested lr and record it in the resolved recipe."""
    from runner.lr_finder import find_lr

    settings = run.recipe.settings
    if run.cache:
        prepare_features(run)
    found = settings.lr_find
    run.lr_find = find_lr(run, found.start_lr, found.end_lr, found.steps, diverge=found.diverge)
    lr = float(f"{run.lr_find.suggestion:.3g}")
    run.optimizer, run.schedule = optimizer_and_schedule(parts, run.freeze_plan, steps_per_epoch, lr)
    run.resolved["optimizer"]["lr"] = lr


def _batch_mixer(settings, num_classes: int):
    """torchvision's MixUp and/or CutMix as one batch transform (one of them per batch when both are set)."""
    from torchvision.transforms import v2

    mixers = [v2.MixUp(alpha=settings.mixup, num_classes=num_classes)] if settings.mixup else []
    mixers += [v2.CutMix(alpha=settings.cutmix, num_classes=num_classes)] if settings.cutmix else []
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def _training_precision(run: Run) -> tuple[torch.dtype | None, str]:
    """The training autocast dtype: as set, or under precision auto the faster of fp32 and reduced precision."""
    dtype = run.autocast_dtype
    name = lambda d: str(d).replace("torch.", "") if d else "fp32"  # noqa: E731
    if run.recipe.settings.precision != "auto" or dtype is None or run.cache:
        return dtype, f"train {name(dtype)}, eval {name(dtype)}"
    size = run.backbone.preprocess.size
    batch = torch.randn(run.data.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    ever = {id(p) for group in run.freeze_plan.groups for p in group["params"]}
    trainable = {n for n, p in run.model.named_parameters() if id(p) in ever}
    chosen, rates = faster_training_dtype(run.model, to_device(run, batch), len(run.classes), dtype, trainable)
    shown = ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
    return chosen, f"train {name(chosen)} (measured img/s: {shown}), eval {name(dtype)}"


def _cache_decision(run: Run) -> tuple[bool, str]:
    """Whether to train the head on cached features, and a note saying why (shown to the user)."""
    mode = run.recipe.settings.cache
    if mode == "off":
        return False, "off"
    blocked = ("mixup and cutmix mix whole images" if run.mix is not None
               else feature_cache.why_not_cacheable(run.model, run.backbone.head))
    if blocked:
        if mode == "features":
            raise RunnerError(f"{run.recipe.where('cache')}: cache: features needs a frozen trunk: {blocked}")
        return False, f"off: {blocked}"
    inexact = feature_cache.why_not_exact(run.model, run.backbone.head, run.data.augmented)
    if inexact is None:
        return True, "exact"
    if mode == "features":
        return True, f"{run.recipe.settings.views} view(s) per training image ({inexact})"
    return False, f"off: not exact, {inexact} (cache: features caches augmented views)"


def _check_solvable(run: Run) -> None:
    """``head_solver: lbfgs`` fits the head alone, once, on cached features of a frozen trunk: say in one line
    what stops it otherwise."""
    where = run.recipe.where("head_solver")
    if not run.cache:
        raise RunnerError(f"{where}: head_solver: lbfgs needs a frozen trunk with cached features (freeze: "
                          f"all_but_head, cache: auto or features); here the feature cache is {run.cache_note}")
    if run.freeze_plan.on_epoch is not None:
        raise RunnerError(f"{where}: head_solver: lbfgs fits the head once; the freeze policy "
                          f"'{run.recipe.sections['freeze']['name']}' unfreezes the backbone later (use all_but_head)")


def prepare_features(run: Run) -> None:
    """Swap in the cached-feature loaders once (the lr finder may have done it before fit)."""
    if run.image_loaders is None:
        run.cache_note += "; features " + use_cached_features(run)


def use_cached_features(run: Run) -> str:
    """Swap the loaders for ones over cached head inputs; returns how they were obtained."""
    started = time.perf_counter()
    settings, data = run.recipe.settings, run.data

    run.image_loaders = (run.train_loader, run.val_loader)
    views = settings.views if data.augmented else 1
    forward, info = functools.partial(eval_logits, run), {"images": views * len(data.train) + len(data.val)}
    train_x, train_y, hit_train = feature_cache.cached_features(run, data.train, views, forward, "train",
                                                                random=data.augmented, info=info)
    val_x, val_y, hit_val = feature_cache.cached_features(run, data.val, 1, forward, "val", random=False, info=info)
    run.train_loader, run.val_loader = loaders(feature_cache.CachedFeatures(train_x, train_y, settings.seed),
                                                feature_cache.CachedFeatures(val_x, val_y), data, settings.seed,
                                                run.recipe, run.device, workers=0,
                                                collate=feature_cache.CachedFeatures.collate)
    wrap_for_processes(run)
    how = "loaded from cache" if hit_train and hit_val else "extracted"
    seconds = time.perf_counter() - started
    if "batch" in info:
        folded = f"{info['folded']} BatchNorms folded, " if info["folded"] else ""
        runtime = f"{info['runtime']}, " if info.get("runtime") else ""
        feed = info.get("feed", {})
        fed = ""
        if feed.get("ahead") is not None:
            here, ahead = feed["feed_rates"]
            fed = (f", transforms a batch ahead in a thread ({ahead:.0f} against {here:.0f} images/s)" if feed["ahead"]
                   else f", transforms in the pass's thread ({here:.0f} against {ahead:.0f} images/s ahead)")
        how += f" ({runtime}{folded}batch {info['batch']}, {info['threads']} threads{fed})"
        run.trunk_pass = {"runtime": info["trunk_runtime"], "why": info["runtime_why"],
                          "transforms_ahead": feed.get("ahead"), "images": info["extracted"],
                          "seconds": round(seconds, 2)}
    return f"{how} in {seconds:.1f} s"


