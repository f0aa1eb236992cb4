"""The runner command line through typer's CliRunner, and the main recipe on the tutorial's images."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from runner.cli import app

cli = CliRunner()
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_list_shows_every_kind_with_its_plugin():
    result = cli.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for word in ("dataset", "backbone", "freeze", "optimizer", "scheduler", "imagefolder",
                 "efficientnet_lite0", "all_but_head", "sgd", "step", "runner_plugins.optim"):
        assert word in result.output
    assert "freeze policy" not in result.output  # the kind is named as the recipe key, everywhere


def test_list_one_kind():
    result = cli.invoke(app, ["list", "backbones"])
    assert result.exit_code == 0 and "torchvision" in result.output and "imagefolder" not in result.output


def test_list_unknown_kind_exits_2_with_a_suggestion():
    result = cli.invoke(app, ["list", "backbone5"])
    assert result.exit_code == 2 and "did you mean 'backbone'" in result.output


def test_show_gives_parameters_with_types_defaults_and_help():
    result = cli.invoke(app, ["show", "optimizer", "sgd"])
    assert result.exit_code == 0
    for word in ("momentum", "float", "0.9", "momentum factor", "nesterov"):
        assert word in result.output


def test_show_unknown_component():
    result = cli.invoke(app, ["show", "optimizer", "sdg"])
    assert result.exit_code == 2 and "did you mean 'sgd'" in result.output and "Traceback" not in result.output


def test_run_a_packaged_recipe_by_name_with_overrides(tmp_path, imagefolder):
    result = cli.invoke(app, ["run", "extract", "--set", f"dataset.root={imagefolder}",
                              "--set", "backbone={name: timm, model: test_efficientnet}", "--set", "epochs=1",
                              "--set", "dataset.workers=0", "--set", f"output={tmp_path / 'runs'}"])
    assert result.exit_code == 0, result.output
    assert "best val acc" in result.output
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("extract-") and (folder / "best.pt").is_file()


def test_run_with_a_missing_dataset_is_one_clear_line(tmp_path):
    result = cli.invoke(app, ["run", "extract", "--set", "dataset.root=no_such_data", "--set", "dataset.url=null"])
    assert result.exit_code == 2
    assert "dataset folder 'no_such_data' not found" in result.output and "Traceback" not in result.output


def test_extract_recipe_on_the_tutorial_images_reaches_90_percent(tmp_path, hymenoptera, monkeypatch):
    monkeypatch.setenv("RUNNER_DATA_PATH", str(hymenoptera.parent))
    result = cli.invoke(app, ["run", str(RECIPES / "extract.yaml"), "--set", "epochs=2",
                              "--set", f"output={tmp_path / 'runs'}"])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best_val_acc"] >= 0.90
    assert summary["classes"] == ["ants", "bees"]


def test_show_settings_lists_the_run_settings_with_nested_sections():
    result = cli.invoke(app, ["show", "settings"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for word in ("mixup", "cutmix", "ema", "grad_clip", "accumulate", "tta", "lr_find.steps", "early_stopping.patience"):
        assert word in result.output
    assert cli.invoke(app, ["show", "backbone"]).exit_code == 2


def test_the_command_leaves_its_objects_out_of_the_shutdown_collections_and_keeps_its_exit_code(tmp_path):
    """Python's shutdown would run full garbage collections over every object torch and its kin created (~2-3 s
    of a run's end on 2 cores): ``runner`` freezes them once its command is done, whatever the exit code."""
    import subprocess
    import sys

    code = ("import gc, sys\nfrom runner.cli import entry\nsys.argv = ['runner', *sys.argv[1:]]\n"
            "try:\n    entry()\nexcept SystemExit as exc:\n    print('exit', exc.code)\n"
            "print('frozen', gc.get_freeze_count())")
    for args, exit_code in ((["list", "backbones"], "0"), (["validate", str(tmp_path / "missing.yaml")], "2")):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        lines = done.stdout.splitlines()
        assert lines[-2].split()[1] in (exit_code, "None" if exit_code == "0" else exit_code), done.stdout
        assert int(lines[-1].split()[1]) > 10_000, done.stdout


def test_every_torchrun_process_says_why_it_stopped(tmp_path):
    """Under torchrun only rank 0 prints progress, but an error is printed by whichever process meets it: torchrun
    ends the others when the first one stops, perhaps before rank 0 could say anything."""
    import os
    import subprocess
    import sys

    missing = str(tmp_path / "missing.yaml")
    for rank, label in (("0", "error: "), ("1", "error (process 1): ")):
        done = subprocess.run([sys.executable, "-m", "runner", "validate", missing], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "RANK": rank})
        assert done.returncode == 2 and done.stderr.startswith(label) and "missing.yaml" in done.stderr, done.stderr
