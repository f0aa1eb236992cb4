"""The component kinds: a module of its own so that the command line can name them without importing pydantic."""

KINDS = ("dataset", "backbone", "freeze", "optimizer", "scheduler")
"""Component kinds, in the order a recipe is built; each has a ``runner_<plural>`` hook."""

HOOK_OF_KIND = {
    "dataset": "runner_datasets",
    "backbone": "runner_backbones",
    "freeze": "runner_freeze_policies",
    "optimizer": "runner_optimizers",
    "scheduler": "runner_schedulers",
}
