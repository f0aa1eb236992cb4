"""Faults during a run and fuzzed recipes: a clear message and the right exit code, nothing lost."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from runner.cli import app
from runner.errors import RunnerError
from runner.recipes import load
from runner.plugins import load_catalog
from test_engine import write_recipe

cli = CliRunner()
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_diverging_loss_stops_with_exit_3_and_keeps_the_last_good_epoch(tmp_path, imagefolder):
    # epoch 1 trains at a sane lr; the scheduler then multiplies it by 1e30 and the loss blows up in epoch 2
    recipe = write_recipe(tmp_path, imagefolder, freeze="none", epochs=3,
                          optimizer={"name": "sgd", "lr": 0.01}, scheduler={"name": "step", "step_size": 1, "gamma": 1e30})
    result = cli.invoke(app, ["run", recipe])
    assert result.exit_code == 3, result.output
    assert "at epoch 2, batch" in result.output and "Traceback" not in result.output
    (folder,) = (tmp_path / "runs").iterdir()
    last = torch.load(folder / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert torch.load(folder / "best.pt", weights_only=True)["epoch"] == 1
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1


def test_unwritable_output_is_one_clear_line(tmp_path, imagefolder):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    recipe = write_recipe(tmp_path, imagefolder, output=str(blocker / "runs"))
    result = cli.invoke(app, ["run", recipe])
    assert result.exit_code == 2 and "cannot write run folders in" in result.output
    assert "Traceback" not in result.output


def test_two_runs_in_the_same_second_get_distinct_folders(tmp_path):
    from runner.runfolder import new_run_folder

    folders = {new_run_folder(tmp_path, "same") for _ in range(3)}
    assert len(folders) == 3 and all(f.is_dir() for f in folders)


def _loads_or_fails_cleanly(path: Path) -> None:
    """A recipe either loads or raises RunnerError with one-line problems; any other exception fails the test."""
    try:
        load(path, catalog=CATALOG)
    except RunnerError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)


CATALOG = None


def setup_module():
    global CATALOG
    from runner.plugins import load_catalog
    CATALOG = load_catalog()


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["dataset", "backbone", "freeze", "optimizer", "scheduler", "epochs", "name", "lr",
                         "root", "momentum", "extends", "seed", "cache", "views", "x"]) | st.text(max_size=6),
        children, max_size=5),
    max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(yaml_values)
def test_fuzzed_yaml_structures_load_or_raise_the_projects_error(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("fuzz") / "recipe.yaml"
    path.write_text(yaml.safe_dump(value))
    _loads_or_fails_cleanly(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["finetune.yaml", "gradual.yaml", "finetune_fast.yaml"]),
       st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 3), st.text(max_size=3)), min_size=1, max_size=4))
def test_mutated_real_recipes_load_or_raise_the_projects_error(tmp_path_factory, name, edits):
    text = (RECIPES / name).read_text()
    for position, cut, insert in edits:
        at = position % (len(text) + 1)
        text = text[:at] + insert + text[at + cut:]
    folder = tmp_path_factory.mktemp("mutated")
    (folder / "finetune.yaml").write_text((RECIPES / "finetune.yaml").read_text())
    path = folder / "recipe.yaml"
    path.write_text(text)
    _loads_or_fails_cleanly(path)


FULL_DISK = """
import resource, signal, sys, torch
from runner.errors import RunnerError
from runner.runfolder import save_torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then refuses writes past the limit, as a full disk does
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    save_torch({"model": {"w": torch.zeros(1_000_000)}}, sys.argv[1])
except RunnerError as exc:
    print(exc)
    sys.exit(2)
"""


def test_a_checkpoint_write_that_runs_out_of_space_leaves_the_previous_one_loadable(tmp_path):
    import subprocess
    import sys

    from runner.runfolder import save_torch

    path = tmp_path / "last.pt"
    save_torch({"model": {"w": torch.ones(10)}, "epoch": 4}, path)
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is the disk full? the previous one is intact" in result.stdout
    assert torch.load(path, weights_only=True)["epoch"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


class NotWeights:
    pass


def test_checkpoint_faults_name_the_file_and_what_differs(tmp_path):
    from runner_plugins.backbones import load_state_dict

    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(1000)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:300])
    pickle = tmp_path / "pickle.pt"
    torch.save({"w": NotWeights()}, pickle)  # an arbitrary pickled object: refused by weights_only loading
    for path, expected in ((tmp_path / "missing.pt", "does not exist"), (truncated, "cannot be loaded as weights"),
                           (pickle, "cannot be loaded as weights")):
        try:
            load_state_dict(path)
        except RunnerError as exc:
            assert str(path) in str(exc) and expected in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError(f"{path} loaded")


def test_a_10_mb_recipe_loads_and_its_problems_are_capped_on_screen(tmp_path):
    path = tmp_path / "big.yaml"
    comment = "# " + "x" * 98 + "\n"
    path.write_text(comment * 100_000 + "dataset: {name: imagefolder, root: x}\nbackbone: efficientnet_lite0\n"
                    "optimizer: sgd\n" + "".join(f"unknown_{i}: 1\n" for i in range(60)))
    assert path.stat().st_size > 10_000_000
    try:
        load(path, [], load_catalog())
    except RunnerError as exc:
        assert len(exc.problems) == 60 and exc.problems[0].endswith(":100004:1: unknown_0: unknown field")
    else:
        raise AssertionError("loaded")
    result = cli.invoke(app, ["validate", str(path)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 21 and lines[-1] == "error: ... and 40 more problems"
