"""The reference plugin package (tests/example_plugin) at work, loaded as a plugin object without installing it:
its backbone's own layer groups, its freeze policy built on FreezeParams and freeze_plan (frozen BatchNorm
statistics bit-identical after training, shown as held by ``runner plan``), its opt-in recipe section."""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import yaml

from runner import engine
from runner.errors import PluginError, RunnerError
from runner.plugins import load_catalog
from runner.recipes import load

SOURCE = Path(__file__).resolve().parent / "example_plugin" / "src" / "runner_example" / "__init__.py"


@pytest.fixture
def example(monkeypatch):
    """runner_example imported from its source file (under its own name, for this test only); autoload off, so an
    installed copy cannot offer the same names twice."""
    monkeypatch.setenv("RUNNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    spec = importlib.util.spec_from_file_location("runner_example", SOURCE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "runner_example", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def catalog(example):
    made = load_catalog(objects=[example])
    assert made.plugins.failures == []
    return made


def recipe_file(tmp_path: Path, data: Path, **sections) -> str:
    recipe = {
        "dataset": {"name": "imagefolder", "root": str(data), "batch_size": 4, "workers": 0},
        "backbone": "tiny_cnn",
        "freeze": {"name": "first_groups", "groups": 1},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "scheduler": "halve",
        "epochs": 2,
        "precision": "fp32",
        "pictures": False,
        "output": str(tmp_path / "runs"),
        **sections,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_the_example_imports_only_runner_api_and_declares_its_version(example):
    tree = ast.parse(SOURCE.read_text())
    ours = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            if node.module and node.module.split(".")[0].startswith("runner")}
    ours |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
             if alias.name.split(".")[0].startswith("runner")}
    assert ours == {"runner.api"}
    assert example.RUNNER_API == "1.0"


def test_the_example_provides_what_it_says(catalog):
    assert catalog.entry("backbone", "tiny_cnn").plugin == "runner_example"
    assert catalog.entry("freeze", "first_groups").plugin == "runner_example"
    assert catalog.entry("scheduler", "halve").plugin == "runner_example"
    section, owner = catalog.sections["log_every"]
    assert owner == "runner_example" and section.on_by_default is False


def test_the_backbone_names_its_own_layer_groups(catalog):
    component = catalog.get("backbone", "tiny_cnn")
    backbone = component.build(component.params())
    groups = backbone.groups()  # before the engine replaced the head: the last nn.Linear is the head
    assert [g.name for g in groups] == ["stem", "block", "head"]
    assert groups[0].params == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert groups[-1].params == ["8.weight", "8.bias"]
    backbone.replace_head(3)
    assert backbone.groups()[-1].params == ["8.weight", "8.bias"] and backbone.head.out_features == 3


def test_freezing_more_groups_than_there_are_is_a_plugin_error(catalog):
    backbone = catalog.get("backbone", "tiny_cnn").build(catalog.get("backbone", "tiny_cnn").params())
    policy = catalog.get("freeze", "first_groups")
    with pytest.raises(PluginError, match=r"freeze.groups: 3 is more than the backbone's 2 layer groups \(stem, "):
        policy.build(policy.params(groups=3), backbone)


def test_frozen_batchnorm_statistics_stay_bit_identical_through_training(tmp_path, imagefolder, catalog):
    recipe = load(recipe_file(tmp_path, imagefolder, log_every={"every": 1}), catalog=catalog)
    run = engine.build(recipe, catalog)
    stem_bn, block_bn = run.model[1], run.model[4]
    frozen_before = {k: v.clone() for k, v in stem_bn.state_dict().items()}
    block_before = {k: v.clone() for k, v in block_bn.state_dict().items()}
    stem_weights = run.model[0].weight.detach().clone()

    summary = engine.fit(run)

    assert summary["epochs_run"] == 2
    for key, value in stem_bn.state_dict().items():  # running_mean, running_var, num_batches_tracked, weights
        assert torch.equal(value, frozen_before[key]), f"frozen BatchNorm {key} moved"
    assert torch.equal(run.model[0].weight, stem_weights)
    assert not torch.equal(block_bn.running_mean, block_before["running_mean"])  # the trained part did learn
    assert int(block_bn.num_batches_tracked) > int(block_before["num_batches_tracked"])
    lines = (run.folder / "example.log").read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("recipe epoch 2/2: val_acc ") and lines[1].endswith("(line 2)")


def test_the_plan_shows_the_frozen_groups_batchnorm_held(tmp_path, imagefolder, catalog):
    recipe = load(recipe_file(tmp_path, imagefolder), catalog=catalog)
    rows = {row["group"]: row for row in engine.plan(recipe, catalog)["rows"]}
    assert set(rows) == {"(frozen)", "block", "head"}
    assert rows["(frozen)"]["batchnorm"] == "eval (held)" and rows["(frozen)"]["trains"] == "never"
    assert rows["(frozen)"]["modules"] == "0, 1"
    assert rows["block"]["batchnorm"] == "train" and rows["head"]["batchnorm"] == "-"
    assert not (tmp_path / "runs").exists()  # planning trains nothing and writes nothing


def test_the_lifecycle_section_is_opt_in(tmp_path, imagefolder, catalog):
    recipe = load(recipe_file(tmp_path, imagefolder, epochs=1), catalog=catalog)
    assert recipe.extras["log_every"] is None
    run = engine.build(recipe, catalog)
    engine.fit(run)
    assert not (run.folder / "example.log").exists()
    with pytest.raises(RunnerError, match=r"log_every.evry: .*did you mean 'every'"):
        load(recipe_file(tmp_path, imagefolder, log_every={"evry": 2}), catalog=catalog)
