"""runner: transfer-learning runs for image classification from YAML recipes and pluggy components.

From a program or a notebook::

    import runner
    result = runner.run("recipes/extract.yaml", overrides={"epochs": 5})
    runner.load(result.folder).predict(["photo.jpg"])

Plugins import :mod:`runner.api`. Names load on first use, so ``import runner`` costs nothing.
"""
from __future__ import annotations

from runner.lazy import lazy_names

__version__ = "0.2.0"

_NAMES = {
    "run": "runner.workflow", "load": "runner.workflow", "recipe": "runner.workflow", "plan": "runner.workflow",
    "components": "runner.workflow", "Result": "runner.workflow", "Model": "runner.workflow",
    "RunnerError": "runner.errors", "PluginError": "runner.errors", "hookimpl": "runner.hookspecs",
}
__all__ = sorted(_NAMES)


__getattr__ = lazy_names(__name__, _NAMES)


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
