"""``runner new-plugin``: a pip-installable plugin package with one component (or a lifecycle plugin with its own
recipe section) and a test that passes as made.

The code it writes is in the style of ``tests/example_plugin``, the reference package: it imports ``runner.api``
alone, declares ``RUNNER_API``, builds freeze plans with ``FreezeParams`` and ``freeze_plan``, and a ``hooks``
plugin reads its own recipe section.
"""
from __future__ import annotations

import re
from pathlib import Path

from runner.errors import RunnerError

KIND_HOOKS = {
    "backbone": "runner_backbones", "dataset": "runner_datasets", "freeze": "runner_freeze_policies",
    "optimizer": "runner_optimizers", "scheduler": "runner_schedulers", "hooks": None,
}

VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
"""A distribution name pip can install (PEP 508)."""

TAKEN_MODULES = {"runner", "runner_plugins", "test", "tests"}
"""Module names a plugin package must not take: it would hide runner itself, or the test folders."""

HEADER = '''"""{name}: {what}."""
from __future__ import annotations

{imports}

RUNNER_API = "{api}"
'''

COMPONENTS = {
    "backbone": ('''from pydantic import Field
from torch import nn

from runner.api import Backbone, Component, LayerGroup, Params, Preprocess, hookimpl''', '''

class {Camel}Params(Params):
    width: int = Field(16, gt=0, description="channels of the small conv net")


def build(params: {Camel}Params) -> Backbone:
    """A small conv net with its own layer groups; a real plugin would load pretrained weights here."""
    w = params.width
    model = nn.Sequential(
        nn.Conv2d(3, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, 1000),
    )
    # module names from the input up; the head (the last nn.Linear, replaced by the engine) comes last by itself
    groups = [LayerGroup("stem", ["0", "1"]), LayerGroup("block", ["3", "4"])]
    return Backbone(model, Preprocess(size=64, resize=72), layer_groups=groups)
'''),
    "dataset": ('''import torch
from pydantic import Field

from runner.api import Component, Data, Params, Preprocess, hookimpl''', '''

class {Camel}Params(Params):
    size: int = Field(32, gt=0, description="images per split")
    batch_size: int = Field(8, gt=0, description="batch size")


def build(params: {Camel}Params, preprocess: Preprocess, base_dir) -> Data:
    """Random images of two classes; a real plugin would read files under base_dir (the recipe's folder)."""
    generator = torch.Generator().manual_seed(0)

    def split():
        labels = torch.arange(params.size) % 2
        images = torch.randn(params.size, 3, preprocess.size, preprocess.size, generator=generator)
        return torch.utils.data.TensorDataset(images + labels[:, None, None, None], labels)

    return Data(classes(params, base_dir), split(), split(), params.batch_size, params.batch_size, augmented=False)


def classes(params: {Camel}Params, base_dir) -> list[str]:
    """The class names without reading any image, so `runner plan` needs no data."""
    return ["a", "b"]
'''),
    "freeze": ('''from pydantic import Field

from runner.api import Backbone, Component, FreezeParams, FreezePlan, PluginError, freeze_plan, hookimpl''', '''

class {Camel}Params(FreezeParams):
    groups: int = Field(1, ge=0, description="layer groups below the head that train (0: the head alone)")


def build(params: {Camel}Params, backbone: Backbone) -> FreezePlan:
    """Train the head and the last `groups` layer groups below it. freeze_plan freezes the rest (its BatchNorm held
    in eval mode with `bn: frozen`) and scales the lrs by `backbone_lr_mult` and `layer_decay`."""
    *body, head = backbone.groups()
    if params.groups > len(body):
        raise PluginError(f"freeze.groups: {{params.groups}} is more than the backbone's {{len(body)}} layer groups")
    trains = [name for group in body[len(body) - params.groups:] for name in group.params] + head.params
    return freeze_plan(backbone, params, trains)
'''),
    "optimizer": ('''import torch
from pydantic import Field

from runner.api import Component, Params, hookimpl''', '''

class {Camel}Params(Params):
    lr: float = Field(0.01, gt=0, description="learning rate")


def build(params: {Camel}Params, param_groups) -> torch.optim.Optimizer:
    """Plain SGD without momentum; each group's lr is then scaled by its lr_scale."""
    return torch.optim.SGD(param_groups, lr=params.lr)
'''),
    "scheduler": ('''import torch
from pydantic import Field

from runner.api import Component, Params, Schedule, hookimpl''', '''

class {Camel}Params(Params):
    factor: float = Field(0.5, gt=0, description="lr multiplier per epoch")


def build(params: {Camel}Params, optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    """Multiply the lr by `factor` every epoch."""
    return Schedule(torch.optim.lr_scheduler.ExponentialLR(optimizer, params.factor), "epoch")
'''),
}

COMPONENT_HOOK = '''

@hookimpl
def {hook}():
    return [Component("{component}", "{kind} from {name}", build, {Camel}Params{extra})]
'''

HOOKS = ('''from pydantic import Field

from runner.api import Params, Section, hookimpl''', '''

class {Camel}Settings(Params):
    every: int = Field(1, gt=0, description="write a line every this many epochs")


@hookimpl
def runner_recipe_sections():
    # opt-in: a recipe turns it on with `{section}: {{every: 2}}`, or `{section}: true` for the defaults
    return [Section("{section}", "a line per epoch in {section}.log in the run folder", {Camel}Settings)]


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    settings = run.section("{section}")
    if settings is None or epoch % settings.every or not run.is_main:  # off, not this epoch, or not the writer
        return
    with open(run.folder / "{section}.log", "a", encoding="utf-8") as log:
        log.write(f"{{run.name}} epoch {{epoch}}: val_acc {{metrics['val_acc']:.4f}}\\n")
''')

TEST = '''"""{name} works inside runner: it loads as a plugin and does what it says."""
from __future__ import annotations

{imports}


def test_{module}_{test}({args}):
    catalog = load_catalog(["{module}"], strict=True)
{body}
'''

TESTS = {
    "backbone": ("is_listed_and_builds", "", "from runner.plugins import load_catalog", '''    component = catalog.get("backbone", "{component}")
    backbone = component.build(component.params())
    head = backbone.replace_head(2)
    assert head.out_features == 2
    assert [group.name for group in backbone.groups()] == ["stem", "block", "head"]'''),
    "dataset": ("is_listed_and_builds", "", "from runner.api import Preprocess\nfrom runner.plugins import load_catalog", '''    component = catalog.get("dataset", "{component}")
    data = component.build(component.params(), Preprocess(size=8, resize=8), ".")
    assert data.classes == ["a", "b"] == component.classes(component.params(), ".") and len(data.train) == 32
    image, label = data.train[0]
    assert image.shape == (3, 8, 8) and int(label) in (0, 1)'''),
    "freeze": ("is_listed_and_builds", "", "from torch import nn\n\nfrom runner.api import Backbone, LayerGroup, is_held\nfrom runner.plugins import load_catalog",
               '''    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    backbone = Backbone(model, layer_groups=[LayerGroup("stem", ["0", "1"]), LayerGroup("block", ["3", "4"])])
    backbone.replace_head(2)  # what the engine does before it builds the freeze policy
    component = catalog.get("freeze", "{component}")
    plan = component.build(component.params(groups=1), backbone)
    assert [group["name"] for group in plan.groups] == ["block", "head"]
    assert not model[0].weight.requires_grad and model[3].weight.requires_grad
    model.train()
    assert is_held(model[1]) and not model[1].training  # the frozen part's BatchNorm keeps its statistics
    assert not is_held(model[4]) and model[4].training'''),
    "optimizer": ("is_listed_and_builds", "", "import torch\n\nfrom runner.plugins import load_catalog", '''    component = catalog.get("optimizer", "{component}")
    optimizer = component.build(component.params(), [{{"params": [torch.nn.Parameter(torch.zeros(2))]}}])
    assert optimizer.param_groups[0]["lr"] == 0.01'''),
    "scheduler": ("is_listed_and_builds", "", "import torch\n\nfrom runner.plugins import load_catalog", '''    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    component = catalog.get("scheduler", "{component}")
    schedule = component.build(component.params(), optimizer, 3, 1)
    optimizer.step()
    schedule.scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.5'''),
    "hooks": ("adds_its_section_and_writes_its_log", "tmp_path", "from types import SimpleNamespace\n\nimport {module}\nfrom runner.plugins import load_catalog",
              '''    section, plugin = catalog.sections["{section}"]
    assert plugin == "{module}" and not section.on_by_default
    # a stand-in for the RunView a real run passes, with what the hook reads
    run = SimpleNamespace(name="demo", folder=tmp_path, is_main=True, section=lambda name: section.params(every=2))
    for epoch in (1, 2, 3, 4):
        {module}.runner_epoch_end(run, epoch, {{"val_acc": 0.5}})
    assert (tmp_path / "{section}.log").read_text() == "demo epoch 2: val_acc 0.5000\\ndemo epoch 4: val_acc 0.5000\\n"
    off = SimpleNamespace(name="demo", folder=tmp_path / "off", is_main=True, section=lambda name: None)
    {module}.runner_epoch_end(off, 1, {{"val_acc": 0.5}})  # the recipe has no {section}: section: nothing'''),
}


def check_name(name: str) -> str:
    """The package's module name for a valid distribution name; a one-line RunnerError with a suggestion if not."""
    if not VALID_NAME.match(name):
        suggestion = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")
        if not VALID_NAME.match(suggestion) or suggestion[0].isdigit():
            suggestion = "runner-myplugin"
        raise RunnerError(f"plugin name {name!r}: pip cannot install a package of that name (letters, digits, '-', "
                          f"'_' and '.', starting and ending with a letter or digit); try '{suggestion}'")
    module = re.sub(r"[^a-z0-9_]", "_", name.lower())
    if module[0].isdigit():
        raise RunnerError(f"plugin name {name!r}: a plugin name starts with a letter (its module is imported by "
                          f"name); try 'runner-{name}'")
    if module in TAKEN_MODULES:
        raise RunnerError(f"plugin name {name!r}: its module '{module}' would hide another; try 'runner-my{module}'")
    return module


def new_plugin(name: str, kind: str, into: Path) -> Path:
    """Write the package ``into/name`` and return its folder."""
    if kind not in KIND_HOOKS:
        raise RunnerError(f"--kind {kind}: expected one of {', '.join(KIND_HOOKS)}")
    module = check_name(name)
    root = Path(into) / name
    if root.exists():
        raise RunnerError(f"{root} already exists; choose another name or folder")
    from runner.api import API_VERSION
    from runner.recipes import RESERVED_KEYS

    component = module.removeprefix("runner_") or module
    section = f"{component}_plugin" if component in RESERVED_KEYS or component in KIND_HOOKS else component
    camel = "".join(part.capitalize() for part in component.split("_") if part) or "Plugin"
    fields = dict(name=name, module=module, component=component, section=section, Camel=camel, kind=kind,
                  hook=KIND_HOOKS[kind], api=API_VERSION)
    if kind == "hooks":
        imports, body = HOOKS
        what = f"a lifecycle plugin for runner with its own recipe section, `{section}:`"
    else:
        imports, body = COMPONENTS[kind]
        body += COMPONENT_HOOK.format(extra=", classes=classes" if kind == "dataset" else "", **fields)
        what = f"a {kind} plugin for runner, the {kind} '{component}'"
    source = HEADER.format(what=what, imports=imports, **fields) + body.format(**fields)

    (root / "src" / module).mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text(f'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
description = "A {kind} plugin for runner"
dependencies = ["runner"]

[project.entry-points.runner]
{module} = "{module}"
''')
    (root / "src" / module / "__init__.py").write_text(source)
    test, args, imports, test_body = TESTS[kind]
    imports = imports.format(**fields)
    (root / "tests" / f"test_{module}.py").write_text(
        TEST.format(name=name, module=module, test=test, args=args, imports=imports, body=test_body.format(**fields)))
    usage = (f"`{section}: {{every: 2}}` in a recipe turns it on" if kind == "hooks" else
             f"`{'freeze' if kind == 'freeze' else kind}: {component}` in a recipe uses it")
    (root / "README.md").write_text(
        f"# {name}\n\nA {kind} plugin for runner, written against `runner.api` (plugin API {API_VERSION}). "
        f"`pip install -e .` registers it (entry-point group `runner`); `runner plugins` lists it; {usage}; "
        f"`pytest` tests it. See runner's docs/plugins.md.\n")
    return root
