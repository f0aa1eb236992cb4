"""After training: the run folder, resume that ends where an uninterrupted run ends, pictures, predict, evaluate,
export -- on small real images and a real (tiny) timm model."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from runner import engine
from runner.cli import app
from runner.hookspecs import hookimpl
from runner.plugins import load_catalog
from runner.recipes import load
from test_engine import write_recipe

cli = CliRunner()


class Interrupter:
    """A real lifecycle plugin that presses Ctrl-C in the middle of an epoch."""

    def __init__(self, epoch: int, batch: int = 1):
        self.epoch, self.batch = epoch, batch

    @hookimpl
    def runner_batch_end(self, run, epoch, phase, batch, size):
        if epoch == self.epoch and phase == "train" and batch == self.batch:
            raise KeyboardInterrupt


def metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def fit(recipe, resume=None, plugin=None):
    catalog = load_catalog()
    if plugin is not None:
        catalog.pm.register(plugin)
    run = engine.build(load(recipe), catalog)
    return run, engine.fit(run, resume)


@pytest.mark.parametrize("sections", [
    # crosses an unfreeze step, with augmentation and a per-epoch schedule
    dict(freeze={"name": "gradual", "start": 1, "every": 1}, scheduler={"name": "step", "step_size": 1, "gamma": 0.5}),
    # cached features with augmented views and a per-step schedule
    dict(cache="features", views=2, scheduler="cosine"),
    # the whole model with an EMA of its weights, mixed batches, accumulated and clipped gradients
    dict(freeze="none", ema=0.8, mixup=0.4, accumulate=2, grad_clip=1.0),
], ids=["gradual", "cached-views", "ema-mixup-accumulate"])
def test_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path, imagefolder, sections):
    whole_recipe = write_recipe(tmp_path / "whole", imagefolder, epochs=3, **sections)
    whole, _ = fit(whole_recipe)

    cut_recipe = write_recipe(tmp_path / "cut", imagefolder, epochs=3, **sections)
    with pytest.raises(engine.RunInterrupted) as info:
        fit(cut_recipe, plugin=Interrupter(epoch=3))
    folder = info.value.folder
    assert torch.load(folder / "last.pt", weights_only=True)["epoch"] == 2
    resumed, summary = fit(cut_recipe, resume=folder)
    assert summary["resumed_at"] == 3 and resumed.folder == folder

    a, b = metrics(whole.folder), metrics(folder)
    assert [m["epoch"] for m in b] == [1, 2, 3]
    for x, y in zip(a, b):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-5), (x["epoch"], key)
        assert y["lr"] == pytest.approx(x["lr"])
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_run_folder_holds_checkpoints_metrics_and_pictures(tmp_path, imagefolder):
    run, summary = fit(write_recipe(tmp_path, imagefolder, epochs=2))
    names = {p.name for p in run.folder.iterdir()}
    assert {"recipe.yaml", "metrics.jsonl", "metrics.csv", "best.pt", "last.pt", "summary.json", "batch.png",
            "curves.png", "predictions.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    for picture in ("batch.png", "curves.png", "predictions.png"):
        with Image.open(run.folder / picture) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 100
    last = torch.load(run.folder / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and set(last) >= {"model", "optimizer", "scheduler", "rng", "recipe", "best"}


def test_cli_ctrl_c_saves_and_prints_the_resume_command_then_resume_finishes(tmp_path, imagefolder):
    plugin = tmp_path / "stop_at_two.py"
    plugin.write_text("import runner\n\n@runner.hookimpl\ndef runner_batch_end(run, epoch, phase, batch, size):\n"
                      "    if epoch == 2:\n        raise KeyboardInterrupt\n")
    recipe = write_recipe(tmp_path, imagefolder, epochs=3)
    result = cli.invoke(app, ["--plugin", str(plugin), "run", recipe])
    assert result.exit_code == 130, result.output
    assert "runner resume" in result.output and "Traceback" not in result.output
    (folder,) = (tmp_path / "runs").iterdir()
    result = cli.invoke(app, ["resume", str(folder)])
    assert result.exit_code == 0, result.output
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["resumed_at"] == 2 and summary["epochs_run"] == 3
    assert [m["epoch"] for m in metrics(folder)] == [1, 2, 3]


def test_resume_without_last_pt_is_a_clear_error(tmp_path):
    result = cli.invoke(app, ["resume", str(tmp_path)])
    assert result.exit_code == 2 and "no last.pt to resume from" in result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import make_imagefolder

    tmp = tmp_path_factory.mktemp("trained")
    data = make_imagefolder(tmp / "data", per_split=(10, 5))
    recipe = write_recipe(tmp, data, epochs=3, freeze="none", optimizer={"name": "adam", "lr": 0.005},
                          scheduler="none")
    run, _ = fit(recipe)
    return run.folder, data


def test_predict_files_and_folders_as_table_json_and_csv(trained, tmp_path):
    folder, data = trained
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    result = cli.invoke(app, ["predict", str(folder), str(data / "val"), str(broken), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 11 and rows[-1] == {"file": str(broken), "error": "not a readable image"}
    for row in rows[:-1]:
        assert row["class"] in ("cats", "dogs") and row["class"] == row["top"][0][0]
        assert sum(p for _, p in row["top"]) == pytest.approx(1.0, abs=1e-3)
    right = sum(row["class"] in row["file"].split("/")[-2] for row in rows[:-1])
    assert right >= 8  # the colours are easy: the trained model gets most right
    table = cli.invoke(app, ["predict", str(folder / "best.pt"), str(data / "val" / "cats")])
    assert table.exit_code == 0 and "cats_0.jpg" in table.output
    csv = cli.invoke(app, ["predict", str(folder), str(data / "val" / "dogs"), "--csv"])
    assert csv.output.splitlines()[0] == "file,class,probability,top" and len(csv.output.splitlines()) == 6


def test_evaluate_reports_per_class_scores_and_a_confusion_matrix(trained):
    folder, data = trained
    result = cli.invoke(app, ["evaluate", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])
    assert report["images"] == 10 and sum(map(sum, report["confusion"])) == 10
    assert report["accuracy"] == pytest.approx((report["confusion"][0][0] + report["confusion"][1][1]) / 10)
    summary = json.loads((folder / "summary.json").read_text())
    assert report["accuracy"] == pytest.approx(summary["best_val_acc"])  # the same val split, the best weights
    assert (folder / "confusion.png").is_file()
    table = cli.invoke(app, ["evaluate", str(folder), "--data", str(data / "train")])
    assert table.exit_code == 0 and "precision" in table.output and "on 20 images" in table.output


def test_export_torchscript_matches_eager_and_carries_metadata(trained):
    folder, data = trained
    result = cli.invoke(app, ["export", str(folder), "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    diff = float(result.output.split("real images: ")[1].split()[0])
    assert diff < 1e-4
    extra = {"runner.json": ""}
    model = torch.jit.load(str(folder / "model.torchscript.pt"), _extra_files=extra)
    meta = json.loads(extra["runner.json"])
    assert meta["classes"] == ["cats", "dogs"] and meta["preprocess"]["size"] == 160
    assert model(torch.zeros(2, 3, 160, 160)).shape == (2, 2)


def test_export_onnx_without_the_extra_says_how_to_get_it(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed: import fails
    folder, _ = trained
    result = cli.invoke(app, ["export", str(folder), "--format", "onnx"])
    assert result.exit_code == 2 and "pip install 'runner-transfer[onnx]'" in result.output


def test_export_onnx_matches_eager_in_onnxruntime(trained):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime

    folder, _ = trained
    result = cli.invoke(app, ["export", str(folder), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert float(result.output.split("real images: ")[1].split()[0]) < 1e-4
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    (logits,) = session.run(None, {session.get_inputs()[0].name: torch.zeros(3, 3, 160, 160).numpy()})
    assert logits.shape == (3, 2)
    assert not list(folder.glob(".model.onnx.*")) and not list(folder.glob("*.data"))  # one self-contained file