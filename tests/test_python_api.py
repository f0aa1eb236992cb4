"""The Python API: runner.run, runner.load(...).predict/evaluate/export, runner.recipe, runner.plan,
runner.components -- the same numbers as the command line, errors raised as RunnerError."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import runner
from runner.api import hookimpl
from runner.cli import app
from test_engine import write_recipe

cli = CliRunner()


class Watcher:
    """A plugin object a notebook passes to runner.run: it sees every epoch."""

    def __init__(self):
        self.epochs, self.sections = [], []

    @hookimpl
    def runner_epoch_end(self, run, epoch, metrics):
        self.epochs.append((epoch, metrics["val_acc"]))
        self.sections.append(run.section("pictures") is not None)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    from conftest import make_imagefolder

    tmp = tmp_path_factory.mktemp("api")
    data = make_imagefolder(tmp / "data")
    recipe = write_recipe(tmp, data, epochs=2)
    watcher = Watcher()
    result = runner.run(recipe, overrides={"seed": 3, "optimizer.lr": 0.02}, plugins=[watcher], progress=False)
    return tmp, recipe, result, watcher


def test_run_returns_metrics_like_the_cli(api_run, monkeypatch):
    tmp, recipe, result, watcher = api_run
    assert [m["epoch"] for m in result.metrics] == [1, 2] and result.folder.is_dir()
    assert result.best_val_acc == max(m["val_acc"] for m in result.metrics)
    assert [e for e, _ in watcher.epochs] == [1, 2] and all(watcher.sections)  # the plugin saw every epoch
    monkeypatch.setenv("COLUMNS", "200")
    done = cli.invoke(app, ["run", recipe, "--set", "seed=3", "--set", "optimizer.lr=0.02"])
    assert done.exit_code == 0, done.output
    folder = sorted((tmp / "runs").iterdir())[-1]
    assert folder != result.folder
    cli_metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(result.metrics, cli_metrics):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)


def test_load_predict_equals_predict_json(api_run):
    tmp, _, result, _ = api_run
    files = sorted((tmp / "data" / "val").rglob("*.jpg"))[:3]
    model = runner.load(result.folder)
    assert model.classes == ["cats", "dogs"] and model.preprocess.size > 0
    rows = model.predict([str(f) for f in files])
    done = cli.invoke(app, ["predict", str(result.folder), *map(str, files), "--json"])
    assert done.exit_code == 0, done.output
    assert [json.loads(line) for line in done.output.splitlines()] == rows
    with Image.open(files[0]) as image:  # PIL images and a tensor batch give the same probabilities
        (from_pil,) = model.predict([image.copy()])
    batch = model.preprocess.eval_transform()(Image.open(files[0]).convert("RGB"))[None]
    (from_tensor,) = model.predict(batch)
    assert from_pil["class"] == rows[0]["class"] == from_tensor["class"]
    assert from_pil["probability"] == pytest.approx(rows[0]["probability"], abs=1e-5)


def test_pil_images_are_made_rgb_as_image_files_are(api_run, tmp_path):
    """A transparent PIL image handed to predict is composited on white, as training and ``runner predict`` read
    its file (``convert("RGB")`` would show the colour hidden under the transparency); the torchvision datasets'
    RGB conversion is the same ``runner.api.to_rgb``."""
    from runner.api import to_rgb
    from runner_plugins.torchvision_datasets import ToRGB

    _, _, result, _ = api_run
    rgba = Image.new("RGBA", (48, 40), (40, 40, 220, 255))
    rgba.paste((220, 40, 40, 0), (0, 0, 30, 40))  # most of it transparent, red underneath
    rgba.save(tmp_path / "cut_out.png")
    model = runner.load(result.folder)
    (from_pil,) = model.predict([rgba])
    (from_file,) = model.predict([str(tmp_path / "cut_out.png")])
    (hidden,) = model.predict([rgba.convert("RGB")])
    def probabilities(row):
        return dict(row["top"])

    assert probabilities(from_pil) == pytest.approx(probabilities(from_file), abs=1e-6)
    assert probabilities(from_pil) != pytest.approx(probabilities(hidden), abs=1e-4)
    assert to_rgb(rgba).getpixel((5, 5)) == ToRGB()(rgba).getpixel((5, 5)) == (255, 255, 255)
    assert ToRGB()(rgba).getpixel((40, 5)) == (40, 40, 220)


def test_evaluate_matches_the_cli_and_export_writes_a_checked_program(api_run, tmp_path):
    _, _, result, _ = api_run
    model = runner.load(result.folder)
    scores = model.evaluate()
    done = cli.invoke(app, ["evaluate", str(result.folder), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output.splitlines()[0])["accuracy"] == scores["accuracy"]
    written = model.export(tmp_path / "model.pt2")
    assert written["format"] == "export" and written["max_abs_diff"] < 1e-4
    program = torch.export.load(str(tmp_path / "model.pt2"))
    assert program.module()(torch.zeros(2, 3, model.preprocess.size, model.preprocess.size)).shape == (2, 2)


def test_a_bad_override_raises_the_projects_error_naming_the_key(api_run):
    _, recipe, _, _ = api_run
    with pytest.raises(runner.RunnerError) as info:
        runner.recipe(recipe, overrides={"optimizer.momentun": 0.9})
    assert "optimizer.momentun" in str(info.value) and "did you mean 'momentum'" in str(info.value)
    with pytest.raises(runner.RunnerError, match="epochs"):
        runner.run(recipe, overrides={"epochs": 0}, progress=False)


def test_recipe_plan_and_components_as_data(api_run):
    _, recipe, _, _ = api_run
    loaded = runner.recipe(recipe, overrides={"epochs": 4})
    assert loaded.settings.epochs == 4 and "epochs: 4" in loaded.to_yaml()
    plan = runner.plan(loaded)
    assert plan["total"] >= plan["trainable"] > 0 and plan["rows"][-1]["group"] == "head"
    backbones = runner.components("backbone")
    assert {"efficientnet_lite0", "timm"} <= {c["name"] for c in backbones}
    assert all(c["kind"] == "backbone" and c["summary"] for c in backbones)


class Interrupt:
    @hookimpl
    def runner_batch_end(self, run, epoch, phase, batch, size):
        if epoch == 2:
            raise KeyboardInterrupt


def test_an_interrupt_leaves_last_pt_raises_keyboard_interrupt_and_resumes(api_run):
    tmp, recipe, _, _ = api_run
    with pytest.raises(KeyboardInterrupt) as info:
        runner.run(recipe, overrides={"epochs": 3}, plugins=[Interrupt()], progress=False)
    folder = info.value.folder
    assert torch.load(folder / "last.pt", weights_only=True)["epoch"] == 1
    resumed = runner.run(None, resume=folder, progress=False)
    assert resumed.folder == folder and [m["epoch"] for m in resumed.metrics] == [1, 2, 3]
