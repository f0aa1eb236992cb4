"""The one way to load a recipe with its plugins, for every command and the Python API: run, resume, plan,
validate, lr-find, sweep.

The catalog holds the built-ins, installed plugins, the ``--plugin`` files or modules, plugin objects (from a
program) and the recipe's own ``plugins:``; the recipe is validated against it. A run folder's recipe is loaded
without running plugin files it names: a folder someone sent you must not run their code unless you say so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from runner.errors import RunnerError
from runner.plugins import Catalog, load_catalog
from runner.recipes import Recipe
from runner.recipes import load as load_recipe

Warn = Callable[[str], None]


def split_plugins(plugins: Sequence) -> tuple[list[str], list]:
    """``plugins`` as the Python API takes them (files or modules by name, and plugin objects): (names, objects)."""
    refs = [str(p) for p in plugins if isinstance(p, (str, Path))]
    return refs, [p for p in plugins if not isinstance(p, (str, Path))]


def catalog(plugins: Sequence[str] = (), objects: Sequence = (), strict: bool = False,
            warn: Warn | None = None, lenient: bool = False) -> Catalog:
    """Every plugin's components; installed plugins that fail are left out and passed to ``warn``; ``plugins``
    and ``objects`` are required (an error if they fail) unless ``lenient``."""
    made = load_catalog(list(plugins), strict=strict, objects=list(objects), lenient=lenient)
    for failure in made.plugins.failures:
        if warn is not None:
            warn(failure.error)
    return made


def load(ref: str | Path, overrides: Sequence[str] = (), plugins: Sequence[str] = (), objects: Sequence = (),
         origin: Path | None = None, label: str = "--set", warn: Warn | None = None,
         recipe_plugins: bool = True, catalog_for: Callable[[Recipe], Catalog] | None = None
         ) -> tuple[Recipe, Catalog]:
    """A recipe (a file or a packaged name) with ``overrides``, validated against a catalog holding ``plugins``,
    ``objects`` and (with ``recipe_plugins``) the recipe's own ``plugins:``; the recipe and that catalog.
    ``catalog_for`` (a function of the loaded recipe) replaces how the catalog is made, e.g. to share one."""
    made: dict = {}

    def make(recipe: Recipe) -> Catalog:
        if catalog_for is not None:
            made["catalog"] = catalog_for(recipe)
        else:
            own = recipe.plugin_refs() if recipe_plugins else []
            made["catalog"] = catalog([*plugins, *own], objects, warn=warn)
        return made["catalog"]

    recipe = load_recipe(ref, list(overrides), make, origin=origin, label=label)
    return recipe, made["catalog"]


def load_run_folder(folder: str | Path, plugins: Sequence[str] = (), objects: Sequence = (),
                    warn: Warn | None = None) -> tuple[Recipe, Catalog, dict]:
    """A run folder's resolved recipe (relative paths taken from the recipe file it was made from), its catalog
    and its last.pt. Plugin files the recipe names load only when ``plugins`` names them too."""
    from runner import checkpoint

    state = checkpoint.read_last(folder)
    origin = Path(state.get("recipe_path") or Path(folder) / "recipe.yaml")
    given = {str(Path(p).resolve()) for p in plugins if p.endswith(".py") or Path(p).exists()}

    def trusted_catalog(recipe: Recipe) -> Catalog:
        files = [ref for ref in recipe.plugin_refs() if ref.endswith(".py") or Path(ref).exists()]
        untrusted = [ref for ref in files if str(Path(ref).resolve()) not in given]
        if untrusted:
            flags = " ".join(f"--plugin {ref}" for ref in untrusted)
            raise RunnerError(f"{folder}: the run used plugin file(s) {', '.join(untrusted)}; resume runs no code "
                              f"from a run folder unless you name it: add {flags} if you trust it")
        modules = [ref for ref in recipe.plugin_refs() if ref not in files]  # installed modules: the user's own
        return catalog([*plugins, *modules], objects, warn=warn)

    recipe, made = load(Path(folder) / "recipe.yaml", origin=origin, catalog_for=trusted_catalog)
    return recipe, made, state
