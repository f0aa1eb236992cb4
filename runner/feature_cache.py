"""Training a head on cached features: when only the head trains, the frozen trunk runs once per image.

The cache holds what the head receives (captured by a forward pre-hook on the head module), so it is generic over
backbones. It is *exact* when the trunk is deterministic in train mode (its BatchNorm held in eval, no active
dropout or drop-path) and the training transform has no randomness: then training the head on cached features
gives the same weights as running the whole model every batch. With augmentation, ``views`` augmented views of
each training image are cached and each epoch draws one per image: the model sees ``views`` distinct crops per
image instead of a fresh one every epoch, which is the price of not running the trunk again.

Features are kept in fp16 for runs under reduced-precision autocast (fp32 for fp32 runs) and cached on disk under ``$RUNNER_CACHE_DIR`` (default ``~/.cache/runner/features``), keyed by the
trunk's weights, the preprocessing, the file list (paths, sizes, mtimes), the views, seed and precision, so a
changed file or weight never reuses a stale cache. A cache file is still only a file: each one loaded is checked
against the data set it claims to cover (rows, feature shape, dtype, finite values, the samples' labels) and rebuilt
with a one-line warning when anything differs. A cache that cannot be written (full disk, unwritable folder) is a
warning too: the run trains on the features it just extracted.

The trunk's one pass (:func:`extract`) is what a cached run costs, so it runs as fast as the hardware allows without
computing anything else: BatchNorm folded into the convolutions on a copy used only for it (checked against the
unfolded trunk on the first batch), channels_last, the batch that measured fastest, torch's threads on the physical
cores, glibc's allocator told to reuse freed activations (``bench/extract_speed.py`` measures each), the next batch
transformed in a thread while the trunk runs where that measures faster (:mod:`runner.feeding`), and ONNX Runtime
where it runs the trunk faster (:mod:`runner.onnx_trunk`). The features equal the plain model's within fp32
rounding (~1e-5).
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from runner import distributed, feeding
from runner.errors import RunnerError
from runner.folding import agrees, fold_batchnorm, head_inputs
from runner.runfolder import save_torch

STOCHASTIC = (nn.modules.dropout._DropoutNd,)


def cache_dir() -> Path:
    return Path(os.environ.get("RUNNER_CACHE_DIR") or Path.home() / ".cache" / "runner" / "features")


def why_not_cacheable(model: nn.Module, head: nn.Module) -> str | None:
    """None when only ``head`` trains; else why features cannot stand in for the trunk."""
    head_params = {id(p) for p in head.parameters()}
    trunk_trainable = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in head_params]
    if trunk_trainable:
        return f"parameters outside the head train ({trunk_trainable[0]}, ...); freeze: all_but_head caches"
    return None


def why_not_exact(model: nn.Module, head: nn.Module, augmented: bool) -> str | None:
    """None when cached training equals uncached training; else what makes it differ."""
    if augmented:
        return "the training transform is random (augment)"
    in_head = {id(m) for m in head.modules()}
    was = model.training
    model.train()
    try:
        for name, module in model.named_modules():
            if id(module) in in_head or not module.training:
                continue
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                return f"BatchNorm {name} updates in train mode (bn: train)"
            if (isinstance(module, STOCHASTIC) and module.p > 0) or getattr(module, "drop_prob", 0) > 0:
                return f"{name} is random in train mode (dropout)"
    finally:
        model.train(was)
    return None


class CachedFeatures(Dataset):
    """Cached (views, N, D) features and N labels; ``set_epoch`` draws which view each item shows."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, seed: int = 0):
        self.features, self.labels, self.seed = features, labels, seed
        self.view = torch.zeros(len(labels), dtype=torch.long)

    def set_epoch(self, epoch: int) -> None:
        if self.features.shape[0] > 1:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self.view = torch.randint(self.features.shape[0], (len(self.labels),), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.features[self.view[i], i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch, (features, labels), in one indexing: the DataLoader calls this instead of ``__getitem__`` per
        item and hands the result to its ``collate_fn``, :meth:`collate`, which passes it on (a head epoch over
        cached features is otherwise mostly per-item indexing and re-stacking)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.features[self.view[index], index], self.labels[index]

    @staticmethod
    def collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The DataLoader's ``collate_fn`` for these features: :meth:`__getitems__` made the batch already."""
        return batch


def _fingerprint(model: nn.Module, dataset, parts: list, head: nn.Module | None = None) -> str | None:
    """The cache key: the weights before ``head`` (what the head receives does not depend on the head's own, so
    runs that differ only in the new head's initialisation share features), the dataset's files, ``parts``."""
    files = getattr(dataset, "samples", None)  # ImageFolder and its kin list (path, label)
    own = getattr(dataset, "fingerprint", None)  # other datasets may say what identifies their content
    if files is None and own is None:
        return None
    h = hashlib.sha256()
    h.update(repr(own).encode())
    prefix = next((name + "." for name, m in model.named_modules() if m is head and name), None)
    for name, tensor in model.state_dict().items():
        if prefix is not None and name.startswith(prefix):
            continue
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if tensor.numel() else b"")
    h.update(repr(parts).encode())
    h.update(repr(getattr(dataset, "transform", None)).encode())
    h.update(repr(getattr(dataset, "loader", None)).encode())
    for path, label in files or []:
        stat = os.stat(path)
        h.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


EXTRACT_CPU_BATCH = 16
"""Batch of the cached trunk pass on a CPU (the recipe's val batch on a GPU). Measured on a 2-core AVX2 EPYC,
EfficientNet-Lite0 folded, channels_last, ants/bees training images (``bench/extract_speed.py``, first pass):
batch 8 84, 16 85, 32 77, 64 76 img/s -- past 16 the activations (tens to hundreds of MB) fall out of cache.
Results do not depend on it."""
def _submodule_named_like(model: nn.Module, module: nn.Module, copy: nn.Module) -> nn.Module:
    """In ``copy`` (a deep copy of ``model``), the module that ``module`` is in ``model``."""
    if copy is model:
        return module
    name = next(name for name, m in model.named_modules() if m is module)
    return copy.get_submodule(name)


def extraction_batch(run) -> int:
    return EXTRACT_CPU_BATCH if run.device.type == "cpu" else run.data.val_batch_size


@torch.no_grad()
def extract(run, dataset, views: int, forward_images=None, info: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(views, N, D) head inputs and N labels, from ``views`` passes over ``dataset`` in index order.
    (``forward_images`` is no longer used here; it is accepted for callers that pass it.)

    The pass is the frozen trunk in eval mode, so it runs as fast as the hardware allows without computing anything
    else: BatchNorm folded into the convolutions (on a copy used only here; checked against the unfolded trunk on
    the first batch), channels_last when the recipe uses it, the CPU batch that measured fastest, torch's threads
    on the physical cores, glibc told to reuse freed activations. The features equal the plain model's up to fp32
    rounding. ``info`` (if given) receives what was done: ``folded`` norms, ``batch``, ``threads``, the image views
    ``extracted`` (added up over a run's passes) and, where ONNX Runtime was weighed, the trial's verdict (see
    :class:`runner.onnx_trunk.RuntimeTrial`)."""
    from runner import hardware
    from runner.engine.run import autocast

    model, head = run.model, run.backbone.head
    trunk, folded = fold_batchnorm(model)
    if trunk is not model and run.recipe.settings.channels_last:
        trunk.to(memory_format=torch.channels_last)
    batch = extraction_batch(run)
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=run.data.workers,
                        pin_memory=run.device.type == "cuda")
    if run.device.type == "cpu":
        hardware.keep_freed_memory()

    def prepare(images):
        images = images.to(run.device, non_blocking=True)
        if run.recipe.settings.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    trunk_head = _submodule_named_like(model, head, trunk)
    model.eval()
    info = {} if info is None else info
    wants_onnx = _wants_onnx(run, info, views * len(dataset))

    def decided(images: torch.Tensor) -> torch.Tensor:
        """The head inputs of ``images`` through the runtime the trial chose (or torch, where none ran)."""
        if info.get("onnx") is not None:  # ONNX Runtime reads NCHW: no channels_last round trip
            return info["onnx"](images)
        with autocast(run):
            return head_inputs(trunk, trunk_head, prepare(images))

    trial = None
    all_views, labels = [], []
    with hardware.compute_threads(run.device), torch.inference_mode():
        for view in range(views):
            captured, images = [], None
            labels.clear()
            batches = feeding.feed(loader, info.setdefault("feed", {})) if run.data.workers == 0 else loader
            for images, targets in batches:
                labels.append(targets)
                if info.get("onnx") is None:
                    images = prepare(images)
                    if folded and not all_views and not captured:  # the first batch checks the fold
                        want = head_inputs(model, head, images[:2])
                        got = head_inputs(trunk, trunk_head, images[:2])
                        if not agrees(want, got):
                            trunk, trunk_head, folded = model, head, 0
                    if wants_onnx is not None and trial is None:  # ... and starts measuring onnxruntime
                        from runner.onnx_trunk import RuntimeTrial

                        name = next(n for n, m in trunk.named_modules() if m is trunk_head)
                        trial = RuntimeTrial(functools.partial(head_inputs, trunk, trunk_head), trunk, name,
                                             wants_onnx, info)
                    if trial is not None and not trial.decided:
                        captured.append(trial(images))
                        continue
                captured.append(decided(images))
            if trial is not None and not trial.decided and images is not None:
                trial.settle(images)  # a pass shorter than the trial: the next pass follows its verdict
            all_views.append(torch.cat(captured).cpu())
        threads = torch.get_num_threads()

    def trunk_forward(images: torch.Tensor) -> torch.Tensor:  # as the pass ran, for the run's later predictions
        with hardware.compute_threads(run.device), torch.inference_mode():
            return decided(images)

    run.trunk_forward = trunk_forward
    info.update(folded=folded, batch=batch, threads=threads, extracted=info.get("extracted", 0) + views * len(dataset))
    return torch.stack(all_views), torch.cat(labels)


def _wants_onnx(run, info: dict, images: int) -> int | None:
    """None: this pass runs in torch; else the image views of the run's passes, for
    :class:`runner.onnx_trunk.RuntimeTrial` to weigh an export against (``trunk_runtime: onnxruntime``: -1, export
    whatever the size)."""
    mode = run.recipe.settings.trunk_runtime
    if "trunk_runtime" in info:
        return None  # an earlier pass of this run decided (the val pass follows the train one)
    why = ("trunk_runtime: torch" if mode == "torch" else f"ONNX Runtime runs on CPUs, this is {run.device.type}"
           if run.device.type != "cpu" else "reduced-precision autocast" if run.autocast_dtype is not None else None)
    from runner import onnx_trunk

    if why is None and not onnx_trunk.available():
        if mode == "onnxruntime":
            raise RunnerError("trunk_runtime: onnxruntime needs ONNX Runtime: pip install 'runner-transfer[onnx]'")
        why = "onnxruntime not installed"
    if why is not None:
        info.update(trunk_runtime="torch", runtime_why=why)
        return None
    return -1 if mode == "onnxruntime" else max(images, info.get("images", 0))


def _warn(message: str) -> None:
    if distributed.is_main():
        print(f"warning: {message}", file=sys.stderr)


def _mismatch(run, dataset, views: int, saved, forward_images) -> str | None:
    """None when ``saved`` holds features and labels for every item of ``dataset``; else what differs.

    The feature shape is what the head receives for the dataset's first item, so a cache from another model or a
    tampered file is caught before it trains anything.
    """
    if not isinstance(saved, dict) or not all(torch.is_tensor(saved.get(k)) for k in ("features", "labels")):
        return "not a dict of features and labels tensors"
    features, labels = saved["features"], saved["labels"]
    dtypes = (torch.float32, torch.float16) if run.autocast_dtype is not None else (torch.float32,)
    if features.dtype not in dtypes or labels.dtype != torch.int64:
        return f"dtypes {features.dtype} and {labels.dtype}, expected {dtypes[-1]} and torch.int64"
    if features.shape[:2] != (views, len(dataset)) or labels.shape != (len(dataset),):
        return (f"{tuple(features.shape[:2])} views x rows and {len(labels)} labels, expected "
                f"({views}, {len(dataset)}) and {len(dataset)}")
    item = _item_shape(run, dataset, forward_images) if len(dataset) else ()
    if tuple(features.shape[2:]) != item:
        return f"features of shape {tuple(features.shape[2:])}, expected {item}"
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(run.classes):
        return f"labels outside 0..{len(run.classes) - 1}"
    targets = getattr(dataset, "targets", None)
    if targets is not None and not torch.equal(labels, torch.as_tensor(list(targets), dtype=torch.int64)):
        return "labels that differ from the data set's"
    if not torch.isfinite(features).all():
        return "non-finite values"
    return None


def _item_shape(run, dataset, forward_images) -> tuple[int, ...]:
    """The shape of what the head receives for the dataset's first item."""
    shapes = []
    handle = run.backbone.head.register_forward_pre_hook(lambda module, args: shapes.append(args[0].shape[1:]))
    run.model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():  # its transform may be random: the run's
            forward_images(dataset[0][0].unsqueeze(0))                     # random numbers stay as they were
    finally:
        handle.remove()
    return tuple(shapes[0])


def cached_features(run, dataset, views: int, forward_images, tag: str, random: bool = True,
                    info: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Features for ``dataset``, from the disk cache when its key matches and its contents fit the data set, else
    extracted and saved (when the cache folder takes them). ``random``: the dataset's transform draws random
    numbers, so the seed is part of the key (runs that differ only in seed share the features of a fixed
    transform). ``info`` receives how they were extracted (see :func:`extract`)."""
    seed = run.recipe.settings.seed if random else None
    key = _fingerprint(run.model, dataset, [tag, views, seed, str(run.autocast_dtype),
                                            run.recipe.settings.channels_last, type(run.model).__name__],
                       head=run.backbone.head)
    path = cache_dir() / f"{key}.pt" if key else None
    if distributed.from_main(path is not None and path.is_file()):  # every process takes the same branch
        try:
            saved = torch.load(path, weights_only=True)
        except Exception as exc:  # a damaged cache file is rebuilt, never trusted
            saved = exc
        problem = (f"unreadable ({type(saved).__name__})" if isinstance(saved, Exception)
                   else _mismatch(run, dataset, views, saved, forward_images))
        if distributed.from_main(problem) is None:  # rank 0's verdict, so all rebuild or none
            if problem is not None:
                raise RunnerError(f"feature cache {path}: {problem} in this process only; remove it and rerun")
            return saved["features"], saved["labels"], True
        _warn(f"feature cache {path} does not fit the {tag} data ({problem}); rebuilding it")
    torch.manual_seed(run.recipe.settings.seed + len(tag))
    # under torchrun each process extracts items rank::world, then all gather the whole
    shard = Subset(dataset, distributed.Shard(len(dataset)).indices) if distributed.active() else dataset
    features, labels = extract(run, shard, views, forward_images, info)
    features = distributed.gather_shards(features, len(dataset), 1, run.device)
    labels = distributed.gather_shards(labels, len(dataset), 0, run.device)
    if path is not None:
        if run.autocast_dtype is not None and features.abs().max() < 6e4:
            features = features.half()  # half the memory; a reduced-precision run loses nothing by it
        if distributed.is_main():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_torch({"features": features, "labels": labels}, path)  # a rerun loads exactly these values
            except (OSError, RunnerError) as exc:  # a cache is an optimisation: the run goes on without it
                _warn(f"feature cache not written ({str(exc).splitlines()[0]}); training on the extracted features")
    return features, labels, False
