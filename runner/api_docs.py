"""Writes ``docs/api.md``, the plugin API's reference, from the code: ``python -m runner.api_docs > docs/api.md``.

Every name in ``runner.api.__all__`` and every hook in :mod:`runner.hookspecs` gets its signature (read with
:mod:`inspect`; pydantic parameter models as a table of their fields) and its docstring; each hook also gets a short
plugin that implements it (``HOOK_EXAMPLES`` below), which ``tests/test_docs.py`` registers and runs.
``tests/test_api.py`` checks the file equals this module's output, so the reference cannot drift from the code.
``python -m runner.api_docs --check`` says whether docs/api.md is up to date (exit 1 when not).
"""
from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import re
import sys
import textwrap
import typing
from pathlib import Path

from pydantic import BaseModel

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"

INTRO = """\
# Plugin API reference (v{version})

Generated from the code by `python -m runner.api_docs > docs/api.md`: do not edit by hand (`tests/test_api.py`
fails when this page and the code differ). The guide to writing plugins, from a five-line plugin upward, is
[plugins.md](plugins.md).

A plugin imports `runner.api` and nothing else of runner's:

```pyi
from runner.api import Backbone, Component, FreezeParams, Params, Section, freeze_plan, hookimpl
```

It is a module (a file, or a package's module) whose functions are marked `@hookimpl` and named after the
[hooks](#hooks) below. Component hooks return [`Component`](#component)s; a recipe names a component, and its
section is validated against the component's [`Params`](#params) model before anything is built. Lifecycle hooks
get a [`RunView`](#runview). A module attribute `RUNNER_API = "{version}"` declares the API version the plugin was
written for ([`require`](#require)).

What `runner.api` offers is a contract: names are added in minor versions and change only with a major one.
Names marked *lazy* import torch, torchvision or matplotlib on first use, so `import runner.api` stays cheap.

**Contents**: [Hooks](#hooks){contents}
"""

SECTIONS: list[tuple[str, str, list[str]]] = [
    ("Version", "The API's version, and how a plugin asks for one.", ["API_VERSION", "require"]),
    ("Hook implementations", "", ["hookimpl"]),
    ("Components and recipe sections", "What component hooks and `runner_recipe_sections` return.",
     ["Component", "Params", "Section"]),
    ("Backbones", "What a backbone component builds, its preprocessing and its layer groups.",
     ["Backbone", "LayerGroup", "Preprocess", "default_layer_groups", "find_head", "replace_last_linear"]),
    ("Freeze policies", "What a freeze policy builds, the parameters every policy shares, and the helpers that "
                        "freeze modules and hold their BatchNorm layers in eval mode.",
     ["FreezeParams", "FreezePlan", "freeze_plan", "freeze", "unfreeze", "hold_batchnorm_eval", "release_batchnorm",
      "is_held"]),
    ("Schedulers", "", ["Schedule"]),
    ("Datasets", "What a dataset component builds, and the bases the built-in image-file datasets are made of.",
     ["Data", "LoaderParams", "ImageFileParams", "ImageFolder", "image_transforms", "finish_image_files",
      "resolve_workers", "read_rgb", "to_rgb", "NormalizedTensor", "walk_files", "BadImage", "find_root",
      "search_path", "data_cache"]),
    ("Lifecycle", "What lifecycle hooks see of a run.", ["RunView"]),
    ("Errors", "A plugin reports its user's mistakes with `PluginError`: one line, exit code 2, no traceback.",
     ["RunnerError", "PluginError", "did_you_mean"]),
    ("Files and pictures", "Writing into the run folder safely (temporary file and rename), weights and figures.",
     ["load_state_dict", "load_strict", "save_json", "save_text", "save_bytes", "save_torch", "append_jsonl",
      "pyplot", "save_figure"]),
]
"""The reference's sections: (title, one line, names). A name of ``__all__`` missing here lands in "Other names"."""

EXTRA_DOCS = {
    "hookimpl": "Marks a function as the implementation of the hook of the same name: "
                '`pluggy.HookimplMarker("runner")`. `tryfirst`/`trylast` order it among other plugins\' '
                "implementations; `specname` implements a hook under another function name. An implementation may "
                "take fewer arguments than its hook, each named as in the hook; a misspelt argument or a function "
                "named like no hook makes the plugin fail to load.",
    "save_json": "Write `obj` as indented JSON at `path`, atomically: a temporary file beside it, then a rename, so "
                 "`path` is the old file or the new, never torn. A failed write is a `RunnerError` saying why.",
    "save_text": "Write `text` at `path` (UTF-8), atomically (see `save_json`).",
    "save_bytes": "Write `data` at `path`, atomically (see `save_json`).",
    "save_torch": "`torch.save(obj)` at `path`, atomically (see `save_json`).",
    "RunView.classes": "The class names, in the order of the model's outputs.",
    "RunView.seed": "The recipe's random seed.",
    "RunView.device": "The device the model runs on.",
}
"""Words for names (and ``Class.member``s) whose docstring is missing, or is not about this API (``hookimpl`` is
pluggy's); a docstring written in the code later wins over these."""

NOT_CONSTRUCTED = {"RunView"}
"""Classes a plugin receives but never makes: their ``__init__`` is not part of the API."""

HOOK_EXAMPLES = {
    "runner_datasets": '''\
import torch
from runner.api import Component, Data, Params, Preprocess, hookimpl


class Noise(Params):
    size: int = 16


def build(params: Noise, preprocess: Preprocess, base_dir) -> Data:
    """Two classes of random images at the backbone's input size: class 1 is brighter."""
    def split(seed):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(params.size) % 2
        images = torch.randn(params.size, 3, preprocess.size, preprocess.size, generator=g) + labels[:, None, None, None]
        return torch.utils.data.TensorDataset(images, labels)
    return Data(["dark", "bright"], split(0), split(1), batch_size=4, val_batch_size=8, augmented=False)


@hookimpl
def runner_datasets():
    return [Component("noise", "random images of two classes", build, Noise,
                      classes=lambda params, base_dir: ["dark", "bright"])]
''',
    "runner_backbones": '''\
from torch import nn
from runner.api import Backbone, Component, LayerGroup, Params, Preprocess, hookimpl


class Tiny(Params):
    width: int = 8


def build(params: Tiny) -> Backbone:
    w = params.width
    model = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                          nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, 1000))
    groups = [LayerGroup("stem", ["0", "1"]), LayerGroup("body", ["3", "4"])]  # module names; the head comes last
    return Backbone(model, Preprocess(size=32, resize=36), layer_groups=groups)


@hookimpl
def runner_backbones():
    return [Component("tiny", "a tiny conv net", build, Tiny)]
''',
    "runner_freeze_policies": '''\
from runner.api import Backbone, Component, FreezeParams, FreezePlan, freeze_plan, hookimpl


def build(params: FreezeParams, backbone: Backbone) -> FreezePlan:
    """The head and the layer group below it train; the rest is frozen, its BatchNorm held in eval mode."""
    *body, head = backbone.groups()
    trains = [*head.params, *(body[-1].params if body else [])]
    return freeze_plan(backbone, params, trains)


@hookimpl
def runner_freeze_policies():
    return [Component("last_group", "train the head and the last layer group", build, FreezeParams)]
''',
    "runner_optimizers": '''\
import torch
from pydantic import Field
from runner.api import Component, Params, hookimpl


class PlainSGD(Params):
    lr: float = Field(0.05, gt=0, description="learning rate of the head")


@hookimpl
def runner_optimizers():
    def build(params: PlainSGD, param_groups):
        return torch.optim.SGD(param_groups, lr=params.lr)
    return [Component("plain_sgd", "SGD without momentum", build, PlainSGD)]
''',
    "runner_schedulers": '''\
import torch
from runner.api import Component, Schedule, hookimpl


def build(params, optimizer, epochs, steps_per_epoch):
    return Schedule(torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5), "epoch")


@hookimpl
def runner_schedulers():
    return [Component("halve", "halve the lr every epoch", build)]
''',
    "runner_recipe_sections": '''\
from pydantic import Field
from runner.api import Params, Section, hookimpl


class Target(Params):
    val_acc: float = Field(0.99, ge=0, le=1, description="stop once val accuracy reaches this")


@hookimpl
def runner_recipe_sections():
    # opt-in: a recipe turns it on with `target: {val_acc: 0.9}` (or `target: true` for the defaults)
    return [Section("target", "stop when val accuracy reaches a target", Target)]


@hookimpl
def runner_epoch_end(run, metrics):
    target = run.section("target")
    if target is not None and metrics["val_acc"] >= target.val_acc:
        run.stop(f"val_acc reached {target.val_acc}")
''',
    "runner_run_start": '''\
from runner.api import hookimpl


@hookimpl
def runner_run_start(run):
    if run.is_main:  # only one process writes files
        (run.folder / "classes.txt").write_text("\\n".join(run.classes) + "\\n")
''',
    "runner_batch_end": '''\
from runner.api import hookimpl


@hookimpl
def runner_batch_end(run, phase, size):
    seen = run.state.setdefault("images_seen", {"train": 0, "val": 0})  # kept in last.pt, back on resume
    seen[phase] += size
''',
    "runner_epoch_end": '''\
from runner.api import hookimpl


@hookimpl
def runner_epoch_end(run, epoch, metrics):
    if run.is_main:
        with open(run.folder / "progress.txt", "a") as f:
            f.write(f"{epoch}/{run.epochs} val_acc={metrics['val_acc']:.3f} lr={metrics['lr']}\\n")
''',
    "runner_run_end": '''\
import json
from runner.api import hookimpl


@hookimpl
def runner_run_end(run, summary):
    if run.is_main:
        done = {"best_val_acc": summary["best_val_acc"], "stopped": summary["stopped"]}
        (run.folder / "done.json").write_text(json.dumps(done))
''',
}
"""A short plugin per hook: each is a whole module, run and registered by tests/test_docs.py."""


# -- reading the code -----------------------------------------------------------------------------------------------

def hookspecs() -> list:
    """The hook specifications in declaration order."""
    from runner import hookspecs as module

    return [f for f in vars(module).values() if inspect.isfunction(f) and hasattr(f, "runner_spec")]


def own_doc(obj) -> str:
    """The object's own docstring, cleaned: never one inherited from a base class (pydantic's BaseModel's)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else ""


def attribute_docs(source: str) -> dict[str, str]:
    """``name -> docstring`` for assignments followed by a string (attribute docstrings) in a class or module."""
    tree = ast.parse(textwrap.dedent(source))
    body = tree.body[0].body if len(tree.body) == 1 and isinstance(tree.body[0], ast.ClassDef) else tree.body
    docs = {}
    for node, after in zip(body, body[1:]):
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if (isinstance(target, ast.Name) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[target.id] = inspect.cleandoc(after.value.value)
    return docs


def class_attribute_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if k.__module__.startswith("runner")]):
        try:
            docs.update(attribute_docs(inspect.getsource(klass)))
        except (OSError, TypeError):
            pass
    return docs


def annotation(value) -> str:
    """A type as written in source: ``int | None``, ``Literal['a', 'b']``, ``list[str]``."""
    if value is inspect.Parameter.empty:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, typing.ForwardRef):
        return value.__forward_arg__
    if value is type(None):
        return "None"
    origin, args = typing.get_origin(value), typing.get_args(value)
    if origin is typing.Annotated:
        return annotation(args[0])
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is typing.Union or type(value).__name__ == "UnionType":
        return " | ".join(annotation(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        return f"{name}[{', '.join(annotation(a) for a in args)}]" if args else name
    if isinstance(value, type):
        return value.__name__
    return re.sub(r"\b(typing|collections\.abc)\.", "", str(value))


def default(value) -> str:
    if isinstance(value, type):
        return value.__name__
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    if isinstance(value, enum.Enum):
        return repr(value.value)
    return repr(value)


def signature(obj, name: str | None = None, skip_self: bool = False) -> str:
    """``name(arg: type = default, *, key: type) -> type``, from the signature as declared."""
    sig = inspect.signature(obj)
    parts, star = [], False
    fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
    for index, param in enumerate(sig.parameters.values()):
        if skip_self and index == 0 and param.name in ("self", "cls"):
            continue
        if param.kind is param.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = {param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(param.kind, "") + param.name
        if param.kind is param.VAR_POSITIONAL:
            star = True
        kind = annotation(param.annotation)
        if kind:
            text += f": {kind}"
        if param.default is not param.empty:
            value = param.default
            field = fields.get(param.name)
            if field is not None and field.default_factory is not dataclasses.MISSING:
                shown = {list: "[]", dict: "{}"}.get(field.default_factory, f"{default(field.default_factory)}()")
            else:
                shown = default(value)
            text += f" = {shown}" if kind else f"={shown}"
        parts.append(text)
    returns = annotation(sig.return_annotation)
    shown = returns and not (isinstance(obj, type) and returns == "None")  # a class's "-> None" says nothing
    return f"{name or obj.__name__}({', '.join(parts)})" + (f" -> {returns}" if shown else "")


def to_markdown(doc: str, anchors: set[str]) -> str:
    """reST inline markup to markdown: ``code`` -> `code`, :class:`~runner.api.X` -> a link when X is on this page,
    a literal block after ``::`` -> a fenced block."""
    def role(match: re.Match) -> str:
        target = match.group(2).lstrip("~")
        short = target.rsplit(".", 1)[-1]
        if target.startswith("runner.") and short not in anchors and match.group(1) == "mod":
            return f"`{target}`"
        shown = short if match.group(2).startswith("~") or target.startswith(("runner.api.", "runner.hookspecs.")) \
            else target
        return f"[`{shown}`](#{short.lower()})" if short in anchors else f"`{shown}`"

    doc = re.sub(r":(\w+):`([^`]+)`", role, doc)
    doc = re.sub(r"``([^`]+)``", r"`\1`", doc)
    lines, out, index = doc.splitlines(), [], 0
    while index < len(lines):
        line = lines[index]
        if line.rstrip().endswith("::") and not line.strip().startswith("`"):
            out.append(line.rstrip()[:-1].rstrip() + (":" if line.strip() != "::" else ""))
            index += 1
            block = []
            while index < len(lines) and (not lines[index].strip() or lines[index].startswith("    ")):
                block.append(lines[index])
                index += 1
            out += ["", "```text", *textwrap.dedent("\n".join(block)).strip("\n").splitlines(), "```", ""]
            continue
        out.append(line)
        index += 1
    return "\n".join(out).strip()


# -- writing the page -----------------------------------------------------------------------------------------------

def _fence(kind: str, text: str) -> str:
    return f"```{kind}\n{text.rstrip()}\n```"


def _members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties a class defines itself (or inherits from a runner base), in source order."""
    seen, members = set(), []
    for klass in [k for k in cls.__mro__ if k.__module__.startswith("runner")]:
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            if isinstance(value, (property, staticmethod, classmethod)) or inspect.isfunction(value):
                seen.add(name)
                members.append((name, value))
    return members


def _field_default(cls: type, param: inspect.Parameter) -> str:
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    field = fields.get(param.name)
    if field is not None and field.default_factory is not dataclasses.MISSING:
        return {list: "[]", dict: "{}"}.get(field.default_factory, f"{default(field.default_factory)}()")
    return default(param.default)


def _class_stub(cls: type) -> tuple[str, list[str]]:
    """The class as a stub (fields, methods) and its documented members as bullet lines."""
    record = dataclasses.is_dataclass(cls) or getattr(cls, "_fields", None) is not None
    bases = ["NamedTuple"] if getattr(cls, "_fields", None) is not None else [
        b.__name__ if b.__module__.startswith("runner") or b.__module__ == "builtins" else
        f"{b.__module__}.{b.__qualname__}" for b in cls.__bases__ if b is not object]
    lines = ["@dataclass" + ("(frozen=True)" if cls.__dataclass_params__.frozen else "")] \
        if dataclasses.is_dataclass(cls) else []
    lines.append(f"class {cls.__name__}" + (f"({', '.join(bases)})" if bases else "") + ":")
    attr_docs = class_attribute_docs(cls)
    bullets = []
    if record:
        for param in inspect.signature(cls).parameters.values():
            line = param.name + (f": {annotation(param.annotation)}" if param.annotation is not param.empty else "")
            if param.default is not param.empty:
                line += f" = {_field_default(cls, param)}"
            lines.append(f"    {line}")
            if param.name in attr_docs:
                bullets.append(f"`{param.name}`: {attr_docs[param.name]}")
    elif "__init__" in vars(cls) and cls.__name__ not in NOT_CONSTRUCTED:
        lines.append(f"    def {signature(cls.__init__, '__init__')}: ...")
    if record and _members(cls):
        lines.append("")
    for name, value in _members(cls):
        if isinstance(value, property):
            returns = annotation(inspect.signature(value.fget).return_annotation)
            lines += ["    @property", f"    def {name}(self)" + (f" -> {returns}" if returns else "") + ": ..."]
            doc = own_doc(value.fget) or EXTRA_DOCS.get(f"{cls.__name__}.{name}", "")
        else:
            function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            lines.append(f"    def {signature(function, name)}: ...")
            doc = own_doc(function) or EXTRA_DOCS.get(f"{cls.__name__}.{name}", "")
        if doc:
            bullets.append(f"`{name}`: {doc}")
    if not lines[-1].startswith("    "):
        lines.append("    ...")
    return "\n".join(lines), bullets


def _params_table(model: type[BaseModel], anchors: set[str]) -> str:
    rows = ["| field | type | default | what |", "|---|---|---|---|"]
    for field, info in model.model_fields.items():
        kind = annotation(info.annotation)
        limits = []
        for meta in info.metadata:
            for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
                if getattr(meta, attr, None) is not None:
                    limits.append(f"{sign} {getattr(meta, attr)}")
        kind += f" ({', '.join(limits)})" if limits else ""
        shown = "required" if info.is_required() else f"`{info.default!r}`"
        cells = [f"`{field}`", f"`{kind}`", shown, to_markdown(info.description or "", anchors)]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


def _params_stub(model: type[BaseModel]) -> str:
    bases = ", ".join(b.__name__ for b in model.__bases__)
    lines = [f"class {model.__name__}({bases}):"]
    own = [f for f in model.model_fields if f in model.__dict__.get("__annotations__", {})]
    for field in own:
        info = model.model_fields[field]
        line = f"    {field}: {annotation(info.annotation)}"
        if not info.is_required():
            line += f" = {info.default!r}"
        lines.append(line)
    if len(lines) == 1:
        lines.append("    ...")
    return "\n".join(lines)


def lazy_names() -> set[str]:
    """Names of ``runner.api.__all__`` that its source does not bind at import (so they load on first use)."""
    import runner.api as api

    bound = set()
    for node in ast.parse(inspect.getsource(api)).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound |= {t.id for t in targets if isinstance(t, ast.Name)}
    return set(api.__all__) - bound


def entry(name: str, anchors: set[str], lazy: set[str], module_attr_docs: dict[str, str]) -> str:
    import runner.api as api

    obj = getattr(api, name)
    # where a name is defined is no business of a plugin's (it imports runner.api), so it is not shown: the page
    # changes when the API does, not when runner's modules move
    marks = ["", "<sub>*lazy*: imported on first use</sub>", ""] if name in lazy else [""]
    parts = [f"### `{name}`", ""]
    doc = own_doc(obj) if isinstance(obj, type) or inspect.isfunction(obj) else ""
    doc = doc if name != "hookimpl" and doc else EXTRA_DOCS.get(name, "")
    if isinstance(obj, type) and issubclass(obj, BaseModel):
        parts += [_fence("pyi", _params_stub(obj)), *marks]
        if doc:
            parts += [to_markdown(doc, anchors), ""]
        if obj.model_fields:
            parts += ["Fields (a recipe section sets them; unknown keys are errors):", "",
                      _params_table(obj, anchors), ""]
    elif isinstance(obj, type):
        stub, bullets = _class_stub(obj)
        parts += [_fence("pyi", stub), *marks]
        if doc:
            parts += [to_markdown(doc, anchors), ""]
        if bullets:
            parts += [*(f"- {to_markdown(b, anchors)}".replace("\n", "\n  ") for b in bullets), ""]
    elif inspect.isfunction(obj):
        parts += [_fence("pyi", f"def {signature(obj, name)}: ..."), *marks]
        if doc:
            parts += [to_markdown(doc, anchors), ""]
    elif name == "hookimpl":
        parts += [_fence("pyi", f"def {signature(type(obj).__call__, name, skip_self=True)}: ..."), "",
                  to_markdown(doc, anchors), ""]
    else:
        parts += [_fence("pyi", f"{name}: {type(obj).__name__} = {obj!r}"), ""]
        doc = doc or module_attr_docs.get(name, "")
        if doc:
            parts += [to_markdown(doc, anchors), ""]
    return "\n".join(parts).rstrip() + "\n"


def hook_entry(spec, anchors: set[str]) -> str:
    parts = [f"### `{spec.__name__}`", "", _fence("pyi", f"@hookspec\ndef {signature(spec)}: ..."), "",
             to_markdown(own_doc(spec), anchors), ""]
    example = HOOK_EXAMPLES.get(spec.__name__)
    if example:
        parts += ["Example:", "", _fence("python", example), ""]
    return "\n".join(parts).rstrip() + "\n"


def hook_digest() -> str:
    """Each hook's heading and docstring, verbatim: the end of docs/plugins.md ("Hook reference"), kept in step
    with runner/hookspecs.py by tests/test_docs.py (``python -m runner.api_docs --hooks`` prints it)."""
    parts = []
    for spec in hookspecs():
        args = ", ".join(inspect.signature(spec).parameters)
        parts.append(f"### `{spec.__name__}({args})`\n\n{own_doc(spec)}\n")
    return "\n".join(parts)


def sections() -> list[tuple[str, str, list[str]]]:
    """The reference's sections with every name of ``__all__`` in one; names new to the API in "Other names"."""
    import runner.api as api

    placed = {name for _, _, names in SECTIONS for name in names}
    result = [(title, line, [n for n in names if n in api.__all__]) for title, line, names in SECTIONS]
    others = [name for name in api.__all__ if name not in placed]
    if others:
        result.append(("Other names", "", others))
    return [s for s in result if s[2]]


def render() -> str:
    """The whole of docs/api.md."""
    import runner.api as api
    from runner import hookspecs as hookspecs_module

    specs = hookspecs()
    anchors = {*api.__all__, *(spec.__name__ for spec in specs)}
    module_attr_docs = attribute_docs(inspect.getsource(api))
    lazy = lazy_names()
    contents = "".join(f" · [{title}](#{re.sub(r'[^a-z0-9 -]', '', title.lower()).replace(' ', '-')})"
                       for title, _, _ in sections())
    out = [INTRO.format(version=api.API_VERSION, contents=contents), "## Hooks", "",
           to_markdown(own_doc(hookspecs_module), anchors), ""]
    out += [hook_entry(spec, anchors) for spec in specs]
    for title, line, names in sections():
        out += [f"## {title}", ""]
        if line:
            out += [line, ""]
        out += [entry(name, anchors, lazy, module_attr_docs) for name in names]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--hooks" in argv:
        sys.stdout.write(hook_digest())
        return 0
    text = render()
    if "--check" in argv:
        if DOCS.is_file() and DOCS.read_text(encoding="utf-8") == text:
            return 0
        print(f"{DOCS} is out of date: python -m runner.api_docs > docs/api.md", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
