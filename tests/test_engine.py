"""The engine end to end on small real images, and what each freeze policy does to real models."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from conftest import TINY_BACKBONE
from runner import engine
from runner.types import Backbone, replace_last_linear
from runner.errors import RunnerError
from runner.plugins import load_catalog
from runner.recipes import load
from runner.api import hold_batchnorm_eval


def write_recipe(tmp_path, data_root, **sections) -> str:
    recipe = {
        "dataset": {"name": "imagefolder", "root": str(data_root), "batch_size": 4, "workers": 0},
        "backbone": TINY_BACKBONE,
        "freeze": "all_but_head",
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "scheduler": {"name": "step", "step_size": 1, "gamma": 0.5},
        "epochs": 2,
        "precision": "fp32",
        "output": str(tmp_path / "runs"),
    }
    recipe.update(sections)
    path = tmp_path / "recipe.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k or "running_var" in k}


def test_extract_run_trains_only_the_head_and_writes_the_run_folder(tmp_path, imagefolder):
    run = engine.build(load(write_recipe(tmp_path, imagefolder)), load_catalog())
    head = {id(p) for p in run.backbone.head.parameters()}
    trunk_before = {n: p.detach().clone() for n, p in run.model.named_parameters() if id(p) not in head}
    head_before = [p.detach().clone() for p in run.backbone.head.parameters()]
    stats_before = bn_stats(run.model)

    summary = engine.fit(run)

    for name, p in run.model.named_parameters():
        if name in trunk_before:
            assert torch.equal(p, trunk_before[name]), name
    assert any(not torch.equal(a, b) for a, b in zip(head_before, run.backbone.head.parameters()))
    for key, value in bn_stats(run.model).items():
        assert torch.equal(value, stats_before[key]), f"frozen BatchNorm statistics moved: {key}"

    folder = run.folder
    assert summary["folder"] == str(folder) and summary["epochs"] == 2
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert lines[0]["lr"] == [0.05] and lines[1]["lr"] == [0.025]
    assert summary["best_val_acc"] == max(m["val_acc"] for m in lines)
    resolved = yaml.safe_load((folder / "recipe.yaml").read_text())
    assert resolved["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0,
                                     "nesterov": False, "no_decay_norm_bias": False}
    assert resolved["freeze"] == {"name": "all_but_head", "bn": "frozen", "backbone_lr_mult": 1.0,
                                  "layer_decay": 1.0}
    best = torch.load(folder / "best.pt", weights_only=True)
    assert best["classes"] == ["cats", "dogs"]
    assert best["epoch"] == summary["best_epoch"] and best["val_acc"] == summary["best_val_acc"]
    for key, value in best["model"].items():  # the model ends holding the best weights
        assert torch.equal(value, run.model.state_dict()[key])
    assert json.loads((folder / "summary.json").read_text())["best_val_acc"] == summary["best_val_acc"]


def test_finetune_trains_everything_and_batchnorm_statistics_move(tmp_path, imagefolder):
    run = engine.build(load(write_recipe(tmp_path, imagefolder, freeze="none", epochs=1)), load_catalog())
    assert all(p.requires_grad for p in run.model.parameters())
    before = bn_stats(run.model)
    engine.fit(run)
    after = bn_stats(run.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_bn_train_lets_frozen_statistics_update(tmp_path, imagefolder):
    recipe = write_recipe(tmp_path, imagefolder, freeze={"name": "all_but_head", "bn": "train"}, epochs=1)
    run = engine.build(load(recipe), load_catalog())
    before = bn_stats(run.model)
    engine.fit(run)
    assert any(not torch.equal(before[k], v) for k, v in bn_stats(run.model).items())


def test_held_batchnorm_stays_in_eval_after_a_parent_train_call():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    hold_batchnorm_eval([model[1]])
    model.train()
    assert not model[1].training and model[2][0].training and model.training
    model[1].train(True)
    assert not model[1].training


def test_up_to_freezes_the_leading_modules(tmp_path, imagefolder):
    recipe = write_recipe(tmp_path, imagefolder, freeze={"name": "up_to", "module": "blocks.1"}, epochs=1)
    run = engine.build(load(recipe), load_catalog())
    grads = {n: p.requires_grad for n, p in run.model.named_parameters()}
    assert not grads["conv_stem.weight"] and not any(v for n, v in grads.items() if n.startswith("blocks.1."))
    assert all(v for n, v in grads.items() if n.startswith("blocks.2.") or n.startswith("classifier."))
    total = sum(p.numel() for g in run.freeze_plan.groups for p in g["params"])
    assert total == sum(p.numel() for p in run.model.parameters() if p.requires_grad)


def test_up_to_unknown_module_suggests(tmp_path, imagefolder):
    recipe = write_recipe(tmp_path, imagefolder, freeze={"name": "up_to", "module": "block.1"})
    with pytest.raises(RunnerError, match="did you mean 'blocks.1'"):
        engine.build(load(recipe), load_catalog())


@pytest.mark.parametrize("name, attr", [("resnet18", "fc"), ("mobilenet_v3_small", "classifier.3"),
                                        ("efficientnet_b0", "classifier.1")])
def test_head_is_replaced_wherever_the_model_keeps_it(name, attr):
    from torchvision import models

    model = models.get_model(name, weights=None).eval()
    head = Backbone(model).replace_head(3)
    assert model.get_submodule(attr) is head and head.out_features == 3
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_replace_last_linear_needs_a_linear():
    with pytest.raises(ValueError, match="no nn.Linear"):
        replace_last_linear(nn.Sequential(nn.Conv2d(3, 2, 1)), 2)


def test_compiled_training_matches_eager(tmp_path, imagefolder):
    """compile: true runs the same steps through torch.compile (slow to compile, so one small run)."""
    losses = {}
    for compiled in (False, True):
        recipe = write_recipe(tmp_path / str(compiled), imagefolder, epochs=2, freeze="none", compile=compiled)
        run = engine.build(load(recipe), load_catalog())
        engine.fit(run)
        assert (run.compiled is not None) == compiled
        losses[compiled] = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()]
    for eager, compiled in zip(losses[False], losses[True]):
        assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-3)
        assert compiled["val_acc"] == eager["val_acc"]
