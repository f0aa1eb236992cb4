"""Bases for datasets of image files, shared by the built-in datasets and open to plugins through
:mod:`runner.api`: loader parameters, transforms from the backbone's preprocessing, a robust ImageFolder, and the
steps every image-file dataset ends with (preload, unreadable files, empty classes)."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from typing import TYPE_CHECKING

from pydantic import Field

from runner.types import Data, Params, Preprocess
from runner.errors import RunnerError
from runner.images import IMAGE_EXTENSIONS, BadImage, NormalizedTensor, bomb_guard, read_rgb, walk_files

if TYPE_CHECKING:  # torchvision is imported when a dataset is built, not to read its parameters
    from PIL import Image
    from torchvision import transforms


class LoaderParams(Params):
    """Batch and loader settings every dataset component shares."""

    batch_size: int = Field(32, gt=0, description="training batch size")
    val_batch_size: int | None = Field(None, gt=0, description="validation batch size (default: max(batch_size, 64); "
                                                               "it does not change results)")
    workers: int | Literal["auto"] = Field("auto", description="loader worker processes; auto: none on 2 cores or "
                                                               "fewer (workers there steal the cores the model "
                                                               "needs), else min(4, cores - 1)")


class ImageFileParams(LoaderParams):
    """Settings of datasets made of image files on disk."""

    preload: bool | Literal["auto"] = Field(
        "auto", description="decode each image once and keep it in memory, downsized to what the transforms need "
                            "(train: shorter side at most 2x the resize, val: the resize); auto: for sets of at "
                            "most 20,000 images")
    bad_images: Literal["skip", "error"] = Field(
        "skip", description="files that are not readable images (corrupt, truncated, empty, too large): skip them "
                            "with a count in the summary, or stop with the list")
    augment: Literal["standard", "none"] = Field(
        "standard", description="standard: random resized crop + horizontal flip (the tutorial's); none: the val "
                                "transform")


def resolve_workers(workers: int | str) -> int:
    """Loader workers for ``workers: auto``: none on 2 cores or fewer, else min(4, cores - 1)."""
    if workers != "auto":
        return int(workers)
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores - 1)


def image_transforms(pre: Preprocess, augment: str) -> tuple[transforms.Compose, transforms.Compose]:
    """Train and val transforms from the backbone's preprocessing: nothing here is hard-coded per model."""
    from torchvision import transforms

    interp = transforms.InterpolationMode(pre.interpolation)
    val = pre.eval_transform()
    if augment == "none":
        return val, val
    train = transforms.Compose([transforms.RandomResizedCrop(pre.size, interpolation=interp),
                                transforms.RandomHorizontalFlip(), NormalizedTensor(pre.mean, pre.std)])
    return train, val


class MemoryLoader:
    """An image loader that decodes each file once and keeps it, its shorter side cut to ``shorter`` pixels.

    Downsizing with the transform's own interpolation to no less than the first resize the transform makes leaves
    the val transform's output unchanged; decoding is then paid once per run, not once per epoch. A JPEG twice as
    large as ``shorter`` or more is decoded in draft mode at a fraction of its size (see :func:`read_rgb`).
    """

    def __init__(self, shorter: int, interpolation: str):
        self.shorter, self.interpolation = shorter, interpolation
        self.images: dict[str, Image.Image] = {}

    def __call__(self, path: str) -> Image.Image:
        image = self.images.get(path)
        if image is None:
            image = read_rgb(path, shorter=self.shorter)
            if min(image.size) > self.shorter:
                from torchvision import transforms

                mode = transforms.InterpolationMode(self.interpolation)
                image = transforms.functional.resize(image, self.shorter, interpolation=mode)
            self.images[path] = image
        return image

    def __repr__(self) -> str:
        return f"MemoryLoader(shorter={self.shorter}, interpolation={self.interpolation})"


class ImageFolder:
    """torchvision's ImageFolder (its attributes: root, classes, class_to_idx, samples, imgs, targets, transform,
    loader), made robust: hidden folders are no classes, hidden files no images, symlink loops are walked once,
    and every image is read as RGB whatever its mode. A FileNotFoundError when ``root`` has no class folder."""

    def __init__(self, root: str, transform=None, loader=read_rgb):
        self.root, self.transform, self.loader = str(root), transform, loader
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        if not self.classes:
            raise FileNotFoundError(f"no class folders in {root}")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.samples = self.imgs = [(str(path), index) for index, name in enumerate(self.classes)
                                    for path in walk_files(Path(root) / name, IMAGE_EXTENSIONS)]
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        image = self.loader(path)
        return (self.transform(image) if self.transform is not None else image), target

    def __repr__(self) -> str:
        return f"ImageFolder({self.root}, {len(self.samples)} images, {len(self.classes)} classes)"


DECODE_THREADS = 8
"""At most this many threads decode a preload (PIL releases the GIL while decoding and resizing)."""


def decode_threads() -> int:
    """Threads for decoding: the CPUs this process may use (each of several torchrun processes gets its share of
    ``OMP_NUM_THREADS``), at most :data:`DECODE_THREADS`."""
    from runner.hardware import usable_cpus  # imports torch: only when a dataset is built

    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, min(DECODE_THREADS, int(os.environ["OMP_NUM_THREADS"])))
    return max(1, min(DECODE_THREADS, len(usable_cpus())))


def drop_bad_images(split: ImageFolder, policy: str) -> list[tuple[str, str]]:
    """Check every image of ``split`` and drop the unreadable: decoded through a MemoryLoader (which keeps them,
    so the check is the preload; on all cores: the preload is most of a cached run's fixed cost), else by header
    only."""
    check = split.loader if isinstance(split.loader, MemoryLoader) else (lambda p: read_rgb(p, decode=False))

    def problem(path: str) -> str | None:
        try:
            check(path)
        except BadImage as exc:
            return str(exc)
        return None

    paths = [path for path, _ in split.samples]
    threads = decode_threads() if isinstance(split.loader, MemoryLoader) and len(paths) >= 32 else 1
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with bomb_guard(), ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
            problems = list(pool.map(problem, paths, chunksize=8))
    else:
        problems = [problem(path) for path in paths]
    good = [sample for sample, why in zip(split.samples, problems) if why is None]
    bad = [(path, why) for path, why in zip(paths, problems) if why is not None]
    if bad and policy == "error":
        shown = "; ".join(f"{p}: {why}" for p, why in bad[:3])
        raise RunnerError(f"{len(bad)} unreadable image(s) in {split.root} ({shown}{'; ...' if len(bad) > 3 else ''}); "
                          "fix or remove them, or set dataset.bad_images: skip")
    split.samples = split.imgs = good
    split.targets = [label for _, label in good]
    return bad


def finish_image_files(train, val, params: ImageFileParams, preprocess: Preprocess, name: str) -> Data:
    """Preload (sets of at most 20,000 images under ``preload: auto``), drop unreadable images, and refuse classes
    left with no training image: the steps every dataset of image files ends with."""
    preload = params.preload if params.preload != "auto" else len(train) + len(val) <= 20_000
    keep_train = 2 * preprocess.resize if params.augment != "none" else preprocess.resize
    if preload:
        from torchvision.transforms import functional  # noqa: F401  imported once here, not in each decoding thread

        train.loader = MemoryLoader(keep_train, preprocess.interpolation)
        val.loader = MemoryLoader(preprocess.resize, preprocess.interpolation)
    else:  # decoded each epoch, large JPEGs in draft mode as a preload would (the same val tensors either way)
        train.loader = functools.partial(read_rgb, shorter=keep_train)
        val.loader = functools.partial(read_rgb, shorter=preprocess.resize)
    bad = drop_bad_images(train, params.bad_images) + drop_bad_images(val, params.bad_images)
    kept = set(train.targets)
    empty = [c for i, c in enumerate(train.classes) if i not in kept]
    if empty:
        raise RunnerError(f"dataset {name}: class(es) {empty} have no readable training images; add images or leave "
                          "the class out")
    return Data(classes=train.classes, train=train, val=val, batch_size=params.batch_size,
                val_batch_size=params.val_batch_size or max(params.batch_size, 64),
                workers=resolve_workers(params.workers), augmented=params.augment != "none",
                skipped=[f"{p} ({why})" for p, why in bad])
