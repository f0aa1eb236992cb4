"""Recipes from strangers: alias bombs, deep nesting, huge key counts and coercions that hide mistakes are one
clear line each, fast; plugin sections are validated with file:line like any other."""
from __future__ import annotations

import pytest

from runner.errors import RunnerError
from runner.plugins import load_catalog
from runner.recipes import load

MINIMAL = "dataset: {name: imagefolder, root: data}\nbackbone: efficientnet_lite0\noptimizer: sgd\n"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def problems(path, catalog=None) -> list[str]:
    with pytest.raises(RunnerError) as info:
        load(path, [], catalog)
    assert all(p and "\n" not in p for p in info.value.problems)
    return info.value.problems


def test_alias_bomb_is_refused_before_expanding(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 1000
    (problem,) = problems(path)
    assert "100,000 values" in problem and "RUNNER_RECIPE_MAX_NODES" in problem


def test_ten_thousand_levels_of_nesting_is_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 10_000 + "]" * 10_000 + "\n")
    (problem,) = problems(path)
    assert problem.startswith("deep.yaml:1") or "deep.yaml" in problem


def test_nesting_limit_is_a_setting(tmp_path, monkeypatch):
    import runner.recipes as recipes

    monkeypatch.setattr(recipes, "MAX_DEPTH", 3)
    path = tmp_path / "nested.yaml"
    path.write_text(MINIMAL + "x: {a: {b: {c: {d: 1}}}}\n")
    (problem,) = problems(path)
    assert "nested more than 3 levels" in problem and "RUNNER_RECIPE_MAX_DEPTH" in problem


def test_a_huge_number_of_unknown_keys_stays_bounded(tmp_path, catalog):
    path = tmp_path / "keys.yaml"
    path.write_text(MINIMAL + "".join(f"epochz{i}: 1\n" for i in range(40_000)))
    found = problems(path, catalog)
    assert len(found) == 40_000
    assert sum("did you mean" in p for p in found) <= 20


@pytest.mark.parametrize("line, key", [("epochs: true", "epochs"), ("seed: false", "seed"),
                                       ("dataset: {name: imagefolder, root: d, batch_size: true}", "batch_size")])
def test_true_is_not_a_number(tmp_path, catalog, line, key):
    text = MINIMAL.replace("dataset: {name: imagefolder, root: data}\n", "") if line.startswith("dataset") else MINIMAL
    path = tmp_path / "r.yaml"
    path.write_text(text + line + "\n")
    (problem,) = problems(path, catalog)
    assert f"{key}: expected a whole number, not true" in problem or f"{key}: expected a whole number, not false" \
        in problem


def test_plugin_sections_are_validated_with_file_and_line(tmp_path, catalog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL + "early_stopping:\n  patiance: 2\n")
    (problem,) = problems(path, catalog)
    assert problem == "r.yaml:5:3: early_stopping.patiance: unknown field (did you mean 'patience'?)"


def test_plugin_sections_switch_on_and_off(tmp_path, catalog):
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL + "pictures: false\nearly_stopping: true\nmetrics: {csv: false}\n")
    recipe = load(path, [], catalog)
    assert recipe.extras["pictures"] is None
    assert recipe.extras["early_stopping"].patience == 3 and recipe.extras["metrics"].csv is False
    resolved = recipe.resolved()
    assert resolved["pictures"] is False and resolved["early_stopping"]["patience"] == 3
    bare = tmp_path / "bare.yaml"
    bare.write_text(MINIMAL)
    recipe = load(bare, [], catalog)  # on by default: pictures and metrics; off: early stopping
    assert recipe.extras["pictures"] is not None and recipe.extras["early_stopping"] is None
    assert "pictures" not in recipe.resolved()
