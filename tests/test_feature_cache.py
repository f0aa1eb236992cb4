"""Training the head on cached features: exact where it should be, rebuilt when stale, refused when unsound."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from runner import engine
from runner.errors import RunnerError
from runner.feature_cache import why_not_exact
from runner.plugins import load_catalog
from runner.recipes import load
from runner.api import hold_batchnorm_eval
from test_engine import write_recipe


def run_with(tmp_path, data, **sections):
    run = engine.build(load(write_recipe(tmp_path, data, **sections)), load_catalog())
    summary = engine.fit(run)
    return run, summary


def test_cached_training_equals_uncached_without_augmentation(tmp_path, imagefolder):
    dataset = {"name": "imagefolder", "root": str(imagefolder), "batch_size": 4, "workers": 0, "augment": "none"}
    plain, plain_summary = run_with(tmp_path / "a", imagefolder, dataset=dataset, cache="off", epochs=3)
    cached, cached_summary = run_with(tmp_path / "b", imagefolder, dataset=dataset, cache="auto", epochs=3)
    assert not plain.cache and cached.cache and cached.cache_note.startswith("exact")
    for a, b in zip(plain.backbone.head.parameters(), cached.backbone.head.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert cached_summary["best_val_acc"] == plain_summary["best_val_acc"]
    best = torch.load(cached.folder / "best.pt", weights_only=True)["model"]
    assert set(best) == set(plain.model.state_dict())


def test_auto_leaves_augmented_training_uncached_and_features_caches_views(tmp_path, imagefolder):
    run = engine.build(load(write_recipe(tmp_path, imagefolder)), load_catalog())
    assert not run.cache and "random (augment)" in run.cache_note
    run, _ = run_with(tmp_path, imagefolder, cache="features", views=3)
    assert run.cache and run.cache_note.startswith("3 view(s)")
    assert run.train_loader.dataset.features.shape[:2] == (3, 16)
    first = run.train_loader.dataset.view.clone()
    run.train_loader.dataset.set_epoch(run.epoch + 1)
    assert not torch.equal(first, run.train_loader.dataset.view)


def test_cache_is_reused_and_rebuilt_when_files_or_weights_change(tmp_path, imagefolder):
    none = {"name": "imagefolder", "root": str(imagefolder), "batch_size": 4, "workers": 0, "augment": "none"}
    first, _ = run_with(tmp_path, imagefolder, dataset=none, epochs=1)
    assert "extracted" in first.cache_note
    again, _ = run_with(tmp_path, imagefolder, dataset=none, epochs=1)
    assert "loaded from cache" in again.cache_note
    torch.testing.assert_close(first.train_loader.dataset.features, again.train_loader.dataset.features)

    image = imagefolder / "train" / "cats" / "cats_0.jpg"
    Image.new("RGB", (48, 40), (0, 255, 0)).save(image)
    changed, _ = run_with(tmp_path, imagefolder, dataset=none, epochs=1)
    assert "extracted" in changed.cache_note

    weights = tmp_path / "other.pth"
    import timm
    torch.manual_seed(1)
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    other, _ = run_with(tmp_path, imagefolder, dataset=none, epochs=1,
                        backbone={"name": "timm", "model": "test_efficientnet", "weights": str(weights)})
    assert "extracted" in other.cache_note


def test_cache_features_needs_a_frozen_trunk(tmp_path, imagefolder):
    with pytest.raises(RunnerError, match="cache: features needs a frozen trunk"):
        engine.build(load(write_recipe(tmp_path, imagefolder, freeze="none", cache="features")), load_catalog())


def test_batchnorm_in_train_mode_or_dropout_make_the_cache_inexact():
    head = nn.Linear(4, 2)
    trunk_bn = nn.BatchNorm2d(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), trunk_bn, nn.Flatten(), nn.Dropout(0.0), head)
    assert "BatchNorm 1" in why_not_exact(model, head, augmented=False)
    hold_batchnorm_eval([trunk_bn])
    assert why_not_exact(model, head, augmented=False) is None
    model[3].p = 0.2
    assert "dropout" in why_not_exact(model, head, augmented=False)


def test_cached_features_in_batches_equal_the_items_one_by_one():
    from torch.utils.data import DataLoader

    from runner.feature_cache import CachedFeatures

    features, labels = torch.randn(2, 10, 5), torch.arange(10) % 3
    cached = CachedFeatures(features, labels, seed=4)
    cached.set_epoch(3)
    assert cached.view.unique().numel() == 2  # both views drawn, so a wrong index shows

    class OneByOne:  # the same items through __getitem__ only
        def __len__(self):
            return len(cached)

        def __getitem__(self, i):
            return cached[i]

    def batches(dataset, collate=None):
        return list(DataLoader(dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0),
                               collate_fn=collate))

    together, alone = batches(cached, CachedFeatures.collate), batches(OneByOne())
    assert [len(y) for _, y in together] == [4, 4, 2]
    for (x, y), (x1, y1) in zip(together, alone, strict=True):
        assert torch.equal(x, x1) and torch.equal(y, y1)
