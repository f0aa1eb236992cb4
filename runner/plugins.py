"""The PluginManager and the catalog of components it yields.

Built-in plugins are the modules in ``BUILTIN_PLUGINS``, registered exactly as third-party ones (pytest's
rule); third-party packages load through the entry-point group ``runner`` unless
``RUNNER_DISABLE_PLUGIN_AUTOLOAD`` is set.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import pluggy

from runner import hookspecs
from runner.components import HOOK_OF_KIND, KINDS, Component
from runner.errors import RunnerError, did_you_mean

BUILTIN_PLUGINS = (
    "runner_plugins.datasets",
    "runner_plugins.backbones",
    "runner_plugins.freeze",
    "runner_plugins.optim",
    "runner_plugins.metrics_log",
)


def plugin_manager() -> pluggy.PluginManager:
    """A PluginManager with the hook specs, the built-ins and (unless disabled) installed plugins."""
    pm = pluggy.PluginManager("runner")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if not os.environ.get("RUNNER_DISABLE_PLUGIN_AUTOLOAD"):
        pm.load_setuptools_entrypoints("runner")
    return pm


@dataclass(frozen=True)
class Entry:
    kind: str
    component: Component
    plugin: str


class Catalog:
    """Every component by kind and name, with the plugin that provides it."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            for impl in getattr(pm.hook, HOOK_OF_KIND[kind]).get_hookimpls():
                for component in impl.function() or []:
                    seen = self.entries[kind].get(component.name)
                    if seen is not None:
                        raise RunnerError(
                            f"{kind} '{component.name}' is provided by both '{seen.plugin}' and "
                            f"'{impl.plugin_name}': uninstall or disable one of them"
                        )
                    self.entries[kind][component.name] = Entry(kind, component, impl.plugin_name)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Component:
        """The component, or a RunnerError naming the closest ones."""
        try:
            return self.entries[kind][name].component
        except KeyError:
            raise RunnerError(
                f"unknown {kind} '{name}'{did_you_mean(name, self.entries[kind])}; "
                f"known: {', '.join(self.names(kind))}"
            ) from None


def load_catalog() -> Catalog:
    return Catalog(plugin_manager())
