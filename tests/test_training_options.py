"""Regularisers and tricks as recipe options: mixup/cutmix, EMA, gradient clipping, accumulation, TTA."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from runner import engine, inference
from runner.cli import app
from runner.types import Preprocess
from runner.errors import RunnerError
from runner.plugins import load_catalog
from runner.recipes import load
from test_engine import write_recipe


def build(tmp_path, data, **sections):
    return engine.build(load(write_recipe(tmp_path, data, **sections)), load_catalog())


def test_mixup_and_cutmix_give_soft_targets_and_train(tmp_path, imagefolder):
    run = build(tmp_path, imagefolder, mixup=0.4, cutmix=1.0, epochs=1, freeze="none")
    images = next(iter(run.train_loader))[0]
    labels = torch.tensor([0, 1] * (len(images) // 2))
    mixed, targets = run.mix(images, labels)
    assert mixed.shape == images.shape and targets.shape == (len(labels), 2)
    assert torch.allclose(targets.sum(1), torch.ones(len(labels)))
    assert ((targets > 0) & (targets < 1)).any(), "targets are not mixed"
    assert run.cache_note.startswith("off: mixup and cutmix")
    summary = engine.fit(run)
    assert summary["epochs_run"] == 1 and 0 <= summary["best_val_acc"] <= 1


def test_mixup_with_cached_features_is_a_clear_error(tmp_path, imagefolder):
    with pytest.raises(RunnerError, match="cache: features needs a frozen trunk: mixup"):
        build(tmp_path, imagefolder, mixup=0.2, cache="features")


def test_ema_weights_are_the_ones_validated_and_saved_as_best(tmp_path, imagefolder):
    run = build(tmp_path, imagefolder, ema=0.5, epochs=1)
    summary = engine.fit(run)
    best = torch.load(run.folder / "best.pt", weights_only=True)["model"]
    last = torch.load(run.folder / "last.pt", weights_only=True)
    raw = last["model"]
    head = [k for k in best if k.startswith("classifier")]
    assert any(not torch.equal(best[k], raw[k]) for k in head), "EMA weights equal the raw weights"
    for key, value in run.ema.module.state_dict().items():
        assert torch.equal(best[key], value.cpu()), key
    # the saved best weights, evaluated on val from scratch, give the reported accuracy
    again = build(tmp_path / "again", imagefolder, epochs=1)
    again.model.load_state_dict(best)
    assert engine.run_phase(again, "val", 1)["acc"] == pytest.approx(summary["best_val_acc"])


def test_gradient_clipping_bounds_each_step(tmp_path, imagefolder):
    run = build(tmp_path, imagefolder, grad_clip=1e-3, epochs=1, cache="off",
                optimizer={"name": "sgd", "lr": 1.0}, scheduler="none")
    before = [p.detach().clone() for p in run.backbone.head.parameters()]
    engine.run_phase(run, "train", 1)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(run.backbone.head.parameters(), before)])
    steps = len(run.train_loader)
    assert 0 < moved.norm() <= steps * 1e-3 * 1.001


def test_accumulating_two_batches_of_four_equals_one_batch_of_eight(tmp_path, imagefolder):
    common = dict(epochs=1, cache="features", precision="fp32", scheduler="none",
                  optimizer={"name": "sgd", "lr": 0.5})
    runs = []
    for name, batch, accumulate in (("a", 4, 2), ("b", 8, 1)):
        run = build(tmp_path / name, imagefolder, accumulate=accumulate,
                    dataset={"name": "imagefolder", "root": str(imagefolder), "batch_size": batch,
                             "augment": "none"}, **common)
        engine.fit(run)
        runs.append(run)
    a, b = (dict(r.backbone.head.named_parameters()) for r in runs)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_accumulate_counts_optimizer_steps_for_the_scheduler(tmp_path, imagefolder):
    run = build(tmp_path, imagefolder, accumulate=3, scheduler="onecycle", epochs=4)
    assert run.schedule.scheduler.total_steps == 4 * -(-len(run.train_loader) // 3)
    engine.fit(run)  # a OneCycle scheduler stepped past total_steps would raise


def test_tta_views_and_averaging(tmp_path):
    pre = Preprocess(size=32, resize=40)
    image = Image.new("RGB", (50, 44))
    image.paste((250, 0, 0), (0, 0, 10, 44))  # red strip on the left: the mirror differs
    flip = pre.tta_transform("flip")(image)
    assert flip.shape == (2, 3, 32, 32) and torch.equal(flip[1], flip[0].flip(-1))
    assert pre.tta_transform("crops")(image).shape == (10, 3, 32, 32)
    assert pre.tta_transform("none")(image).shape == (1, 3, 32, 32)

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    trained = inference.Trained(model, ["a", "b", "c"], pre, {}, tmp_path, tmp_path, torch.device("cpu"), None,
                                "flip")
    views = torch.stack([flip, flip.flip(-1)])
    averaged = trained.probabilities(views)
    each = [trained.probabilities(views[:, v]) for v in range(2)]
    assert torch.allclose(averaged, (each[0] + each[1]) / 2, atol=1e-6)


def test_predict_and_evaluate_with_tta(tmp_path, imagefolder):
    recipe = write_recipe(tmp_path, imagefolder, epochs=1, tta="flip")
    cli = CliRunner()
    assert cli.invoke(app, ["run", recipe]).exit_code == 0
    folder = next((tmp_path / "runs").iterdir())
    trained = inference.load_trained(folder, load_catalog())
    assert trained.tta == "flip"
    files = inference.image_files([str(imagefolder / "val")])
    rows = inference.predict_files(trained, files)
    plain = inference.predict_files(inference.load_trained(folder, load_catalog(), tta="none"), files)
    assert len(rows) == len(plain) == len(files)
    assert any(abs(r["probability"] - p["probability"]) > 1e-6 for r, p in zip(rows, plain))
    result = cli.invoke(app, ["evaluate", str(folder), "--tta", "crops", "--json"])
    assert result.exit_code == 0, result.output
    bad = cli.invoke(app, ["predict", str(folder), str(files[0]), "--tta", "flips"])
    assert bad.exit_code == 2 and "did you mean 'flip'" in bad.output
