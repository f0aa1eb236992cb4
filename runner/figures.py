"""Matplotlib without a window, and PNGs written atomically: shared by the pictures plugin and ``evaluate``."""
from __future__ import annotations

import io
from pathlib import Path

from runner.runfolder import save_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures render to files, no window opens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, crop: bool = True) -> None:
    """Render ``fig`` to PNG at ``path`` (temp file + rename) and close it (a figure of pyplot's: a bare
    ``matplotlib.figure.Figure`` is not in pyplot's list and needs no closing). ``crop``: cut the picture to what
    is drawn, which renders the figure twice; ``crop=False`` for a figure whose fixed margins hold everything."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, **({"bbox_inches": "tight"} if crop else {}))
    if getattr(fig.canvas, "manager", None) is not None:
        pyplot().close(fig)
    save_bytes(buffer.getvalue(), path)
