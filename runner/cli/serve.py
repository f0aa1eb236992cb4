"""``runner serve``: a trained model over HTTP (parsing only; the server is ``runner.serve``)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from runner.cli import app, console, handled, state, warn

DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # runner.serve.DEFAULT_MAX_BYTES, not imported: the CLI starts without torch


@app.command()
def serve(model: Annotated[str, typer.Argument(help="run folder or checkpoint file")],
          host: Annotated[str, typer.Option(metavar="HOST", help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port to listen on (0: any free one)")] = 8000,
          max_batch: Annotated[int, typer.Option(help="most images per forward pass (1: no batching)")] = 32,
          max_wait_ms: Annotated[float, typer.Option(help="how long the first image waits for others to "
                                                          "join its batch")] = 5.0,
          tta: Annotated[Optional[str], typer.Option(metavar="MODE", help="test-time augmentation: none, flip or crops "
                                                          "(default: the recipe's tta)")] = None,
          max_bytes: Annotated[int, typer.Option(help="largest image file accepted, in bytes (413 above); "
                                                      "up to 64 files per request")] = DEFAULT_MAX_BYTES,
          top: Annotated[int, typer.Option(help="classes per image in answers (a request may ask ?top=N)")] = 3,
          device: Annotated[str, typer.Option(metavar="DEVICE", help="auto (cuda if present, else cpu), cpu, cuda, cuda:N")] = "auto"):
    r"""Serve a trained model over HTTP: POST images to /v1/predict (multipart field 'files'), GET /v1/health and
    /v1/model; OpenAPI docs at /docs. Concurrent requests share forward passes (dynamic batching). Needs the serve
    extra: pip install 'runner-transfer\[serve]'."""
    from runner import serve as serving

    with handled():
        serving.require_extra()  # before torch loads: a missing extra is said at once
        serving.serve(model, host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms, tta=tta,
                      max_bytes=max_bytes, top=top, device=device, plugins=state["plugins"], warn=warn,
                      announce=lambda line: console.print(line, soft_wrap=True, highlight=False))
