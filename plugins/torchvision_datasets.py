"""torchvision's built-in classification datasets by name, read from local files, never downloaded.

``dataset: {name: torchvision, dataset: FashionMNIST, root: /usr/share/datasets/fashion-mnist}`` reads any
``torchvision.datasets`` class whose constructor takes ``train=`` or ``split=``, always with ``download=False``:
the files must already be where torchvision's own download would put them under ``root``. The MNIST family
(MNIST, FashionMNIST, KMNIST) is also read from the layout Debian's packages install (``dataset-fashion-mnist``:
the four gzipped idx files directly in the folder): they are unpacked once into
``$RUNNER_DATA_HOME/torchvision/<Name>/raw/`` and reused by later runs.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Literal

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from runner.api import (Component, Data, LoaderParams, NormalizedTensor, Preprocess, RunnerError, data_cache,
                        did_you_mean, find_root, hookimpl, resolve_workers, to_rgb)

if TYPE_CHECKING:  # numpy, torch and torchvision are imported when the dataset is built, not to list it
    from torchvision import transforms
    from torchvision.datasets.vision import VisionDataset

# Where a Debian package puts a dataset, and which package: named in the error when its files are missing.
DEBIAN = {"FashionMNIST": ("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist")}


@functools.cache
def dataset_classes() -> dict[str, type]:
    """torchvision's dataset classes by name (every public ``VisionDataset`` subclass)."""
    from torchvision import datasets
    from torchvision.datasets.vision import VisionDataset

    return {name: obj for name, obj in vars(datasets).items()
            if isinstance(obj, type) and issubclass(obj, VisionDataset) and obj is not VisionDataset
            and not name.startswith("_")}


class TorchvisionParams(LoaderParams):
    dataset: str = Field(description="torchvision.datasets class name (FashionMNIST, MNIST, CIFAR10, Flowers102...)")
    root: str = Field(description="folder holding the dataset's files as torchvision's download lays them out (or, "
                                  "for MNIST/FashionMNIST/KMNIST, the four .gz idx files directly, as Debian's "
                                  "packages install them); relative to the recipe, the working directory or a "
                                  "folder on RUNNER_DATA_PATH. Nothing is downloaded")
    train_split: str = Field("train", description="split= for training, for datasets whose constructor takes split= "
                                                   "(datasets taking train= get train=True)")
    val_split: str = Field("test", description="split= for validation (datasets taking train= get train=False)")
    image_size: int | None = Field(None, ge=8, description="train and evaluate at this size instead of the "
                                                           "backbone's (resize to size*256/224, center crop; "
                                                           "mean/std/interpolation kept): 28-pixel images gain "
                                                           "little from 224 and cost 4x+ the compute")
    augment: Literal["standard", "none"] = Field(
        "none", description="none (default): the val transform for training too, so cache: features is exact; "
                            "standard: random resized crop (scale 0.35-1) + horizontal flip")
    max_train: int | None = Field(None, gt=0, description="train on a seeded, class-stratified subset of this many "
                                                          "images (all when the split has fewer)")
    max_val: int | None = Field(None, gt=0, description="validate on a seeded, class-stratified subset of this many")
    seed: int = Field(0, description="seed of the max_train/max_val subsets")

    @field_validator("dataset")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in dataset_classes():
            raise ValueError(f"unknown torchvision dataset '{name}'{did_you_mean(name, dataset_classes())}")
        return name


class ToRGB:
    """Grayscale, palette, RGBA, 16-bit... images to 3-channel RGB as image files are read (transparency on white,
    16-bit scaled down: ``to_rgb``); picklable, for loader worker processes. ``gray_later``: 8-bit grey ("L") images
    stay grey, for a pipeline that treats channels alike up to a :class:`NormalizedTensor` (which repeats a grey
    channel to three): the MNIST family then resizes one channel instead of three, for the same tensor."""

    def __init__(self, gray_later: bool = False):
        self.gray_later = gray_later

    def __call__(self, image):
        if self.gray_later and image.mode == "L":
            return image
        return to_rgb(image)

    def __repr__(self) -> str:
        return "ToRGB(gray_later=True)" if self.gray_later else "ToRGB()"


def rgb_first(steps: list) -> transforms.Compose:
    """``steps`` (PIL image to tensor) after :class:`ToRGB`. Where every step before the ``NormalizedTensor`` only
    moves pixels (resizes, crops, flips: each channel alike), grey images go through them as one channel and are
    made three as a tensor: the same tensor as converting to RGB first, for a third of the resizing."""
    from torchvision import transforms

    blind = (transforms.Resize, transforms.CenterCrop, transforms.RandomResizedCrop, transforms.RandomHorizontalFlip)
    at = next((i for i, step in enumerate(steps) if isinstance(step, NormalizedTensor)), None)
    if at is None or not all(isinstance(step, blind) for step in steps[:at]):
        return transforms.Compose([ToRGB(), *steps])
    return transforms.Compose([ToRGB(gray_later=True), *steps])


def split_transforms(pre: Preprocess, augment: str) -> tuple[transforms.Compose, transforms.Compose]:
    """Train and val transforms: RGB first (see :func:`rgb_first`), then the backbone's (or image_size's)
    preprocessing."""
    from torchvision import transforms

    val = rgb_first(pre.eval_transform().transforms)
    if augment == "none":
        return val, val
    interp = transforms.InterpolationMode(pre.interpolation)
    train = rgb_first([transforms.RandomResizedCrop(pre.size, scale=(0.35, 1.0), interpolation=interp),
                       transforms.RandomHorizontalFlip(), NormalizedTensor(pre.mean, pre.std)])
    return train, val


# -- the MNIST family's files ---------------------------------------------------------------------------------------


def mnist_layout(cls: type) -> bool:
    """Whether ``cls`` reads MNIST's four idx files from ``<root>/<Name>/raw`` (MNIST, FashionMNIST, KMNIST)."""
    from torchvision import datasets

    return (issubclass(cls, datasets.MNIST) and isinstance(getattr(cls, "resources", None), list)
            and cls._load_data is datasets.MNIST._load_data)


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns}"


def gunzip_once(sources: list[Path], raw: Path) -> None:
    """Unpack each ``.gz`` into ``raw`` unless the copy there came from the same file (path, size, mtime): through a
    temporary file renamed into place, so an interrupted or concurrent run never sees half a file."""
    stamps_file = raw / ".sources.json"
    try:
        stamps = json.loads(stamps_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    changed = False
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for source in sources:
            target = raw / source.name[:-3]
            if target.is_file() and stamps.get(target.name) == _stamp(source):
                continue
            fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{target.name}.")
            try:
                with os.fdopen(fd, "wb") as out, gzip.open(source, "rb") as packed:
                    shutil.copyfileobj(packed, out, 1 << 20)
                os.replace(tmp, target)
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                Path(tmp).unlink(missing_ok=True)
                raise RunnerError(f"cannot unpack {source}: {exc}; the file is damaged, reinstall or replace it") \
                    from None
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            stamps[target.name] = _stamp(source)
            changed = True
        if changed:
            fd, tmp = tempfile.mkstemp(dir=raw, prefix=".sources.")
            with os.fdopen(fd, "w") as out:
                json.dump(stamps, out, indent=1)
            os.replace(tmp, stamps_file)
    except OSError as exc:
        raise RunnerError(f"cannot unpack the dataset's files into {raw} ({exc.strerror or exc}); set "
                          "RUNNER_DATA_HOME to a writable folder") from None


def mnist_root(cls: type, root: Path) -> Path:
    """The root to hand torchvision: ``root`` in torchvision's layout, else the unpacked copy of Debian's layout."""
    name = cls.__name__
    packed = [file for file, _ in cls.resources]
    unpacked = [file[:-3] if file.endswith(".gz") else file for file in packed]
    if all((root / name / "raw" / file).is_file() for file in unpacked):
        return root
    if all((root / file).is_file() for file in packed):
        cache = data_cache() / "torchvision"
        gunzip_once([root / file for file in packed], cache / name / "raw")
        return cache
    missing = [file for file in packed if not (root / file).is_file()]
    hint = ""
    if name in DEBIAN:
        package, where = DEBIAN[name]
        hint = f"; on Debian/Ubuntu, apt install {package} puts them in {where} (use that as root)"
    raise RunnerError(f"torchvision {name}: expected {', '.join(packed)} in {root} (missing {', '.join(missing)}), "
                      f"or {', '.join(unpacked)} in {root / name / 'raw'}; nothing is downloaded{hint}")


# -- the dataset ----------------------------------------------------------------------------------------------------


def _folder_digest(folder: Path) -> str:
    """Hash of every visible file's relative path, size and mtime under ``folder``."""
    h, count = hashlib.sha256(), 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):  # not temp files of a concurrent unpack
            path = Path(dirpath) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            h.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            count += 1
    return f"{count} files {h.hexdigest()[:16]}"


def content_folder(base: VisionDataset) -> Path:
    """The folder a torchvision dataset reads from (its raw or base folder where it says, else its root)."""
    root = Path(base.root)
    for attr in ("raw_folder", "_base_folder", "_data_folder"):
        folder = getattr(base, attr, None)
        if isinstance(folder, (str, os.PathLike)) and Path(folder).is_dir():
            return Path(folder)
    folder = getattr(base, "base_folder", None)
    if isinstance(folder, str) and (root / folder).is_dir():
        return root / folder
    return root


class TorchvisionSplit:
    """One split of a torchvision dataset, optionally a subset, yielding ``(tensor, int)``.

    ``fingerprint`` (computed on first use) names its content and transform so extracted features cache on disk.
    """

    def __init__(self, base: VisionDataset, name: str, split: str, classes: list[str], targets: list[int],
                 indices: list[int] | None, transform):
        self.base, self.name, self.split, self.classes = base, name, split, classes
        self.indices, self.transform = indices, transform
        self.targets = targets if indices is None else [targets[i] for i in indices]
        self.total = len(targets)
        """Images in the whole split, before any subset."""

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        image, target = self.base[self.indices[i] if self.indices is not None else i]
        return image, int(target)

    @functools.cached_property
    def fingerprint(self) -> str:
        import numpy as np

        folder = content_folder(self.base)
        subset = "all" if self.indices is None else \
            hashlib.sha256(np.asarray(self.indices, dtype=np.int64).tobytes()).hexdigest()[:16]
        return (f"torchvision {self.name} split={self.split} n={self.total} folder={folder} "
                f"({_folder_digest(folder)}) subset={subset} transform={self.transform!r}")

    def __repr__(self) -> str:
        return f"TorchvisionSplit({self.name}, {self.split}, {len(self)} of {self.total} images)"


def stratified_subset(targets: list[int], count: int | None, seed: int) -> list[int] | None:
    """``count`` indices drawn with ``seed``, each class in proportion to its share (largest remainders round);
    None when ``count`` is unset or covers the whole split."""
    if count is None or count >= len(targets):
        return None
    import numpy as np

    labels = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * count / len(labels)
    quota = np.floor(exact).astype(np.int64)
    order = sorted(range(len(classes)), key=lambda k: (-(exact[k] - quota[k]), k))
    quota[order[:count - int(quota.sum())]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return sorted(int(i) for i in np.concatenate(chosen))


def _targets(base: VisionDataset) -> list[int]:
    for attr in ("targets", "labels", "_labels"):
        values = getattr(base, attr, None)
        if values is not None and not isinstance(values, (str, dict)):
            return [int(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    for attr in ("samples", "_samples", "imgs"):
        pairs = getattr(base, attr, None)
        if pairs is not None:
            return [int(label) for _, label in pairs]
    return [int(base[i][1]) for i in range(len(base))]  # slow: decodes every image, for datasets that list nothing


def _class_names(base: VisionDataset, targets: list[int]) -> list[str]:
    classes = getattr(base, "classes", None)
    if classes is None:
        return [str(i) for i in range(max(targets, default=-1) + 1)]
    return [c if isinstance(c, str) else ", ".join(map(str, c)) for c in classes]


def open_split(cls: type, root: Path, which: bool | str, transform) -> VisionDataset:
    parameters = inspect.signature(cls.__init__).parameters
    kwargs = {"transform": transform}
    if "train" in parameters:
        kwargs["train"] = which
    else:
        kwargs["split"] = which
    if "download" in parameters:
        kwargs["download"] = False
    try:
        return cls(str(root), **kwargs)
    except (RuntimeError, FileNotFoundError) as exc:
        raise RunnerError(f"torchvision {cls.__name__} found no data in {root} ({exc}); put its files there the way "
                          "torchvision's download lays them out; nothing is downloaded") from None
    except ValueError as exc:
        raise RunnerError(f"torchvision {cls.__name__}: {exc}") from None


def build_torchvision(params: TorchvisionParams, preprocess: Preprocess, base_dir: Path) -> Data:
    cls = dataset_classes().get(params.dataset)
    if cls is None:  # the params' validator says so first; kept for params built without validation
        raise RunnerError(f"unknown torchvision dataset '{params.dataset}'"
                          f"{did_you_mean(params.dataset, dataset_classes())}")
    parameters = inspect.signature(cls.__init__).parameters
    if "train" not in parameters and "split" not in parameters:
        raise RunnerError(f"torchvision {params.dataset} takes neither train= nor split=, so it has no train and "
                          "val split this component can read; use imagefolder with train/ and val/ folders")
    try:
        root = find_root(params.root, base_dir)
    except RunnerError as exc:
        hint = ""
        if params.dataset in DEBIAN:
            package, where = DEBIAN[params.dataset]
            hint = f" (on Debian/Ubuntu: apt install {package}, root: {where})"
        raise RunnerError(f"{exc}{hint}") from None
    if mnist_layout(cls):
        root = mnist_root(cls, root)

    if params.image_size is not None:
        preprocess = dataclasses.replace(preprocess, size=params.image_size,
                                         resize=round(params.image_size * 256 / 224))
    train_tf, val_tf = split_transforms(preprocess, params.augment)
    use_train = "train" in parameters
    splits = []
    for which, tag, transform, count, seed in (
            (True if use_train else params.train_split, "train", train_tf, params.max_train, params.seed),
            (False if use_train else params.val_split, "val", val_tf, params.max_val, params.seed + 1)):
        base = open_split(cls, root, which, transform)
        targets = _targets(base)
        if not targets:
            raise RunnerError(f"torchvision {params.dataset} {tag} split ({which}) in {root} has no images")
        split_name = (params.train_split if tag == "train" else params.val_split) if not use_train else tag
        splits.append(TorchvisionSplit(base, params.dataset, split_name, _class_names(base, targets), targets,
                                       stratified_subset(targets, count, seed), transform))
    train, val = splits
    if train.classes != val.classes:
        raise RunnerError(f"torchvision {params.dataset}: the {train.split} and {val.split} splits have different "
                          f"classes ({len(train.classes)} and {len(val.classes)})")
    return Data(classes=train.classes, train=train, val=val, batch_size=params.batch_size,
                val_batch_size=params.val_batch_size or max(params.batch_size, 64),
                workers=resolve_workers(params.workers), augmented=params.augment != "none",
                preprocess=preprocess if params.image_size is not None else None)


@hookimpl
def runner_datasets():
    return [Component("torchvision", "a torchvision.datasets classification dataset by class name, from local files "
                                     "(never downloaded)", build_torchvision, TorchvisionParams)]
