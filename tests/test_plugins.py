"""Plugins for real: an installed package found through its entry point, local plugin files from --plugin and a
recipe's ``plugins:``, broken plugins, name clashes, the early-stopping and CSV-metrics plugins, the new-plugin
scaffold, and docs/plugins.md kept in step with runner/hookspecs.py."""
from __future__ import annotations

import csv
import importlib
import importlib.metadata
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from runner import engine, hookspecs
from runner.cli import app
from runner.errors import RunnerError
from runner.plugins import load_catalog
from runner.recipes import load
from test_engine import write_recipe

cli = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path(__file__).resolve().parent / "example_plugin"
DOCS = ROOT / "docs" / "plugins.md"
KINDS = ("backbone", "dataset", "freeze", "optimizer", "scheduler", "hooks")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """rich sizes its tables from COLUMNS: wide enough that no cell wraps (the tmp paths are long)."""
    monkeypatch.setenv("COLUMNS", "1000")


def invoke(*args: str):
    return cli.invoke(app, [str(a) for a in args])


def row(output: str, first_cell: str) -> str:
    """The table line whose first cell is ``first_cell``."""
    lines = [line for line in output.splitlines() if re.match(rf"{re.escape(first_cell)}\s", line)]
    assert len(lines) == 1, output
    return lines[0]


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


# -- an installed package, registered through its entry point ------------------------------------------------------

def _pip(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def example_plugin():
    """tests/example_plugin pip-installed (editable) for this module, uninstalled after it."""
    installed = _pip("install", "--no-deps", "--no-build-isolation", "-e", str(EXAMPLE))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    added: list[str] = []
    try:
        importlib.invalidate_caches()
        dist = importlib.metadata.distribution("runner-example")
        # an editable install puts src/ on sys.path through a .pth file, which only a new interpreter reads
        for file in dist.files or []:
            if file.name.endswith(".pth"):
                for line in file.read_text().splitlines():
                    if line and not line.startswith(("#", "import")) and line not in sys.path:
                        sys.path.append(line)
                        added.append(line)
        importlib.invalidate_caches()
        assert [ep.value for ep in importlib.metadata.entry_points(group="runner")
                if ep.name == "runner_example"] == ["runner_example"]
        yield dist
    finally:
        removed = _pip("uninstall", "-y", "runner-example")
        for line in added:
            sys.path.remove(line)
        sys.modules.pop("runner_example", None)
        importlib.invalidate_caches()
        assert removed.returncode == 0, removed.stdout + removed.stderr


def test_installed_plugin_is_listed_with_its_plugin(example_plugin):
    result = invoke("list")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "tiny_cnn" in line.split())
    assert "runner_example" in line and "backbone" in line
    line = next(line for line in result.output.splitlines() if "halve" in line.split())
    assert "runner_example" in line and "scheduler" in line


def test_runner_plugins_shows_the_distribution_version_and_hooks(example_plugin):
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    line = row(result.output, "runner_example")
    assert f"runner-example {example_plugin.version}" in line and example_plugin.version == "0.3.0"
    assert "runner_backbones" in line and "runner_schedulers" in line
    assert "backbone tiny_cnn" in line and "scheduler halve" in line
    assert "built-in" in row(result.output, "runner_plugins.optim")


def test_recipe_with_the_installed_backbone_and_scheduler_trains(example_plugin, tmp_path, imagefolder):
    recipe = write_recipe(tmp_path, imagefolder, backbone="tiny_cnn", scheduler="halve", freeze="none", epochs=2)
    run = engine.build(load(recipe), load_catalog())
    assert run.backbone.preprocess.size == 32 and run.backbone.head.out_features == 2
    summary = engine.fit(run)
    lines = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()]
    assert [set(m["lr"]) for m in lines] == [{0.05}, {0.025}]  # halve, in every parameter group
    best = torch.load(run.folder / "best.pt", weights_only=True)
    assert best["epoch"] == summary["best_epoch"] and best["preprocess"]["size"] == 32
    assert best["recipe"]["backbone"] == {"name": "tiny_cnn", "width": 8}
    assert best["recipe"]["scheduler"] == {"name": "halve"}


def test_autoload_can_be_turned_off(example_plugin, monkeypatch):
    assert "tiny_cnn" in load_catalog().names("backbone")
    monkeypatch.setenv("RUNNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    catalog = load_catalog()
    assert "runner_example" not in catalog.plugins.info
    with pytest.raises(RunnerError, match="unknown backbone 'tiny_cnn'"):
        catalog.get("backbone", "tiny_cnn")
    result = invoke("list", "backbones")
    assert result.exit_code == 0 and "tiny_cnn" not in result.output and "timm" in result.output


# -- local plugin files ----------------------------------------------------------------------------------------------

LOCAL_PLUGIN = """
    import json

    import torch

    import runner
    from runner.types import Component, Params, Schedule


    class QuarterParams(Params):
        factor: float = 0.25


    @runner.hookimpl
    def runner_schedulers():
        def build(params, optimizer, epochs, steps_per_epoch):
            return Schedule(torch.optim.lr_scheduler.StepLR(optimizer, 1, params.factor), "epoch")
        return [Component("quarter", "quarter the lr every epoch", build, QuarterParams)]


    @runner.hookimpl
    def runner_run_end(run, summary):
        (run.folder / "myplugin.json").write_text(json.dumps({"epochs_run": summary["epochs_run"]}))
"""


def test_plugin_file_from_the_command_line(tmp_path):
    plugin = write(tmp_path / "myplugin.py", LOCAL_PLUGIN)
    result = invoke("--plugin", plugin, "list", "schedulers")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "quarter" in line.split())
    assert "myplugin" in line and "quarter the lr every epoch" in line
    assert "quarter" not in invoke("list", "schedulers").output  # only when asked for


def test_plugin_file_from_a_recipe_relative_to_the_recipe(tmp_path, imagefolder):
    folder = tmp_path / "recipes"
    write(folder / "myplugin.py", LOCAL_PLUGIN)
    recipe = write_recipe(folder, imagefolder, plugins=["myplugin.py"], scheduler={"name": "quarter", "factor": 0.5},
                          epochs=1)
    assert Path.cwd() != folder
    result = invoke("run", recipe)
    assert result.exit_code == 0, result.output
    (run_folder,) = (folder / "runs").iterdir()
    assert (run_folder / "best.pt").is_file()
    assert json.loads((run_folder / "myplugin.json").read_text()) == {"epochs_run": 1}
    resolved = yaml.safe_load((run_folder / "recipe.yaml").read_text())
    assert resolved["scheduler"] == {"name": "quarter", "factor": 0.5} and resolved["plugins"] == ["myplugin.py"]


def test_the_same_plugin_file_from_the_command_line_and_the_recipe(tmp_path, imagefolder):
    plugin = write(tmp_path / "myplugin.py", LOCAL_PLUGIN)
    recipe = write_recipe(tmp_path, imagefolder, plugins=["myplugin.py"], scheduler="quarter")
    catalog = load_catalog([str(plugin), *load(recipe).plugin_refs()])
    assert catalog.plugins.failures == [] and "quarter" in catalog.names("scheduler")


def test_missing_plugin_file_is_one_clear_error(tmp_path):
    result = invoke("--plugin", tmp_path / "nowhere.py", "list")
    assert result.exit_code == 2 and "nowhere.py does not exist" in result.output
    assert "Traceback" not in result.output


# -- broken plugins ------------------------------------------------------------------------------------------------

GOOD = """
    import runner
    from runner.types import Component, Params, Schedule

    @runner.hookimpl
    def runner_schedulers():
        return [Component("still_here", "from the good plugin", lambda *a: Schedule(None), Params)]
"""
BROKEN = {
    "bad": """
        raise ImportError("needs the frobnicate package")
    """,
    "wrongarg": """
        import runner

        @runner.hookimpl
        def runner_epoch_end(run, epok, metrics):
            pass
    """,
    "nohook": """
        import runner

        @runner.hookimpl
        def runner_backbone():
            return []
    """,
}


@pytest.fixture
def broken(tmp_path) -> dict[str, Path]:
    return {name: write(tmp_path / f"{name}.py", source) for name, source in BROKEN.items()}


def test_a_plugin_failing_at_import_is_listed_and_the_rest_still_load(tmp_path, broken):
    good = write(tmp_path / "good.py", GOOD)
    result = invoke("--plugin", broken["bad"], "--plugin", good, "plugins")
    assert result.exit_code == 0, result.output
    line = row(result.output, "bad")
    assert str(broken["bad"]) in line and "ImportError: needs the frobnicate package" in line
    assert "scheduler still_here" in row(result.output, "good")
    assert "runner_datasets" in row(result.output, "runner_plugins.datasets")
    assert re.search(r"^warning: plugin bad .*failed to load", result.stderr, re.M)

    catalog = load_catalog([str(broken["bad"]), str(good)], lenient=True)
    assert [f.name for f in catalog.plugins.failures] == ["bad"]
    assert "still_here" in catalog.names("scheduler") and "sgd" in catalog.names("optimizer")
    with pytest.raises(RunnerError, match="plugin bad .*failed to load"):  # named, it is required
        load_catalog([str(broken["bad"])])
    named = invoke("--plugin", broken["bad"], "list")
    assert named.exit_code == 2 and named.stderr.count("\n") == 1 and "frobnicate" in named.stderr


def test_strict_makes_a_failing_plugin_one_line_error(broken):
    result = invoke("--plugin", broken["bad"], "plugins", "--strict")
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: plugin bad (") and str(broken["bad"]) in line and "frobnicate" in line
    with pytest.raises(RunnerError, match="plugin bad"):
        load_catalog([str(broken["bad"])], strict=True)


def test_a_hookimpl_with_a_wrong_argument_name_is_reported(broken):
    result = invoke("--plugin", broken["wrongarg"], "plugins")
    assert result.exit_code == 0, result.output
    line = row(result.output, "wrongarg")
    assert "failed to load" in line and "runner_epoch_end" in line
    catalog = load_catalog([str(broken["wrongarg"])], lenient=True)
    (failure,) = catalog.plugins.failures
    assert failure.name == "wrongarg" and "plugin wrongarg" in failure.error
    assert catalog.pm.get_plugin("wrongarg") is None
    assert "wrongarg" not in [i.plugin_name for i in catalog.pm.hook.runner_epoch_end.get_hookimpls()]
    assert invoke("--plugin", broken["wrongarg"], "plugins", "--strict").exit_code == 2


def test_the_wrong_argument_error_says_which_argument(broken):
    (failure,) = load_catalog([str(broken["wrongarg"])], lenient=True).plugins.failures
    assert "epok" in failure.error


def test_a_hookimpl_matching_no_hook_is_reported(broken):
    result = invoke("--plugin", broken["nohook"], "plugins")
    assert result.exit_code == 0, result.output
    line = row(result.output, "nohook")
    assert "unknown hook 'runner_backbone'" in line and str(broken["nohook"]) in line
    catalog = load_catalog([str(broken["nohook"])], lenient=True)
    assert [f.name for f in catalog.plugins.failures] == ["nohook"]
    assert catalog.pm.get_plugin("nohook") is None
    strict = invoke("--plugin", broken["nohook"], "plugins", "--strict")
    assert strict.exit_code == 2 and "plugin nohook" in strict.stderr


# -- two plugins, one name -----------------------------------------------------------------------------------------

def fancy(tmp_path: Path, name: str, optimizer: str) -> Path:
    return write(tmp_path / f"{name}.py", f"""
        import torch

        import runner
        from runner.types import Component, Params


        class FancyParams(Params):
            lr: float = 0.1


        @runner.hookimpl
        def runner_optimizers():
            def build(params, param_groups):
                return torch.optim.{optimizer}(param_groups, lr=params.lr)
            return [Component("fancy", "a fancy optimizer from {name}", build, FancyParams)]
    """)


@pytest.fixture
def clash(tmp_path):
    return [str(fancy(tmp_path, "fancy_sgd", "SGD")), str(fancy(tmp_path, "fancy_adam", "Adam"))]


def test_same_name_from_two_plugins_is_ambiguous(tmp_path, clash, imagefolder):
    recipe = write_recipe(tmp_path, imagefolder, optimizer="fancy")
    with pytest.raises(RunnerError) as error:
        load(recipe, catalog=load_catalog(clash))
    (problem,) = error.value.problems
    assert "fancy_sgd" in problem and "fancy_adam" in problem
    assert re.search(r"pick one as '(fancy_sgd|fancy_adam):fancy'", problem)

    result = invoke("--plugin", clash[0], "--plugin", clash[1], "validate", recipe)
    assert result.exit_code == 2 and "optimizer 'fancy' is provided by" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("plugin, optimizer", [("fancy_sgd", torch.optim.SGD), ("fancy_adam", torch.optim.Adam)])
def test_plugin_colon_name_picks_one(tmp_path, clash, imagefolder, plugin, optimizer):
    recipe = write_recipe(tmp_path, imagefolder, optimizer={"name": f"{plugin}:fancy", "lr": 0.2})
    catalog = load_catalog(clash)
    run = engine.build(load(recipe, catalog=catalog), catalog)
    assert type(run.optimizer) is optimizer and run.optimizer.param_groups[0]["lr"] == 0.2
    assert run.resolved["optimizer"] == {"name": f"{plugin}:fancy", "lr": 0.2}
    result = invoke("--plugin", clash[0], "--plugin", clash[1], "validate", recipe)
    assert result.exit_code == 0, result.output


def test_plugin_colon_name_from_the_wrong_plugin(clash):
    with pytest.raises(RunnerError, match="no optimizer 'fancy' from plugin 'runner_plugins.optim'"):
        load_catalog(clash).get("optimizer", "runner_plugins.optim:fancy")


def test_show_a_component_picked_by_plugin(clash):
    result = invoke("--plugin", clash[0], "--plugin", clash[1], "show", "optimizer", "fancy_adam:fancy")
    assert result.exit_code == 0, result.output
    assert "a fancy optimizer from fancy_adam" in result.output


def test_list_shows_both_providers_of_a_clashing_name(clash):
    result = invoke("--plugin", clash[0], "--plugin", clash[1], "list", "optimizers")
    assert result.exit_code == 0, result.output
    assert "fancy_sgd" in result.output and "fancy_adam" in result.output


# -- the built-in lifecycle plugins: early stopping, CSV metrics ----------------------------------------------------

def test_early_stopping_and_metrics_csv(tmp_path, imagefolder):
    recipe = write_recipe(tmp_path, imagefolder, epochs=5,
                          early_stopping={"patience": 1, "monitor": "train_loss", "min_delta": 100})
    run = engine.build(load(recipe), load_catalog())
    summary = engine.fit(run)
    assert summary["epochs"] == 5 and summary["epochs_run"] == 2
    assert "early stopping" in summary["stopped"] and "train_loss" in summary["stopped"]
    assert json.loads((run.folder / "summary.json").read_text())["epochs_run"] == 2
    lines = [json.loads(line) for line in (run.folder / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    with open(run.folder / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert {"epoch", "train_loss", "val_acc", "lr_head"} <= set(reader.fieldnames)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r, m in zip(rows, lines):
        assert float(r["train_loss"]) == pytest.approx(m["train_loss"]) and float(r["lr_head"]) == m["lr"][0]
        assert float(r["val_acc"]) == pytest.approx(m["val_acc"])


def test_no_early_stopping_runs_every_epoch(tmp_path, imagefolder):
    recipe = write_recipe(tmp_path, imagefolder, epochs=2)
    summary = engine.fit(engine.build(load(recipe), load_catalog()))
    assert summary["epochs_run"] == 2 and summary["stopped"] is None


# -- runner new-plugin ---------------------------------------------------------------------------------------------



@pytest.mark.parametrize("kind", KINDS)
def test_new_plugin_package_passes_its_own_tests(tmp_path, kind):
    name = f"runner-demo-{kind}"
    result = invoke("new-plugin", name, "--kind", kind, "--into", tmp_path)
    assert result.exit_code == 0, result.output
    package = tmp_path / name
    module = f"runner_demo_{kind}"
    assert (package / "src" / module / "__init__.py").is_file()
    assert f'{module} = "{module}"' in (package / "pyproject.toml").read_text()

    again = invoke("new-plugin", name, "--kind", kind, "--into", tmp_path)
    assert again.exit_code == 2 and "already exists" in again.output

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(package / "src")
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", str(package / "tests")], cwd=package, env=env,
                           capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, (tests.stdout + tests.stderr)[-3000:]
    assert "1 passed" in tests.stdout


def test_new_plugin_unknown_kind(tmp_path):
    result = invoke("new-plugin", "runner-demo", "--kind", "loss", "--into", tmp_path)
    assert result.exit_code == 2 and "--kind loss: expected one of" in result.output
    assert not (tmp_path / "runner-demo").exists()


# -- docs/plugins.md -----------------------------------------------------------------------------------------------

def hookspec_functions():
    return [f for _, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "runner_spec")]


def test_docs_reproduce_every_hookspec_docstring():
    docs = DOCS.read_text()
    specs = hookspec_functions()
    assert {"runner_backbones", "runner_run_start", "runner_epoch_end"} <= {spec.__name__ for spec in specs}
    for spec in specs:
        doc = inspect.getdoc(spec)
        assert f"### `{spec.__name__}(" in docs, spec.__name__
        assert doc.splitlines()[0] in docs, spec.__name__
        assert doc in docs, f"docs/plugins.md: {spec.__name__}'s docstring differs from runner/hookspecs.py"


def test_docs_first_plugin_works_as_written(tmp_path):
    """The guide's first snippet, as a file: --plugin lists its component."""
    source = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(source)
    result = invoke("--plugin", plugin, "list", "schedulers")
    assert result.exit_code == 0, result.output
    # the installed example package offers a "halve" too: then both are listed, each as plugin:name
    assert any("halve" in line and "my_plugin" in line for line in result.output.splitlines()), result.output


# -- the TensorBoard plugin: registered through the entry-point group like a third-party one -----------------------

def test_tensorboard_plugin_comes_from_an_entry_point_and_logs_the_epochs(tmp_path, imagefolder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    catalog = load_catalog()
    assert catalog.plugins.info["tensorboard"].source.startswith("runner-transfer ")  # distribution and version
    run = engine.build(load(write_recipe(tmp_path, imagefolder, epochs=2)), catalog)
    engine.fit(run)
    events = EventAccumulator(str(run.folder / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "val/acc", "lr/head"} <= set(tags)
    assert [e.step for e in events.Scalars("val/acc")] == [1, 2]
    lines = (run.folder / "metrics.jsonl").read_text().splitlines()
    assert events.Scalars("val/acc")[1].value == pytest.approx(json.loads(lines[1])["val_acc"])
