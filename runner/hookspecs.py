"""The plugin contract: every hook a runner plugin may implement, documented where it is declared.

A plugin is any module or object with functions marked ``@runner.hookimpl`` whose names match the hooks
below. Component hooks return a list of :class:`runner.components.Component`; the recipe names a component
by its ``name`` and its section is validated against the component's ``params`` model before anything runs.
Lifecycle hooks observe a run: ``run`` is the :class:`runner.engine.Run` being trained.

Built-in components in ``plugins/`` are registered exactly as third-party ones are, so they double as
examples. Third-party packages register under the entry-point group ``runner``.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("runner")
hookimpl = pluggy.HookimplMarker("runner")


@hookspec
def runner_datasets():
    """Datasets this plugin provides.

    ``build(params, preprocess, base_dir)`` returns :class:`runner.components.Data`: the class names and
    train/val torch datasets whose transforms follow ``preprocess`` (the backbone's), plus loader settings.
    ``base_dir`` is the recipe file's folder, for resolving relative paths.
    """


@hookspec
def runner_backbones():
    """Backbones this plugin provides.

    ``build(params)`` returns :class:`runner.components.Backbone`: a pretrained ``nn.Module`` and the
    :class:`runner.components.Preprocess` its weights expect. The engine then replaces the classifier head
    for the dataset's classes (``Backbone.reset_head``, generic by default).
    """


@hookspec
def runner_freeze_policies():
    """Freeze policies this plugin provides.

    ``build(params, backbone)`` runs after the head is replaced; it sets ``requires_grad``, holds frozen
    BatchNorm layers in eval mode, and returns :class:`runner.components.FreezePlan`: the optimizer's
    parameter groups for the whole run (dicts with ``params``, ``name``, ``lr_scale``) and, for policies that
    unfreeze over time, an ``on_epoch(epoch)`` callback. ``backbone.groups()`` gives the layer groups.
    """


@hookspec
def runner_optimizers():
    """Optimizers this plugin provides. ``build(params, param_groups)`` returns a ``torch.optim.Optimizer``."""


@hookspec
def runner_schedulers():
    """LR schedulers this plugin provides.

    ``build(params, optimizer, epochs, steps_per_epoch)`` returns :class:`runner.components.Schedule`: a
    scheduler (or ``None``) and whether it steps once per ``"epoch"`` or per ``"step"``.
    """


@hookspec
def runner_run_start(run):
    """Called once the run is built, before the first epoch."""


@hookspec
def runner_batch_end(run, epoch, phase, batch, size):
    """Called after each batch of ``phase`` ("train" or "val"); ``size`` is its number of images."""


@hookspec
def runner_epoch_end(run, epoch, metrics):
    """Called after validation with the epoch's metrics dict (losses, accuracies, lr, seconds, images/s)."""


@hookspec
def runner_run_end(run, summary):
    """Called once training ends, with the summary dict (best val accuracy, its epoch, wall time, folder)."""
