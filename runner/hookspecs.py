"""The plugin contract: every hook a runner plugin may implement, documented where it is declared.

A plugin is a module (or any object) with functions marked ``@runner.api.hookimpl`` whose names match the hooks
below; it imports :mod:`runner.api` and nothing else of runner's. Component hooks return a list of
:class:`~runner.api.Component`: a recipe names a component by its ``name``, and its section is validated against
the component's ``params`` model before anything is built. ``runner_recipe_sections`` adds recipe sections a
plugin reads itself. Lifecycle hooks observe a run through a :class:`~runner.api.RunView`.

Built-in components in ``plugins/`` are registered exactly as third-party ones are, so they double as examples.
Installed packages register under the entry-point group ``runner``; a plugin may declare the plugin API it was
written for with a module attribute ``RUNNER_API = "1.0"`` (a different major version is refused with a message).
A hook implementation may take fewer arguments than its hook, named as here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from runner.types import Component, Section
    from runner.lifecycle import RunView

hookspec = pluggy.HookspecMarker("runner")
hookimpl = pluggy.HookimplMarker("runner")


@hookspec
def runner_datasets() -> list[Component]:
    """Datasets this plugin provides.

    ``build(params, preprocess, base_dir)`` returns :class:`~runner.api.Data`: the class names and train/val torch
    datasets yielding ``(image_tensor, class_index)`` with transforms that follow ``preprocess`` (the backbone's
    :class:`~runner.api.Preprocess`), plus loader settings. ``base_dir`` is the recipe file's folder, for relative
    paths. A dataset component may also give ``classes(params, base_dir)``, returning the class names without
    reading any image: ``runner plan`` then builds the model without the data.
    """


@hookspec
def runner_backbones() -> list[Component]:
    """Backbones this plugin provides.

    ``build(params)`` returns :class:`~runner.api.Backbone`: a pretrained ``nn.Module``, the
    :class:`~runner.api.Preprocess` its weights expect and, optionally, its layer groups. The engine then replaces
    the classifier head for the dataset's classes (``Backbone.replace_head``).
    """


@hookspec
def runner_freeze_policies() -> list[Component]:
    """Freeze policies this plugin provides.

    ``build(params, backbone)`` runs after the head is replaced and returns :class:`~runner.api.FreezePlan`: the
    optimizer's parameter groups for the whole run and, for policies that unfreeze over time, an ``on_epoch(epoch)``
    callback. Build it with :func:`~runner.api.freeze_plan` from the parameter names that train (``params`` a
    :class:`~runner.api.FreezeParams`), and ``bn``, ``backbone_lr_mult`` and ``layer_decay`` work as for the
    built-in policies. ``backbone.groups()`` gives the layer groups.
    """


@hookspec
def runner_optimizers() -> list[Component]:
    """Optimizers this plugin provides. ``build(params, param_groups)`` returns a ``torch.optim.Optimizer``; each
    group's lr is then multiplied by its ``lr_scale``."""


@hookspec
def runner_schedulers() -> list[Component]:
    """LR schedulers this plugin provides.

    ``build(params, optimizer, epochs, steps_per_epoch)`` returns :class:`~runner.api.Schedule`: a scheduler (or
    ``None``) and whether it steps once per ``"epoch"`` or per optimizer ``"step"``.
    """


@hookspec
def runner_recipe_sections() -> list[Section]:
    """Recipe sections this plugin reads: each a :class:`~runner.api.Section` with a name (the recipe's top-level
    key) and a params model. The section is validated with file:line like a component's, shown by ``runner show
    settings``, and read in lifecycle hooks with ``run.section(name)`` (None when the recipe leaves it off)."""


@hookspec
def runner_run_start(run: RunView) -> None:
    """Called once the run is built and its folder made, before the first epoch (also when resumed)."""


@hookspec
def runner_batch_end(run: RunView, epoch: int, phase: str, batch: int, size: int) -> None:
    """Called after each batch of ``phase`` (``"train"`` or ``"val"``); ``size`` is its number of images."""


@hookspec
def runner_epoch_end(run: RunView, epoch: int, metrics: dict[str, Any]) -> None:
    """Called after validation with the epoch's metrics: ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``,
    ``val_acc``, ``lr`` (a list, one per parameter group, see ``run.group_names``), ``seconds``, ``images_per_s``
    and ``best`` (whether val accuracy improved)."""


@hookspec
def runner_run_end(run: RunView, summary: dict[str, Any]) -> None:
    """Called once training ends with the summary: ``best_val_acc``, ``best_epoch``, ``epochs``, ``epochs_run``,
    ``stopped`` (a reason or None), ``wall_s``, ``folder``, ``classes``."""
