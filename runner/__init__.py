"""runner: transfer-learning runs for image classification from YAML recipes and pluggy components."""
from runner.hookspecs import hookimpl

__all__ = ["hookimpl"]
__version__ = "0.1.0"
