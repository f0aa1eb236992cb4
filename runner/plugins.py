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
from runner.components import HOOK_OF_KIND, KINDS, Component
from runner.errors import RunnerError, did_you_mean

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


@dataclass
class Plugins:
    pm: pluggy.PluginManager
    info: dict[str, PluginInfo] = field(default_factory=dict)

    @property
    def failures(self) -> list[PluginInfo]:
        return [i for i in self.info.values() if i.error]


def _register(plugins: Plugins, name: str, source: str, load, strict: bool) -> None:
    try:
        plugin = load()
        if plugins.pm.is_registered(plugin):
            return
        plugins.pm.register(plugin, name=name)
        try:
            plugins.pm.check_pending()  # a hookimpl whose name matches no hook
        except Exception:
            plugins.pm.unregister(plugin)
            raise
        plugins.info[name] = PluginInfo(name, source)
    except Exception as exc:  # a broken plugin: name it, keep the rest
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        message = f"plugin {name} ({source}) failed to load: {type(exc).__name__}: {detail}"
        if strict:
            raise RunnerError(message) from None
        plugins.info[name] = PluginInfo(name, source, message)


def _load_file(path: Path):
    name = f"runner_local_plugin_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def plugin_manager(extra: list[str] | tuple[str, ...] = (), strict: bool = False) -> Plugins:
    """The hook specs, the built-ins, installed plugins (unless disabled) and ``extra`` files or modules."""
    pm = pluggy.PluginManager("runner")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    for name in BUILTIN_PLUGINS:
        _register(plugins, name, "built-in", lambda n=name: importlib.import_module(n), strict=True)
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
            _register(plugins, name, str(path), lambda p=path: _load_file(p), strict)
        else:
            _register(plugins, ref, "module", lambda r=ref: importlib.import_module(r), strict)
    return plugins


@dataclass(frozen=True)
class Entry:
    kind: str
    component: Component
    plugin: str


class Catalog:
    """Every component by kind and name, with the plugin that provides it.

    Two plugins offering one name are both kept: the bare name is then ambiguous and ``plugin:name`` picks one.
    """

    def __init__(self, plugins: Plugins | pluggy.PluginManager):
        self.plugins = plugins if isinstance(plugins, Plugins) else Plugins(plugins)
        self.pm = self.plugins.pm
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.clashes: dict[str, dict[str, list[Entry]]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            for impl in getattr(self.pm.hook, HOOK_OF_KIND[kind]).get_hookimpls():  # in registration order
                try:
                    components = impl.function() or []
                except Exception as exc:
                    raise RunnerError(f"plugin {impl.plugin_name}: {impl.function.__name__}() failed: "
                                      f"{type(exc).__name__}: {exc}") from None
                for component in components:
                    entry = Entry(kind, component, impl.plugin_name)
                    seen = self.entries[kind].get(component.name)
                    if seen is not None:
                        self.clashes[kind].setdefault(component.name, [seen]).append(entry)
                    else:
                        self.entries[kind][component.name] = entry

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


def load_catalog(extra: list[str] | tuple[str, ...] = (), strict: bool = False) -> Catalog:
    return Catalog(plugin_manager(extra, strict))
