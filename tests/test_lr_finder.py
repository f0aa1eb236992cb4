"""The lr range test on small real data: a finite suggestion inside the sweep, and the run left as it was."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from runner import engine, lr_finder
from runner.cli import app
from runner.errors import RunnerError
from runner.plugins import load_catalog
from runner.recipes import load
from test_engine import write_recipe


def state_of(run):
    return ({k: v.clone() for k, v in run.model.state_dict().items()}, run.optimizer.state_dict(),
            torch.get_rng_state(), run.train_loader.generator.get_state())


def test_suggestion_is_finite_inside_the_sweep_and_everything_is_put_back(tmp_path, imagefolder):
    # the tiny test backbone has random weights: only training all of it lowers the loss
    run = engine.build(load(write_recipe(tmp_path, imagefolder, freeze="none", cache="off")), load_catalog())
    weights, optimizer, rng, order = state_of(run)
    result = lr_finder.find_lr(run, start=1e-5, end=10.0, steps=30)
    assert 1e-5 / 10 <= result.suggestion <= 10.0 and torch.isfinite(torch.tensor(result.suggestion))
    assert len(result.lrs) == len(result.losses) <= 30 and result.lrs == sorted(result.lrs)
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, weights[key]), f"{key} changed"
    assert run.optimizer.state_dict() == optimizer
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(run.train_loader.generator.get_state(), order)
    lr_finder.plot(result, tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 1000


def test_a_run_with_lr_auto_starts_from_the_same_weights_and_records_the_lr(tmp_path, imagefolder):
    plain = engine.build(load(write_recipe(tmp_path / "plain", imagefolder, epochs=1, freeze="none")),
                         load_catalog())
    recipe = write_recipe(tmp_path / "auto", imagefolder, epochs=1, lr_find={"steps": 20, "start_lr": 1e-4},
                          freeze="none",
                          optimizer={"name": "sgd", "lr": "auto", "momentum": 0.9})
    auto = engine.build(load(recipe), load_catalog())
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, auto.model.state_dict()[key]), key
    lr = auto.resolved["optimizer"]["lr"]
    assert isinstance(lr, float) and auto.optimizer.param_groups[-1]["lr"] == pytest.approx(lr)
    engine.fit(auto)
    assert yaml.safe_load((auto.folder / "recipe.yaml").read_text())["optimizer"]["lr"] == lr
    assert json.loads((auto.folder / "lr_find.json").read_text())["suggestion"] == pytest.approx(lr, rel=1e-2)
    assert (auto.folder / "lr_find.png").is_file()


def test_a_finder_that_diverges_at_once_is_a_clear_error_and_leaves_the_model(tmp_path, imagefolder):
    run = engine.build(load(write_recipe(tmp_path, imagefolder, cache="off", freeze="none")), load_catalog())
    weights = {k: v.clone() for k, v in run.model.state_dict().items()}
    with pytest.raises(RunnerError, match="no lr where the loss falls.*model is untouched"):
        lr_finder.find_lr(run, start=1e4, end=1e8, steps=20)
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_cli_lr_find_prints_a_suggestion_and_writes_a_picture(tmp_path, imagefolder):
    recipe = write_recipe(tmp_path, imagefolder, lr_find={"steps": 20}, freeze="none")
    result = CliRunner().invoke(app, ["lr-find", recipe])
    assert result.exit_code == 0, result.output
    assert "suggested lr" in result.output
    assert (tmp_path / "runs" / "recipe-lr_find.png").is_file()
    plan = CliRunner().invoke(app, ["plan", recipe, "--set", "optimizer.lr=auto", "--json"])
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.output)["rows"][-1]["lr"] is None  # not found by a plan: shown as auto
