"""TensorBoard logging, wired the way a third-party plugin is: registered through the ``runner`` entry-point group
in pyproject.toml (not in the built-in tuple), active once the optional extra is installed
(``pip install -e '.[tensorboard]'``). It writes the epoch metrics, one lr per parameter group, to
``RUN_FOLDER/tensorboard``; ``tensorboard --logdir runs`` shows every run.
"""
from __future__ import annotations

import importlib.util

from runner.hookspecs import hookimpl

WRITERS: dict[int, object] = {}


def available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


@hookimpl
def runner_run_start(run):
    if available():
        from torch.utils.tensorboard import SummaryWriter

        WRITERS[id(run)] = SummaryWriter(str(run.folder / "tensorboard"))


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    writer = WRITERS.get(id(run))
    if writer is None:
        return
    for key in ("train_loss", "val_loss", "train_acc", "val_acc", "images_per_s"):
        writer.add_scalar(key.replace("_", "/", 1), metrics[key], epoch)
    for group, lr in zip(run.optimizer.param_groups, metrics["lr"]):
        writer.add_scalar(f"lr/{group.get('name', 'group')}", lr, epoch)
    writer.flush()


@hookimpl
def runner_run_end(run, summary):
    writer = WRITERS.pop(id(run), None)
    if writer is not None:
        writer.add_text("summary", f"best val acc {summary['best_val_acc']:.4f} at epoch {summary['best_epoch']}")
        writer.close()
