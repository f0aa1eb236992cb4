"""``runner new-plugin``: a pip-installable plugin package with one component and a test that passes as made."""
from __future__ import annotations

import re
from pathlib import Path

from runner.errors import RunnerError

KIND_HOOKS = {
    "backbone": "runner_backbones", "dataset": "runner_datasets", "freeze": "runner_freeze_policies",
    "optimizer": "runner_optimizers", "scheduler": "runner_schedulers", "hooks": None,
}

COMPONENTS = {
    "backbone": '''
class Params(runner.components.Params):
    width: int = Field(16, gt=0, description="channels of the small conv net")


def build(params: Params) -> runner.components.Backbone:
    """A small conv net; a real plugin would load pretrained weights here."""
    model = nn.Sequential(nn.Conv2d(3, params.width, 3, stride=2), nn.BatchNorm2d(params.width), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(params.width, 1000))
    return runner.components.Backbone(model, runner.components.Preprocess(size=64, resize=72))
''',
    "dataset": '''
class Params(runner.components.Params):
    size: int = Field(32, gt=0, description="images per split")
    batch_size: int = Field(8, gt=0, description="batch size")


def build(params: Params, preprocess: runner.components.Preprocess, base_dir) -> runner.components.Data:
    """Random images of two classes; a real plugin would read files under base_dir."""
    g = torch.Generator().manual_seed(0)
    def split():
        x = torch.randn(params.size, 3, preprocess.size, preprocess.size, generator=g)
        y = torch.arange(params.size) % 2
        return torch.utils.data.TensorDataset(x + y[:, None, None, None], y)
    return runner.components.Data(["a", "b"], split(), split(), params.batch_size, params.batch_size,
                                  augmented=False)
''',
    "freeze": '''
class Params(runner.components.Params):
    pass


def build(params: Params, backbone: runner.components.Backbone) -> runner.components.FreezePlan:
    """Train only the last layer group before the head, and the head."""
    groups = backbone.groups()
    trains = set(groups[-1][1]) | set(groups[-2][1] if len(groups) > 1 else [])
    named = dict(backbone.model.named_parameters())
    for name, param in named.items():
        param.requires_grad_(name in trains)
    return runner.components.FreezePlan([{"name": "trainable", "params": [named[n] for n in sorted(trains)]}])
''',
    "optimizer": '''
class Params(runner.components.Params):
    lr: float = Field(0.01, gt=0, description="learning rate")


def build(params: Params, param_groups):
    """Plain SGD without momentum."""
    return torch.optim.SGD(param_groups, lr=params.lr)
''',
    "scheduler": '''
class Params(runner.components.Params):
    factor: float = Field(0.5, gt=0, description="lr multiplier per epoch")


def build(params: Params, optimizer, epochs: int, steps_per_epoch: int) -> runner.components.Schedule:
    """Multiply the lr by `factor` every epoch."""
    return runner.components.Schedule(torch.optim.lr_scheduler.ExponentialLR(optimizer, params.factor), "epoch")
''',
}

TEST = '''"""{name} works inside runner: it is listed and builds from a recipe section."""
from runner.plugins import load_catalog


def test_{module}_is_listed_and_builds():
    catalog = load_catalog(["{module}"])
{body}
'''

TEST_BODIES = {
    "backbone": '''    backbone = catalog.get("backbone", "{component}").build(catalog.get("backbone", "{component}").params())
    head = backbone.replace_head(2)
    assert head.out_features == 2''',
    "dataset": '''    component = catalog.get("dataset", "{component}")
    from runner.components import Preprocess
    data = component.build(component.params(), Preprocess(size=8, resize=8), ".")
    assert data.classes == ["a", "b"] and len(data.train) == 32''',
    "freeze": '''    import torch
    from runner.components import Backbone
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2))
    backbone = Backbone(model)
    backbone.head = model[3]
    plan = catalog.get("freeze", "{component}").build(catalog.get("freeze", "{component}").params(), backbone)
    assert plan.groups[0]["params"]''',
    "optimizer": '''    import torch
    component = catalog.get("optimizer", "{component}")
    optimizer = component.build(component.params(), [{{"params": [torch.nn.Parameter(torch.zeros(2))]}}])
    assert optimizer.param_groups[0]["lr"] == 0.01''',
    "scheduler": '''    import torch
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    component = catalog.get("scheduler", "{component}")
    schedule = component.build(component.params(), optimizer, 3, 1)
    schedule.scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.5''',
    "hooks": '''    assert "{module}" in catalog.plugins.info and not catalog.plugins.info["{module}"].error''',
}

HOOKS_MODULE = '''"""{name}: a lifecycle plugin -- prints one line after every epoch."""
import runner


@runner.hookimpl
def runner_epoch_end(run, epoch, metrics):
    print(f"{{run.recipe.name}} epoch {{epoch}}: val acc {{metrics['val_acc']:.4f}}")
'''


def new_plugin(name: str, kind: str, into: Path) -> Path:
    """Write the package ``into/name`` and return its folder."""
    if kind not in KIND_HOOKS:
        raise RunnerError(f"--kind {kind}: expected one of {', '.join(KIND_HOOKS)}")
    module = re.sub(r"\W", "_", name.lower()).strip("_")
    if not module or module[0].isdigit():
        raise RunnerError(f"{name}: a plugin name starts with a letter, e.g. runner-mybackbone")
    root = into / name
    if root.exists():
        raise RunnerError(f"{root} already exists; choose another name or folder")
    component = module.removeprefix("runner_") or module
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
    if kind == "hooks":
        source = HOOKS_MODULE.format(name=name)
    else:
        source = (f'"""{name}: a {kind} plugin for runner."""\nimport torch\nfrom pydantic import Field\n'
                  f'from torch import nn  # noqa: F401\n\nimport runner\nimport runner.components\n'
                  + COMPONENTS[kind]
                  + f'\n\n@runner.hookimpl\ndef {KIND_HOOKS[kind]}():\n'
                    f'    return [runner.components.Component("{component}", "{kind} from {name}", build, Params)]\n')
    (root / "src" / module / "__init__.py").write_text(source)
    body = TEST_BODIES[kind].format(component=component, module=module)
    (root / "tests" / f"test_{module}.py").write_text(TEST.format(name=name, module=module, body=body))
    (root / "README.md").write_text(f"# {name}\n\nA {kind} plugin for runner. `pip install -e .` registers it "
                                    f"(entry point group `runner`); `runner plugins` lists it; `pytest` tests it.\n")
    return root
