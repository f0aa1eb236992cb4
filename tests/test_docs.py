"""Every ```python block of docs/plugins.md and docs/api.md runs, in order, in a scratch folder holding a tiny image
folder in ``data/``; each block that defines a plugin is registered with ``load_catalog`` and provides what its
hooks say. Conventions of those pages:

- ``<!-- file: NAME -->`` on the line before a block: the block is that file. A Python file is loaded as a plugin
  file (``load_catalog([NAME])``), and later blocks may import it; any other file (a recipe) is only written.
- a Python block without a file runs in a fresh module namespace; if it defines hooks, it is registered as a plugin
  object (``load_catalog(objects=[module])``).
- ```python no-run: shown, not run (use rarely); ```pyi: a signature, parsed but not run.
"""
from __future__ import annotations

import ast
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import runner
from conftest import make_imagefolder
from runner import api_docs
from runner.api import Component, Section
from runner.plugins import load_catalog

ROOT = Path(__file__).resolve().parents[1]
PAGES = {name: ROOT / "docs" / name for name in ("plugins.md", "api.md")}
FENCE = re.compile(r"^(?:<!-- file: (?P<file>[\w.-]+) -->\n)?```(?P<info>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$",
                   re.S | re.M)
KIND_OF_HOOK = {"runner_datasets": "dataset", "runner_backbones": "backbone", "runner_freeze_policies": "freeze",
                "runner_optimizers": "optimizer", "runner_schedulers": "scheduler"}


@dataclass
class Block:
    page: str
    line: int
    lang: str
    flags: list[str]
    file: str | None
    code: str

    def __str__(self) -> str:
        return f"docs/{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    text = PAGES[page].read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        lang, *flags = (match.group("info").split() or [""])
        line = text.count("\n", 0, match.start("code"))
        found.append(Block(page, line, lang, flags, match.group("file"), match.group("code")))
    return found


def hook_functions(module) -> dict[str, object]:
    return {name: f for name, f in vars(module).items() if callable(f) and hasattr(f, "runner_impl")}


def check_provides(catalog, plugin: str, module, where: Block) -> None:
    """The plugin loaded, and every component and section its hooks return is in the catalog, from it."""
    info = catalog.plugins.info.get(plugin)
    assert info is not None and info.error is None, f"{where}: plugin {plugin} did not load: {info}"
    for hook, function in hook_functions(module).items():
        if hook in KIND_OF_HOOK:
            components = function()
            assert components and all(isinstance(c, Component) for c in components), where
            for component in components:
                entry = catalog.entry(KIND_OF_HOOK[hook], component.name)
                assert entry.plugin == plugin, f"{where}: {component.name} comes from {entry.plugin}"
        elif hook == "runner_recipe_sections":
            for section in function():
                assert isinstance(section, Section), where
                assert catalog.sections[section.name][1] == plugin, f"{where}: section {section.name}"


def imports_of_runner(code: str) -> set[str]:
    tree = ast.parse(code)
    names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return {name for name in names if name.split(".")[0].startswith("runner")}


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A working folder with a tiny image folder in data/, importable; installed plugins off (an installed example
    package offers names the pages use too); modules the blocks import from it forgotten afterwards."""
    make_imagefolder(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RUNNER_DISABLE_PLUGIN_AUTOLOAD", "1")
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if str(tmp_path) in str(getattr(sys.modules[name], "__file__", "") or "") or name.startswith("docs_"):
            del sys.modules[name]


def run_block(block: Block, index: int, folder: Path) -> None:
    if block.lang == "pyi":
        ast.parse(block.code, filename=str(block))
        return
    if block.lang in ("yaml", "yml"):
        yaml.safe_load(block.code)
    if block.lang != "python" or "no-run" in block.flags:
        if block.file:
            (folder / block.file).write_text(block.code, encoding="utf-8")
        return
    if block.file:
        path = folder / block.file
        path.write_text(block.code, encoding="utf-8")
        catalog = load_catalog([str(path)])
        check_provides(catalog, path.stem, catalog.pm.get_plugin(path.stem), block)
        return
    module = types.ModuleType(f"docs_{block.page.replace('.', '_')}_{index}")
    sys.modules[module.__name__] = module
    exec(compile(block.code, str(block), "exec"), module.__dict__)
    if hook_functions(module):
        check_provides(load_catalog(objects=[module]), module.__name__, module, block)


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs(page, scratch):
    found = blocks(page)
    assert any(b.lang == "python" for b in found)
    for index, block in enumerate(found):
        run_block(block, index, scratch)


@pytest.mark.parametrize("page", PAGES)
def test_plugin_blocks_import_only_runner_api(page):
    """A block that defines hooks is a plugin, written as plugins are: against runner.api alone."""
    for block in blocks(page):
        if block.lang == "python" and "@hookimpl" in block.code:
            assert imports_of_runner(block.code) <= {"runner.api"}, str(block)
            assert "Component(" not in block.code or re.search(r"Component\(\"\w+\", \"[^\"]+\", \w+", block.code), (
                f"{block}: Component(name, summary, build, params)")


def test_no_run_is_rare():
    marked = [str(b) for page in PAGES for b in blocks(page) if b.lang == "python" and "no-run" in b.flags]
    assert len(marked) <= 2, marked


def test_the_guide_starts_with_a_plugin_of_a_few_lines():
    first = next(b for b in blocks("plugins.md") if b.lang == "python")
    assert first.file == "my_plugin.py" and "@hookimpl" in first.code
    assert len([line for line in first.code.splitlines() if line.strip()]) <= 8


def test_the_guide_ends_with_every_hook_verbatim():
    text = PAGES["plugins.md"].read_text(encoding="utf-8")
    assert text.endswith(api_docs.hook_digest()), "python -m runner.api_docs --hooks: paste it at the end of " \
                                                  "docs/plugins.md"


def test_the_hook_examples_of_api_md_train_together(scratch):
    """One plugin module per hook example, all registered at once: the dataset, backbone, freeze policy, optimizer
    and scheduler make a run, and the lifecycle examples write their files and stop it."""
    modules = []
    for hook, code in api_docs.HOOK_EXAMPLES.items():
        module = types.ModuleType(f"docs_example_{hook}")
        sys.modules[module.__name__] = module
        exec(compile(code, f"api_docs.HOOK_EXAMPLES[{hook!r}]", "exec"), module.__dict__)
        modules.append(module)
    assert load_catalog(objects=modules).plugins.failures == []
    recipe = scratch / "examples.yaml"
    recipe.write_text(yaml.safe_dump({
        "dataset": "noise", "backbone": "tiny", "freeze": "last_group", "optimizer": "plain_sgd",
        "scheduler": "halve", "target": {"val_acc": 0.0}, "epochs": 3, "pictures": False}))
    rows = {row["group"]: row for row in runner.plan(recipe, plugins=modules)["rows"]}
    assert rows["(frozen)"]["batchnorm"] == "eval (held)" and set(rows) == {"(frozen)", "body", "head"}
    result = runner.run(recipe, plugins=modules, progress=False)
    assert result.summary["epochs_run"] == 1 and result.summary["stopped"] == "val_acc reached 0.0"
    assert (result.folder / "classes.txt").read_text() == "dark\nbright\n"
    assert (result.folder / "progress.txt").read_text().startswith("1/3 val_acc=")
    assert '"stopped": "val_acc reached 0.0"' in (result.folder / "done.json").read_text()


def test_every_python_block_of_the_python_guide_runs(tmp_path, monkeypatch):
    """docs/python.md's blocks, in order and in one namespace, in a folder where ``recipes/extract.yaml`` is a
    small stand-in (a tiny model on generated images), ``photo.jpg`` an image and ``other/val`` a labelled folder."""
    from conftest import TINY_BACKBONE

    data = make_imagefolder(tmp_path / "data")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "extract.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": "imagefolder", "root": str(data), "batch_size": 4, "workers": 0},
        "backbone": TINY_BACKBONE, "freeze": "all_but_head", "epochs": 2, "precision": "fp32",
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "output": str(tmp_path / "runs")}))
    (tmp_path / "photo.jpg").write_bytes(next((data / "val" / "cats").iterdir()).read_bytes())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "val").symlink_to(data / "val")
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "python.md").read_text(encoding="utf-8")
    found = [m for m in FENCE.finditer(text) if m.group("info").strip() == "python"]
    assert len(found) >= 5
    namespace: dict = {"__name__": "python_md"}
    for match in found:
        exec(compile(match.group("code"), f"docs/python.md:{text.count(chr(10), 0, match.start('code'))}", "exec"),
             namespace)
    assert namespace["written"]["max_abs_diff"] < 1e-4 and (tmp_path / "model.pt2").is_file()
    assert namespace["rows"][0]["class"] in namespace["model"].classes
