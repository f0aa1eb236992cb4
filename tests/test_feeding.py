"""Feeding the trunk's pass: batches transformed in the pass's thread or one ahead in a background thread, chosen by
measuring both on the pass's own batches, with every batch fed once and in order whichever way wins."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from runner import engine, feature_cache, feeding
from runner.plugins import load_catalog
from runner.recipes import load
from test_engine import write_recipe
from test_speed_paths import NO_AUGMENT

BATCHES = 20


@pytest.fixture(autouse=True)
def short_windows(monkeypatch):
    """Windows of 4 batches, not of a second as well: these passes are short."""
    monkeypatch.setattr(feeding, "WINDOW_S", 0.0)


def batches(make_s: float = 0.0, off_main_s: float = 0.0):
    """(images, labels) batches numbered by their labels; each takes ``make_s`` to make, ``off_main_s`` more when
    made outside the main thread (a transform that competes with the consumer's threads there)."""
    for i in range(BATCHES):
        time.sleep(make_s + (off_main_s if threading.current_thread() is not threading.main_thread() else 0.0))
        yield torch.zeros(2, 1), torch.tensor([i, i])


def consume(fed, compute_s: float) -> list[int]:
    order = []
    for _, labels in fed:
        time.sleep(compute_s)  # the trunk on the batch (sleep releases the GIL, as the trunk's kernels do)
        order.append(int(labels[0]))
    return order


def test_ahead_gives_every_item_in_order_and_hands_back_the_rest():
    ahead = feeding.Ahead(iter(range(50)))
    assert [next(ahead) for _ in range(10)] == list(range(10))
    items, ended, error = ahead.stop()
    assert not ahead.worker.is_alive() and error is None and not ended
    rest = iter(range(10 + len(items), 50))  # the source goes on after what was handed back
    assert list(range(10)) + items + list(rest) == list(range(50))

    done = feeding.Ahead(iter(range(3)))
    assert list(done) == [0, 1, 2] and list(done) == []  # ended stays ended


def test_an_error_in_the_thread_reaches_the_consumer_after_the_items_before_it():
    def broken():
        yield 1
        raise OSError("disk went away")

    got = []
    with pytest.raises(OSError, match="disk went away"):
        for item in feeding.Ahead(broken()):
            got.append(item)
    assert got == [1]
    ahead = feeding.Ahead(broken())
    time.sleep(0.05)
    items, ended, error = ahead.stop()
    assert items == [1] and isinstance(error, OSError) and not ended


def test_slow_transforms_are_fed_ahead_and_the_verdict_holds_for_later_passes():
    verdict = {}
    assert consume(feeding.feed(batches(make_s=0.01), verdict), compute_s=0.01) == list(range(BATCHES))
    assert verdict["ahead"] is True and verdict["feed_rates"][1] > verdict["feed_rates"][0]
    later = feeding.feed(batches(), verdict)
    assert consume(later, 0.0) == list(range(BATCHES))


def test_feeding_ahead_that_measures_slower_goes_back_without_losing_a_batch():
    verdict = {}
    fed = feeding.feed(batches(make_s=0.002, off_main_s=0.03), verdict)
    assert consume(fed, compute_s=0.005) == list(range(BATCHES))
    assert verdict["ahead"] is False and verdict["feed_rates"][0] > verdict["feed_rates"][1]
    assert not [t for t in threading.enumerate() if t.name == "runner-prefetch"]


def test_a_pass_too_short_to_measure_decides_nothing_and_a_consumer_may_stop_early():
    verdict = {}
    short = list(feeding.feed(iter([(torch.zeros(1), torch.tensor([0]))] * 5), verdict))
    assert len(short) == 5 and verdict == {}
    early = feeding.feed(batches(make_s=0.01), {"ahead": True})
    next(early)
    early.close()  # the background thread stops with it
    assert not [t for t in threading.enumerate() if t.name == "runner-prefetch" and t.is_alive()]


def test_a_measured_pass_over_real_images_gives_the_plain_pass_features(tmp_path, imagefolder, monkeypatch):
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(feature_cache, "EXTRACT_CPU_BATCH", 1)  # 16 training images: enough batches to measure
    dataset = {"name": "imagefolder", "root": str(imagefolder), **NO_AUGMENT}
    run = engine.build(load(write_recipe(tmp_path, imagefolder, dataset=dataset, cache="features",
                                         trunk_runtime="torch")), load_catalog())
    info = {}
    features, labels = feature_cache.extract(run, run.data.train, 1, info=info)
    assert info["feed"]["ahead"] in (True, False), info
    assert labels.tolist() == list(run.data.train.targets)
    plain, _ = feature_cache.extract(run, run.data.train, 1, info={"feed": {"ahead": False}})
    torch.testing.assert_close(features, plain, rtol=0, atol=1e-5)
