"""Shared fixtures: small real image folders made on the fly, and the tutorial's images where they exist."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data"

# a tiny real timm model (356k parameters, BatchNorm, 160 px input) so end-to-end runs take seconds
TINY_BACKBONE = {"name": "timm", "model": "test_efficientnet"}


def make_imagefolder(root: Path, classes=("cats", "dogs"), per_split=(8, 4), size=(48, 40), seed=0) -> Path:
    """train/ and val/ folders of solid-colour-plus-noise JPEGs, one colour per class: learnable in an epoch."""
    rng = random.Random(seed)
    colours = [(220, 40, 40), (40, 40, 220), (40, 200, 40), (200, 200, 40)]
    for split, count in zip(("train", "val"), per_split):
        for c, name in enumerate(classes):
            folder = root / split / name
            for i in range(count):
                folder.mkdir(parents=True, exist_ok=True)
                image = Image.new("RGB", size, colours[c % len(colours)])
                pixels = image.load()
                for _ in range(60):
                    pixels[rng.randrange(size[0]), rng.randrange(size[1])] = tuple(rng.randrange(256) for _ in "rgb")
                image.save(folder / f"{name}_{i}.jpg", quality=90)
    return root


def make_fashion_mnist(folder: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """Fashion-MNIST's four gzipped idx files as Debian's dataset-fashion-mnist installs them, directly in
    ``folder``: 28x28 uint8 images of 10 balanced classes, class c a bright horizontal bar at a height of its own
    plus noise, learnable in an epoch."""
    import gzip
    import struct

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", n_train), ("t10k", n_val)):
        labels = rng.permutation(np.arange(count) % 10).astype(np.uint8)
        images = rng.integers(0, 70, size=(count, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 + 2 * int(c):5 + 2 * int(c), 3:25] = rng.integers(200, 256, dtype=np.uint8)
        for kind, magic, shape, array in (("images", 2051, (count, 28, 28), images),
                                          ("labels", 2049, (count,), labels)):
            dims = 3 if kind == "images" else 1
            with gzip.GzipFile(folder / f"{prefix}-{kind}-idx{dims}-ubyte.gz", "wb", mtime=0) as out:
                out.write(struct.pack(f">{1 + len(shape)}i", magic, *shape) + array.tobytes())
    return folder


@pytest.fixture
def imagefolder(tmp_path) -> Path:
    return make_imagefolder(tmp_path / "data")


@pytest.fixture
def hymenoptera() -> Path:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"the tutorial's images are not at {HYMENOPTERA}")
    return HYMENOPTERA


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test reaches the network: any URL goes to a closed loopback port; torch's and runner's caches are the
    test's own."""
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("RUNNER_DATA_HOME", str(tmp_path / "data-home"))
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "feature-cache"))
    monkeypatch.delenv("RUNNER_ONNX_CACHE", raising=False)  # exported trunks beside the test's own feature cache
    monkeypatch.delenv("RUNNER_DATA_PATH", raising=False)
