"""Data-parallel runs: two gloo processes under torchrun on the CPU, against one process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import TINY_BACKBONE
from runner import engine
from runner.distributed import torchrun_command
from runner.plugins import load_catalog
from runner.recipes import load

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun's gloo on the CPU is tested on Linux")


def recipe(tmp_path, data, **changes) -> str:
    body = {"dataset": {"name": "imagefolder", "root": str(data), "batch_size": 16, "augment": "none"},
            "backbone": TINY_BACKBONE, "freeze": "all_but_head", "optimizer": {"name": "sgd", "lr": 0.5},
            "scheduler": "none", "epochs": 3, "precision": "fp32", "output": str(tmp_path / "runs")}
    body.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


def runner_cli(*args, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def last_metrics(folder) -> dict:
    return json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])


def test_two_processes_write_one_run_folder_and_match_one_process(tmp_path, imagefolder):
    # the whole training set (16 images) is one global batch, so the order the processes see it in cannot matter
    (tmp_path / "two").mkdir()
    path = recipe(tmp_path / "two", imagefolder)
    done = runner_cli("run", path, "--nproc", "2")
    folders = list((tmp_path / "two" / "runs").iterdir())
    assert len(folders) == 1, folders
    assert done.stdout.count("best val acc") == 1, "only rank 0 prints"
    two = last_metrics(folders[0])
    assert json.loads((folders[0] / "summary.json").read_text())["best_val_acc"] >= 0

    (tmp_path / "one").mkdir()
    run = engine.build(load(recipe(tmp_path / "one", imagefolder)), load_catalog())
    engine.fit(run)
    one = last_metrics(run.folder)
    assert two["val_acc"] == one["val_acc"] and two["train_acc"] == one["train_acc"]
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)


def test_interrupted_two_process_finetune_resumes_to_the_same_end(tmp_path, imagefolder):
    plugin = tmp_path / "stop_once.py"
    marker = tmp_path / "stop-now"
    plugin.write_text(
        "import pathlib\nimport runner\n\n@runner.hookimpl\ndef runner_batch_end(run, epoch, phase, batch, size):\n"
        f"    marker = pathlib.Path({str(marker)!r})\n"
        "    if epoch == 2 and marker.exists():\n        marker.unlink()\n        raise KeyboardInterrupt\n")
    changes = dict(freeze="none", cache="off", epochs=2, plugins=[str(plugin)],
                   dataset={"name": "imagefolder", "root": str(imagefolder), "batch_size": 8, "augment": "none"},
                   optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    (tmp_path / "plain").mkdir()
    runner_cli("run", recipe(tmp_path / "plain", imagefolder, **changes), "--nproc", "2")
    (tmp_path / "cut").mkdir()
    marker.touch()
    cut = runner_cli("run", recipe(tmp_path / "cut", imagefolder, **changes), "--nproc", "2", check=False)
    assert cut.returncode != 0
    folder = next((tmp_path / "cut" / "runs").iterdir())
    assert not (folder / "summary.json").exists() and (folder / "last.pt").exists()
    refused = runner_cli("run", "--resume", str(folder), "--nproc", "2", check=False)  # the folder's plugin file
    assert refused.returncode == 2 and "--plugin" in refused.stderr          # runs only when named
    runner_cli("--plugin", str(plugin), "run", "--resume", str(folder), "--nproc", "2")
    plain = last_metrics(next((tmp_path / "plain" / "runs").iterdir()))
    resumed = last_metrics(folder)
    assert resumed["epoch"] == plain["epoch"] == 2
    assert resumed["val_loss"] == pytest.approx(plain["val_loss"], rel=1e-4)


def test_a_global_batch_that_does_not_divide_is_a_clear_error(tmp_path, imagefolder):
    path = recipe(tmp_path, imagefolder, dataset={"name": "imagefolder", "root": str(imagefolder), "batch_size": 5})
    done = runner_cli("run", path, "--nproc", "2", check=False)
    assert done.returncode != 0
    assert "dataset.batch_size 5 is the global batch and must divide by the 2 processes" in done.stdout + done.stderr


def test_bad_recipe_fails_before_any_process_starts(tmp_path, imagefolder):
    path = recipe(tmp_path, imagefolder, epochz=3)
    done = runner_cli("run", path, "--nproc", "2", check=False)
    assert done.returncode == 2 and "epochz: unknown field" in done.stderr and "torch.distributed" not in done.stderr


def test_torchrun_command_passes_multi_node_flags():
    single = torchrun_command(2, ["run", "r.yaml"])
    assert single[1:] == ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                          "-m", "runner", "run", "r.yaml"]
    multi = torchrun_command(4, ["run", "r.yaml"], nnodes="2", node_rank=1, master_addr="10.0.0.1", master_port=29500)
    assert multi[1:12] == ["-m", "torch.distributed.run", "--nproc-per-node", "4", "--nnodes", "2", "--node-rank",
                           "1", "--master-addr", "10.0.0.1", "--master-port"]
