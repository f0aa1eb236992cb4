"""Plugin API v1 as a contract: docs/api.md documents every public name and is generated from the code; the
built-in plugins import ``runner.api`` alone; no module reaches into another's private names; the API version
check; ``Backbone.groups()``; and broken plugins (raising hooks, wrong return types, ``sys.exit``) are failed
plugins, not a broken runner."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from torch import nn

import runner.api as api
from runner import api_docs
from runner.api import Backbone, LayerGroup, PluginError, RunnerError, require
from runner.plugins import load_catalog

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"


# -- docs/api.md ---------------------------------------------------------------------------------------------------

def test_api_md_is_what_the_generator_writes():
    assert API_MD.read_text(encoding="utf-8") == api_docs.render(), (
        "docs/api.md is out of date: python -m runner.api_docs > docs/api.md")


def _entries(text: str) -> dict[str, str]:
    """``### `name``` heading -> the text under it, up to the next heading."""
    parts = re.split(r"^#{2,3} ", text, flags=re.M)
    return {m.group(1): part for part in parts if (m := re.match(r"`(\w+)`\n", part))}


def _prose(entry: str) -> str:
    """An entry's words: without its code blocks, its heading and its <sub> origin line."""
    entry = re.sub(r"```.*?```", "", entry, flags=re.S)
    return "\n".join(line for line in entry.splitlines()[1:] if line.strip() and not line.startswith("<sub>"))


def test_every_public_name_is_documented_with_its_signature_and_words():
    entries = _entries(API_MD.read_text(encoding="utf-8"))
    for name in api.__all__:
        assert name in entries, f"runner.api.{name} is not in docs/api.md"
        assert "```pyi\n" in entries[name], f"{name}: no signature"
        assert _prose(entries[name]), f"{name}: no description (a docstring, or api_docs.EXTRA_DOCS)"


def test_every_hook_is_documented_with_a_runnable_example():
    entries = _entries(API_MD.read_text(encoding="utf-8"))
    for spec in api_docs.hookspecs():
        entry = entries.get(spec.__name__)
        assert entry is not None, spec.__name__
        assert f"def {spec.__name__}(" in entry and "```python\n" in entry, spec.__name__
        assert spec.__name__ in api_docs.HOOK_EXAMPLES, spec.__name__


def test_the_generator_checks_the_file():
    assert api_docs.main(["--check"]) == 0


def test_every_public_name_resolves_and_importing_the_api_is_cheap():
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    assert sorted(api.__all__) == dir(api)
    code = ("import sys, runner.api; heavy = [m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules];"
            " assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        api.Nope  # noqa: B018


# -- imports: plugins use runner.api alone; nobody uses another module's private names -----------------------------

PLUGIN_FILES = sorted((ROOT / "plugins").glob("*.py"))
RUNNER_FILES = sorted((ROOT / "runner").rglob("*.py"))


def module_name(path: Path) -> str:
    """The importable name of a file under runner/ or plugins/ (installed as runner_plugins)."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "plugins":
        parts[0] = "runner_plugins"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


OUR_MODULES = {module_name(p) for p in [*PLUGIN_FILES, *RUNNER_FILES]} | {"runner", "runner_plugins"}


def absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module a ``from ... import`` reads from, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def is_ours(module: str) -> bool:
    return module.split(".")[0] in ("runner", "runner_plugins")


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: p.name)
def test_builtin_plugins_import_only_runner_api(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = absolute(node, path)
            if is_ours(source) and source != "runner.api":
                wrong.append(f"{path.name}:{node.lineno}: from {source} import "
                             f"{', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            wrong += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names
                      if is_ours(a.name) and a.name != "runner.api"]
    assert not wrong, "a built-in plugin imports runner.api alone (its names are the contract):\n" + "\n".join(wrong)


def private_uses(path: Path, source: str | None = None) -> list[str]:
    """``from runner.x import _y``, and ``x._y`` where ``x`` names one of our modules imported here."""
    source = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(source, filename=str(path))
    here = module_name(path)
    modules: dict[str, str] = {}  # a local name -> the module of ours it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = absolute(node, path)
            if not is_ours(source):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and source != here:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {source} import {alias.name}")
                if f"{source}.{alias.name}" in OUR_MODULES:
                    modules[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_ours(alias.name):
                    if alias.asname:
                        modules[alias.asname] = alias.name
                    else:
                        modules[alias.name.split(".")[0]] = alias.name.split(".")[0]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        chain, value = [], node.value
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in modules:
            continue
        target = ".".join([modules[value.id], *chain])
        if target in OUR_MODULES and target != here:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {target}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    found = [use for path in [*RUNNER_FILES, *PLUGIN_FILES] for use in private_uses(path)]
    assert not found, "names with a leading underscore are private to their module; make them public (and " \
                      "documented) or move them:\n" + "\n".join(found)


def test_the_private_name_check_catches_both_forms():
    probe = ROOT / "runner" / "probe.py"  # not written: its source is given
    source = textwrap.dedent("""
        from runner import engine, plugins as p
        import runner.freezing
        from runner.plugins import _one_line
        from . import _secret
        from .probe import _mine

        engine._private(), p._hidden, runner.freezing._Freezer, engine.build, _mine._x
    """)
    assert set(private_uses(probe, source)) == {
        "runner/probe.py:4: from runner.plugins import _one_line",
        "runner/probe.py:5: from runner import _secret",
        "runner/probe.py:8: runner.engine._private",
        "runner/probe.py:8: runner.plugins._hidden",
        "runner/probe.py:8: runner.freezing._Freezer",
    }


# -- plugins that break ----------------------------------------------------------------------------------------------

GOOD = """
    from runner.api import Component, Schedule, hookimpl

    RUNNER_API = "1.0"


    @hookimpl
    def runner_schedulers():
        return [Component("still_here", "from a plugin that works", lambda *args: Schedule(None))]
"""

BROKEN = {
    "raises_in_hook": ("""
        from runner.api import hookimpl


        @hookimpl
        def runner_backbones():
            raise RuntimeError("no weights in here")
    """, "runner_backbones() failed: RuntimeError: no weights in here"),
    "returns_a_string": ("""
        from runner.api import hookimpl


        @hookimpl
        def runner_schedulers():
            return "halve"
    """, "runner_schedulers() must return a list of Component, got str 'halve'"),
    "exits_at_import": ("""
        import sys

        sys.exit("this plugin wants a GPU")
    """, "SystemExit: this plugin wants a GPU"),
    "exits_in_hook": ("""
        import sys
        from runner.api import hookimpl


        @hookimpl
        def runner_recipe_sections():
            sys.exit(3)
    """, "runner_recipe_sections() failed: SystemExit: 3"),
    "wants_api_2": ("""
        from runner.api import Component, Schedule, hookimpl

        RUNNER_API = "2.0"


        @hookimpl
        def runner_schedulers():
            return [Component("from_the_future", "needs API 2", lambda *args: Schedule(None))]
    """, "needs runner plugin API 2.0; this runner has 1.3"),
}


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The broken plugins and a good one as if pip-installed: importable modules listed as entry points of the
    group ``runner`` (next to the real ones); modules forgotten afterwards."""
    folder = tmp_path / "site"
    folder.mkdir()
    for name, (source, _) in BROKEN.items():
        write(folder, name, source)
    write(folder, "works_fine", GOOD)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("RUNNER_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    real = importlib.metadata.entry_points

    def entry_points(**select):
        if select != {"group": "runner"}:  # others (torchvision's, tensorboard's) ask too
            return real(**select)
        return [*real(**select), *(importlib.metadata.EntryPoint(name, name, "runner")
                                   for name in [*BROKEN, "works_fine"])]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    yield folder
    for name in [*BROKEN, "works_fine"]:
        sys.modules.pop(name, None)


def test_installed_plugins_that_break_are_listed_as_failed_and_the_rest_work(installed):
    catalog = load_catalog()
    failures = {f.name: f.error for f in catalog.plugins.failures}
    assert set(failures) == set(BROKEN)
    for name, (_, message) in BROKEN.items():
        assert f"plugin {name}" in failures[name] and message in failures[name], failures[name]
        assert "\n" not in failures[name]
        assert catalog.pm.get_plugin(name) is None  # out of every hook
    assert catalog.entry("scheduler", "still_here").plugin == "works_fine"
    assert "from_the_future" not in catalog.names("scheduler")
    assert {"sgd", "timm", "imagefolder", "gradual"} <= {n for kind in catalog.entries for n in catalog.names(kind)}
    assert {"metrics", "early_stopping"} <= set(catalog.sections)
    with pytest.raises(RunnerError, match=f"^plugin ({'|'.join(BROKEN)}) "):
        load_catalog(strict=True)


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_plugin_named_by_the_user_is_an_error(tmp_path, monkeypatch, name):
    monkeypatch.setenv("RUNNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    source, message = BROKEN[name]
    path = write(tmp_path, name, source)
    with pytest.raises(RunnerError) as error:
        load_catalog([str(path)])
    (line,) = error.value.problems
    assert line.startswith(f"plugin {name}") and message in line


def test_api_version_1_0_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    source = BROKEN["wants_api_2"][0].replace('RUNNER_API = "2.0"', 'RUNNER_API = "1.0"')
    catalog = load_catalog([str(write(tmp_path, "wants_api_1", source))])
    assert catalog.plugins.failures == [] and "from_the_future" in catalog.names("scheduler")


def test_require_compares_major_and_minor_versions():
    require(api.API_VERSION)
    require("1.0")
    require("1.1")  # read_rgb(shorter=...)
    require("1.2")  # to_rgb
    require("1.3")  # NormalizedTensor
    with pytest.raises(PluginError, match=r"needs runner plugin API 1\.7; this runner has 1\.3: upgrade runner"):
        require("1.7")
    with pytest.raises(PluginError, match=r"needs runner plugin API 2\.0; this runner has 1\.3"):
        require("2.0")
    with pytest.raises(PluginError, match=r"needs runner plugin API 0\.9; this runner has 1\.3: .*upgrade the plugin"):
        require("0.9")
    with pytest.raises(PluginError, match="expected 'major.minor'"):
        require("one")


def _cli():
    try:
        from typer.testing import CliRunner

        from runner.cli import app
    except Exception as exc:  # runner.cli being restructured: the catalog tests above still hold
        pytest.skip(f"runner.cli does not import: {exc}")
    return CliRunner(), app


@pytest.mark.parametrize("name", ["raises_in_hook", "returns_a_string", "exits_at_import", "wants_api_2"])
def test_cli_with_a_broken_plugin_file_is_one_line_and_exit_2(tmp_path, monkeypatch, name):
    monkeypatch.setenv("RUNNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    cli, app = _cli()
    path = write(tmp_path, name, BROKEN[name][0])
    result = cli.invoke(app, ["--plugin", str(path), "list"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: plugin {name}") and BROKEN[name][1] in line
    assert "Traceback" not in result.output


def test_cli_lists_installed_broken_plugins_and_still_works(installed, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    cli, app = _cli()
    result = cli.invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    for name, (_, message) in BROKEN.items():
        (row,) = [line for line in result.stdout.splitlines() if re.match(rf"{name}\s", line)]
        assert message in row
        assert re.search(rf"^warning: plugin {name}\b", result.stderr, re.M)
    listed = cli.invoke(app, ["list", "schedulers"])
    assert listed.exit_code == 0 and "still_here" in listed.stdout and "cosine" in listed.stdout
    strict = cli.invoke(app, ["plugins", "--strict"])
    assert strict.exit_code == 2 and len(strict.stderr.splitlines()) == 1


# -- Backbone.groups() -----------------------------------------------------------------------------------------------

def tiny_model() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_groups_outside_the_engine_take_the_last_linear_as_head():
    backbone = Backbone(tiny_model())
    assert backbone.head is None
    groups = backbone.groups()
    assert groups[-1] == LayerGroup("head", ["7.weight", "7.bias"])
    assert [n for g in groups for n in g.params] == [n for n, _ in backbone.model.named_parameters()]


def test_layer_groups_by_module_name_expand_to_parameters():
    model = tiny_model()
    backbone = Backbone(model, layer_groups=[LayerGroup("stem", ["0", "1"]), LayerGroup("body", ["3", "4.weight",
                                                                                                 "4.bias"])])
    assert backbone.groups() == [
        LayerGroup("stem", ["0.weight", "0.bias", "1.weight", "1.bias"]),
        LayerGroup("body", ["3.weight", "3.bias", "4.weight", "4.bias"]),
        LayerGroup("head", ["7.weight", "7.bias"]),
    ]
    backbone.replace_head(3)  # the engine's step: the new head is the head group
    assert backbone.groups()[-1] == LayerGroup("head", ["7.weight", "7.bias"]) and model[7].out_features == 3
    assert Backbone(model, layer_groups=lambda: [("stem", ["0", "1"]), ("body", ["3", "4"])]).groups()[1].name == "body"


def test_layer_groups_that_leave_a_parameter_out_are_a_plugin_error():
    backbone = Backbone(tiny_model(), layer_groups=[LayerGroup("stem", ["0", "1"]), LayerGroup("body", ["3"])])
    with pytest.raises(PluginError, match=r"layer groups leave out 2 parameter\(s\), e\.g\. 4\.weight, 4\.bias"):
        backbone.groups()


def test_layer_groups_naming_nothing_or_overlapping_are_plugin_errors():
    with pytest.raises(PluginError, match="layer group 'body': no module or parameter 'blocks' in the model"):
        Backbone(tiny_model(), layer_groups=[LayerGroup("stem", ["0", "1", "3", "4"]),
                                             LayerGroup("body", ["blocks"])]).groups()
    with pytest.raises(PluginError, match="parameter 0.weight is in layer groups 'stem' and 'again'"):
        Backbone(tiny_model(), layer_groups=[LayerGroup("stem", ["0", "1", "3", "4"]),
                                             LayerGroup("again", ["0"])]).groups()


# -- runner new-plugin: names pip can install, code in the example plugin's style -----------------------------------

@pytest.mark.parametrize("name, suggestion", [("bad name!", "bad-name"), ("runner demo", "runner-demo"),
                                              ("-lead", "lead"), ("trail.", "trail"), ("über", "ber"),
                                              ("../escape", "escape"), ("!!!", "runner-myplugin")])
def test_scaffold_rejects_names_pip_cannot_install(tmp_path, name, suggestion):
    from runner.scaffold import new_plugin

    with pytest.raises(RunnerError) as error:
        new_plugin(name, "backbone", tmp_path)
    (line,) = error.value.problems
    assert f"plugin name {name!r}: pip cannot install" in line and line.endswith(f"try '{suggestion}'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["runner", "2fast", "runner_plugins"])
def test_scaffold_rejects_names_whose_module_cannot_be_a_plugin(tmp_path, name):
    from runner.scaffold import new_plugin

    with pytest.raises(RunnerError, match=f"plugin name '{name}': "):
        new_plugin(name, "hooks", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_new_plugin_cli_rejects_a_bad_name_in_one_line(tmp_path):
    cli, app = _cli()
    result = cli.invoke(app, ["new-plugin", "bad name!", "--into", str(tmp_path)])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: plugin name 'bad name!'") and "try 'bad-name'" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["Runner.Tiny_Thing", "x", "runner-demo.v2"])
def test_scaffold_accepts_every_valid_name(tmp_path, name):
    from runner.scaffold import new_plugin

    root = new_plugin(name, "scheduler", tmp_path)
    module = re.sub(r"[^a-z0-9_]", "_", name.lower())
    assert (root / "src" / module / "__init__.py").is_file()
    assert f'{module} = "{module}"' in (root / "pyproject.toml").read_text()


SCAFFOLD_KINDS = ("backbone", "dataset", "freeze", "optimizer", "scheduler", "hooks")


@pytest.mark.parametrize("kind", SCAFFOLD_KINDS)
def test_new_plugin_code_is_written_against_runner_api(tmp_path, monkeypatch, kind):
    """What new-plugin writes imports runner.api alone, declares RUNNER_API and loads as a plugin object that
    provides its component (or recipe section); its package test is run by tests/test_plugins.py."""
    from runner.scaffold import new_plugin

    monkeypatch.setenv("RUNNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    root = new_plugin(f"runner-demo-{kind}", kind, tmp_path)
    module_name = f"runner_demo_{kind}"
    source = (root / "src" / module_name / "__init__.py").read_text()
    tree = ast.parse(source)
    ours = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and is_ours(n.module)}
    ours |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if is_ours(a.name)}
    assert ours == {"runner.api"}
    assert f'RUNNER_API = "{api.API_VERSION}"' in source
    module = types.ModuleType(module_name)
    monkeypatch.setitem(sys.modules, module_name, module)
    exec(compile(source, module_name, "exec"), module.__dict__)
    catalog = load_catalog(objects=[module])
    assert catalog.plugins.failures == []
    if kind == "hooks":
        assert "Section(" in source and 'run.section("demo_hooks")' in source
        assert catalog.sections["demo_hooks"][1] == module_name
    else:
        assert catalog.entry("freeze" if kind == "freeze" else kind, f"demo_{kind}").plugin == module_name
    if kind == "freeze":
        assert "FreezeParams" in source and "freeze_plan(backbone, params" in source


def test_new_plugin_hooks_section_never_takes_a_core_key(tmp_path, monkeypatch):
    from runner.scaffold import new_plugin

    root = new_plugin("runner-epochs", "hooks", tmp_path)
    source = (root / "src" / "runner_epochs" / "__init__.py").read_text()
    assert 'Section("epochs_plugin"' in source and 'run.section("epochs_plugin")' in source
