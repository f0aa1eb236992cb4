"""Built-in lifecycle plugin: the pictures people look at, saved as PNG in the run folder (no window opens).

``batch.png`` before training (one augmented training batch with its labels: what the model sees),
``curves.png`` (loss, accuracy and learning rate per epoch) and ``predictions.png`` (val images with predicted and
true labels, wrong ones in red) when the run ends. Images are de-normalised with the backbone's own mean and std.
"""
from __future__ import annotations

import json
import math

import torch
from pydantic import Field

from runner.api import Params, Section, hookimpl, pyplot, save_figure

RUNNER_API = "1.0"


class Pictures(Params):
    batch: bool = Field(True, description="batch.png: a training batch as the model sees it, before training")
    curves: bool = Field(True, description="curves.png: loss, accuracy and lr per epoch, when the run ends")
    predictions: int = Field(16, ge=0, description="predictions.png: this many val images with predicted and true "
                                                   "labels, when the run ends (0: none)")


@hookimpl
def runner_recipe_sections():
    return [Section("pictures", "PNG pictures of the data, the curves and the predictions in the run folder",
                    Pictures, on_by_default=True)]


def denormalise(image: torch.Tensor, preprocess) -> torch.Tensor:
    """A normalised CHW tensor back to an HWC image in [0, 1]."""
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    return (image.float() * std + mean).clamp(0, 1).permute(1, 2, 0)


def image_grid(images, titles, colours, preprocess, path, title: str) -> None:
    plt = pyplot()
    n = len(images)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text, colour in zip(axes.flat, images, titles, colours):
        ax.imshow(denormalise(image, preprocess).numpy())
        ax.set_title(text, color=colour, fontsize=9)
    fig.suptitle(title)
    save_figure(fig, path)


def _items(dataset, count: int, seed: int):
    """``count`` items spread over ``dataset``, drawn without touching the run's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        picks = torch.randperm(len(dataset))[:count].tolist()
        return [dataset[i] for i in picks]


@hookimpl
def runner_run_start(run):
    wanted = run.section("pictures")
    if wanted is None or not wanted.batch or run.resumed:  # a resumed run keeps the batch picture it started with
        return
    train = run.dataset("train")
    items = _items(train, min(16, len(train)), run.seed)
    titles = [run.classes[int(label)] for _, label in items]
    image_grid([image for image, _ in items], titles, ["black"] * len(items), run.preprocess,
               run.folder / "batch.png", "a training batch, augmented as the model sees it")


def plot_curves(rows: list[dict], path) -> None:
    plt = pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (loss, acc, lr) = plt.subplots(1, 3, figsize=(13, 3.5))
    for key, style in (("train", "-o"), ("val", "-s")):
        loss.plot(epochs, [r[f"{key}_loss"] for r in rows], style, label=key, markersize=3)
        acc.plot(epochs, [r[f"{key}_acc"] for r in rows], style, label=key, markersize=3)
    groups = len(rows[0]["lr"])
    for g in range(groups):
        lr.plot(epochs, [r["lr"][g] for r in rows], label=f"group {g}" if groups > 1 else "lr")
    for ax, name in ((loss, "loss"), (acc, "accuracy"), (lr, "learning rate")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    loss.legend()
    acc.legend()
    if groups <= 6:
        lr.legend(fontsize=7)
    save_figure(fig, path)


@hookimpl
def runner_run_end(run, summary):
    wanted = run.section("pictures")
    if wanted is None:
        return
    metrics = run.folder / "metrics.jsonl"
    if wanted.curves and metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        if rows:
            plot_curves(rows, run.folder / "curves.png")
    val = run.dataset("val")
    if not wanted.predictions or not len(val):
        return
    items = _items(val, min(wanted.predictions, len(val)), run.seed)
    images = torch.stack([image for image, _ in items])
    probs = run.predict(images)
    titles, colours = [], []
    for (_, label), p in zip(items, probs):
        guess = int(p.argmax())
        titles.append(f"{run.classes[guess]} {p[guess]:.2f}\n(true: {run.classes[int(label)]})")
        colours.append("black" if guess == int(label) else "red")
    image_grid(list(images), titles, colours, run.preprocess, run.folder / "predictions.png",
               f"val predictions (best weights, epoch {summary['best_epoch']}); wrong in red")
