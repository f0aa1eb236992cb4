"""Names a module offers but imports only on first use (PEP 562), so that importing it stays cheap: ``runner`` and
``runner.api`` hand out functions whose modules import torch, torchvision or matplotlib."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_names(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``module`` resolving each of ``names`` (name -> the module defining it) on first
    access, then keeping it as an ordinary attribute."""

    def __getattr__(name: str) -> Any:
        source = names.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        setattr(sys.modules[module], name, value)
        return value

    return __getattr__
