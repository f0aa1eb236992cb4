"""The recipe loader: packaged recipes, ``extends:``, ``--set`` overrides, and one-line file:line:col errors.

Every recipe here is a real YAML file written to the test's own folder; nothing is mocked and nothing trains.
Each test runs with that folder as the working directory, so a file is shown in messages by its bare name.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.cli import app
from runner.types import KINDS
from runner.errors import RunnerError
from runner.plugins import load_catalog
from runner.recipes import load, parse_override, validate_components

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
DATASET = "dataset: {name: imagefolder, root: anything}\n"
MINIMAL = DATASET + "backbone: efficientnet_lite0\noptimizer: sgd\n"

cli = CliRunner()


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path: recipe files written there are shown in messages as 'name.yaml'."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(tmp_path: Path, text: str | bytes, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def problems_of(call, *args) -> list[str]:
    """The problems of the RunnerError ``call(*args)`` raises; each must be one non-empty line."""
    with pytest.raises(RunnerError) as info:
        call(*args)
    problems = info.value.problems
    assert isinstance(problems, list) and problems
    for problem in problems:
        assert isinstance(problem, str) and problem.strip()
        assert "\n" not in problem and "\r" not in problem, problem
    assert str(info.value) == "\n".join(problems)
    return problems


def full(path, overrides=(), catalog=None):
    """load + validate_components, as ``runner validate`` does."""
    return validate_components(load(path, list(overrides)), catalog or load_catalog())


def only(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


# -- packaged recipes ---------------------------------------------------------------------------------------------

def test_extract_extends_finetune_and_freezes_all_but_the_head(catalog):
    recipe = load(RECIPES / "extract.yaml", [])
    assert recipe.name == "extract"
    assert recipe.sections["freeze"] == {"name": "all_but_head"}
    assert recipe.sections["optimizer"] == {"name": "sgd", "lr": 0.001, "momentum": 0.9}
    assert recipe.sections["scheduler"] == {"name": "step", "step_size": 7, "gamma": 0.1}
    assert recipe.sections["backbone"] == {"name": "efficientnet_lite0"}
    assert recipe.sections["dataset"]["name"] == "imagefolder"
    assert recipe.sections["dataset"]["batch_size"] == 4
    assert recipe.settings.epochs == 25
    assert "extends" not in recipe.raw


def test_extract_validates_and_resolves_every_kind_with_all_its_params(catalog):
    recipe = validate_components(load(RECIPES / "extract.yaml", []), catalog)
    resolved = recipe.resolved()
    assert resolved["name"] == "extract" and resolved["epochs"] == 25
    for kind in KINDS:
        name = recipe.sections[kind]["name"]
        fields = set(catalog.get(kind, name).params.model_fields)
        assert resolved[kind]["name"] == name
        assert set(resolved[kind]) == {"name", *fields}, kind
    assert resolved["freeze"] == {"name": "all_but_head", "bn": "frozen", "backbone_lr_mult": 1.0, "layer_decay": 1.0}
    assert resolved["optimizer"] == {"name": "sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 0.0,
                                     "nesterov": False, "no_decay_norm_bias": False}
    assert resolved["scheduler"] == {"name": "step", "step_size": 7, "gamma": 0.1, "warmup": 0,
                                     "warmup_unit": "epochs"}
    assert resolved["dataset"]["batch_size"] == 4
    assert resolved["dataset"]["root"] == "hymenoptera_data"


def test_packaged_recipe_by_name(catalog):
    by_name = validate_components(load("extract"), catalog)
    assert by_name.path.resolve() == (RECIPES / "extract.yaml").resolve()
    assert by_name.resolved() == validate_components(load(RECIPES / "extract.yaml"), catalog).resolved()


def test_packaged_recipe_in_a_subfolder_by_name(catalog):
    recipe = validate_components(load("tutorial/resnet18_extract"), catalog)
    assert recipe.name == "resnet18_extract"
    assert recipe.sections["backbone"] == {"name": "torchvision", "model": "resnet18", "weights": "IMAGENET1K_V1"}
    assert recipe.sections["freeze"] == {"name": "all_but_head"}
    assert recipe.settings.precision == "fp32" and recipe.settings.channels_last is False
    assert recipe.sections["optimizer"] == {"name": "sgd", "lr": 0.001, "momentum": 0.9}


def test_unknown_packaged_recipe_name_suggests():
    problem = only(problems_of(load, "extrakt"))
    assert "extrakt" in problem and "did you mean 'extract'" in problem


# -- extends --------------------------------------------------------------------------------------------------------

PARENT = DATASET + """backbone: efficientnet_lite0
optimizer:
  name: sgd
  lr: 0.001
  momentum: 0.5
scheduler:
  name: step
  step_size: 7
  gamma: 0.1
epochs: 10
"""


def test_child_scalar_overrides_merge_into_the_parent_section(tmp_path, catalog):
    write(tmp_path, PARENT, "parent.yaml")
    child = write(tmp_path, "extends: parent.yaml\noptimizer:\n  lr: 0.05\nscheduler: {gamma: 0.5}\nepochs: 2\n")
    recipe = full(child, catalog=catalog)
    assert recipe.sections["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.5}
    assert recipe.sections["scheduler"] == {"name": "step", "step_size": 7, "gamma": 0.5}
    assert recipe.settings.epochs == 2
    assert recipe.params["optimizer"].momentum == 0.5 and recipe.params["optimizer"].lr == 0.05
    assert recipe.name == "recipe"


def test_child_naming_the_same_component_merges(tmp_path, catalog):
    write(tmp_path, PARENT, "parent.yaml")
    child = write(tmp_path, "extends: parent.yaml\noptimizer: {name: sgd, nesterov: true}\n")
    recipe = full(child, catalog=catalog)
    assert recipe.sections["optimizer"] == {"name": "sgd", "lr": 0.001, "momentum": 0.5, "nesterov": True}


def test_child_naming_another_component_replaces_the_whole_section(tmp_path, catalog):
    write(tmp_path, PARENT, "parent.yaml")
    child = write(tmp_path, "extends: parent.yaml\noptimizer: {name: adam}\nscheduler: cosine\n")
    recipe = full(child, catalog=catalog)  # sgd's momentum must not leak into adam, which has none
    assert recipe.sections["optimizer"] == {"name": "adam"}
    assert recipe.sections["scheduler"] == {"name": "cosine"}
    assert recipe.resolved()["optimizer"] == {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999],
                                              "weight_decay": 0.0, "no_decay_norm_bias": False}
    assert recipe.resolved()["scheduler"] == {"name": "cosine", "eta_min": 0.0, "warmup": 0, "warmup_unit": "epochs"}


def test_string_shorthand_section(tmp_path, catalog):
    write(tmp_path, PARENT + "freeze: {name: up_to, module: blocks.3, bn: train}\n", "parent.yaml")
    child = write(tmp_path, "extends: parent.yaml\nfreeze: none\n")
    recipe = full(child, catalog=catalog)
    assert recipe.sections["freeze"] == {"name": "none"}
    assert recipe.resolved()["freeze"] == {"name": "none", "bn": "frozen", "backbone_lr_mult": 1.0, "layer_decay": 1.0}


def test_omitted_freeze_and_scheduler_default_to_none(tmp_path, catalog):
    recipe = full(write(tmp_path, MINIMAL), catalog=catalog)
    assert recipe.resolved()["freeze"] == {"name": "none", "bn": "frozen", "backbone_lr_mult": 1.0, "layer_decay": 1.0}
    assert recipe.resolved()["scheduler"] == {"name": "none", "warmup": 0, "warmup_unit": "epochs"}


def test_three_levels_and_a_packaged_parent(tmp_path, catalog):
    write(tmp_path, "extends: finetune.yaml\nepochs: 3\n", "middle.yaml")  # not next to it: the packaged one
    child = write(tmp_path, "extends: middle.yaml\nfreeze: all_but_head\ndataset: {batch_size: 8}\n")
    recipe = full(child, catalog=catalog)
    assert recipe.settings.epochs == 3
    assert recipe.sections["freeze"] == {"name": "all_but_head"}
    assert recipe.sections["dataset"]["batch_size"] == 8
    assert recipe.sections["dataset"]["root"] == "hymenoptera_data"
    assert recipe.sections["optimizer"] == {"name": "sgd", "lr": 0.001, "momentum": 0.9}


def test_extends_cycle(tmp_path):
    a = write(tmp_path, "extends: b.yaml\nepochs: 1\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n" + MINIMAL, "b.yaml")
    problem = only(problems_of(load, a))
    assert "cycle" in problem and "a.yaml" in problem and "b.yaml" in problem


def test_extends_itself_is_a_cycle(tmp_path):
    path = write(tmp_path, "extends: recipe.yaml\n" + MINIMAL)
    assert "cycle" in only(problems_of(load, path))


def test_missing_parent_names_file_and_line(tmp_path):
    path = write(tmp_path, "# a comment\nepochs: 3\nextends: nowhere.yaml\n")
    problem = only(problems_of(load, path))
    assert problem.startswith("recipe.yaml:3:1: extends:"), problem
    assert "nowhere.yaml" in problem


def test_extends_not_a_string(tmp_path):
    path = write(tmp_path, "extends: [a.yaml, b.yaml]\n")
    assert only(problems_of(load, path)).startswith("recipe.yaml:1:1: extends:")


def test_problem_in_a_parent_points_at_the_parent_file(tmp_path, catalog):
    write(tmp_path, MINIMAL.replace("optimizer: sgd", "optimizer:\n  name: sgd\n  momentun: 0.9"), "parent.yaml")
    child = write(tmp_path, "extends: parent.yaml\nepochs: 2\n")
    problem = only(problems_of(full, child, (), catalog))
    assert problem == "parent.yaml:5:3: optimizer.momentun: unknown field (did you mean 'momentum'?)"


def test_problem_in_a_child_points_at_the_child_file(tmp_path, catalog):
    write(tmp_path, PARENT, "parent.yaml")
    child = write(tmp_path, "extends: parent.yaml\noptimizer:\n  lr: -1\n", "child.yaml")
    problem = only(problems_of(full, child, (), catalog))
    assert problem.startswith("child.yaml:3:3: optimizer.lr: input should be greater than 0"), problem


# -- --set overrides ------------------------------------------------------------------------------------------------

def test_override_values_are_parsed_as_yaml(tmp_path, catalog):
    recipe = full(RECIPES / "extract.yaml", ["optimizer.lr=0.01", "epochs=3", "dataset.augment=none",
                                             "channels_last=false", "device=cuda:1"], catalog)
    lr = recipe.sections["optimizer"]["lr"]
    assert lr == 0.01 and type(lr) is float
    assert recipe.raw["epochs"] == 3 and type(recipe.raw["epochs"]) is int
    assert recipe.settings.epochs == 3
    assert recipe.settings.channels_last is False
    assert recipe.settings.device == "cuda:1"
    assert recipe.params["optimizer"].lr == 0.01 and recipe.params["optimizer"].momentum == 0.9
    assert recipe.params["dataset"].augment == "none"


def test_override_name_replaces_the_section(catalog):
    recipe = full(RECIPES / "extract.yaml", ["optimizer.name=adam"], catalog)
    assert recipe.sections["optimizer"] == {"name": "adam"}
    assert recipe.resolved()["optimizer"]["lr"] == 0.001 and "momentum" not in recipe.resolved()["optimizer"]
    shorthand = full(RECIPES / "extract.yaml", ["optimizer=adamw", "freeze={name: none, bn: train}"], catalog)
    assert shorthand.sections["optimizer"] == {"name": "adamw"}
    assert shorthand.resolved()["freeze"] == {"name": "none", "bn": "train", "backbone_lr_mult": 1.0,
                                                  "layer_decay": 1.0}


def test_later_overrides_win_and_values_may_hold_equals_signs(catalog):
    recipe = full(RECIPES / "extract.yaml", ["epochs=3", "epochs=5", "name=a=b"], catalog)
    assert recipe.settings.epochs == 5 and recipe.name == "a=b"


def test_parse_override():
    assert parse_override("optimizer.lr=0.01") == ("optimizer.lr", 0.01)
    assert parse_override(" epochs = 3") == ("epochs", 3)
    assert parse_override("device=cpu") == ("device", "cpu")
    assert parse_override("dataset.url=") == ("dataset.url", None)


@pytest.mark.parametrize("text", ["optimizer.lr", "=3", "", " =1"])
def test_bad_override_text(text):
    problem = only(problems_of(load, RECIPES / "extract.yaml", [text]))
    assert problem.startswith(f"--set {text}:") and "key.path=value" in problem


def test_override_naming_an_unknown_field(catalog):
    recipe = load(RECIPES / "extract.yaml", ["optimizer.lrr=1"])
    problem = only(problems_of(validate_components, recipe, catalog))
    assert "--set optimizer.lrr=1" in problem and "did you mean 'lr'" in problem
    assert problem == "--set optimizer.lrr=1: optimizer.lrr: unknown field (did you mean 'lr'?)"


def test_override_with_a_bad_value_points_at_the_override(catalog):
    problem = only(problems_of(full, RECIPES / "extract.yaml", ["dataset.batch_size=0"], catalog))
    assert problem.startswith("--set dataset.batch_size=0: dataset.batch_size: input should be greater than 0")
    problem = only(problems_of(load, RECIPES / "extract.yaml", ["epoch=3"], catalog))
    assert problem == "--set epoch=3: epoch: unknown field (did you mean 'epochs'?)"


def test_override_switching_component_reports_its_missing_field(catalog):
    problem = only(problems_of(full, RECIPES / "extract.yaml", ["freeze=up_to"], catalog))
    assert problem == "--set freeze=up_to: freeze.module: required field missing"


# -- errors: one line each, file:line:col where there is a line ------------------------------------------------

def test_misspelled_field_exact_message(tmp_path, catalog):
    path = write(tmp_path, DATASET + "backbone: efficientnet_lite0\n"
                                     "optimizer:\n"
                                     "  name: sgd\n"
                                     "  lr: 0.001\n"
                                     "  momentun: 0.9\n")
    assert problems_of(full, path, (), catalog) == [
        "recipe.yaml:6:3: optimizer.momentun: unknown field (did you mean 'momentum'?)"]


def test_misspelled_field_column_in_flow_style(tmp_path, catalog):
    path = write(tmp_path, "# comment\n" + DATASET + "backbone: efficientnet_lite0\n"
                                                     "optimizer: {name: sgd, momentun: 0.9}\n")
    assert problems_of(full, path, (), catalog) == [
        "recipe.yaml:4:24: optimizer.momentun: unknown field (did you mean 'momentum'?)"]


def test_unknown_component_name(tmp_path, catalog):
    path = write(tmp_path, DATASET + "optimizer: sgd\nbackbone: efficientnet_lite\n")
    problem = only(problems_of(full, path, (), catalog))
    assert problem.startswith("recipe.yaml:3:1: backbone.name: unknown backbone 'efficientnet_lite' "
                              "(did you mean 'efficientnet_lite"), problem
    assert "known: efficientnet_lite0, efficientnet_lite1" in problem


def test_unknown_component_name_suggests_the_first_of_equally_close_names(tmp_path, catalog):
    path = write(tmp_path, DATASET + "optimizer: sgd\nbackbone: efficientnet_lite\n")
    assert "did you mean 'efficientnet_lite0'" in only(problems_of(full, path, (), catalog))


def test_unknown_component_name_in_a_mapping_points_at_name(tmp_path, catalog):
    path = write(tmp_path, DATASET + "backbone: efficientnet_lite0\noptimizer:\n  lr: 0.1\n  name: sdg\n")
    problem = only(problems_of(full, path, (), catalog))
    assert problem.startswith("recipe.yaml:5:3: optimizer.name: unknown optimizer 'sdg'") and "'sgd'" in problem


def test_wrong_type(tmp_path):
    path = write(tmp_path, MINIMAL + "seed: 1\nepochs: many\n")
    problem = only(problems_of(load, path))
    assert problem.startswith("recipe.yaml:5:1: epochs: input should be a valid integer"), problem
    assert "'many'" in problem


@pytest.mark.parametrize("value", ["0", "-3"])
def test_epochs_must_be_positive(tmp_path, value):
    path = write(tmp_path, MINIMAL + f"epochs: {value}\n")
    problem = only(problems_of(load, path))
    assert problem == f"recipe.yaml:4:1: epochs: input should be greater than 0, got {value}"


def test_zero_batch_size(tmp_path, catalog):
    path = write(tmp_path, "dataset:\n  name: imagefolder\n  root: anything\n  batch_size: 0\n"
                           "backbone: efficientnet_lite0\noptimizer: sgd\n")
    problem = only(problems_of(full, path, (), catalog))
    assert problem == "recipe.yaml:4:3: dataset.batch_size: input should be greater than 0, got 0"


def test_negative_lr(tmp_path, catalog):
    path = write(tmp_path, MINIMAL.replace("optimizer: sgd", "optimizer: {name: adam, lr: -0.1}"))
    problem = only(problems_of(full, path, (), catalog))
    assert problem == "recipe.yaml:3:25: optimizer.lr: input should be greater than 0 or be 'auto', got -0.1"


def test_unknown_top_level_key(tmp_path, catalog):
    path = write(tmp_path, MINIMAL + "epoch: 3\n")  # top-level keys beyond the core are plugins' sections
    assert problems_of(load, path, [], catalog) == ["recipe.yaml:4:1: epoch: unknown field (did you mean 'epochs'?)"]


def test_unknown_top_level_key_suggests_a_section(tmp_path, catalog):
    path = write(tmp_path, MINIMAL + "schedular: step\n")
    assert "did you mean 'scheduler'" in only(problems_of(load, path, [], catalog))
    path = write(tmp_path, MINIMAL + "early_stoping: {patience: 2}\n")  # a plugin's section is suggested too
    assert "did you mean 'early_stopping'" in only(problems_of(load, path, [], catalog))


def test_bad_literal_setting(tmp_path):
    path = write(tmp_path, MINIMAL + "precision: fp64\n")
    problem = only(problems_of(load, path))
    assert problem.startswith("recipe.yaml:4:1: precision:") and "'fp64'" in problem


def test_tab_indentation_is_invalid_yaml_with_its_line(tmp_path):
    path = write(tmp_path, "epochs: 3\ndataset:\n\tname: imagefolder\n")
    problem = only(problems_of(load, path))
    assert problem.startswith("recipe.yaml:3:1: invalid YAML:"), problem


def test_unclosed_quote_is_invalid_yaml_with_a_line(tmp_path):
    path = write(tmp_path, "dataset:\n  name: imagefolder\n  root: 'data\nbackbone: efficientnet_lite0\n")
    problem = only(problems_of(load, path))
    assert "invalid YAML" in problem
    assert problem.split(":")[0] == "recipe.yaml" and problem.split(":")[1].isdigit(), problem


def test_unclosed_quote_points_at_the_opening_line(tmp_path):
    path = write(tmp_path, "dataset:\n  name: imagefolder\n  root: 'data\nbackbone: efficientnet_lite0\n"
                           "epochs: 3\n")
    assert "recipe.yaml:3:" in only(problems_of(load, path))


def test_mapping_value_in_wrong_place_is_invalid_yaml(tmp_path):
    path = write(tmp_path, "epochs: 3\nname: a: b\n")
    assert only(problems_of(load, path)).startswith("recipe.yaml:2:")


def test_two_documents_are_invalid_yaml(tmp_path):
    path = write(tmp_path, MINIMAL + "---\nepochs: 3\n")
    assert "invalid YAML" in only(problems_of(load, path))


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n", "---\n"])
def test_empty_file(tmp_path, text):
    problem = only(problems_of(load, write(tmp_path, text)))
    assert problem.startswith("recipe.yaml:") and "empty" in problem


@pytest.mark.parametrize("text, kind", [("- dataset\n- backbone\n", "list"), ("just words\n", "str"),
                                        ("42\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    problem = only(problems_of(load, write(tmp_path, text)))
    assert problem == f"recipe.yaml:1:1: expected a mapping of settings and sections, got a {kind}"


def test_non_utf8_bytes(tmp_path):
    path = write(tmp_path, b"epochs: 3\nname: caf\xe9\n")
    problem = only(problems_of(load, path))
    assert problem.startswith("recipe.yaml: not UTF-8") and "byte 19" in problem


def test_missing_file():
    problem = only(problems_of(load, "no/such/recipe.yaml"))
    assert "no/such/recipe.yaml" in problem


def test_missing_required_section(tmp_path):
    path = write(tmp_path, "backbone: efficientnet_lite0\noptimizer: sgd\n")
    problem = only(problems_of(load, path))
    assert problem.startswith("recipe.yaml: dataset: required section missing"), problem


def test_missing_required_field(tmp_path, catalog):
    path = write(tmp_path, "epochs: 2\ndataset:\n  name: imagefolder\n  batch_size: 4\n"
                           "backbone: efficientnet_lite0\noptimizer: sgd\n")
    problem = only(problems_of(full, path, (), catalog))
    assert problem == "recipe.yaml:2:1: dataset.root: required field missing"


def test_section_that_is_neither_name_nor_mapping(tmp_path):
    path = write(tmp_path, MINIMAL.replace("optimizer: sgd", "optimizer: [sgd]"))
    problem = only(problems_of(load, path))
    assert problem.startswith("recipe.yaml:3:1: optimizer: expected a component name or a mapping")


def assert_all_reported(problems: list[str], expected: tuple[str, ...]) -> None:
    """One problem per expected message, each found among them."""
    assert len(problems) == len(expected), problems
    joined = "\n".join(problems)
    for message in expected:
        assert message in joined


def test_several_setting_problems_are_all_reported(tmp_path, catalog):
    path = write(tmp_path, "epochs: 0\nepoch: 3\nprecision: fp64\noptimizer: sgd\n")
    assert_all_reported(problems_of(load, path, [], catalog), (
        "recipe.yaml: dataset: required section missing",
        "recipe.yaml: backbone: required section missing",
        "recipe.yaml:1:1: epochs: input should be greater than 0",
        "recipe.yaml:2:1: epoch: unknown field (did you mean 'epochs'?)",
        "recipe.yaml:3:1: precision:"))


def test_several_component_problems_are_all_reported(tmp_path, catalog):
    path = write(tmp_path, "dataset:\n  name: imagefolder\n  batch_size: 0\n"
                           "backbone: efficientnet_lite\n"
                           "optimizer:\n  name: sgd\n  lr: -1\n  momentun: 0.9\n"
                           "scheduler: {name: step, step_size: 0}\n")
    assert_all_reported(problems_of(full, path, (), catalog), (
        "recipe.yaml:1:1: dataset.root: required field missing",
        "recipe.yaml:3:3: dataset.batch_size: input should be greater than 0",
        "recipe.yaml:4:1: backbone.name: unknown backbone 'efficientnet_lite' (did you mean",
        "recipe.yaml:7:3: optimizer.lr: input should be greater than 0 or be 'auto', got -1",
        "recipe.yaml:8:3: optimizer.momentun: unknown field (did you mean 'momentum'?)",
        "recipe.yaml:9:25: scheduler.step_size: input should be greater than 0, got 0"))


def test_bad_values_with_newlines_stay_on_one_line(tmp_path, catalog):
    path = write(tmp_path, MINIMAL + 'seed: "a\\nb"\nname: [1, 2]\n')
    problems = problems_of(load, path)  # the one-line check is in problems_of
    assert len(problems) == 2


def test_non_string_top_level_key(tmp_path):
    path = write(tmp_path, MINIMAL + "1: 2\n")
    assert only(problems_of(load, path)).startswith("recipe.yaml:4:1: 1: unknown field")


def test_non_string_key_in_a_section(tmp_path, catalog):
    path = write(tmp_path, MINIMAL.replace("optimizer: sgd", "optimizer: {name: sgd, 0.9: momentum}"))
    assert "optimizer.0.9: unknown field" in only(problems_of(full, path, (), catalog))


def test_control_character_is_one_line_of_invalid_yaml(tmp_path):
    path = write(tmp_path, MINIMAL + "epochs: 3\x07\n")
    assert "invalid YAML" in only(problems_of(load, path))


def test_empty_extends_is_an_error(tmp_path):
    path = write(tmp_path, "extends:\n" + MINIMAL)
    assert only(problems_of(load, path)).startswith("recipe.yaml:1:1: extends:")


# -- the command line -----------------------------------------------------------------------------------------------

BAD = DATASET + "backbone: efficientnet_lite0\noptimizer:\n  name: sgd\n  momentun: 0.9\n"


def test_cli_validate_bad_recipe_exits_2_with_file_line_and_no_traceback(tmp_path):
    path = write(tmp_path, BAD)
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "recipe.yaml:5:3: optimizer.momentun: unknown field (did you mean 'momentum'?)" in result.output
    assert "Traceback" not in result.output


def test_cli_validate_reports_every_problem_on_its_own_line(tmp_path):
    path = write(tmp_path, BAD.replace("backbone: efficientnet_lite0", "backbone: efficientnet_lite"))
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 2, result.output
    assert "recipe.yaml:2:1: backbone.name:" in lines[0] and "recipe.yaml:5:3: optimizer.momentun:" in lines[1]


def test_cli_validate_with_debug_propagates_the_error(tmp_path):
    path = write(tmp_path, BAD)
    result = cli.invoke(app, ["--debug", "validate", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, RunnerError)
    assert result.exception.problems == [
        "recipe.yaml:5:3: optimizer.momentun: unknown field (did you mean 'momentum'?)"]


def test_cli_validate_packaged_recipe_is_ok(monkeypatch):
    monkeypatch.chdir(REPO)
    result = cli.invoke(app, ["validate", "recipes/extract.yaml"])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    result = cli.invoke(app, ["validate", "tutorial/resnet18_finetune"])
    assert result.exit_code == 0, result.output


def test_cli_validate_with_set(tmp_path):
    result = cli.invoke(app, ["validate", str(RECIPES / "extract.yaml"), "--set", "optimizer.lrr=1"])
    assert result.exit_code == 2
    assert "--set optimizer.lrr=1" in result.output and "did you mean 'lr'" in result.output
    result = cli.invoke(app, ["validate", str(RECIPES / "extract.yaml"), "--set", "epochs"])
    assert result.exit_code == 2 and "key.path=value" in result.output and "Traceback" not in result.output


def test_cli_validate_invalid_yaml_and_empty_file(tmp_path):
    for text in ("epochs: 3\ndataset:\n\tname: x\n", ""):
        result = cli.invoke(app, ["validate", str(write(tmp_path, text))])
        assert result.exit_code == 2 and "recipe.yaml" in result.output and "Traceback" not in result.output


def test_cli_validate_reports_settings_and_component_problems_together(tmp_path):
    path = write(tmp_path, BAD + "epochs: 0\n")
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "recipe.yaml:6:1: epochs:" in result.output
    assert "recipe.yaml:5:3: optimizer.momentun:" in result.output


def test_cli_prints_brackets_in_problems_verbatim(tmp_path):
    result = cli.invoke(app, ["validate", str(RECIPES / "extract.yaml"), "--set", "optimizer.bogus=[a, b]"])
    assert result.exit_code == 2
    assert "--set optimizer.bogus=[a, b]: optimizer.bogus: unknown field" in result.output
