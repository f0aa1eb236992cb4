"""Built-in lifecycle plugin: the pictures people look at, saved as PNG in the run folder (no window opens).

``batch.png`` before training (one augmented training batch with its labels: what the model sees),
``curves.png`` (loss, accuracy and learning rate per epoch) and ``predictions.png`` (val images with predicted and
true labels, wrong ones in red) when the run ends. Images are de-normalised with the backbone's own mean and std.
"""
from __future__ import annotations

import json
import math

from pydantic import Field

from runner.api import Params, Section, hookimpl

RUNNER_API = "1.3"  # save_figure(..., crop=False)
MAX_LR_LINES = 6
"""More parameter groups than this: the lr panel shows the head's and the lowest lr only."""
# torch and matplotlib are imported where a picture is made, not when the plugin is loaded (runner list, --help)


class Pictures(Params):
    batch: bool = Field(True, description="batch.png: a training batch as the model sees it, before training")
    curves: bool = Field(True, description="curves.png: loss, accuracy and lr per epoch, when the run ends")
    predictions: int = Field(16, ge=0, description="predictions.png: this many val images with predicted and true "
                                                   "labels, when the run ends (0: none)")


@hookimpl
def runner_recipe_sections():
    return [Section("pictures", "PNG pictures of the data, the curves and the predictions in the run folder",
                    Pictures, on_by_default=True)]


LABEL_PX = 16
"""Height of a label's letters in an image grid; the grid's title is a third larger."""
CELL_PX = 224
"""Smaller images are enlarged to this in a grid, so their labels fit above them and they can be seen."""


def denormalise(image, preprocess):
    """A normalised CHW tensor back to an HWC image in [0, 1]."""
    import torch

    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    return (image.float() * std + mean).clamp(0, 1).permute(1, 2, 0)


def grid_picture(images, titles, colours, preprocess, title: str):
    """Images in a grid of up to 4 columns, each under its (one- or two-line) title in its colour: a PIL image.

    Drawn with PIL, not matplotlib: a grid of 16 images with titles took matplotlib ~1.5 s to lay out and render,
    a fixed cost of every run (batch.png and predictions.png); PIL takes a tenth of that.
    """
    from PIL import Image, ImageDraw, ImageFont

    pictures = [Image.fromarray((denormalise(image, preprocess).numpy() * 255).round().astype("uint8"))
                for image in images]
    side = max([CELL_PX, *(max(p.size) for p in pictures)])
    font, heading = ImageFont.load_default(size=LABEL_PX), ImageFont.load_default(size=LABEL_PX * 4 // 3)
    label_h, gap = 2 * LABEL_PX + 14, 12
    cols = max(1, min(4, len(pictures)))
    rows = max(1, math.ceil(len(pictures) / cols))
    top = LABEL_PX * 2 + gap
    canvas = Image.new("RGB", (cols * (side + gap) + gap, top + rows * (label_h + side + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((canvas.width // 2, gap), title, fill="black", font=heading, anchor="ma")
    for i, (picture, text, colour) in enumerate(zip(pictures, titles, colours)):
        row, col = divmod(i, cols)
        x, y = gap + col * (side + gap), top + row * (label_h + side + gap)
        scale = side / max(picture.size)
        shown = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                               Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BICUBIC)
        canvas.paste(shown, (x + (side - shown.width) // 2, y + label_h))
        draw.multiline_text((x + side // 2, y + label_h - 4), text, fill=colour, font=font, anchor="md",
                            align="center", spacing=4)
    return canvas


def image_grid(images, titles, colours, preprocess, path, title: str) -> None:
    """:func:`grid_picture` saved as PNG at ``path`` (atomically)."""
    import io

    from runner.api import save_bytes

    buffer = io.BytesIO()
    grid_picture(images, titles, colours, preprocess, title).save(buffer, format="png", compress_level=1)
    save_bytes(buffer.getvalue(), path)


def _items(dataset, count: int, seed: int):
    """``count`` items spread over ``dataset``, drawn without touching the run's random state."""
    import torch

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


def lr_lines(rows: list[dict], group_names: list[str] | None = None) -> list[tuple[int, str]]:
    """The parameter groups the lr panel draws, as (index, label): every group, or with more than MAX_LR_LINES the
    head's (the group named head, else the last) and the one with the lowest lr."""
    count = len(rows[0]["lr"])
    names = list(group_names or [])
    names = names if len(names) == count else [f"group {i}" for i in range(count)]
    if count == 1:
        return [(0, names[0] if group_names else "lr")]
    if count <= MAX_LR_LINES:
        return list(enumerate(names))
    head = names.index("head") if "head" in names else count - 1
    lowest = min(range(count), key=lambda i: (sum(r["lr"][i] for r in rows), i))
    return [(head, names[head]), (lowest, f"{names[lowest]} (lowest)")] if lowest != head else [(head, names[head])]


def curves_figure(rows: list[dict], group_names: list[str] | None = None):
    """Loss, accuracy and learning rate per epoch (metrics.jsonl rows): the figure, not yet saved. The lr panel is
    on a log scale with a labelled line per parameter group (see :func:`lr_lines`); epochs are whole numbers.
    A bare Figure with fixed margins, saved uncropped: pyplot's imports, ``tight_layout`` and a cropped save would be
    ~0.9 s of a run that trains in seconds."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter, MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(15, 4.5))
    loss, acc, lr = fig.subplots(1, 3)
    for key, style in (("train", "-o"), ("val", "-s")):
        loss.plot(epochs, [r[f"{key}_loss"] for r in rows], style, label=key, markersize=4)
        acc.plot(epochs, [r[f"{key}_acc"] for r in rows], style, label=key, markersize=4)
    shown = lr_lines(rows, group_names)
    for index, label in shown:
        lr.plot(epochs, [r["lr"][index] for r in rows], "-o", label=label, markersize=3)
    if any(r["lr"][i] > 0 for r in rows for i, _ in shown):
        lr.set_yscale("log")  # ticks as recipes write rates (1e-03): the default 10^-3 sets them with mathtext,
        lr.yaxis.set_major_formatter(LogFormatter())  # whose parser costs ~0.25 s to build
        lr.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    total = len(rows[0]["lr"])
    lr_title = "learning rate" + (f" ({len(shown)} of {total} groups)" if len(shown) < total else "")
    for ax, name in ((loss, "loss"), (acc, "accuracy"), (lr, lr_title)):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=9)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.12, top=0.92, wspace=0.2)
    return fig


def plot_curves(rows: list[dict], path, group_names: list[str] | None = None) -> None:
    """:func:`curves_figure` saved as PNG at ``path`` (atomically), uncropped: its margins are fixed, and cropping
    renders a figure twice."""
    from runner.api import save_figure

    save_figure(curves_figure(rows, group_names), path, crop=False)


@hookimpl
def runner_run_end(run, summary):
    wanted = run.section("pictures")
    if wanted is None:
        return
    metrics = run.folder / "metrics.jsonl"
    if wanted.curves and metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        if rows:
            plot_curves(rows, run.folder / "curves.png", run.group_names)
    val = run.dataset("val")
    if not wanted.predictions or not len(val):
        return
    import torch

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
