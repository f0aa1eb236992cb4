"""``head_solver: lbfgs``: the linear probe fitted to convergence on cached features, recorded as one epoch with the
usual run folder, and refused in one line where the trunk is not frozen and cached."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from runner import engine
from runner.engine import loop
from runner.errors import RunnerError
from runner.plugins import load_catalog
from runner.recipes import load
from test_engine import write_recipe

NO_AUGMENT = {"batch_size": 4, "workers": 0, "augment": "none"}
NO_PICTURES = {"batch": False, "curves": False, "predictions": 0}


def dataset(root, **more):
    return {"name": "imagefolder", "root": str(root), **NO_AUGMENT, **more}


def objective(head, x, y, decay):
    with torch.no_grad():
        loss = nn.functional.cross_entropy(head(x), y)
        return (loss + decay / 2 * (head.weight ** 2).sum()).item()


def test_lbfgs_reaches_the_optimum_that_sgd_epochs_only_approach():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 32, generator=g)
    y = (x[:, :3].sum(1) + 0.5 * torch.randn(200, generator=g) > 0).long()  # overlapping classes: a finite optimum
    decay = 1e-3
    start = nn.Linear(32, 2)
    solved, sgd = nn.Linear(32, 2), nn.Linear(32, 2)
    solved.load_state_dict(start.state_dict())
    sgd.load_state_dict(start.state_dict())
    fitted = loop.lbfgs_fit(solved, x, y, decay)
    optimizer = torch.optim.SGD(sgd.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    for _ in range(5):  # five epochs at batch 16
        for i in range(0, 200, 16):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(sgd(x[i:i + 16]), y[i:i + 16]) + decay / 2 * (sgd.weight ** 2).sum()
            loss.backward()
            optimizer.step()
    assert objective(solved, x, y, decay) < objective(sgd, x, y, decay)
    assert fitted["objective"] == pytest.approx(objective(solved, x, y, decay), rel=1e-4)
    # at the optimum the objective's gradient vanishes
    solved.zero_grad()
    (nn.functional.cross_entropy(solved(x), y) + decay / 2 * (solved.weight ** 2).sum()).backward()
    assert max(p.grad.abs().max().item() for p in solved.parameters()) < 1e-4
    assert 0 < fitted["iterations"] <= loop.LBFGS_ITERATIONS


def test_the_held_out_split_is_stratified_and_seeded():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2])
    fit, held = loop._held_out_split(labels, seed=3)
    assert sorted(torch.cat([fit, held]).tolist()) == list(range(16))
    assert (labels[held] == 0).sum() == 2 and (labels[held] == 1).sum() == 1 and (labels[held] == 2).sum() == 0
    again = loop._held_out_split(labels, seed=3)
    assert torch.equal(again[1], held)


def test_lbfgs_run_fits_the_head_once_and_writes_the_run_folder(tmp_path, imagefolder):
    path = write_recipe(tmp_path, imagefolder, dataset=dataset(imagefolder), head_solver="lbfgs", epochs=7,
                        pictures=NO_PICTURES)
    run = engine.build(load(path), load_catalog())
    assert run.cache and run.recipe.settings.epochs == 1  # solved once: one epoch
    summary = engine.fit(run)
    folder = run.folder
    for name in ("best.pt", "last.pt", "summary.json", "metrics.jsonl", "recipe.yaml"):
        assert (folder / name).is_file(), name
    (row,) = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert row["epoch"] == 1 and row["solver"] == "lbfgs" and row["weight_decay"] in loop.WEIGHT_DECAYS
    assert summary["epochs"] == summary["epochs_run"] == 1 and summary["best_epoch"] == 1
    assert summary["best_val_acc"] == summary["final_val_acc"] == row["val_acc"] == 1.0  # solid colours: separable
    assert summary["head_solver"]["weight_decay"] == row["weight_decay"]
    assert len(summary["head_solver"]["choices"]) == len(loop.WEIGHT_DECAYS)
    assert json.loads((folder / "summary.json").read_text())["head_solver"]["solver"] == "lbfgs"
    best = torch.load(folder / "best.pt", weights_only=True)
    for name, value in run.model.state_dict().items():
        assert torch.equal(best["model"][name], value), name
    # the training features' objective is at its optimum: another solve from there does not lower it
    features = run.train_loader.dataset
    x, y = loop._rows(features.features, features.labels, torch.arange(len(features.labels)), run.device)
    head = run.backbone.head
    before = objective(head, x, y, row["weight_decay"])
    loop.lbfgs_fit(head, x, y, row["weight_decay"])
    assert objective(head, x, y, row["weight_decay"]) == pytest.approx(before, abs=1e-5)
    # and it is lower than the recipe's SGD epochs reach on the same features
    sgd = engine.build(load(write_recipe(tmp_path / "sgd", imagefolder, dataset=dataset(imagefolder), epochs=3,
                                         pictures=NO_PICTURES)), load_catalog())
    engine.fit(sgd)
    assert before < objective(sgd.backbone.head, x, y, row["weight_decay"])


def test_a_fixed_weight_decay_is_used_as_given(tmp_path, imagefolder):
    path = write_recipe(tmp_path, imagefolder, dataset=dataset(imagefolder), head_solver="lbfgs",
                        head_weight_decay=0.05, pictures=NO_PICTURES)
    summary = engine.fit(engine.build(load(path), load_catalog()))
    assert summary["head_solver"]["weight_decay"] == 0.05 and summary["head_solver"]["choices"] == []


@pytest.mark.parametrize("sections, says", [
    ({"freeze": "none"}, "head_solver: lbfgs needs a frozen trunk with cached features"),
    ({"cache": "off"}, "head_solver: lbfgs needs a frozen trunk with cached features"),
    ({"freeze": {"name": "gradual", "start": 1}, "cache": "features"}, "unfreezes the backbone later"),
])
def test_lbfgs_needs_a_cached_frozen_trunk(tmp_path, imagefolder, sections, says):
    path = write_recipe(tmp_path, imagefolder, dataset=dataset(imagefolder), head_solver="lbfgs", **sections)
    with pytest.raises(RunnerError) as info:
        engine.build(load(path), load_catalog())
    message = str(info.value)
    assert says in message and "\n" not in message and "recipe.yaml:" in message


def test_probe_recipe_extends_extract_with_the_solver():
    from runner.recipes import PACKAGED_RECIPES

    probe = load(str(PACKAGED_RECIPES / "probe.yaml"))
    extract = load(str(PACKAGED_RECIPES / "extract.yaml"))
    assert probe.settings.head_solver == "lbfgs" and extract.settings.head_solver == "sgd"
    assert probe.sections["freeze"] == extract.sections["freeze"] and probe.settings.views == extract.settings.views
