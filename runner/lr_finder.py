"""The learning-rate range test (Smith 2015; fastai's lr_find): train briefly while the lr grows exponentially,
watch the smoothed loss, suggest the lr where it falls fastest. Everything it touches is put back afterwards, so
the real run starts from the same weights, optimizer state and data order as without it.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from runner import distributed
from runner.errors import RunnerError


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    """Smoothed (debiased exponential moving average) loss at each lr."""
    suggestion: float
    how: str
    """How the suggestion was chosen."""
    stopped: str
    raw: list[float] = field(default_factory=list)
    steepest: float | None = None

    def as_dict(self) -> dict:
        return {"suggestion": self.suggestion, "how": self.how, "steepest": self.steepest, "stopped": self.stopped,
                "lrs": self.lrs, "losses": self.losses, "raw_losses": self.raw}


def _snapshot(run) -> dict:
    from runner.engine.run import generators

    return {"model": copy.deepcopy(run.model.state_dict()), "optimizer": copy.deepcopy(run.optimizer.state_dict()),
            "rng": torch.get_rng_state(), "generators": [g.get_state() for g in generators(run)],
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _put_back(run, saved: dict) -> None:
    from runner.engine.run import generators

    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.optimizer.zero_grad(set_to_none=True)
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    for generator, state in zip(generators(run), saved["generators"]):
        generator.set_state(state)


def suggest(lrs: list[float], losses: list[float]) -> tuple[float, str]:
    """A tenth of the lr at the smoothed loss's minimum (fastai's ``lr_min``): robust to the noise of small
    batches, where the steepest slope often lands on a noisy wiggle at the start."""
    low = _lowest(losses)
    return lrs[low] / 10, f"a tenth of {lrs[low]:.3g}, where the smoothed loss is lowest"


def _lowest(losses: list[float]) -> int:
    """Where the smoothed loss is lowest, past the first tenth of the sweep: there the average rests on a few
    batches and a lucky one reads as a minimum at an lr far too small to train."""
    first = len(losses) // 10
    return min(range(first, len(losses)), key=losses.__getitem__)


def steepest(lrs: list[float], losses: list[float]) -> float | None:
    """The lr where the smoothed loss falls fastest against log lr, between a tenth of the way in and the minimum
    (shown beside the suggestion, as fastai does)."""
    low = _lowest(losses)
    first = max(1, len(losses) // 10)
    if low - first < 2:
        return None
    logs = [math.log10(lr) for lr in lrs]
    slopes = {i: (losses[i + 1] - losses[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(first, low)}
    return lrs[min(slopes, key=slopes.__getitem__)]


def find_lr(run, start: float = 1e-7, end: float = 10.0, steps: int = 300, beta: float = 0.98,
            diverge: float = 4.0) -> LRFindResult:
    """The range test on ``run``'s training data and trained module; the run is left exactly as it was."""
    from runner.engine.loop import clip_gradients
    from runner.engine.run import autocast, to_device, trained_module

    saved = _snapshot(run)
    module = trained_module(run)
    criterion = nn.CrossEntropyLoss(label_smoothing=run.recipe.settings.label_smoothing)
    scales = [group.get("lr_scale", 1.0) for group in run.optimizer.param_groups]
    lrs, losses, raw = [], [], []
    average, best, stopped = 0.0, math.inf, f"swept to {end:g}"
    was_training = module.training
    module.train()
    try:
        batches = itertools.chain.from_iterable(itertools.repeat(run.train_loader))
        for step, (images, labels) in zip(range(steps), batches):
            lr = start * (end / start) ** (step / max(steps - 1, 1))
            for group, scale in zip(run.optimizer.param_groups, scales):
                group["lr"] = lr * scale
            images, labels = to_device(run, images), labels.to(run.device)
            with autocast(run, train=True):
                loss = criterion(module(images).float(), labels)
            value = distributed.sum_all([loss.item()], run.device)[0] / distributed.world()  # all agree
            if not math.isfinite(value):
                stopped = f"loss not finite at lr {lr:.3g}"
                break
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(run)
            run.optimizer.step()
            average = beta * average + (1 - beta) * value
            smoothed = average / (1 - beta ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            raw.append(value)
            best = min(best, smoothed)
            if step > 0 and smoothed > diverge * best:
                stopped = f"diverged at lr {lr:.3g} (smoothed loss above {diverge:g}x its minimum)"
                break
    finally:
        _put_back(run, saved)
        module.train(was_training)
    if len(losses) < 5 or losses[_lowest(losses)] >= losses[0]:
        raise RunnerError(
            f"the lr finder found no lr where the loss falls ({stopped} after {len(losses)} steps from "
            f"{start:g}); the model is untouched. Lower lr_find.start_lr, or set optimizer.lr yourself")
    suggestion, how = suggest(lrs, losses)
    return LRFindResult(lrs, losses, suggestion, how, stopped, raw, steepest(lrs, losses))


def plot(result: LRFindResult, path: Path) -> None:
    """Loss against lr (log scale), the suggestion marked."""
    from runner.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.raw, color="0.8", linewidth=0.8, label="loss")
    ax.plot(result.lrs, result.losses, color="C0", label="smoothed loss")
    ax.axvline(result.suggestion, color="C3", linestyle="--", label=f"suggested lr {result.suggestion:.2e}")
    if result.steepest is not None:
        ax.axvline(result.steepest, color="C2", linestyle=":", label=f"steepest fall {result.steepest:.2e}")
    ax.set_xscale("log")
    top = max(result.losses[0], min(result.losses)) * 1.5
    ax.set_ylim(min(result.raw + result.losses) * 0.95, top)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test: {result.stopped}")
    ax.legend()
    save_figure(fig, path)
