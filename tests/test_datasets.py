"""The imagefolder dataset: finding its root, downloading it once, and the errors a bad folder gives."""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
import zipfile

import pytest
import torch

from conftest import make_imagefolder
from runner.types import Preprocess
from runner.datafiles import find_root
from runner.errors import RunnerError
from runner.plugins import load_catalog


def build(root, base_dir, **params):
    component = load_catalog().get("dataset", "imagefolder")
    return component.build(component.params(root=str(root), **params), Preprocess(size=32, resize=36), base_dir)


def test_root_found_next_to_the_recipe_in_cwd_and_on_the_search_path(tmp_path, monkeypatch):
    recipe_dir, cwd, far = tmp_path / "recipes", tmp_path / "cwd", tmp_path / "far"
    for folder in (recipe_dir, cwd, far):
        folder.mkdir()
    monkeypatch.chdir(cwd)
    (far / "ants").mkdir()
    with pytest.raises(RunnerError, match="'ants' not found in .*RUNNER_DATA_PATH"):
        find_root("ants", recipe_dir)
    monkeypatch.setenv("RUNNER_DATA_PATH", f"{tmp_path / 'none'}:{far}")
    assert find_root("ants", recipe_dir) == far / "ants"
    (cwd / "ants").mkdir()
    assert find_root("ants", recipe_dir) == cwd / "ants"
    (recipe_dir / "ants").mkdir()
    assert find_root("ants", recipe_dir) == recipe_dir / "ants"


def test_missing_root_is_downloaded_once_from_its_url(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    source = make_imagefolder(tmp_path / "src" / "tiny_data")
    with zipfile.ZipFile(served / "tiny_data.zip", "w") as zf:
        for path in source.rglob("*"):
            zf.write(path, path.relative_to(source.parent))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tiny_data.zip"
        root = find_root("tiny_data", tmp_path, url)
        assert root == tmp_path / "data-home" / "tiny_data"
        assert sorted(p.name for p in (root / "train").iterdir()) == ["cats", "dogs"]
        shutil.rmtree(served)  # a second look finds the unpacked copy without the server's file
        assert find_root("tiny_data", tmp_path, url) == root
    finally:
        server.shutdown()


def test_download_failure_says_where_to_put_the_data(tmp_path):
    with pytest.raises(RunnerError, match=r"downloading http://example.invalid/x.zip failed .*unpack it to "):
        find_root("x", tmp_path, "http://example.invalid/x.zip")
    assert not (tmp_path / "data-home" / "x").exists()


def test_dataset_builds_classes_and_transforms_from_the_backbone(tmp_path, imagefolder):
    data = build(imagefolder, tmp_path, batch_size=2)
    assert data.classes == ["cats", "dogs"] and len(data.train) == 16 and len(data.val) == 8
    image, label = data.train[0]
    assert image.shape == (3, 32, 32) and label == 0
    assert data.val_batch_size == 64 and data.batch_size == 2


def test_normalized_tensor_gives_torchvisions_floats(hymenoptera):
    """``NormalizedTensor`` is ``ToTensor`` + ``Normalize`` in fewer steps: on the tutorial's photos (224 and 48
    pixels, RGB and made grey) it gives the same floats bit for bit, a grey image its channel three times; other
    modes go through torchvision's two; it pickles (loader workers) and refuses a zero std as Normalize does."""
    import pickle

    from PIL import Image
    from torchvision import transforms

    from runner.api import NormalizedTensor

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ours = pickle.loads(pickle.dumps(NormalizedTensor(mean, std)))
    theirs = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    photos = sorted((hymenoptera / "val" / "bees").iterdir())[:6]
    for path in photos:
        with Image.open(path) as photo:
            for size in (224, 48):
                rgb = transforms.CenterCrop(size)(transforms.Resize(size)(photo.convert("RGB")))
                grey = rgb.convert("L")
                assert ours(rgb).shape == (3, size, size) and ours(rgb).is_contiguous()
                assert torch.equal(ours(rgb), theirs(rgb))
                assert torch.equal(ours(grey), theirs(grey.convert("RGB")))
    cmyk = Image.new("CMYK", (8, 8), (10, 20, 30, 40))
    assert torch.equal(NormalizedTensor((0.5,) * 4, (0.25,) * 4)(cmyk),
                       transforms.Normalize((0.5,) * 4, (0.25,) * 4)(transforms.ToTensor()(cmyk)))
    with pytest.raises(ValueError, match="std evaluated to zero"):
        NormalizedTensor(mean, (0.2, 0.0, 0.2))


def test_missing_split_empty_split_and_class_mismatch(tmp_path, imagefolder):
    with pytest.raises(RunnerError, match="split folder .*test does not exist"):
        build(imagefolder, tmp_path, val="test")
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    (empty / "val" / "a").mkdir(parents=True)
    with pytest.raises(RunnerError, match="has no images"):
        build(empty, tmp_path)
    shutil.rmtree(imagefolder / "val" / "dogs")
    make_imagefolder(imagefolder, classes=("cats", "cows"), per_split=(0, 2))
    with pytest.raises(RunnerError, match=r"only in train: \['dogs'\], only in val: \['cows'\]"):
        build(imagefolder, tmp_path)


def test_preloaded_images_are_decoded_once_and_give_the_same_val_tensors(tmp_path):
    data = make_imagefolder(tmp_path / "big", per_split=(3, 3), size=(120, 90))
    plain = build(data, tmp_path, preload=False, augment="none")
    kept = build(data, tmp_path, preload=True, augment="none")
    for i in range(len(plain.val)):
        assert torch.equal(plain.val[i][0], kept.val[i][0])
        assert torch.equal(plain.train[i][0], kept.train[i][0])
    loader = kept.val.loader
    assert len(loader.images) == len(kept.val)
    first = loader(kept.val.samples[0][0])
    assert first is loader(kept.val.samples[0][0]) and min(first.size) == 36  # kept downsized to the resize
    assert build(data, tmp_path, preload="auto").train.loader.shorter == 72  # 2x the resize when augmenting
