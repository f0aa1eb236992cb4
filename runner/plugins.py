"""The PluginManager and the catalog of components it yields.

Built-in plugins are the modules in ``BUILTIN_PLUGINS``, registered exactly as third-party ones (pytest's
rule). Installed packages load through the entry-point group ``runner`` unless ``RUNNER_DISABLE_PLUGIN_AUTOLOAD``
is set; one-off plugin files or modules load from ``--plugin`` and a recipe's ``plugins:`` list. A plugin that
fails to load is recorded with its error and the rest still load (``strict`` makes it fatal).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from runner import hookspecs
from runner.types import HOOK_OF_KIND, KINDS, Component, Section
from runner.errors import PluginError, RunnerError, did_you_mean

BUILTIN_PLUGINS = (
    "runner_plugins.datasets",
    "runner_plugins.label_files",
    "runner_plugins.torchvision_datasets",
    "runner_plugins.backbones",
    "runner_plugins.freeze",
    "runner_plugins.optim",
    "runner_plugins.metrics_log",
    "runner_plugins.early_stopping",
    "runner_plugins.pictures",
)
ENTRY_POINT_GROUP = "runner"


@dataclass
class PluginInfo:
    """Where a registered (or failed) plugin came from, for ``runner plugins`` and error messages."""

    name: str
    source: str
    error: str | None = None
    required: bool = False
    """Named by the command line or the recipe: failing to load it is an error, not a warning."""


@dataclass
class Plugins:
    pm: pluggy.PluginManager
    info: dict[str, PluginInfo] = field(default_factory=dict)

    @property
    def failures(self) -> list[PluginInfo]:
        return [i for i in self.info.values() if i.error]

    def fail(self, name: str, message: str) -> None:
        """Record ``name`` as failed and take it out of every hook; a required plugin's failure is an error."""
        info = self.info.setdefault(name, PluginInfo(name, "?"))
        info.error = message
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        if info.required:
            raise PluginError(message)


def _one_line(exc: BaseException) -> str:
    detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _register(plugins: Plugins, name: str, source: str, load, required: bool) -> None:
    plugins.info[name] = PluginInfo(name, source, required=required)
    try:
        plugin = load()
        declared = getattr(plugin, "RUNNER_API", None)
        if declared is not None:
            from runner.api import require
            require(declared)
        if plugins.pm.is_registered(plugin):
            del plugins.info[name]
            return
        plugins.pm.register(plugin, name=name)
        try:
            plugins.pm.check_pending()  # a hookimpl whose name matches no hook
        except Exception:
            plugins.pm.unregister(plugin)
            raise
    except (Exception, SystemExit) as exc:  # a broken plugin: name it, keep the rest (sys.exit at import too)
        plugins.fail(name, f"plugin {name} ({source}) failed to load: {_one_line(exc)}")


def _load_file(path: Path):
    name = f"runner_local_plugin_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def plugin_manager(extra: list[str] | tuple[str, ...] = (), strict: bool = False,
                   objects: list | tuple = (), lenient: bool = False) -> Plugins:
    """The hook specs, the built-ins, installed plugins (unless disabled), ``extra`` files or modules and plugin
    ``objects`` (modules or instances, e.g. from a notebook). Built-ins and ``extra`` are required: failing to
    load them is an error; an installed plugin that fails is recorded and left out (``strict``: an error too).
    ``lenient`` records a failing ``extra`` too instead of raising (``runner plugins`` shows every failure)."""
    pm = pluggy.PluginManager("runner")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    for name in BUILTIN_PLUGINS:
        _register(plugins, name, "built-in", lambda n=name: importlib.import_module(n), required=True)
    if not os.environ.get("RUNNER_DISABLE_PLUGIN_AUTOLOAD"):
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.value
            _register(plugins, ep.name, dist, ep.load, strict)
    files: set[Path] = set()
    for ref in extra:
        path = Path(ref)
        if ref.endswith(".py") or path.exists():
            if not path.is_file():
                raise RunnerError(f"plugin file {ref} does not exist")
            if path.resolve() in files:  # named twice (--plugin and a recipe's plugins:): loaded once
                continue
            files.add(path.resolve())
            name = path.stem
            for n in range(2, 1000):  # another file of the same name elsewhere
                if name not in plugins.info:
                    break
                name = f"{path.stem}-{n}"
            _register(plugins, name, str(path), lambda p=path: _load_file(p), required=not lenient or strict)
        else:
            _register(plugins, ref, "module", lambda r=ref: importlib.import_module(r), required=not lenient or strict)
    for obj in objects:
        name = getattr(obj, "__name__", None) or f"{type(obj).__name__}-{id(obj):x}"
        _register(plugins, name, "object", lambda o=obj: o, required=True)
    return plugins


@dataclass(frozen=True)
class Entry:
    kind: str
    component: Component
    plugin: str


class Catalog:
    """Every component by kind and name, with the plugin that provides it, and every plugin recipe section.

    Component hooks are called through pluggy one plugin at a time, so a plugin whose hook fails or returns
    something other than a list of components is recorded as failed (an error if it is required) and the rest
    still work. Two plugins offering one name are both kept: the bare name is then ambiguous and
    ``plugin:name`` picks one.
    """

    def __init__(self, plugins: Plugins | pluggy.PluginManager):
        self.plugins = plugins if isinstance(plugins, Plugins) else Plugins(plugins)
        self.pm = self.plugins.pm
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.clashes: dict[str, dict[str, list[Entry]]] = {kind: {} for kind in KINDS}
        self.sections: dict[str, tuple[Section, str]] = {}
        """Recipe section name -> (the section, the plugin that owns it)."""
        for kind in KINDS:
            for plugin, components in self._collect(HOOK_OF_KIND[kind], Component):
                for component in components:
                    entry = Entry(kind, component, plugin)
                    seen = self.entries[kind].get(component.name)
                    if seen is not None:
                        self.clashes[kind].setdefault(component.name, [seen]).append(entry)
                    else:
                        self.entries[kind][component.name] = entry
        from runner.recipes import RESERVED_KEYS

        for plugin, sections in self._collect("runner_recipe_sections", Section):
            for section in sections:
                owner = "a core setting" if section.name in RESERVED_KEYS else (
                    f"plugin {self.sections[section.name][1]}'s" if section.name in self.sections else None)
                if owner:
                    self.plugins.fail(plugin, f"plugin {plugin}: recipe section '{section.name}' is {owner}")
                    break
                self.sections[section.name] = (section, plugin)
        failed = {info.name for info in self.plugins.failures}  # a plugin that failed in a later hook: all out
        for kind in KINDS:
            self.entries[kind] = {n: e for n, e in self.entries[kind].items() if e.plugin not in failed}
            for name, entries in list(self.clashes[kind].items()):
                kept = [e for e in entries if e.plugin not in failed]
                if len(kept) > 1:
                    self.clashes[kind][name] = kept
                else:
                    del self.clashes[kind][name]
                    if kept:
                        self.entries[kind][name] = kept[0]
        self.sections = {n: (sec, p) for n, (sec, p) in self.sections.items() if p not in failed}

    def _collect(self, hook_name: str, kind: type) -> list[tuple[str, list]]:
        """Each plugin's answer to a component hook, through pluggy, checked; failures recorded per plugin."""
        answers = []
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()  # in registration order
        for name in dict.fromkeys(impl.plugin_name for impl in impls):
            plugin = self.pm.get_plugin(name)
            if plugin is None:  # failed in an earlier hook
                continue
            others = [p for _, p in self.pm.list_name_plugin() if p is not plugin]
            try:
                results = self.pm.subset_hook_caller(hook_name, remove_plugins=others)()
            except (Exception, SystemExit) as exc:
                self.plugins.fail(name, f"plugin {name}: {hook_name}() failed: {_one_line(exc)}")
                continue
            items = [item for result in results for item in (result if isinstance(result, (list, tuple)) else
                                                             [result])]
            wrong = [item for item in items if not isinstance(item, kind)]
            if wrong:
                self.plugins.fail(name, f"plugin {name}: {hook_name}() must return a list of {kind.__name__}, "
                                        f"got {type(wrong[0]).__name__} {str(wrong[0])[:60]!r}")
                continue
            answers.append((name, items))
        return answers

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def entry(self, kind: str, name: str) -> Entry:
        """The entry for ``name`` or ``plugin:name``; a RunnerError naming the closest or the clashing plugins."""
        plugin, _, bare = name.rpartition(":")
        if plugin:
            for entry in [self.entries[kind].get(bare), *self.clashes[kind].get(bare, [])]:
                if entry is not None and entry.plugin == plugin:
                    return entry
            raise RunnerError(f"no {kind} '{bare}' from plugin '{plugin}'")
        if bare in self.clashes[kind]:
            owners = [e.plugin for e in self.clashes[kind][bare]]
            raise RunnerError(f"{kind} '{bare}' is provided by {' and '.join(owners)}; pick one as "
                              f"'{owners[0]}:{bare}'")
        try:
            return self.entries[kind][bare]
        except KeyError:
            raise RunnerError(
                f"unknown {kind} '{bare}'{did_you_mean(bare, self.entries[kind])}; "
                f"known: {', '.join(self.names(kind))}"
            ) from None

    def get(self, kind: str, name: str) -> Component:
        return self.entry(kind, name).component


def load_catalog(extra: list[str] | tuple[str, ...] = (), strict: bool = False, objects: list | tuple = (),
                 lenient: bool = False) -> Catalog:
    """The catalog of every plugin's components: see :func:`plugin_manager` for which plugins and how strictly."""
    return Catalog(plugin_manager(extra, strict, objects, lenient))
