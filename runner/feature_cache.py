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
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from runner import distributed
from runner.errors import RunnerError
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


def _fingerprint(model: nn.Module, dataset, parts: list) -> str | None:
    files = getattr(dataset, "samples", None)  # ImageFolder and its kin list (path, label)
    own = getattr(dataset, "fingerprint", None)  # other datasets may say what identifies their content
    if files is None and own is None:
        return None
    h = hashlib.sha256()
    h.update(repr(own).encode())
    for tensor in model.state_dict().values():
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if tensor.numel() else b"")
    h.update(repr(parts).encode())
    h.update(repr(getattr(dataset, "transform", None)).encode())
    h.update(repr(getattr(dataset, "loader", None)).encode())
    for path, label in files or []:
        stat = os.stat(path)
        h.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


@torch.no_grad()
def extract(run, dataset, views: int, forward_images) -> tuple[torch.Tensor, torch.Tensor]:
    """(views, N, D) head inputs and N labels, from ``views`` passes over ``dataset`` in index order."""
    head, captured = run.backbone.head, []
    handle = head.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    loader = DataLoader(dataset, batch_size=run.data.val_batch_size, shuffle=False, num_workers=run.data.workers,
                        pin_memory=run.device.type == "cuda")
    run.model.eval()
    all_views, labels = [], []
    try:
        for view in range(views):
            captured.clear()
            labels.clear()
            with torch.inference_mode():
                for images, targets in loader:
                    forward_images(images)
                    labels.append(targets)
            all_views.append(torch.cat(captured).float().cpu())
    finally:
        handle.remove()
    return torch.stack(all_views), torch.cat(labels)


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


def cached_features(run, dataset, views: int, forward_images, tag: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Features for ``dataset``, from the disk cache when its key matches and its contents fit the data set, else
    extracted and saved (when the cache folder takes them)."""
    key = _fingerprint(run.model, dataset, [tag, views, run.recipe.settings.seed, str(run.autocast_dtype),
                                            run.recipe.settings.channels_last, type(run.model).__name__])
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
    features, labels = extract(run, shard, views, forward_images)
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
