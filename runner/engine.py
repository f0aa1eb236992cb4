"""The one training engine: build the components a recipe names, fit, keep the best weights.

It knows no component by name: it asks the catalog for each kind in turn (backbone, dataset, freeze policy,
optimizer, scheduler) and calls lifecycle hooks so plugins can observe the run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from runner import distributed, feature_cache
from runner.components import Backbone, Data, FreezePlan, Schedule
from runner.errors import RunnerError
from runner.hardware import faster_training_dtype, resolve_device, resolve_precision
from runner.plugins import Catalog
from runner.recipe import Recipe, validate_components
from runner.runfolder import new_run_folder, save_json, save_torch, save_yaml


class TrainingDiverged(RunnerError):
    """A NaN or infinite training loss: the run stops; best.pt and last.pt keep the last good epoch."""

    exit_code = 3


class RunInterrupted(Exception):
    """Ctrl-C during training: ``last.pt`` holds the last finished epoch; the CLI exits 130."""

    exit_code = 130

    def __init__(self, folder: Path, epoch: int):
        self.folder, self.epoch = folder, epoch
        super().__init__(f"interrupted during epoch {epoch}; last.pt holds epoch {epoch - 1}")


@dataclass
class Run:
    """Everything a training run is made of; lifecycle hooks receive it."""

    recipe: Recipe
    resolved: dict[str, Any]
    device: torch.device
    autocast_dtype: torch.dtype | None
    """Autocast dtype for validation and feature extraction (None: fp32)."""
    backbone: Backbone
    data: Data
    freeze_plan: FreezePlan
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    train_loader: DataLoader
    val_loader: DataLoader
    hook: Any
    compiled: nn.Module | None = None
    ddp: nn.Module | None = None
    """The trained module in DistributedDataParallel when torchrun started several processes."""
    """``torch.compile`` of the model when the recipe asks for it; it shares the model's parameters."""
    train_dtype: torch.dtype | None = None
    """Autocast dtype for training steps; precision auto keeps fp32 where reduced precision trains slower."""
    precision_note: str = ""
    image_loaders: tuple[DataLoader, DataLoader] | None = None
    cache: bool = False
    cache_note: str = ""
    folder: Path | None = None
    epoch: int = 0
    stop: str | None = None
    """Set by a plugin to end the run after the current epoch; the text says why."""
    plugin_state: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=lambda: {"val_acc": -1.0, "epoch": -1})
    ema: Any = None
    """``torch.optim.swa_utils.AveragedModel`` of the model when the recipe sets ``ema``."""
    lr_find: Any = None
    """The lr finder's result when the recipe's lr is auto (written to the run folder as lr_find.json/.png)."""
    mix: Any = None
    """The batch transform (torchvision's MixUp/CutMix) that mixes training images and labels, if any."""

    @property
    def model(self) -> nn.Module:
        return self.backbone.model

    @property
    def classes(self) -> list[str]:
        return self.data.classes


def build(recipe: Recipe, catalog: Catalog, find_lr: bool = True) -> Run:
    """Turn a validated recipe into a ready Run: model with its new head, data, frozen parts, optimizer.

    With ``optimizer.lr: auto`` the lr finder runs here unless ``find_lr`` is False (the placeholder lr stays)."""
    validate_components(recipe, catalog)
    settings, params = recipe.settings, recipe.params
    component = {kind: catalog.get(kind, recipe.sections[kind]["name"]) for kind in params}
    torch.manual_seed(settings.seed)
    distributed.init(settings.device)
    device = distributed.device_for(resolve_device(settings.device))

    backbone: Backbone = component["backbone"].build(params["backbone"])
    data: Data = component["dataset"].build(params["dataset"], backbone.preprocess, recipe.base_dir)
    if data.preprocess is not None:
        backbone.preprocess = data.preprocess
    backbone.replace_head(len(data.classes))
    model = backbone.model.to(device)
    if recipe.settings.channels_last:
        model.to(memory_format=torch.channels_last)
    plan: FreezePlan = component["freeze"].build(params["freeze"], backbone)
    train_loader, val_loader = _loaders(data.train, data.val, data, settings.seed, recipe, device)
    steps_per_epoch = math.ceil(len(train_loader) / settings.accumulate)
    auto_lr = getattr(params["optimizer"], "lr", None) == "auto"
    optimizer, schedule = _optimizer_and_schedule(component, params, plan, settings, steps_per_epoch,
                                                  LR_PLACEHOLDER if auto_lr else None)
    run = Run(recipe=recipe, resolved=recipe.resolved(), device=device,
              autocast_dtype=resolve_precision(settings.precision, device), backbone=backbone, data=data,
              freeze_plan=plan, optimizer=optimizer, schedule=schedule, train_loader=train_loader,
              val_loader=val_loader, hook=catalog.pm.hook if distributed.is_main() else distributed.Silent())
    run.mix = _batch_mixer(settings, len(data.classes))
    run.cache, run.cache_note = _cache_decision(run)
    # measured in rank 0 alone (the others would contend for its cores and skew it), then the same everywhere
    run.train_dtype, run.precision_note = distributed.from_main(
        _training_precision(run) if distributed.is_main() else None)
    if settings.ema is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        run.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema), use_buffers=True)
    if settings.compile:
        run.compiled = torch.compile(model)
    if auto_lr and find_lr:
        _choose_lr(run, component, params, steps_per_epoch)
    _wrap_for_processes(run)
    return run


def _loaders(train, val, data: Data, seed: int, recipe: Recipe, device: torch.device,
             workers: int | None = None) -> tuple[DataLoader, DataLoader]:
    """Shuffled train and ordered val loaders; under torchrun each process loads its share (DistributedSampler
    for training, every val item once over all processes) and ``batch_size`` stays the global batch."""
    workers = data.workers if workers is None else workers
    args = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
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


def _wrap_for_processes(run: Run) -> None:
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


def _optimizer_and_schedule(component, params, plan: FreezePlan, settings, steps_per_epoch: int, lr: float | None):
    """The optimizer over the freeze plan's groups (each at its own lr scale, at ``lr`` if given) and its schedule."""
    optimizer_params = params["optimizer"] if lr is None else params["optimizer"].model_copy(update={"lr": lr})
    groups = [dict(group) for group in plan.groups]  # torch keeps and fills in the dicts it is given
    optimizer = component["optimizer"].build(optimizer_params, groups)
    for group in optimizer.param_groups:  # discriminative lrs, before any scheduler records its base lrs
        group["lr"] *= group.get("lr_scale", 1.0)
    return optimizer, component["scheduler"].build(params["scheduler"], optimizer, settings.epochs, steps_per_epoch)


def _choose_lr(run: Run, component, params, steps_per_epoch: int) -> None:
    """``lr: auto``: run the range test (on cached features when the run uses them), then build the optimizer and
    schedule at the suggested lr and record it in the resolved recipe."""
    from runner.lr_finder import find_lr

    settings = run.recipe.settings
    if run.cache:
        prepare_features(run)
    found = settings.lr_find
    run.lr_find = find_lr(run, found.start_lr, found.end_lr, found.steps, diverge=found.diverge)
    lr = float(f"{run.lr_find.suggestion:.3g}")
    run.optimizer, run.schedule = _optimizer_and_schedule(component, params, run.freeze_plan, settings,
                                                          steps_per_epoch, lr)
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
    chosen, rates = faster_training_dtype(run.model, _to_device(run, batch), len(run.classes), dtype, trainable)
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


def _autocast(run: Run, train: bool = False):
    dtype = run.train_dtype if train else run.autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(run.device.type, dtype=dtype)


def _to_device(run: Run, inputs: torch.Tensor) -> torch.Tensor:
    inputs = inputs.to(run.device, non_blocking=True)
    if run.recipe.settings.channels_last and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def _trained_module(run: Run) -> nn.Module:
    """What a batch goes through: the head alone on cached features, else the whole model (in DDP under torchrun)."""
    if run.ddp is not None:
        return run.ddp
    if run.cache:
        return run.backbone.head
    return run.compiled if run.compiled is not None else run.model


def _head_name(run: Run) -> str:
    return next(name for name, module in run.model.named_modules() if module is run.backbone.head)


def evaluated_model(run: Run) -> nn.Module:
    """The weights that are validated and saved as best: the moving average when ``ema`` is on, else the model."""
    return run.ema.module if run.ema is not None else run.model


def _evaluated_module(run: Run) -> nn.Module:
    if run.ema is None:
        return _trained_module(run)
    return run.ema.module.get_submodule(_head_name(run)) if run.cache else run.ema.module


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
    forward = functools.partial(_eval_logits, run)
    train_x, train_y, hit_train = feature_cache.cached_features(run, data.train, views, forward, "train")
    val_x, val_y, hit_val = feature_cache.cached_features(run, data.val, 1, forward, "val")
    run.train_loader, run.val_loader = _loaders(feature_cache.CachedFeatures(train_x, train_y, settings.seed),
                                                feature_cache.CachedFeatures(val_x, val_y), data, settings.seed,
                                                run.recipe, run.device, workers=0)
    _wrap_for_processes(run)
    how = "loaded from cache" if hit_train and hit_val else "extracted"
    return f"{how} in {time.perf_counter() - started:.1f} s"


def run_phase(run: Run, phase: str, epoch: int) -> dict[str, float]:
    """One pass over the train or val loader; returns mean loss, accuracy, images and seconds."""
    train = phase == "train"
    loader = run.train_loader if train else run.val_loader
    if train and isinstance(loader.dataset, feature_cache.CachedFeatures):
        loader.dataset.set_epoch(epoch)
    if train and hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)  # DistributedSampler: a new order each epoch, the same in every process
    module = _trained_module(run) if train else _evaluated_module(run)
    module.train(train)
    criterion = nn.CrossEntropyLoss(label_smoothing=run.recipe.settings.label_smoothing if train else 0.0)
    loss_sum, correct, seen = 0.0, 0, 0
    started = time.perf_counter()
    grad = contextlib.nullcontext() if train else torch.inference_mode()
    if train:
        run.optimizer.zero_grad(set_to_none=True)
    with grad:
        for batch, (images, labels) in enumerate(loader):
            images, labels = _to_device(run, images), labels.to(run.device, non_blocking=True)
            targets = labels
            if train and run.mix is not None:
                images, targets = run.mix(images, labels)
            with _autocast(run, train):
                logits = module(images)
                loss = criterion(logits.float(), targets)
            if train:
                training_step(run, loss, batch, len(loader), epoch)
            loss_sum += loss.item() * labels.size(0)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.size(0)
            run.hook.runner_batch_end(run=run, epoch=epoch, phase=phase, batch=batch, size=labels.size(0))
    seconds = time.perf_counter() - started
    loss_sum, correct, seen = distributed.sum_all([loss_sum, correct, seen], run.device)
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1), "images": int(seen), "seconds": seconds}


def clip_gradients(run: Run) -> None:
    """Clip the norm of every gradient the optimizer holds to the recipe's ``grad_clip`` (when set)."""
    if run.recipe.settings.grad_clip is not None:
        grads = [p for g in run.optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(grads, run.recipe.settings.grad_clip)


def training_step(run: Run, loss: torch.Tensor, batch: int, batches: int, epoch: int) -> None:
    """Backward one batch's loss; every ``accumulate`` batches (and at the epoch's end) clip, step, average."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"the training loss is {loss.item()} at epoch {epoch}, batch {batch + 1}: the run stopped; "
            f"{run.folder}/last.pt and best.pt keep the last good epoch; try a lower optimizer.lr")
    settings = run.recipe.settings
    first = batch - batch % settings.accumulate
    group = min(settings.accumulate, batches - first)  # the last group of an epoch may be short
    (loss / group).backward()
    if batch + 1 < first + group:
        return
    clip_gradients(run)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    if run.schedule.scheduler is not None and run.schedule.interval == "step":
        run.schedule.scheduler.step()


def _after_unfreeze(run: Run) -> None:
    """Back to whole images once the trunk trains: cached features stood only for a frozen trunk."""
    if run.cache and feature_cache.why_not_cacheable(run.model, run.backbone.head):
        run.train_loader, run.val_loader = run.image_loaders
        run.cache = False
        run.cache_note += f"; off from epoch {run.epoch} (the backbone trains)"


def _generators(run: Run) -> list[torch.Generator]:
    """The shuffling generators of the training loaders in use and held back (cached and image loaders)."""
    loaders = [run.train_loader, *(run.image_loaders[:1] if run.image_loaders else [])]
    return [loader.generator for loader in loaders if loader.generator is not None]


def last_state(run: Run, epoch: int) -> dict[str, Any]:
    """What last.pt holds: everything to continue after ``epoch`` as if never stopped (weights-only loadable)."""
    scheduler = run.schedule.scheduler
    return {
        **checkpoint(run, epoch, run.best["val_acc"]),
        "model": {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()},
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "best": dict(run.best),
        "rng": torch.get_rng_state(),
        "generators": [g.get_state() for g in _generators(run)],
        "train_dtype": str(run.train_dtype) if run.train_dtype else None,
        "plugin_state": run.plugin_state,
    }


def checkpoint(run: Run, epoch: int, val_acc: float) -> dict[str, Any]:
    """What best.pt holds: weights plus all needed to use them, loadable with ``weights_only=True``."""
    return {
        "model": {k: v.detach().cpu().clone() for k, v in evaluated_model(run).state_dict().items()},
        "classes": list(run.classes),
        "preprocess": dataclasses.asdict(run.backbone.preprocess),
        "recipe": run.resolved,
        "recipe_path": str(run.recipe.origin or run.recipe.path.resolve()),
        "epoch": epoch,
        "val_acc": val_acc,
    }


def read_last(folder: Path) -> dict[str, Any]:
    """``folder/last.pt``, or a RunnerError saying why it cannot be resumed."""
    path = Path(folder) / "last.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunnerError(f"{path}: no last.pt to resume from (the run stopped before its first epoch ended?)") from None
    except Exception as exc:
        raise RunnerError(f"{path}: cannot be loaded: {str(exc).splitlines()[0]}") from None
    return state


def _restore(run: Run, state: dict[str, Any]) -> int:
    """Put the run where ``state`` (last.pt) left it; returns the next epoch."""
    for epoch in range(1, state["epoch"] + 1):  # replay the freeze schedule: requires_grad, BatchNorm, loaders
        run.epoch = epoch
        if run.freeze_plan.on_epoch is not None and run.freeze_plan.on_epoch(epoch):
            _after_unfreeze(run)
            _wrap_for_processes(run)
    run.model.load_state_dict(state["model"])
    if run.ema is not None and state.get("ema") is not None:
        run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.schedule.scheduler is not None and state["scheduler"] is not None:
        run.schedule.scheduler.load_state_dict(state["scheduler"])
    run.best = dict(state["best"])
    run.plugin_state = state["plugin_state"]
    run.train_dtype = getattr(torch, state["train_dtype"].replace("torch.", "")) if state["train_dtype"] else None
    torch.set_rng_state(state["rng"])
    for generator, saved in zip(_generators(run), state["generators"]):
        generator.set_state(saved)
    return state["epoch"] + 1


def fit(run: Run, resume: Path | None = None) -> dict[str, Any]:
    """Train for the recipe's epochs, validating each; keep and save the best val accuracy's weights.

    Each epoch ends by writing ``last.pt``; ``resume`` (a run folder) continues from it. Ctrl-C raises
    :class:`RunInterrupted` after the run folder is consistent.
    """
    settings = run.recipe.settings
    if resume is None:
        if distributed.is_main():
            run.folder = new_run_folder(Path(settings.output), run.recipe.name)
            save_yaml(run.resolved, run.folder / "recipe.yaml")
        run.folder = distributed.from_main(run.folder)
    else:
        run.folder = Path(resume)
    started = time.perf_counter()
    if run.cache:
        prepare_features(run)
    if run.lr_find is not None and resume is None and distributed.is_main():
        from runner import lr_finder
        save_json(run.lr_find.as_dict(), run.folder / "lr_find.json")
        lr_finder.plot(run.lr_find, run.folder / "lr_find.png")
    first = _restore(run, read_last(run.folder)) if resume is not None else 1
    run.hook.runner_run_start(run=run)
    try:
        _epochs(run, first)
    except KeyboardInterrupt:
        raise RunInterrupted(run.folder, run.epoch) from None
    if distributed.is_main():  # the others end with the last weights: they write nothing
        best_state = torch.load(run.folder / "best.pt", map_location="cpu", weights_only=True)
        run.model.load_state_dict(best_state["model"])
    summary = {"recipe": run.recipe.name, "best_val_acc": run.best["val_acc"], "best_epoch": run.best["epoch"],
               "epochs": settings.epochs, "epochs_run": run.epoch, "stopped": run.stop,
               "wall_s": round(time.perf_counter() - started, 2), "folder": str(run.folder),
               "classes": list(run.classes), "cache": run.cache_note, "precision": run.precision_note,
               "resumed_at": first if resume is not None else None,
               "skipped_images": {"count": len(run.data.skipped), "first": run.data.skipped[:5]}}
    if distributed.is_main():
        save_json(summary, run.folder / "summary.json")
    run.hook.runner_run_end(run=run, summary=summary)
    return summary


def _epochs(run: Run, first: int) -> None:
    settings = run.recipe.settings
    for epoch in range(first, settings.epochs + 1):
        run.epoch = epoch
        if run.freeze_plan.on_epoch is not None and run.freeze_plan.on_epoch(epoch):
            _after_unfreeze(run)
            _wrap_for_processes(run)
        lrs = [group["lr"] for group in run.optimizer.param_groups]
        train = run_phase(run, "train", epoch)
        if run.schedule.scheduler is not None and run.schedule.interval == "epoch":
            run.schedule.scheduler.step()
        val = run_phase(run, "val", epoch)
        seconds = train["seconds"] + val["seconds"]
        improved = val["acc"] > run.best["val_acc"]
        metrics = {
            "epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"], "val_loss": val["loss"],
            "val_acc": val["acc"], "lr": lrs, "seconds": seconds,
            "images_per_s": (train["images"] + val["images"]) / max(seconds, 1e-9), "best": improved,
        }
        if improved:
            run.best = {"val_acc": val["acc"], "epoch": epoch}
            if distributed.is_main():
                save_torch(checkpoint(run, epoch, val["acc"]), run.folder / "best.pt")
        run.hook.runner_epoch_end(run=run, epoch=epoch, metrics=metrics)
        if distributed.is_main():
            save_torch(last_state(run, epoch), run.folder / "last.pt")
        run.stop = distributed.from_main(run.stop)  # plugins (early stopping) decide on rank 0
        if run.stop:
            break


def _eval_logits(run: Run, images: torch.Tensor) -> torch.Tensor:
    """The model's logits for a batch of images, on the run's device, under the eval autocast dtype."""
    with _autocast(run):
        return run.model(_to_device(run, images))


def predict(run: Run, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (on the CPU, fp32) for a batch of preprocessed images, in eval mode."""
    run.model.eval()
    with torch.inference_mode():
        return _eval_logits(run, images).float().softmax(1).cpu()
