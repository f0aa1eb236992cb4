"""The training loop: epochs of train and val phases, optimizer steps, unfreezing, checkpoints each epoch,
resume from last.pt, lifecycle hooks."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from runner import checkpoint, distributed, feature_cache, folding
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
    forward = module if train else validation_forward(run, module)
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
                logits = forward(images)
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


def validation_forward(run: Run, module: nn.Module):
    """The val phase's forward. On a CPU, for a whole model (not a head on cached features, not under DDP or
    compile): a copy of ``module`` with BatchNorm folded into its convolutions, in chunks of
    :data:`runner.folding.EVAL_CPU_BATCH` images -- ~1.6x the images per second of ``module`` at batch 64 here, the
    same logits up to fp32 rounding. The fold is checked against ``module`` once per run, on the first val batch;
    where it does not hold (or there is nothing to fold) ``module`` itself runs."""
    if (run.device.type != "cpu" or run.cache or run.ddp is not None or run.compiled is not None
            or run.val_fold is False):
        return module
    folded, count = folding.fold_batchnorm(module)
    if not count:
        run.val_fold = False
        return module
    if run.recipe.settings.channels_last:
        folded.to(memory_format=torch.channels_last)

    def forward(images: torch.Tensor) -> torch.Tensor:
        if run.val_fold is None:  # the first batch of the run: does the fold compute what the model does?
            run.val_fold = folding.agrees(module(images[:2]), folded(images[:2]))
        if not run.val_fold:
            return module(images)
        return torch.cat([folded(chunk) for chunk in images.split(folding.EVAL_CPU_BATCH)])

    return forward


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

    Each epoch ends with ``last.pt`` (written at once, or with the next write when epochs are quick: see
    :class:`runner.checkpoint.Writer`); ``resume`` (a run folder) continues from it. Ctrl-C raises
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
    run.checkpoints = checkpoint.Writer(run.folder)
    try:
        try:
            _epochs(run, first)
        finally:  # whatever ends the epochs, the files hold the last finished one
            if distributed.is_main():
                run.checkpoints.flush()
    except KeyboardInterrupt:
        raise RunInterrupted(run.folder, run.epoch) from None
    except TrainingDiverged as exc:
        if distributed.is_main():  # `runner runs` tells a diverged run from an interrupted one by this file
            save_json({"epoch": run.epoch, "message": exc.problems[0] if exc.problems else str(exc)},
                      run.folder / "diverged.json")
        raise
    if distributed.is_main():  # the others end with the last weights: they write nothing
        best_state = checkpoint.load(run.folder / "best.pt")
        run.model.load_state_dict(best_state["model"])
    summary = {"recipe": run.recipe.name, "best_val_acc": run.best["val_acc"], "best_epoch": run.best["epoch"],
               "final_val_acc": run.final_val_acc, "epochs": settings.epochs, "epochs_run": run.epoch,
               "stopped": run.stop, "seed": settings.seed,
               **({"head_solver": run.solver} if run.solver is not None else {}),
               "wall_s": round(time.perf_counter() - started, 2), "folder": str(run.folder),
               "classes": list(run.classes), "cache": run.cache_note, "trunk_pass": run.trunk_pass,
               "precision": run.precision_note,
               "resumed_at": first if resume is not None else None,
               "skipped_images": {"count": len(run.data.skipped), "first": run.data.skipped[:5]}}
    if distributed.is_main():
        save_json(summary, run.folder / "summary.json")
    run.hook.runner_run_end(run=run.view, summary=summary)
    return summary


def _epochs(run: Run, first: int) -> None:
    settings = run.recipe.settings
    if settings.head_solver == "lbfgs":
        if first == 1:  # a resumed lbfgs run has its one epoch already
            _solved_epoch(run)
        return
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
        _end_epoch(run, epoch, train, val, {"lr": lrs})
        if run.stop:
            break


def _end_epoch(run: Run, epoch: int, train: dict, val: dict, extra: dict) -> None:
    """An epoch's bookkeeping: its metrics row to the hooks, best.pt when val accuracy improved, last.pt."""
    seconds = train["seconds"] + val["seconds"]
    improved = val["acc"] > run.best["val_acc"]
    metrics = {
        "epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"], "val_loss": val["loss"],
        "val_acc": val["acc"], "lr": extra.pop("lr"), "seconds": seconds,
        "images_per_s": (train["images"] + val["images"]) / max(seconds, 1e-9), "best": improved, **extra,
    }
    run.final_val_acc = val["acc"]
    if improved:
        run.best = {"val_acc": val["acc"], "epoch": epoch}
        if distributed.is_main():
            run.checkpoints.put("best", checkpoint.best_state(run, epoch, val["acc"]))
    run.hook.runner_epoch_end(run=run.view, epoch=epoch, metrics=metrics)
    if distributed.is_main():
        run.checkpoints.put("last", checkpoint.last_state(run, epoch))
    run.stop = distributed.from_main(run.stop)  # plugins (early stopping) decide on rank 0


# -- the linear probe solved: full-batch L-BFGS on cached features ------------------------------------------------

WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""The L2 penalties ``head_weight_decay: auto`` tries (a log grid, as CLIP's and DINO's linear-probe protocols
sweep the regularisation of a logistic regression on frozen features)."""
HELD_OUT = 0.2
"""The fraction of training images (all their cached views) held out to choose the penalty."""
DEFAULT_WEIGHT_DECAY = 1e-4
"""The penalty ``auto`` falls back to when there are too few training images to hold some out (under 10)."""
LBFGS_ITERATIONS = 1000
"""Most L-BFGS iterations per fit; it stops earlier once the largest gradient entry is below 1e-7 (converged)."""


def lbfgs_fit(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, weight_decay: float,
              label_smoothing: float = 0.0, iterations: int = LBFGS_ITERATIONS) -> dict[str, float]:
    """Fit ``head``'s trainable parameters to (features, labels) by full-batch L-BFGS (strong Wolfe line search):
    minimise the mean cross-entropy plus ``weight_decay``/2 times the squared norm of the weights (not the biases),
    in eval mode (no dropout: the objective is deterministic, for a linear head convex, so this is its optimum).
    Returns the final objective, its loss part and the iterations taken."""
    params = [p for p in head.parameters() if p.requires_grad]
    decayed = [p for p in params if p.dim() > 1]
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, max_eval=iterations * 5 // 4,
                                  tolerance_grad=1e-7, tolerance_change=1e-9, history_size=20,
                                  line_search_fn="strong_wolfe")
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    head.eval()
    losses = {}

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(head(features).float(), labels)
        penalty = sum((p.float() ** 2).sum() for p in decayed) * (weight_decay / 2)
        objective = loss + penalty
        objective.backward()
        losses.update(objective=objective.item(), loss=loss.item())
        return objective

    with torch.enable_grad():
        optimizer.step(closure)
    for p in params:
        p.grad = None
    state = optimizer.state[params[0]]
    if not all(torch.isfinite(p).all() for p in params):
        raise TrainingDiverged(f"L-BFGS diverged (weight decay {weight_decay:g}): the features hold extreme values")
    return {**losses, "iterations": int(state.get("n_iter", 0))}


def _rows(features: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, device) -> tuple:
    """The cached views of ``images`` (indices) as training rows: (views * n, D) features, their labels."""
    x = features[:, images].reshape(-1, *features.shape[2:]).to(device=device, dtype=torch.float32)
    return x, labels[images].repeat(features.shape[0]).to(device)


def _held_out_split(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out image indices: HELD_OUT of each class (at least one where it has two), seeded."""
    g = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        k = int(round(len(members) * HELD_OUT)) if len(members) > 1 else 0
        k = max(k, 1) if len(members) > 1 else 0
        held.append(members[:k])
        fit.append(members[k:])
    return torch.cat(fit).sort().values, torch.cat(held).sort().values


@torch.no_grad()
def _scored(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = head(x).float()
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def choose_weight_decay(run: Run, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[dict]]:
    """The penalty with the best held-out accuracy (ties: lower held-out loss, then the larger penalty), each
    candidate fitted on the rest of the training images. The candidates are fitted from the largest penalty down,
    each starting from the previous one's solution (a regularisation path, as glmnet and scikit-learn's warm_start
    do): the objective is convex, so the optimum is the same as from the initial weights, reached in far fewer
    iterations. The head is left at the chosen candidate's solution, where the final fit on all images starts."""
    head, settings = run.backbone.head, run.recipe.settings
    if len(labels) < 10:
        return DEFAULT_WEIGHT_DECAY, []
    fit_idx, held_idx = _held_out_split(labels, settings.seed)
    x_fit, y_fit = _rows(features, labels, fit_idx, run.device)
    x_held, y_held = _rows(features, labels, held_idx, run.device)
    trials, solutions = [], {}
    for decay in sorted(WEIGHT_DECAYS, reverse=True):
        fitted = lbfgs_fit(head, x_fit, y_fit, decay, settings.label_smoothing)
        loss, acc = _scored(head, x_held, y_held)
        solutions[decay] = {k: v.clone() for k, v in head.state_dict().items()}
        trials.append({"weight_decay": decay, "held_out_acc": acc, "held_out_loss": loss,
                       "iterations": fitted["iterations"]})
    trials.sort(key=lambda t: t["weight_decay"])
    best = max(trials, key=lambda t: (t["held_out_acc"], -t["held_out_loss"], t["weight_decay"]))
    head.load_state_dict(solutions[best["weight_decay"]])
    return best["weight_decay"], trials


def _solved_epoch(run: Run) -> None:
    """``head_solver: lbfgs``: the head fitted to convergence on all cached training features (every view of every
    image is a row), then validated once; recorded as epoch 1 like any epoch (metrics, best.pt, last.pt)."""
    run.epoch = 1
    started = time.perf_counter()
    dataset = run.train_loader.dataset  # CachedFeatures, whole (each process holds every row)
    features, labels = dataset.features, dataset.labels
    settings = run.recipe.settings
    trials: list[dict] = []
    if settings.head_weight_decay == "auto":
        decay, trials = choose_weight_decay(run, features, labels)
    else:
        decay = float(settings.head_weight_decay)
    x, y = _rows(features, labels, torch.arange(len(labels)), run.device)
    fitted = lbfgs_fit(run.backbone.head, x, y, decay, settings.label_smoothing)
    loss, acc = _scored(run.backbone.head, x, y)
    if run.ema is not None:  # the average of one set of weights is those weights
        run.ema.update_parameters(run.model)
    train = {"loss": loss, "acc": acc, "images": len(y), "seconds": time.perf_counter() - started}
    val = run_phase(run, "val", 1)
    run.solver = {"solver": "lbfgs", "weight_decay": decay, "iterations": fitted["iterations"],
                  "objective": fitted["objective"], "choices": trials}
    _end_epoch(run, 1, train, val, {"lr": [1.0] * len(run.optimizer.param_groups), "solver": "lbfgs",
                                    "weight_decay": decay, "solver_iterations": fitted["iterations"]})




# -- several seeds ------------------------------------------------------------------------------------------------

def seed_runs(count: int, output: str | Path, name: str) -> tuple[Path, list[dict[str, Any]]]:
    """The folder that holds the runs of seeds 0..count-1 (``output/<name>-seeds-<time>``) and, per seed, the
    settings that differ: ``seed``, ``output`` (that folder) and ``name`` (``<name>-seed<k>``)."""
    if count < 1:
        from runner.errors import RunnerError
        raise RunnerError(f"--seeds {count}: give 1 or more")
    folder = new_run_folder(Path(output), f"{name}-seeds")
    return folder, [{"seed": k, "output": str(folder), "name": f"{name}-seed{k}"} for k in range(count)]


def seed_summary(summaries: list[dict[str, Any]], folder: Path | None = None,
                 recipe: str | None = None) -> dict[str, Any]:
    """Mean and standard deviation (sample, n-1; 0 for one run) of the best and the final val accuracy of runs that
    differ only in seed, each run's figures beside; written to ``folder/seeds.json`` when ``folder`` is given."""
    import statistics

    def spread(key: str) -> dict[str, Any]:
        values = [s[key] for s in summaries if s.get(key) is not None]
        if not values:
            return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values), "n": len(values)}

    result = {
        "recipe": recipe, "seeds": [s.get("seed") for s in summaries],
        "best_val_acc": spread("best_val_acc"), "final_val_acc": spread("final_val_acc"),
        "std": "sample standard deviation (n-1)",
        "runs": [{k: s.get(k) for k in ("seed", "best_val_acc", "best_epoch", "final_val_acc", "wall_s", "folder")}
                 for s in summaries],
    }
    if folder is not None:
        result["folder"] = str(folder)
        save_json(result, Path(folder) / "seeds.json")
    return result
