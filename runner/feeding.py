"""Feeding a frozen trunk's pass its batches: transformed in the thread that runs the trunk, or one batch ahead by a
background thread while the trunk computes, whichever this machine and these images run faster.

Neither wins everywhere. On 2 cores the trunk's own threads already keep both cores busy on large images, and a
transform thread beside them slows them down (ants/bees at 224 px in ONNX Runtime: ~3% slower with it); on small
images the trunk's short operations leave cores idle that the transforms can use (Fashion-MNIST at 64 px: ~10%
faster with it). So a pass measures both on its own batches, after the first few (which choose the trunk's runtime),
and keeps the faster for the rest of the run's passes. Nothing is computed twice, and no batch is lost or reordered
when it goes back to one thread.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterable, Iterator

SETTLE_BATCHES = 4
"""Batches fed before measuring: the trunk runtime's trial runs on them (:class:`runner.onnx_trunk.RuntimeTrial`)."""
WINDOW_BATCHES = 4
WINDOW_S = 1.0
"""Each way of feeding is timed over at least ``WINDOW_BATCHES`` batches and ``WINDOW_S`` seconds: small images pass
hundreds a second, and four of their batches are too short a time to tell the two apart."""


class Ahead:
    """The items of ``source`` produced by a background thread into a queue of two (PIL's and torch's transforms
    release the GIL, so they run beside the trunk). :meth:`stop` hands back what was produced and not consumed."""

    _END = object()

    def __init__(self, source: Iterator):
        self.source, self.ahead, self.halt = source, queue.Queue(maxsize=2), threading.Event()
        self.worker = threading.Thread(target=self._produce, daemon=True, name="runner-prefetch")
        self.worker.start()

    def _produce(self) -> None:
        try:
            while not self.halt.is_set():
                try:
                    item = next(self.source)
                except StopIteration:
                    self.ahead.put(self._END)
                    return
                self.ahead.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            self.ahead.put(exc)

    def __iter__(self) -> Ahead:
        return self

    def __next__(self):
        item = self.ahead.get()
        if item is self._END:
            self.ahead.put(item)  # stays ended
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> tuple[list, bool, BaseException | None]:
        """Stop the thread; ``(items, ended, error)``: what it produced that was not consumed, in order, whether the
        source ended (else it goes on after those items), and the error it met after them, if any."""
        self.halt.set()
        pending = []
        while self.worker.is_alive() or not self.ahead.empty():  # taking items unblocks a thread waiting to put
            try:
                pending.append(self.ahead.get(timeout=0.01))
            except queue.Empty:
                pass
        ended = bool(pending) and pending[-1] is self._END
        items = [item for item in pending if item is not self._END]
        error = items.pop() if items and isinstance(items[-1], BaseException) else None
        return items, ended, error


def _untimed(batches: Iterator, count: int) -> Iterator:
    """``count`` batches of ``batches``; returns whether all came (False: ``batches`` ended first)."""
    for _ in range(count):
        batch = next(batches, None)
        if batch is None:
            return False
        yield batch
    return True


def _timed(batches: Iterator) -> Iterator:
    """Batches of ``batches`` for a window (:data:`WINDOW_BATCHES`, :data:`WINDOW_S`); returns the images per second
    from asking for the first to the consumer's being done with the last, or None when ``batches`` ends first."""
    images, count, started = 0, 0, time.perf_counter()
    while count < WINDOW_BATCHES or time.perf_counter() - started < WINDOW_S:
        batch = next(batches, None)
        if batch is None:
            return None
        images, count = images + len(batch[0]), count + 1
        yield batch
    return images / max(time.perf_counter() - started, 1e-9)


def feed(batches: Iterable, verdict: dict[str, Any]) -> Iterator:
    """The batches of ``batches`` (an (images, labels) loader in this process), fed whichever way ``verdict`` says
    (``verdict["ahead"]``), or measured and decided on them and written to ``verdict`` (``ahead``, and ``feed_rates``:
    images/s in this thread and ahead) for the run's later passes. A pass too short to measure feeds them in this
    thread and decides nothing."""
    source = iter(batches)
    ahead = None
    try:
        if verdict.get("ahead") is False:
            yield from source
            return
        if verdict.get("ahead") is None:
            if not (yield from _untimed(source, SETTLE_BATCHES)):
                return
            here = yield from _timed(source)
            if here is None:
                return
            ahead = Ahead(source)
            if not (yield from _untimed(ahead, 1)):  # its first batch waits for a whole transform: not timed
                return
            there = yield from _timed(ahead)
            if there is None:
                return
            verdict.update(ahead=there > here, feed_rates=(here, there))
            if not verdict["ahead"]:
                items, ended, error = ahead.stop()
                ahead = None
                yield from items
                if error is not None:
                    raise error
                if not ended:
                    yield from source
                return
        ahead = ahead or Ahead(source)
        yield from ahead
    finally:
        if ahead is not None:  # a consumer that stops early does not leave the thread running
            ahead.stop()
