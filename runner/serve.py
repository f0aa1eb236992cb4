"""A trained model over HTTP: a FastAPI app with dynamic batching, served by uvicorn (``runner serve``).

    POST /v1/predict   multipart field ``files`` (repeatable): per image its file name, class, probability, top k
    GET  /v1/health    status and batching statistics
    GET  /v1/model     classes, preprocessing, the recipe, the checkpoint's sha256
    GET  /docs         the OpenAPI page FastAPI makes

Each request's images are decoded and preprocessed in a pool of decoder threads (one torch thread each; a bad file
is that request's 4xx and nothing else's), then queued one tensor per image. A single worker task takes the first image waiting,
gathers whatever else arrives within ``max_wait_ms`` (waiting only while other requests are still decoding: a
lone request runs at once) up to ``max_batch`` images, and runs them as one forward pass in a dedicated model
thread (the checkpoint's precision as :class:`~runner.inference.Trained` chose it,
channels_last for conv nets, ``torch.inference_mode``); the event loop keeps accepting meanwhile, so under load
batches fill and throughput grows far past one request at a time.

fastapi, uvicorn and python-multipart are the ``serve`` extra; this module imports them only when an app is made,
so :func:`require_extra` can say how to install them.
"""
import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import importlib
import io
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from runner.errors import RunnerError
from runner.images import BadImage, read_rgb

if TYPE_CHECKING:
    import torch

    from runner.inference import Trained

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
"""The largest image file accepted (20 MiB); larger ones are refused with 413."""
MAX_FILES = 64
"""Images one request may carry; the whole body is bounded by ``MAX_FILES * max_bytes`` before it is read."""
RECENT = 100
"""Batch sizes /v1/health lists (the most recent)."""
EXTRA = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",), "python-multipart": ("python_multipart", "multipart")}
"""The serve extra's distributions and the modules each may be imported as."""


def require_extra() -> None:
    """A one-line RunnerError saying how to install the serve extra when fastapi, uvicorn or python-multipart is
    missing."""
    missing = []
    for distribution, modules in EXTRA.items():
        for module in modules:
            try:
                importlib.import_module(module)
                break
            except ImportError:
                continue
        else:
            missing.append(distribution)
    if missing:
        from runner.inference import DISTRIBUTION

        raise RunnerError(f"runner serve needs the serve extra (missing {', '.join(missing)}): "
                          f"pip install '{DISTRIBUTION}[serve]'")


def checkpoint_file(ref: str | Path) -> Path:
    """The checkpoint a run folder (its best.pt) or a file names."""
    path = Path(ref)
    return path / "best.pt" if path.is_dir() else path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode(data: bytes, shorter: int | None = None):
    """An uploaded file as an RGB PIL image through :func:`runner.images.read_rgb` (its guards: not an image,
    truncated, more than :data:`~runner.images.MAX_PIXELS` pixels; a large JPEG decoded in draft mode down to
    ``shorter``, as training and ``runner predict`` read it); :class:`BadImage` saying why otherwise."""
    if not data:
        raise BadImage("empty file")
    try:
        return read_rgb(io.BytesIO(data), shorter=shorter)
    except BadImage:
        raise
    except Exception as exc:  # PIL raises many types (struct.error, IndexError...) for malformed files
        raise BadImage(f"corrupt ({type(exc).__name__}: {str(exc)[:100]})") from None


def uses_channels_last(trained: "Trained") -> bool:
    """channels_last pays for 2-d convolutions (unless the recipe turned it off); for other models it is moot."""
    from torch import nn

    if not trained.recipe.get("channels_last", True):
        return False
    return any(isinstance(m, nn.Conv2d) for m in trained.model.modules())


def forward(trained: "Trained", images: "torch.Tensor", channels_last: bool) -> "torch.Tensor":
    """:meth:`Trained.probabilities` with the input laid out as the model: (N, classes) for (N, 3, H, W), the
    mean over views for (N, views, 3, H, W)."""
    import torch

    autocast = (torch.autocast(trained.device.type, dtype=trained.dtype) if trained.dtype
                else contextlib.nullcontext())
    views = images.shape[1] if images.dim() == 5 else 0
    flat = images.flatten(0, 1) if views else images
    flat = flat.to(trained.device, non_blocking=True)
    if channels_last:
        flat = flat.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast:
        probs = trained.model(flat).float().softmax(1).cpu()
    return probs.view(images.shape[0], views, -1).mean(1) if views else probs


def row(classes: Sequence[str], probs: "torch.Tensor", top: int, file: str) -> dict[str, Any]:
    """One prediction, shaped as a :meth:`runner.workflow.Model.predict` row."""
    values, indices = probs.topk(min(top, len(classes)))
    return {"file": file, "class": classes[int(indices[0])], "probability": float(values[0]),
            "top": [[classes[int(i)], float(v)] for v, i in zip(values, indices)]}


class ModelFailed(Exception):
    """The forward pass raised: every request in that batch gets a 500 saying so; the server goes on."""


@dataclasses.dataclass
class Stats:
    started: float = dataclasses.field(default_factory=time.time)
    requests: int = 0
    """predict requests answered with predictions"""
    images: int = 0
    rejected: int = 0
    """requests answered 4xx"""
    failed: int = 0
    """requests answered 500 (the model raised)"""
    batches: int = 0
    max_batch_seen: int = 0
    histogram: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    recent: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=RECENT))

    def batch(self, size: int) -> None:
        self.batches += 1
        self.max_batch_seen = max(self.max_batch_seen, size)
        self.histogram[size] += 1
        self.recent.append(size)

    def as_dict(self) -> dict[str, Any]:
        done = sum(size * n for size, n in self.histogram.items())
        return {"requests": self.requests, "images": self.images, "rejected": self.rejected, "failed": self.failed,
                "batches": self.batches, "max_batch_seen": self.max_batch_seen,
                "mean_batch_size": round(done / self.batches, 3) if self.batches else 0.0,
                "batch_sizes": {str(size): self.histogram[size] for size in sorted(self.histogram)},
                "recent_batch_sizes": list(self.recent), "uptime_s": round(time.time() - self.started, 1)}


class Batcher:
    """Dynamic batching: :meth:`submit` queues images; one worker task runs them in batches of up to
    ``max_batch`` in one model thread. The first image waits up to ``max_wait_ms`` for others while any are on
    their way (:meth:`expecting`: requests still decoding); with none coming it runs at once, so a lone request
    pays no wait."""

    def __init__(self, trained: "Trained", max_batch: int = 32, max_wait_ms: float = 5.0, stats: Stats | None = None):
        self.trained, self.max_batch, self.max_wait = trained, max_batch, max_wait_ms / 1000
        self.stats = stats if stats is not None else Stats()
        self.channels_last = uses_channels_last(trained)
        self.incoming = 0
        """images being decoded that will be submitted: worth waiting for"""
        self._queue: asyncio.Queue | None = None
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self, warm_shape: tuple[int, ...] | None = None) -> None:
        """Lay the model out, run one warm-up pass of ``warm_shape`` (an image's tensor shape), start the worker."""
        import torch

        if self.channels_last:
            self.trained.model.to(memory_format=torch.channels_last)
        # the model thread keeps torch's intra-op threads (torch sets them per thread once it has run there)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner-model",
                                            initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),))
        self._queue, self._arrived = asyncio.Queue(), asyncio.Event()
        if warm_shape is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, forward, self.trained, torch.zeros(1, *warm_shape), self.channels_last)
        self._task = asyncio.create_task(self._work(), name="runner-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(ModelFailed("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def expecting(self, images: int):
        """Around the decoding of a request's ``images``: batches gathering meanwhile wait for them."""
        self.incoming += images
        try:
            yield
        finally:
            self.incoming -= images
            if self._arrived is not None:
                self._arrived.set()  # a gathering batch re-checks whether anything is still coming

    async def submit(self, images: Sequence["torch.Tensor"]) -> list["torch.Tensor"]:
        """Class probabilities for each image tensor, once the batches they fall into have run."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for image, future in zip(images, futures):
            self._queue.put_nowait((image, future))
        self._arrived.set()
        return list(await asyncio.gather(*futures))

    async def _gather(self) -> list:
        loop = asyncio.get_running_loop()
        items = [await self._queue.get()]
        deadline = loop.time() + self.max_wait
        while len(items) < self.max_batch:
            try:
                items.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if not self.incoming:  # nothing on its way: waiting would only add latency
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return [(image, future) for image, future in items if not future.done()]  # a client gone: skip its images

    def _forward(self, images: list) -> "torch.Tensor":
        import torch

        return forward(self.trained, torch.stack(images), self.channels_last)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._gather()
            if not items:
                continue
            try:
                probs = await loop.run_in_executor(self._executor, self._forward, [image for image, _ in items])
            except asyncio.CancelledError:
                for _, future in items:
                    if not future.done():
                        future.set_exception(ModelFailed("the server is shutting down"))
                raise
            except Exception as exc:  # e.g. out of memory: this batch's requests fail, the server goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(ModelFailed(f"{type(exc).__name__}: {str(exc)[:200]}"))
                continue
            self.stats.batch(len(items))
            for (_, future), p in zip(items, probs):
                if not future.done():
                    future.set_result(p)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # this thread only: torch keeps the count per thread once set


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413, by its Content-Length before
    any of it is read, or (chunked) as soon as the bytes read pass it."""

    def __init__(self, app, limit: int, stats: Stats):
        self.app, self.limit, self.stats = app, limit, stats

    async def _refuse(self, send) -> None:
        import json

        self.stats.rejected += 1
        body = json.dumps({"error": f"request body over {self.limit:,} bytes (at most {MAX_FILES} files of "
                                    f"--max-bytes each)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        seen, over, started = 0, False, False

        async def counted():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _TooLarge()
            return message

        async def watched(message):
            nonlocal started
            if over:  # the app answered its own error about the body it could not finish: answer ours instead
                if message["type"] == "http.response.start" and not started:
                    started = True
                    self.stats.rejected -= 1  # the app's handler counted its own answer
                    await self._refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                started = True
                await self._refuse(send)


def create_app(trained: "Trained", *, checkpoint: str | Path | None = None, max_batch: int = 32, max_wait_ms: float = 5.0,
               max_bytes: int = DEFAULT_MAX_BYTES, top: int = 3, on_ready: Callable[[], None] | None = None):
    """The FastAPI app serving ``trained`` (a checkpoint loaded by :func:`runner.inference.load_trained`, what
    :class:`runner.workflow.Model` wraps); ``checkpoint``: its file, for
    /v1/model's sha256 (default: best.pt of the model's folder). ``on_ready`` is called once the worker runs."""
    require_extra()
    from fastapi import FastAPI, File, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from PIL import ImageFile
    from starlette.exceptions import HTTPException

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut-off upload is an error, never a half-grey image
    checkpoint = Path(checkpoint) if checkpoint is not None else trained.folder / "best.pt"
    digest = sha256_of(checkpoint)
    transform = trained.transform()
    classes = list(trained.classes)
    stats = Stats()
    batcher = Batcher(trained, max_batch, max_wait_ms, stats)
    size = trained.preprocess.size
    warm_shape = (3, size, size) if trained.tta == "none" else ((2 if trained.tta == "flip" else 10), 3, size, size)

    # decoding and preprocessing: torch ops on one image each, run one-threaded (as DataLoader workers do), so that
    # concurrent requests do not each start a team of intra-op threads beside the model's
    decoders = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="runner-decode",
                                  initializer=_one_thread)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start(warm_shape)
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await batcher.stop()
            decoders.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="runner", lifespan=lifespan, version="1",
                  description=f"Image classification with the model of {checkpoint}: classes {', '.join(classes)}.")

    def error(status: int, message: str, **extra) -> JSONResponse:
        stats.rejected += status < 500
        stats.failed += status >= 500
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        problems = ["{}: {}".format(".".join(str(p) for p in e.get("loc", ()) if p != "body") or "request",
                                    e.get("msg", "invalid")) for e in exc.errors()]
        return error(422, "; ".join(problems))

    @app.exception_handler(Exception)
    async def crashed(request, exc):  # a bug: answered as JSON too (uvicorn logs the traceback)
        return error(500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")

    def prepare(uploads: list[tuple[str, bytes]]):
        images, problems = [], []
        for name, data in uploads:
            try:
                images.append(transform(decode(data, trained.preprocess.resize)))
            except BadImage as exc:
                problems.append({"file": name, "error": str(exc)})
            except Exception as exc:  # a transform that cannot take this image (e.g. a 1-pixel-wide one)
                problems.append({"file": name, "error": f"cannot preprocess ({type(exc).__name__}: {exc})"[:200]})
        return images, problems

    @app.post("/v1/predict", summary="Classify images",
              responses={400: {"description": "no files, or a file that is not a readable image"},
                         413: {"description": "a file over --max-bytes, or too many files"},
                         422: {"description": "a malformed request"}})
    async def predict(request: Request,
                      files: list[UploadFile] = File([], description="images: repeat the field for several"),
                      k: int | None = Query(None, alias="top", ge=1, description=f"classes per image (default {top})")):
        """Per image, in the order sent: its file name, the predicted class and probability, and the top classes
        with probabilities (``runner predict --json``'s rows). Images from concurrent requests share forward
        passes."""
        if not files:
            form = await request.form()
            fields = sorted(set(form.keys()))
            kind = request.headers.get("content-type", "").split(";")[0].strip()
            got = (f"this request has field(s) {', '.join(repr(f) for f in fields)}" if fields else
                   "this request has no form fields" if kind.startswith("multipart/") else
                   f"this request's Content-Type is {kind}, not multipart/form-data" if kind else
                   "this request has no Content-Type (multipart/form-data expected)")
            return error(400, f"no images: send them as multipart/form-data field 'files' (repeatable); {got}")
        if len(files) > MAX_FILES:
            return error(413, f"{len(files)} files: at most {MAX_FILES} per request")
        uploads = []
        for i, upload in enumerate(files):
            name = upload.filename or f"files[{i}]"
            data = await upload.read(max_bytes + 1)
            if len(data) > max_bytes:
                return error(413, f"{name}: over --max-bytes ({max_bytes:,} bytes)", file=name)
            uploads.append((name, data))
        with batcher.expecting(len(uploads)):
            images, problems = await asyncio.get_running_loop().run_in_executor(decoders, prepare, uploads)
        if problems:
            return error(400, "; ".join(f"{p['file']}: {p['error']}" for p in problems), problems=problems)
        try:
            probs = await batcher.submit(images)
        except ModelFailed as exc:
            return error(500, f"the model failed on this batch: {exc}")
        stats.requests += 1
        stats.images += len(images)
        return {"predictions": [row(classes, p, k or top, name) for p, (name, _) in zip(probs, uploads)]}

    @app.get("/v1/health", summary="Status and batching statistics")
    async def health():
        """``ok`` while the batching worker runs; requests served, batches run, their sizes (a histogram and the
        most recent), the queue."""
        running = batcher._task is not None and not batcher._task.done()
        return {"status": "ok" if running else "stopped", **stats.as_dict(), "queued": batcher.waiting,
                "max_batch": max_batch, "max_wait_ms": max_wait_ms}

    @app.get("/v1/model", summary="The model served")
    async def model_info():
        """Its classes, preprocessing, test-time augmentation, the recipe it was trained with, and the checkpoint
        file's sha256."""
        return {"classes": classes, "preprocess": dataclasses.asdict(trained.preprocess), "tta": trained.tta,
                "recipe": trained.recipe, "checkpoint": str(checkpoint), "sha256": digest,
                "device": str(trained.device), "dtype": str(trained.dtype or "float32").replace("torch.", ""),
                "channels_last": batcher.channels_last, "top": top}

    app.add_middleware(BodyLimit, limit=MAX_FILES * max_bytes + 65536, stats=stats)
    app.state.batcher, app.state.stats = batcher, stats
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port, or a one-line RunnerError (port in use, unknown host)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise RunnerError(f"--host {host}: {exc.strerror}") from None
    # proto given: asyncio sets TCP_NODELAY only on sockets that say they are TCP (else every answer written in two
    # parts waits out the client's delayed ACK, ~40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = "; choose another --port" if exc.errno in (98, 48, 10048) else ""
        raise RunnerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock


def check_options(port: int, max_batch: int, max_wait_ms: float, max_bytes: int, top: int) -> None:
    problems = [text for bad, text in [
        (not 0 <= port <= 65535, f"--port {port}: expected 0 to 65535"),
        (max_batch < 1, f"--max-batch {max_batch}: expected 1 or more"),
        (max_wait_ms < 0, f"--max-wait-ms {max_wait_ms}: expected 0 or more"),
        (max_bytes < 1, f"--max-bytes {max_bytes}: expected 1 or more"),
        (top < 1, f"--top {top}: expected 1 or more")] if bad]
    if problems:
        raise RunnerError(*problems)


def serve(ref: str | Path, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 32, max_wait_ms: float = 5.0,
          tta: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES, top: int = 3, device: str = "auto",
          plugins: Sequence[Any] = (), warn=None, announce: Callable[[str], None] = print) -> None:
    """Serve the model of a run folder or checkpoint until interrupted (what ``runner serve`` runs); ``announce``
    gets the line saying where, once requests are taken."""
    import warnings

    require_extra()
    check_options(port, max_batch, max_wait_ms, max_bytes, top)
    import uvicorn
    from PIL import Image

    from runner import inference, session

    sock = bind(host, port)  # before the model loads: a port in use fails at once
    try:
        catalog = session.catalog(*session.split_plugins(plugins), warn=warn)
        trained = inference.load_trained(ref, catalog, device=device, tta=tta)
        where = sock.getsockname()
        shown = f"[{where[0]}]" if sock.family == socket.AF_INET6 else where[0]
        url = f"http://{shown}:{where[1]}"
        dtype = str(trained.dtype or "float32").replace("torch.", "")
        app = create_app(trained, checkpoint=checkpoint_file(ref), max_batch=max_batch, max_wait_ms=max_wait_ms,
                         max_bytes=max_bytes, top=top,
                         on_ready=lambda: announce(
                             f"serving {checkpoint_file(ref)} ({len(trained.classes)} classes, {trained.device}, "
                             f"{dtype}, batches up to {max_batch} within {max_wait_ms:g} ms) at {url}; POST images "
                             f"to {url}/v1/predict, docs at {url}/docs; Ctrl-C stops"))
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5)
        # decode() refuses anything over MAX_PIXELS, below PIL's own warning threshold: its warning would be noise.
        # Set for the server's life (entered before its threads start, left after they end), then put back.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
