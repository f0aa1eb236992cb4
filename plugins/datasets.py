"""Built-in datasets: ``imagefolder``, the tutorial's ``train/`` and ``val/`` folders of one folder per class."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from runner.api import (Component, Data, ImageFileParams, ImageFolder, Preprocess, RunnerError, finish_image_files,
                        find_root, hookimpl, image_transforms)


class ImageFolderParams(ImageFileParams):
    root: str = Field(description="folder holding the split folders; relative to the recipe, the working "
                                  "directory or a folder on RUNNER_DATA_PATH")
    url: str | None = Field(None, description="zip to download and unpack once when root is not found")
    sha256: str | None = Field(None, pattern="^[0-9a-fA-F]{64}$",
                               description="the zip's SHA-256, checked before it is unpacked")
    train: str = Field("train", description="training split folder under root")
    val: str = Field("val", description="validation split folder under root")


def _split(root: Path, name: str, transform) -> ImageFolder:
    folder = root / name
    if not folder.is_dir():
        raise RunnerError(f"dataset split folder {folder} does not exist; expected {root}/{name}/<class>/<image>")
    try:
        split = ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as exc:
        raise RunnerError(f"dataset split {folder}: {exc}; expected one folder per class holding images") from None
    if not split.samples:
        from torchvision.datasets.folder import IMG_EXTENSIONS

        raise RunnerError(f"dataset split {folder} has no images ({', '.join(IMG_EXTENSIONS)}); expected "
                          f"{folder}/<class>/<image>")
    return split


def build_imagefolder(params: ImageFolderParams, preprocess: Preprocess, base_dir: Path) -> Data:
    root = find_root(params.root, base_dir, params.url, params.sha256)
    train_tf, val_tf = image_transforms(preprocess, params.augment)
    train, val = _split(root, params.train, train_tf), _split(root, params.val, val_tf)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise RunnerError(f"dataset {root}: train and val have different classes (only in train: {only_train}, "
                          f"only in val: {only_val})")
    return finish_image_files(train, val, params, preprocess, str(root / params.train))


def imagefolder_classes(params: ImageFolderParams, base_dir: Path) -> list[str]:
    """The class folders of the training split, without reading an image (``runner plan``)."""
    folder = find_root(params.root, base_dir, params.url, params.sha256) / params.train
    if not folder.is_dir():
        raise RunnerError(f"dataset split folder {folder} does not exist")
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


@hookimpl
def runner_datasets():
    return [Component("imagefolder", "train/ and val/ folders with one sub-folder of images per class",
                      build_imagefolder, ImageFolderParams, classes=imagefolder_classes)]
