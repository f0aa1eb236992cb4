"""``python -m runner.cli``: the same as ``runner``."""
from runner.cli import entry

entry()
