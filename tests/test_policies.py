"""Fine-tuning policies: layer groups, gradual unfreezing, frozen BatchNorm, discriminative lrs, warmup,
torch optimizers and schedulers by class name, and optimizer state that survives an unfreeze step."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torchvision import models

from runner import engine
from runner.types import Backbone
from runner.errors import RunnerError
from runner.hookspecs import hookimpl
from runner.plugins import load_catalog
from runner.recipes import load
from test_engine import write_recipe


def groups_of(model):
    backbone = Backbone(model)
    backbone.replace_head(2)
    return [name for name, _ in backbone.groups()]


def test_layer_groups_come_from_the_model():
    assert groups_of(models.resnet18()) == ["conv1+bn1", "layer1", "layer2", "layer3", "layer4", "head"]
    assert groups_of(models.efficientnet_b0()) == [f"features.{i}" for i in range(9)] + ["head"]
    lite = groups_of(timm.create_model("tf_efficientnet_lite0"))
    assert lite == ["conv_stem+bn1", *[f"blocks.{i}" for i in range(7)], "conv_head+bn2", "head"]
    vit = groups_of(timm.create_model("vit_tiny_patch16_224"))
    assert vit[:3] == ["params", "patch_embed", "blocks.0"] and vit[-2:] == ["norm", "head"]
    tv_vit = groups_of(models.vit_b_16())
    assert "encoder.layers.encoder_layer_11" in tv_vit and tv_vit[-1] == "head"


class Recorder:
    """A real lifecycle plugin: which parameters require grad, and the lr of each group, at every epoch."""

    def __init__(self):
        self.trainable, self.lrs, self.bn_training = {}, {}, {}

    @hookimpl
    def runner_epoch_end(self, run, epoch, metrics):
        self.trainable[epoch] = {n for n, p in run.model.named_parameters() if p.requires_grad}
        self.lrs[epoch] = metrics["lr"]


def run_recorded(tmp_path, imagefolder, **sections):
    catalog = load_catalog()
    recorder = Recorder()
    catalog.pm.register(recorder)
    run = engine.build(load(write_recipe(tmp_path, imagefolder, **sections)), catalog)
    engine.fit(run)
    return run, recorder


def test_gradual_unfreezes_group_by_group_from_the_head(tmp_path, imagefolder):
    freeze = {"name": "gradual", "start": 1, "every": 1}
    run, rec = run_recorded(tmp_path, imagefolder, freeze=freeze, epochs=4, scheduler="none")
    names = dict(run.backbone.groups())
    assert rec.trainable[1] == set(names["head"])
    assert rec.trainable[2] == set(names["head"]) | set(names["conv_head+bn2"])
    assert rec.trainable[3] == rec.trainable[2] | set(names["blocks.4"])
    assert rec.trainable[4] == rec.trainable[3] | set(names["blocks.3"])
    assert run.freeze_plan.schedule["conv_head+bn2"] == 2 and run.freeze_plan.schedule["conv_stem+bn1"] == 8
    # every group was in the optimizer from the first step
    assert len(run.optimizer.param_groups) == len(names)


def test_frozen_batchnorm_buffers_are_bit_identical_after_training(tmp_path, imagefolder):
    catalog = load_catalog()
    run = engine.build(load(write_recipe(tmp_path, imagefolder, freeze={"name": "up_to", "module": "blocks.2"},
                                         epochs=2)), catalog)
    frozen_bn = [m for name, m in run.model.named_modules()
                 if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad]
    trained_bn = [m for m in run.model.modules() if isinstance(m, nn.BatchNorm2d) and m.weight.requires_grad]
    assert frozen_bn and trained_bn
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in frozen_bn]
    trained_before = [m.running_mean.clone() for m in trained_bn]
    engine.fit(run)
    for module, saved in zip(frozen_bn, before):
        for key, value in module.state_dict().items():
            assert torch.equal(value, saved[key]), key
    assert any(not torch.equal(m.running_mean, b) for m, b in zip(trained_bn, trained_before))


def test_unfrozen_batchnorm_trains_again(tmp_path, imagefolder):
    freeze = {"name": "gradual", "start": 1, "every": 0}
    run, _ = run_recorded(tmp_path, imagefolder, freeze=freeze, epochs=2)
    run.model.train()
    assert all(m.training for m in run.model.modules() if isinstance(m, nn.BatchNorm2d))


def test_layer_decay_and_backbone_multiplier_set_group_lrs_and_schedulers_keep_them(tmp_path, imagefolder):
    freeze = {"name": "none", "layer_decay": 0.5, "backbone_lr_mult": 0.1}
    run, rec = run_recorded(tmp_path, imagefolder, freeze=freeze, epochs=2,
                            scheduler={"name": "step", "step_size": 1, "gamma": 0.5})
    names = [g["name"] for g in run.optimizer.param_groups]
    expected = [0.05 * (1.0 if n == "head" else 0.1 * 0.5 ** (len(names) - 1 - i)) for i, n in enumerate(names)]
    assert rec.lrs[1] == pytest.approx(expected)
    assert rec.lrs[2] == pytest.approx([lr * 0.5 for lr in expected])


def test_warmup_ramps_each_group_to_its_own_lr_then_the_schedule_runs(tmp_path, imagefolder):
    # 16 training images, batch 4: 4 steps per epoch; warmup 4 steps, then cosine per step
    freeze = {"name": "none", "layer_decay": 0.5}
    scheduler = {"name": "cosine", "warmup": 4, "warmup_unit": "steps"}
    run = engine.build(load(write_recipe(tmp_path, imagefolder, freeze=freeze, scheduler=scheduler, epochs=3)),
                       load_catalog())
    targets = [0.05 * g["lr_scale"] for g in run.optimizer.param_groups]
    seen = [[g["lr"] for g in run.optimizer.param_groups]]
    for _ in range(12):
        run.optimizer.step()
        run.schedule.scheduler.step()
        seen.append([g["lr"] for g in run.optimizer.param_groups])
    assert seen[0] == pytest.approx([t / 5 for t in targets])
    assert seen[3] == pytest.approx([t * 4 / 5 for t in targets])
    assert seen[4] == pytest.approx(targets)
    assert all(a < b for a, b in zip(seen[8], targets))  # decaying, each from its own lr
    assert seen[12] == pytest.approx([0.0] * len(targets), abs=1e-12)
    ratios = [lr / t for lr, t in zip(seen[8], targets)]
    assert max(ratios) - min(ratios) < 1e-9


def test_optimizer_state_saved_after_an_unfreeze_loads_into_a_fresh_run(tmp_path, imagefolder):
    freeze = {"name": "gradual", "start": 1, "every": 1}
    recipe = write_recipe(tmp_path, imagefolder, freeze=freeze, epochs=2, scheduler="none")
    run = engine.build(load(recipe), load_catalog())
    engine.fit(run)
    state = run.optimizer.state_dict()
    assert len(state["state"]) > len(list(run.backbone.head.parameters()))  # the unfrozen group has momentum
    fresh = engine.build(load(recipe), load_catalog())
    fresh.optimizer.load_state_dict(state)
    for key, value in fresh.optimizer.state_dict()["state"].items():
        torch.testing.assert_close(value["momentum_buffer"], state["state"][key]["momentum_buffer"])


def test_gradual_with_cache_uses_features_until_the_backbone_trains(tmp_path, imagefolder):
    dataset = {"name": "imagefolder", "root": str(imagefolder), "batch_size": 4, "workers": 0, "augment": "none"}
    run, _ = run_recorded(tmp_path, imagefolder, dataset=dataset, freeze={"name": "gradual", "start": 1, "every": 0},
                          epochs=2)
    assert run.cache_note.startswith("exact") and "off from epoch 2" in run.cache_note and not run.cache


def test_torch_optimizers_and_schedulers_by_class_name(tmp_path, imagefolder):
    run, rec = run_recorded(tmp_path, imagefolder, optimizer={"name": "RAdam", "lr": 0.01},
                            scheduler={"name": "ExponentialLR", "gamma": 0.5}, epochs=2)
    assert type(run.optimizer).__name__ == "RAdam"
    assert rec.lrs[2] == pytest.approx([0.005])


def test_signature_derived_parameters_reject_wrong_arguments_with_file_and_line(tmp_path, imagefolder):
    path = write_recipe(tmp_path, imagefolder, optimizer={"name": "RAdam", "lr": "fast", "betaz": [0.9, 0.99]})
    lines = open(path).read().splitlines()
    with pytest.raises(RunnerError) as info:
        load(path, catalog=load_catalog())
    problems = info.value.problems
    betaz = next(i for i, line in enumerate(lines) if "betaz" in line) + 1
    assert any(f"recipe.yaml:{betaz}:3: optimizer.betaz: unknown field (did you mean 'betas'?)" in p
               for p in problems), problems
    assert any("optimizer.lr: input should be a valid number" in p for p in problems), problems


def test_no_decay_norm_bias_splits_groups(tmp_path, imagefolder):
    optimizer = {"name": "adamw", "lr": 0.01, "weight_decay": 0.05, "no_decay_norm_bias": True}
    run = engine.build(load(write_recipe(tmp_path, imagefolder, freeze="none", optimizer=optimizer)), load_catalog())
    for group in run.optimizer.param_groups:
        one_d = all(p.ndim <= 1 for p in group["params"])
        assert group["weight_decay"] == (0.0 if one_d else 0.05)
        assert one_d == group["name"].endswith("/no_decay")


def test_label_smoothing_applies_to_the_training_loss_only(tmp_path, imagefolder):
    # same seed, same data order: once the head is confident, smoothed targets cost more; val loss is unsmoothed
    dataset = {"name": "imagefolder", "root": str(imagefolder), "batch_size": 4, "workers": 0, "augment": "none"}
    common = dict(dataset=dataset, epochs=4, freeze="none", optimizer={"name": "adam", "lr": 0.005}, scheduler="none")
    plain, _ = run_recorded(tmp_path / "a", imagefolder, **common)
    smooth, _ = run_recorded(tmp_path / "b", imagefolder, label_smoothing=0.3, **common)
    import json
    last = lambda run: json.loads((run.folder / "metrics.jsonl").read_text().splitlines()[-1])  # noqa: E731
    assert last(plain)["train_acc"] == 1.0 and last(smooth)["train_acc"] == 1.0
    assert last(smooth)["train_loss"] > last(plain)["train_loss"] + 0.1
    # smoothing keeps the model less confident: scored the plain way, its val loss stays higher
    assert last(smooth)["val_loss"] > last(plain)["val_loss"]


def test_plan_shows_groups_sizes_schedule_lrs_and_batchnorm_before_training(tmp_path, imagefolder):
    import json

    from typer.testing import CliRunner

    from runner.cli import app

    freeze = {"name": "gradual", "start": 2, "every": 1, "groups": 2, "layer_decay": 0.5}
    recipe = write_recipe(tmp_path, imagefolder, freeze=freeze, scheduler="none", epochs=4)
    result = CliRunner().invoke(app, ["plan", recipe, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {r["group"]: r for r in data["rows"]}
    assert rows["head"]["trains"] == "from epoch 1" and rows["head"]["lr"] == pytest.approx(0.05)
    assert rows["conv_head+bn2"]["trains"] == "from epoch 3" and rows["conv_head+bn2"]["lr"] == pytest.approx(0.025)
    assert rows["blocks.4"]["trains"] == "from epoch 4" and rows["blocks.4"]["batchnorm"] == "eval (held)"
    assert rows["(frozen)"]["trains"] == "never" and "blocks.0-3" in rows["(frozen)"]["modules"]
    assert data["total"] == sum(r["parameters"] for r in data["rows"])
    assert data["trainable"] == data["total"] - rows["(frozen)"]["parameters"]
    table = CliRunner().invoke(app, ["plan", recipe])
    assert table.exit_code == 0 and "(frozen)" in table.output and "from epoch 3" in table.output
    short = json.loads(CliRunner().invoke(app, ["plan", recipe, "--json", "--set", "epochs=3"]).output)
    rows = {r["group"]: r for r in short["rows"]}  # a group whose epoch is past the run's end never trains
    assert rows["conv_head+bn2"]["trains"] == "from epoch 3" and rows["blocks.4"]["trains"] == "never"
    assert short["trainable"] == data["trainable"] - rows["blocks.4"]["parameters"]
