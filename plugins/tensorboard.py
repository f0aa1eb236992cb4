"""TensorBoard logging, wired the way a third-party plugin is: registered through the ``runner`` entry-point group
in pyproject.toml (not in the built-in tuple), active once the optional extra is installed
(``pip install -e '.[tensorboard]'``). It writes the epoch metrics, one lr per parameter group, to
``RUN_FOLDER/tensorboard``; ``tensorboard --logdir runs`` shows every run.
"""
from __future__ import annotations

import importlib.util

from pydantic import Field

from runner.api import Params, Section, hookimpl

RUNNER_API = "1.0"
WRITERS: dict[str, object] = {}


class TensorBoard(Params):
    dir: str = Field("tensorboard", description="folder inside the run folder for the event files")


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


@hookimpl
def runner_recipe_sections():
    return [Section("tensorboard", "TensorBoard event files in the run folder (when the tensorboard extra is "
                                   "installed; tensorboard: false turns it off)", TensorBoard, on_by_default=True)]


@hookimpl
def runner_run_start(run):
    settings = run.section("tensorboard")
    if settings is not None and available():
        from torch.utils.tensorboard import SummaryWriter

        WRITERS[str(run.folder)] = SummaryWriter(str(run.folder / settings.dir))


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    writer = WRITERS.get(str(run.folder))
    if writer is None:
        return
    for key in ("train_loss", "val_loss", "train_acc", "val_acc", "images_per_s"):
        writer.add_scalar(key.replace("_", "/", 1), metrics[key], epoch)
    for name, lr in zip(run.group_names, metrics["lr"]):
        writer.add_scalar(f"lr/{name}", lr, epoch)
    writer.flush()


@hookimpl
def runner_run_end(run, summary):
    writer = WRITERS.pop(str(run.folder), None)
    if writer is not None:
        writer.add_text("summary", f"best val acc {summary['best_val_acc']:.4f} at epoch {summary['best_epoch']}")
        writer.close()
