"""runner's public API, version 1: everything a plugin imports, and the only module of runner's it needs.

A plugin is a module with functions marked ``@hookimpl`` named after the hooks in :mod:`runner.hookspecs`::

    from runner.api import Component, Params, Schedule, hookimpl

    @hookimpl
    def runner_schedulers():
        return [Component("halve", "halve the lr every epoch", build_halve, Params)]

What is here is a contract: names are added in minor versions and change only with the major one. A plugin
declares the version it was written for with ``RUNNER_API = "1.0"`` (or calls :func:`require`); a runner whose
major version differs, or whose minor version is older, refuses it with a message. ``docs/api.md`` documents
every name (and a test keeps it in step with this module).
"""
from __future__ import annotations

from runner.types import (Backbone, Component, Data, FreezePlan, LayerGroup, Params, Preprocess, Schedule,
                               Section, default_layer_groups, find_head, replace_last_linear)
from runner.errors import PluginError, RunnerError, did_you_mean
from runner.freezing import (FreezeParams, freeze, freeze_plan, hold_batchnorm_eval, is_held, release_batchnorm,
                             unfreeze)
from runner.hookspecs import hookimpl
from runner.lazy import lazy_names
from runner.lifecycle import RunView

API_VERSION = "1.3"
"""The plugin API's version, ``major.minor``. 1.1 added ``read_rgb(..., shorter=N)`` (JPEG draft-mode decoding);
1.2 ``to_rgb`` (a PIL image as training sees it); 1.3 ``NormalizedTensor`` (ToTensor + Normalize in fewer steps)
and ``save_figure(..., crop=False)``."""

# names whose modules import torch, torchvision or matplotlib: loaded on first use, so importing the API is cheap
_LAZY = {
    "LoaderParams": "runner.imagedata", "ImageFileParams": "runner.imagedata", "ImageFolder": "runner.imagedata",
    "image_transforms": "runner.imagedata", "finish_image_files": "runner.imagedata",
    "resolve_workers": "runner.imagedata",
    "read_rgb": "runner.images", "to_rgb": "runner.images", "walk_files": "runner.images", "BadImage": "runner.images",
    "NormalizedTensor": "runner.images",
    "find_root": "runner.datafiles", "search_path": "runner.datafiles", "data_cache": "runner.datafiles",
    "load_state_dict": "runner.weights", "load_strict": "runner.weights",
    "pyplot": "runner.figures", "save_figure": "runner.figures",
    "save_json": "runner.runfolder", "save_text": "runner.runfolder", "save_bytes": "runner.runfolder",
    "save_torch": "runner.runfolder", "append_jsonl": "runner.runfolder",
}

__all__ = [
    "API_VERSION", "require", "hookimpl",
    "Component", "Params", "Section", "Preprocess", "Backbone", "LayerGroup", "Data", "FreezePlan", "Schedule",
    "FreezeParams", "freeze", "unfreeze", "hold_batchnorm_eval", "release_batchnorm", "is_held", "freeze_plan",
    "default_layer_groups", "find_head", "replace_last_linear",
    "RunView", "RunnerError", "PluginError", "did_you_mean",
    *_LAZY,
]


def require(version: str) -> None:
    """Refuse to load unless this runner offers plugin API ``version`` (``"1.0"``): the same major version and
    at least that minor one. Raises :class:`PluginError` saying which versions differ."""
    try:
        major, minor = (int(part) for part in str(version).split("."))
    except ValueError:
        raise PluginError(f"RUNNER_API {version!r}: expected 'major.minor', e.g. '{API_VERSION}'") from None
    have_major, have_minor = (int(part) for part in API_VERSION.split("."))
    if major != have_major or minor > have_minor:
        raise PluginError(f"needs runner plugin API {major}.{minor}; this runner has {API_VERSION}"
                          + (": upgrade runner" if (major, minor) > (have_major, have_minor) else
                             ": the plugin was written for an older runner; upgrade the plugin"))


__getattr__ = lazy_names(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
