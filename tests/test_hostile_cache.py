"""Hostile and broken feature caches and run-folder writes: a cache file that does not fit its data set is rebuilt
with a warning, an unwritable cache folder only costs the cache, and atomically written files honour the umask and
say why a write failed."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from conftest import make_imagefolder
from runner import engine, feature_cache
from runner.errors import RunnerError
from runner.plugins import load_catalog
from runner.recipes import load
from runner.runfolder import atomic_write, save_text
from test_engine import write_recipe
from test_speed_paths import assert_close_to_scale

NO_AUGMENT = {"batch_size": 4, "workers": 0, "augment": "none"}
NO_PICTURES = {"batch": False, "curves": False, "predictions": 0}  # matplotlib would take most of the time


def dataset(root):
    return {"name": "imagefolder", "root": str(root), **NO_AUGMENT}


def fit(tmp_path, data):
    run = engine.build(load(write_recipe(tmp_path, data, dataset=dataset(data), epochs=2, pictures=NO_PICTURES)),
                       load_catalog())
    engine.fit(run)
    kept = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "best")  # not the speed
    return run, [{k: json.loads(line)[k] for k in kept}
                 for line in (run.folder / "metrics.jsonl").read_text().splitlines()]


def test_a_tampered_cache_is_rebuilt_and_trains_as_a_clean_run(tmp_path, imagefolder, capfd):
    clean, clean_metrics = fit(tmp_path / "a", imagefolder)
    assert "extracted" in clean.cache_note
    files = {torch.load(p, weights_only=True)["features"].shape[1]: p for p in feature_cache.cache_dir().iterdir()}
    train_file = files[16]
    good = torch.load(train_file, weights_only=True)
    torch.save({"features": torch.zeros(1, 16, 7), "labels": torch.zeros(16, dtype=torch.long)}, train_file)
    capfd.readouterr()

    again, again_metrics = fit(tmp_path / "b", imagefolder)
    err = capfd.readouterr().err
    assert f"warning: feature cache {train_file} does not fit the train data (features of shape (7,), expected " \
           in err and err.count("warning:") == 1
    assert again_metrics == clean_metrics
    torch.testing.assert_close(torch.load(train_file, weights_only=True), good)  # rewritten as it was


def test_every_kind_of_mismatch_is_caught_and_rebuilt(tmp_path, capfd):
    small = make_imagefolder(tmp_path / "small", per_split=(2, 1))  # 4 training images: each rebuild is quick
    run = engine.build(load(write_recipe(tmp_path, small, dataset=dataset(small))), load_catalog())

    def cached():
        return feature_cache.cached_features(run, run.data.train, 1, run.model, "train")

    features, labels, hit = cached()
    (path,) = feature_cache.cache_dir().iterdir()
    assert not hit and cached()[2]  # a good file is used as it is
    swapped = labels.clone()
    swapped[[0, -1]] = labels[[-1, 0]]
    nan = features.clone()
    nan[0, 2, 5] = float("nan")
    cases = {
        "features of shape (": {"features": features[..., :-1], "labels": labels},
        "(1, 3) views x rows and 3 labels, expected (1, 4) and 4": {"features": features[:, 1:],
                                                                    "labels": labels[1:]},
        "labels outside 0..1": {"features": features, "labels": labels + 2},
        "labels that differ from the data set's": {"features": features, "labels": swapped},
        "non-finite values": {"features": nan, "labels": labels},
        "dtypes torch.float64 and torch.int64, expected torch.float32": {"features": features.double(),
                                                                        "labels": labels},
        "not a dict of features and labels tensors": {"features": features.tolist(), "labels": labels},
        "unreadable (": b"not a torch file",
    }
    capfd.readouterr()
    for expected, content in cases.items():
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        got_features, got_labels, hit = cached()
        assert not hit and torch.equal(got_features, features) and torch.equal(got_labels, labels), expected
        (line,) = capfd.readouterr().err.splitlines()
        assert line.startswith(f"warning: feature cache {path} does not fit the train data ({expected}"), line
        assert torch.equal(torch.load(path, weights_only=True)["features"], features), expected  # rewritten


def test_an_unwritable_cache_folder_warns_and_the_run_trains(tmp_path, imagefolder, monkeypatch, capfd):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(blocker / "features"))
    run, metrics = fit(tmp_path, imagefolder)
    assert run.cache and "extracted" in run.cache_note and len(metrics) == 2
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and all("feature cache not written (" in w and "training on the extracted features"
                                      in w for w in warnings)
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_honour_the_umask_like_plain_files(tmp_path, mask):
    old = os.umask(mask)
    try:
        save_text("x", tmp_path / "atomic.txt")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == 0o666 & ~mask
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_a_failed_write_says_whether_the_disk_is_full_or_the_folder_unwritable(tmp_path):
    # /sys refuses new files even to root: a real permission (or read-only) failure
    with pytest.raises(RunnerError) as info:
        save_text("x", "/sys/runner-test.txt")
    (message,) = info.value.problems
    assert "disk full" not in message and message.endswith("; nothing was written")
    assert "no permission to write in /sys" in message or "/sys is on a read-only file system" in message

    target = tmp_path / "metrics.json"
    save_text("old", target)
    with open("/dev/full", "wb", buffering=0) as full, pytest.raises(RunnerError) as info:
        atomic_write(target, lambda f: full.write(b"x"))  # the kernel's own "no space left on device"
    assert info.value.problems == [f"cannot write {target} (No space left on device): is the disk full? the "
                                   "previous one is intact"]
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_an_unwritable_or_damaged_onnx_trunk_folder_leaves_the_pass_in_torch(tmp_path, imagefolder, monkeypatch):
    """The kept ONNX trunk is an optimisation: a folder it cannot be written to, or a kept file that is not an ONNX
    model, leaves the pass in torch (with the reason in the run's note; a damaged file removed, so the next run
    exports again), and the features are torch's."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "features"))
    data = {"name": "imagefolder", "root": str(imagefolder), **NO_AUGMENT}

    def pass_over_val(trunk_runtime):
        recipe = write_recipe(tmp_path, imagefolder, dataset=data, cache="features", trunk_runtime=trunk_runtime)
        run = engine.build(load(recipe), load_catalog())
        info = {}
        features, _ = feature_cache.extract(run, run.data.val, 1, info=info)
        images = torch.stack([run.data.val[i][0] for i in range(len(run.data.val))])
        run.model.eval()
        with torch.inference_mode():
            want = feature_cache.head_inputs(run.model, run.backbone.head, images)
        assert_close_to_scale(features[0], want)
        return info["runtime"]

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RUNNER_ONNX_CACHE", str(blocker / "onnx"))
    runtime = pass_over_val("onnxruntime")
    assert runtime.startswith("torch (the trunk did not export to ONNX ("), runtime
    assert blocker.read_text() == "not a folder"

    kept = tmp_path / "onnx"
    monkeypatch.setenv("RUNNER_ONNX_CACHE", str(kept))
    pass_over_val("onnxruntime")
    (exported,) = kept.glob("*.onnx")
    exported.write_bytes(b"\x08\x07 not a model")
    runtime = pass_over_val("auto")
    assert runtime.startswith(f"torch (cached ONNX trunk {exported.name} unreadable ("), runtime
    assert not exported.exists()
