"""The training loop: epochs of train and val phases, optimizer steps, unfreezing, checkpoints each epoch,
resume from last.pt, lifecycle hooks."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runner import checkpoint, distributed, feature_cache
from runner.engine.build import prepare_features, wrap_for_processes
from runner.engine.run import (Run, RunInterrupted, TrainingDiverged, autocast, evaluated_module, generators,
                               to_device, trained_module)
from runner.runfolder import new_run_folder, save_json, save_yaml


def run_phase(run: Run, phase: str, epoch: int) -> dict[str, float]:
    """One pass over the train or val loader; returns mean loss, accuracy, images and seconds."""
    train = phase == "train"
    loader = run.train_loader if train else run.val_loader
    if train and isinstance(loader.dataset, feature_cache.CachedFeatures):
        loader.dataset.set_epoch(epoch)
    if train and hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)  # DistributedSampler: a new order each epoch, the same in every process
    module = trained_module(run) if train else evaluated_module(run)
    module.train(train)
    criterion = nn.CrossEntropyLoss(label_smoothing=run.recipe.settings.label_smoothing if train else 0.0)
    loss_sum, correct, seen = 0.0, 0, 0
    started = time.perf_counter()
    grad = contextlib.nullcontext() if train else torch.inference_mode()
    if train:
        run.optimizer.zero_grad(set_to_none=True)
    with grad:
        for batch, (images, labels) in enumerate(loader):
            images, labels = to_device(run, images), labels.to(run.device, non_blocking=True)
            targets = labels
            if train and run.mix is not None:
                images, targets = run.mix(images, labels)
            with autocast(run, train):
                logits = module(images)
                loss = criterion(logits.float(), targets)
            if train:
                training_step(run, loss, batch, len(loader), epoch)
            loss_sum += loss.item() * labels.size(0)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += labels.size(0)
            run.hook.runner_batch_end(run=run.view, epoch=epoch, phase=phase, batch=batch, size=labels.size(0))
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


def after_unfreeze(run: Run) -> None:
    """Back to whole images once the trunk trains: cached features stood only for a frozen trunk."""
    if run.cache and feature_cache.why_not_cacheable(run.model, run.backbone.head):
        run.train_loader, run.val_loader = run.image_loaders
        run.cache = False
        run.cache_note += f"; off from epoch {run.epoch} (the backbone trains)"


def restore(run: Run, state: dict[str, Any]) -> int:
    """Put the run where ``state`` (last.pt) left it; returns the next epoch."""
    for epoch in range(1, state["epoch"] + 1):  # replay the freeze schedule: requires_grad, BatchNorm, loaders
        run.epoch = epoch
        if run.freeze_plan.on_epoch is not None and run.freeze_plan.on_epoch(epoch):
            after_unfreeze(run)
            wrap_for_processes(run)
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
    for generator, saved in zip(generators(run), state["generators"]):
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
    first = restore(run, checkpoint.read_last(run.folder)) if resume is not None else 1
    run.resumed = resume is not None
    run.hook.runner_run_start(run=run.view)
    try:
        _epochs(run, first)
    except KeyboardInterrupt:
        raise RunInterrupted(run.folder, run.epoch) from None
    if distributed.is_main():  # the others end with the last weights: they write nothing
        best_state = checkpoint.load(run.folder / "best.pt")
        run.model.load_state_dict(best_state["model"])
    summary = {"recipe": run.recipe.name, "best_val_acc": run.best["val_acc"], "best_epoch": run.best["epoch"],
               "epochs": settings.epochs, "epochs_run": run.epoch, "stopped": run.stop,
               "wall_s": round(time.perf_counter() - started, 2), "folder": str(run.folder),
               "classes": list(run.classes), "cache": run.cache_note, "precision": run.precision_note,
               "resumed_at": first if resume is not None else None,
               "skipped_images": {"count": len(run.data.skipped), "first": run.data.skipped[:5]}}
    if distributed.is_main():
        save_json(summary, run.folder / "summary.json")
    run.hook.runner_run_end(run=run.view, summary=summary)
    return summary


def _epochs(run: Run, first: int) -> None:
    settings = run.recipe.settings
    for epoch in range(first, settings.epochs + 1):
        run.epoch = epoch
        if run.freeze_plan.on_epoch is not None and run.freeze_plan.on_epoch(epoch):
            after_unfreeze(run)
            wrap_for_processes(run)
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
                checkpoint.save(checkpoint.best_state(run, epoch, val["acc"]), run.folder / "best.pt")
        run.hook.runner_epoch_end(run=run.view, epoch=epoch, metrics=metrics)
        if distributed.is_main():
            checkpoint.save(checkpoint.last_state(run, epoch), run.folder / "last.pt")
        run.stop = distributed.from_main(run.stop)  # plugins (early stopping) decide on rank 0
        if run.stop:
            break


