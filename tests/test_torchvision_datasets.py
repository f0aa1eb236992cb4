"""The torchvision dataset: torchvision's classification datasets by name from local files, Debian's layout of
Fashion-MNIST unpacked once, image_size, stratified subsets, and the errors missing or misnamed data give."""
from __future__ import annotations

import collections
import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import TINY_BACKBONE, make_fashion_mnist
from runner.cli import app
from runner.types import Preprocess
from runner.errors import RunnerError
from runner.plugins import load_catalog
from runner_plugins.torchvision_datasets import stratified_subset

cli = CliRunner()
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def build(root, base_dir, preprocess=Preprocess(size=32, resize=36), **params):
    component = load_catalog().get("dataset", "torchvision")
    params = {"dataset": "FashionMNIST", "workers": 0, **params}
    return component.build(component.params(root=str(root), **params), preprocess, base_dir)


@pytest.fixture
def fashion(tmp_path) -> Path:
    return make_fashion_mnist(tmp_path / "fashion-mnist", 200, 50)


def test_debian_layout_is_unpacked_once_and_reused(tmp_path, fashion):
    raw = tmp_path / "data-home" / "torchvision" / "FashionMNIST" / "raw"
    build(fashion, tmp_path)
    unpacked = {name: raw / name for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    assert all(path.is_file() for path in unpacked.values())
    assert (raw / "train-images-idx3-ubyte").stat().st_size == 16 + 200 * 28 * 28
    mtimes = {name: path.stat().st_mtime_ns for name, path in unpacked.items()}
    data = build(fashion, tmp_path)
    assert {name: path.stat().st_mtime_ns for name, path in unpacked.items()} == mtimes
    assert not [p.name for p in raw.iterdir() if p.name.startswith(".") and p.name != ".sources.json"]
    before = data.train[0][0]
    make_fashion_mnist(fashion, 200, 50, seed=1)  # the package is upgraded: new files are unpacked again
    assert not torch.equal(build(fashion, tmp_path).train[0][0], before)


def test_torchvision_layout_is_read_in_place(tmp_path, fashion):
    build(fashion, tmp_path)
    in_place = tmp_path / "tv"
    (tmp_path / "data-home" / "torchvision").rename(in_place)
    data = build(in_place, tmp_path)
    assert len(data.train) == 200 and not (tmp_path / "data-home" / "torchvision").exists()


def test_classes_counts_and_tensors_at_image_size(tmp_path, fashion):
    data = build(fashion, tmp_path, preprocess=Preprocess(size=160, resize=182, interpolation="bicubic"),
                 image_size=48, batch_size=16)
    assert data.classes == FASHION_CLASSES
    assert len(data.train) == 200 and len(data.val) == 50
    assert collections.Counter(data.train.targets) == {c: 20 for c in range(10)}
    image, label = data.train[3]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and type(label) is int
    assert label == data.train.targets[3]
    assert data.val[0][0].shape == (3, 48, 48)
    assert data.preprocess == Preprocess(size=48, resize=55, interpolation="bicubic")
    assert data.batch_size == 16 and data.val_batch_size == 64 and data.workers == 0
    assert not data.augmented and data.train.classes == data.classes
    # grayscale turned RGB: the three channels differ only by the per-channel normalisation
    grey = image[0] * 0.229 + 0.485
    assert torch.allclose(image[1] * 0.224 + 0.456, grey, atol=1e-5)


def test_without_image_size_the_backbone_preprocessing_stays(tmp_path, fashion):
    data = build(fashion, tmp_path)
    assert data.preprocess is None and data.train[0][0].shape == (3, 32, 32)


def test_standard_augment_is_random_for_train_only_and_splits_pickle(tmp_path, fashion):
    data = build(fashion, tmp_path, augment="standard", image_size=32)
    assert data.augmented
    torch.manual_seed(0)
    views = [data.train[0][0] for _ in range(4)]
    assert any(not torch.equal(views[0], v) for v in views[1:])
    assert torch.equal(data.val[0][0], data.val[0][0])
    for split in (data.train, data.val):  # loader worker processes receive them pickled
        copy = pickle.loads(pickle.dumps(split))
        assert len(copy) == len(split) and copy.fingerprint == split.fingerprint


def test_grey_images_made_rgb_after_resizing_give_the_tensors_of_rgb_first(tmp_path, fashion):
    """The MNIST family's grey images are resized and cropped as one channel and made three as a tensor: every
    item equals what converting to RGB first and torchvision's ToTensor + Normalize give, for the val transform
    and for seeded random crops. A step that is not channel-blind keeps RGB first."""
    from PIL import Image
    from torchvision import transforms

    from runner_plugins.torchvision_datasets import ToRGB, rgb_first

    pre = Preprocess(size=48, resize=55, interpolation="bicubic")
    data = build(fashion, tmp_path, preprocess=pre, image_size=48, augment="standard")
    assert data.val.transform.transforms[0].gray_later and data.train.transform.transforms[0].gray_later
    tensor = [transforms.ToTensor(), transforms.Normalize(pre.mean, pre.std)]
    rgb_val = transforms.Compose([ToRGB(), *pre.eval_transform().transforms[:-1], *tensor])
    rgb_train = transforms.Compose([ToRGB(), *data.train.transform.transforms[1:-1], *tensor])
    for index in range(0, 50, 7):
        image, _ = data.val[index]
        raw = _raw_image(data.val, index)
        assert raw.mode == "L" and image.shape == (3, 48, 48) and image.is_contiguous()
        assert torch.equal(image, rgb_val(raw))
        torch.manual_seed(index)
        crop, _ = data.train[index]
        torch.manual_seed(index)
        assert torch.equal(crop, rgb_train(_raw_image(data.train, index)))
    colour = rgb_first([transforms.ColorJitter(0.5), *pre.eval_transform().transforms[-1:]])
    assert repr(colour.transforms[0]) == "ToRGB()"
    rgb = Image.new("RGB", (30, 30), (200, 10, 90))
    assert torch.equal(rgb_first(pre.eval_transform().transforms)(rgb), rgb_val(rgb))


def _raw_image(split, index):
    """The PIL image a split's transform receives for ``index``, before any transform."""
    transform, split.base.transform = split.base.transform, None
    try:
        return split[index][0]
    finally:
        split.base.transform = transform


def test_max_train_is_a_seeded_stratified_subset(tmp_path, fashion):
    data = build(fashion, tmp_path, max_train=50, max_val=20)
    assert len(data.train) == 50 and len(data.val) == 20
    assert collections.Counter(data.train.targets) == {c: 5 for c in range(10)}
    assert collections.Counter(data.val.targets) == {c: 2 for c in range(10)}
    assert data.train.total == 200 and data.val.total == 50
    again, other = build(fashion, tmp_path, max_train=50), build(fashion, tmp_path, max_train=50, seed=1)
    assert again.train.indices == data.train.indices and other.train.indices != data.train.indices
    assert [again.train[i][1] for i in range(50)] == again.train.targets
    assert build(fashion, tmp_path, max_train=1000).train.indices is None
    # what identifies the split for the feature cache: subset and transform included
    assert again.train.fingerprint == data.train.fingerprint != other.train.fingerprint
    assert build(fashion, tmp_path, max_train=50, image_size=40).train.fingerprint != data.train.fingerprint


def test_stratified_subset_keeps_class_shares():
    targets = [0] * 600 + [1] * 300 + [2] * 100
    chosen = stratified_subset(targets, 100, seed=3)
    assert collections.Counter(targets[i] for i in chosen) == {0: 60, 1: 30, 2: 10}
    assert chosen == sorted(set(chosen)) and chosen == stratified_subset(targets, 100, seed=3)
    odd = stratified_subset([0] * 5 + [1] * 5 + [2] * 5, 7, seed=0)
    assert len(odd) == 7 and set(collections.Counter([i // 5 for i in odd]).values()) <= {2, 3}
    assert stratified_subset(targets, None, 0) is None and stratified_subset(targets, 1000, 0) is None


def test_unknown_dataset_name_suggests_the_closest(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"dataset": {"name": "torchvision", "dataset": "FashionMNIT", "root": "x"},
                                      "backbone": TINY_BACKBONE, "freeze": "all_but_head",
                                      "optimizer": "adam", "scheduler": "none"}))
    result = cli.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "unknown torchvision dataset 'FashionMNIT'" in result.output
    assert "did you mean 'FashionMNIST'" in result.output and "Traceback" not in result.output


def test_missing_files_name_them_and_the_debian_package(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunnerError) as info:
        build(empty, tmp_path)
    message = str(info.value)
    assert "\n" not in message and "train-images-idx3-ubyte.gz" in message and str(empty) in message
    assert "apt install dataset-fashion-mnist" in message and "/usr/share/datasets/fashion-mnist" in message
    with pytest.raises(RunnerError, match=r"'nowhere' not found.*apt install dataset-fashion-mnist"):
        build("nowhere", tmp_path)
    half = make_fashion_mnist(tmp_path / "half", 20, 10)
    (half / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(RunnerError, match=r"missing t10k-labels-idx1-ubyte.gz\)"):
        build(half, tmp_path)
    with pytest.raises(RunnerError, match="found no data in .*nothing is downloaded"):
        build(empty, tmp_path, dataset="CIFAR10")


def test_damaged_gzip_is_one_clear_error(tmp_path, fashion):
    (fashion / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(RunnerError, match="cannot unpack .*train-labels-idx1-ubyte.gz"):
        build(fashion, tmp_path)
    raw = tmp_path / "data-home" / "torchvision" / "FashionMNIST" / "raw"
    assert not [p.name for p in raw.iterdir() if p.name.startswith(".train-labels")]


def test_extract_run_end_to_end_caches_features(tmp_path, fashion):
    recipe = tmp_path / "fashion.yaml"
    recipe.write_text(yaml.safe_dump({
        "dataset": {"name": "torchvision", "dataset": "FashionMNIST", "root": str(fashion), "image_size": 32,
                    "batch_size": 16, "workers": 0},
        "backbone": TINY_BACKBONE, "freeze": "all_but_head", "cache": "features",
        "optimizer": {"name": "adam", "lr": 0.01}, "scheduler": "none", "epochs": 1,
        "output": str(tmp_path / "runs")}))
    for attempt in ("exact; features extracted", "exact; features loaded from cache"):
        result = cli.invoke(app, ["run", str(recipe)])
        assert result.exit_code == 0, result.output
        folder = max((tmp_path / "runs").iterdir(), key=lambda f: f.stat().st_mtime_ns)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["cache"].startswith(attempt)
    assert summary["classes"] == FASHION_CLASSES
    assert summary["best_val_acc"] > 0.3  # chance is 0.1
    best = torch.load(folder / "best.pt", weights_only=True)
    assert best["preprocess"]["size"] == 32 and best["preprocess"]["resize"] == 37
    # evaluate and export read the recipe's own split, which lists no files: the dataset's tensors are used
    result = cli.invoke(app, ["evaluate", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["images"] == 50 and scores["accuracy"] == pytest.approx(summary["best_val_acc"], abs=0.02)
    assert scores["most_confident_wrong"] == [] or scores["most_confident_wrong"][0]["file"].startswith("val[")
    exported = cli.invoke(app, ["export", str(folder)])
    assert exported.exit_code == 0, exported.output


def test_fashion_mnist_recipe_validates():
    result = cli.invoke(app, ["validate", str(RECIPES / "fashion_mnist_extract.yaml")])
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(not (DEBIAN_ROOT / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_the_real_fashion_mnist_from_the_debian_package(tmp_path):
    data = build(DEBIAN_ROOT, tmp_path, image_size=32, max_train=200, max_val=100)
    assert data.train.total == 60_000 and data.val.total == 10_000
    assert len(data.train) == 200 and len(data.val) == 100
    assert collections.Counter(data.train.targets) == {c: 20 for c in range(10)}
    assert data.classes == FASHION_CLASSES and data.train[0][0].shape == (3, 32, 32)
