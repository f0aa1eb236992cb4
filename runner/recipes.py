"""Recipes: YAML with file:line kept for every key, ``extends:`` inheritance, ``--set`` overrides, validation.

A recipe is a mapping of run settings plus one section per component kind. A section is ``{name: X, ...}``
(or just ``X``); everything beside ``name`` is X's parameters, checked against X's own pydantic model, so a
typo fails with its file, line and a suggestion before any tensor moves.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.types import KINDS, Params
from runner.errors import RunnerError, Where, did_you_mean

PACKAGED_RECIPES = Path(__file__).resolve().parent.parent / "recipes"


class LRFind(Params):
    """The lr range test run by ``runner lr-find`` and by ``optimizer: {lr: auto}``."""

    start_lr: float = Field(1e-7, gt=0, description="first learning rate of the sweep")
    end_lr: float = Field(10.0, gt=0, description="last learning rate of the sweep")
    steps: int = Field(300, ge=10, description="training steps of the sweep (the train set is cycled); small "
                                               "batches need a few hundred for the loss to move at useful lrs")
    diverge: float = Field(4.0, gt=1, description="stop once the smoothed loss exceeds this multiple of its minimum")


class Settings(Params):
    """The run settings of a recipe, beside its component sections."""

    name: str | None = Field(None, description="run name; defaults to the recipe file's stem")
    seed: int = Field(0, description="seed for torch and data order")
    epochs: int = Field(25, gt=0, description="training epochs")
    device: str = Field("auto", description="auto (cuda if present, else cpu), cpu, cuda, cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast dtype; auto: bf16 where the hardware runs it fast, else fp32"
    )
    channels_last: bool = Field(True, description="channels_last memory format for 4-d activations")
    trunk_runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="what runs the frozen trunk's one pass of a cached run on a CPU in fp32: onnxruntime "
                            "(the onnx extra; the exported trunk is cached and checked against torch on the first "
                            "batch, and the faster of the two does the pass); auto: onnxruntime when installed and "
                            "the exported trunk is cached or torch's pass would take 6 s or more; torch: always "
                            "torch")
    compile: bool = Field(False, description="torch.compile the model for training and validation (pays on "
                                             "long runs: compiling takes a minute or more)")
    cache: Literal["auto", "off", "features"] = Field(
        "auto", description="train the head on cached trunk features: auto where that is exact, features always "
                            "(needs a frozen trunk), off never")
    views: int = Field(1, gt=0, description="augmented views of each training image cached when the training "
                                            "transform is random; each epoch draws one per image")
    head_solver: Literal["sgd", "lbfgs"] = Field(
        "sgd", description="how the head is trained: sgd, the recipe's optimizer, scheduler and epochs; lbfgs, a "
                           "linear probe solved to convergence (full-batch L-BFGS with L2 weight decay on the cached "
                           "features of a frozen trunk, then one validation; the optimizer, scheduler and epochs are "
                           "not used)")
    head_weight_decay: Annotated[float, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="head_solver: lbfgs: the L2 penalty (lambda/2 * |W|^2 added to the mean loss, biases "
                            "free); auto picks it from 1e-6..1e-1 by accuracy on a held-out fifth of the training "
                            "images, then refits on all of them")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the training loss")
    mixup: float | None = Field(None, gt=0, description="MixUp: blend pairs of training images and their labels "
                                                        "with a Beta(alpha, alpha) weight; the value is alpha "
                                                        "(0.2 is usual)")
    cutmix: float | None = Field(None, gt=0, description="CutMix: paste a box of one training image into another, "
                                                         "labels mixed by area; the value is alpha (1.0 is usual); "
                                                         "with mixup too, each batch uses one of the two")
    ema: float | None = Field(None, gt=0, lt=1, description="keep an exponential moving average of the weights "
                                                            "with this decay (e.g. 0.999); validation, best.pt and "
                                                            "what predict uses are the averaged weights")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm of all trained parameters "
                                                            "to this before each optimizer step")
    accumulate: int = Field(1, gt=0, description="add up the gradients of this many batches before each "
                                                 "optimizer step (an effective batch of batch_size x accumulate)")
    tta: Literal["none", "flip", "crops"] = Field(
        "none", description="test-time augmentation for predict and evaluate of this run's model: flip averages "
                            "the image and its mirror, crops the ten crops (corners, centre, and mirrors)")
    lr_find: LRFind = Field(default_factory=LRFind, description="the lr range test behind optimizer.lr: auto")
    plugins: list[str] = Field([], description="plugin files (relative to the recipe) or modules to load")
    output: str = Field("runs", description="folder that run folders are created in")


DEFAULT_SECTIONS = {"freeze": {"name": "none"}, "scheduler": {"name": "none"}}
RESERVED_KEYS = frozenset([*Settings.model_fields, *KINDS, "extends"])
"""Top-level recipe keys that no plugin section may take."""


@dataclass
class Recipe:
    """A loaded, merged recipe: its settings, its component sections, and where each key came from."""

    path: Path
    settings: Settings
    sections: dict[str, dict[str, Any]]
    raw: dict[str, Any]
    positions: dict[str, Where] = field(default_factory=dict)
    params: dict[str, Params] = field(default_factory=dict)
    extras: dict[str, Params | None] = field(default_factory=dict)
    """Plugin sections (``runner_recipe_sections``) by name: validated params, or None where switched off."""
    origin: Path | None = None
    """The recipe file a run folder's recipe.yaml was resolved from (relative paths stay relative to it)."""

    @property
    def base_dir(self) -> Path:
        return (self.origin or self.path).resolve().parent

    @property
    def name(self) -> str:
        return self.settings.name or self.path.stem

    def plugin_refs(self) -> list[str]:
        """The recipe's ``plugins:``, file paths made relative to the recipe's folder."""
        refs = []
        for ref in self.settings.plugins:
            local = self.base_dir / ref
            refs.append(str(local) if ref.endswith(".py") or local.exists() else ref)
        return refs

    def where(self, dotted: str) -> Where:
        """The closest known position for a dotted key: itself, a parent, or the file."""
        parts = dotted.split(".")
        while parts:
            hit = self.positions.get(".".join(parts))
            if hit:
                return hit
            parts.pop()
        return Where(_display(self.path))

    def to_yaml(self) -> str:
        """The resolved recipe as YAML: what the run folder's recipe.yaml holds."""
        return yaml.safe_dump(self.resolved(), sort_keys=False)

    def resolved(self) -> dict[str, Any]:
        """The fully resolved recipe: settings and every component with all its parameters."""
        out = self.settings.model_dump()
        out["name"] = self.name
        for kind in KINDS:
            out[kind] = {"name": self.sections[kind]["name"], **self.params[kind].model_dump(mode="json")}
        for key in self.raw:  # plugin sections the recipe names, with all their values (or false: off)
            if key in self.extras:
                out[key] = self.extras[key].model_dump(mode="json") if self.extras[key] is not None else False
        return out


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def find_recipe(ref: str) -> Path:
    """A recipe path, or the name of a packaged recipe (``extract``, ``tutorial/resnet18_extract``)."""
    path = Path(ref)
    if path.is_file():
        return path
    for candidate in (PACKAGED_RECIPES / ref, PACKAGED_RECIPES / f"{ref}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(str(p.relative_to(PACKAGED_RECIPES).with_suffix("")) for p in PACKAGED_RECIPES.rglob("*.yaml"))
    raise RunnerError(f"{ref}: no such recipe file or packaged recipe{did_you_mean(ref, known)}; packaged: {', '.join(known)}")


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's C loader where PyYAML was built with it: a recipe is parsed once, fast."""
MAX_NODES = int(os.environ.get("RUNNER_RECIPE_MAX_NODES", 100_000))
"""Most values a recipe may hold with its aliases expanded (``RUNNER_RECIPE_MAX_NODES``): a recipe is small,
and a few hundred bytes of nested aliases ("billion laughs") would otherwise expand to gigabytes."""
MAX_DEPTH = int(os.environ.get("RUNNER_RECIPE_MAX_DEPTH", 100))
"""Deepest nesting of mappings and lists a recipe may have (``RUNNER_RECIPE_MAX_DEPTH``)."""


def _check_size(text: str, shown: str) -> None:
    """Count values with aliases expanded and the nesting depth from the parser's events, which need no
    recursion and expand nothing, before anything is built; stop at the first limit passed."""
    sizes: dict[str, int] = {}
    open_: list[tuple[str | None, int]] = []  # (anchor, count when the collection started)
    count = 0
    for event in yaml.parse(text, Loader=LOADER):
        if isinstance(event, yaml.AliasEvent):
            count += sizes.get(event.anchor, 1)
        elif isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            count += 1
            if isinstance(event, yaml.ScalarEvent):
                if event.anchor:
                    sizes[event.anchor] = 1
            else:
                open_.append((event.anchor, count))
                if len(open_) > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else 0
                    raise RunnerError(f"{shown}:{line}: nested more than {MAX_DEPTH} levels deep; a recipe is a small "
                                      "mapping (RUNNER_RECIPE_MAX_DEPTH raises the limit)")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, started = open_.pop()
            if anchor:
                sizes[anchor] = count - started + 1
        if count > MAX_NODES:
            raise RunnerError(f"{shown}: holds more than {MAX_NODES:,} values once its aliases are expanded; a recipe "
                              "is small (RUNNER_RECIPE_MAX_NODES raises the limit)")


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, Where]]:
    """The mapping in ``path`` and the file:line:column of every key (dotted)."""
    shown = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RunnerError(f"{shown}: not UTF-8 text (byte {exc.start}): a recipe is a YAML file") from None
    except OSError as exc:
        raise RunnerError(f"{shown}: cannot read recipe: {exc.strerror}") from None
    try:
        _check_size(text, shown)
        loader = LOADER(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark and "end of stream" in str(exc.problem):  # an unclosed quote: where it opened
            mark = exc.context_mark
        where = Where(shown, mark.line + 1, mark.column + 1) if mark else Where(shown)
        raise RunnerError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise RunnerError(f"{shown}:{line}:{column}: invalid YAML: character {exc.character!r} is not allowed") from None
    except yaml.YAMLError as exc:
        raise RunnerError(f"{shown}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        raise RunnerError(f"{shown}: the recipe is empty; expected a mapping such as 'dataset: ...'")
    if not isinstance(data, dict):
        raise RunnerError(f"{shown}:1:1: expected a mapping of settings and sections, got a {type(data).__name__}")
    positions: dict[str, Where] = {}
    problems: list[str] = []

    def walk(n, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                dotted = f"{prefix}{key.value}"
                where = Where(shown, key.start_mark.line + 1, key.start_mark.column + 1)
                if not (isinstance(key, yaml.ScalarNode) and key.tag == "tag:yaml.org,2002:str"):
                    problems.append(f"{where}: {dotted}: unknown field (a key is a name, not {key.value!r})")
                elif dotted in positions:
                    problems.append(f"{where}: {dotted}: duplicate key (first at line {positions[dotted].line})")
                positions[dotted] = where
                walk(value, dotted + ".")

    walk(node, "")
    if problems:
        raise RunnerError(*problems)
    return data, positions


def _as_section(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, mappings merged deeply; a section naming another component replaces it whole."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if key in KINDS:
            value = _as_section(value)
        old = _as_section(out.get(key)) if key in KINDS else out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and old.get("name", value.get("name")) == value.get(
            "name", old.get("name")
        ):
            out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_tree(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, Where]]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(_display(p) for p in (*chain, resolved))
        raise RunnerError(f"{_display(path)}: extends cycle: {cycle}")
    data, positions = _read_yaml(path)
    if "extends" not in data:
        return data, positions
    parent_ref = data.pop("extends")
    where = positions["extends"]
    if not isinstance(parent_ref, str):
        raise RunnerError(f"{where}: extends: expected a recipe path, got {parent_ref!r}")
    parent = path.parent / parent_ref
    if not parent.is_file():
        parent = Path(parent_ref) if Path(parent_ref).is_file() else PACKAGED_RECIPES / parent_ref
    if not parent.is_file():
        raise RunnerError(f"{where}: extends: no recipe '{parent_ref}' next to {_display(path)} or packaged")
    base, base_positions = _load_tree(parent, (*chain, resolved))
    return merge(base, data), {**base_positions, **positions}


def parse_override(text: str, label: str = "--set") -> tuple[str, Any]:
    """``key.path=value`` with the value parsed as YAML; ``label`` names the option in errors."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RunnerError(f"{label} {text}: expected key.path=value, e.g. optimizer.lr=0.01")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        return key.strip(), value


def load(ref: str | Path, overrides: list[str] = (), catalog=None, origin: Path | None = None,
         label: str = "--set") -> Recipe:
    """Read a recipe (path or packaged name), follow ``extends:``, apply overrides, validate the settings
    and, given the catalog (or a function of the loaded recipe that makes one, so a recipe's ``plugins:``
    count), every component section: all problems are reported at once. ``label`` names where overrides came
    from in errors (``--set``, ``--grid``)."""
    path = find_recipe(str(ref))
    data, positions = _load_tree(path, ())
    for text in overrides:
        dotted, value = parse_override(text, label)
        nested: Any = value
        for part in reversed(dotted.split(".")):
            nested = {part: nested}
        data = merge(data, nested)
        positions[dotted] = Where(f"{label} {text}")
    recipe, problems = _validate_settings(path, data, positions)
    recipe.origin = origin
    if callable(catalog):
        catalog = catalog(recipe)
    if catalog is not None:
        problems += _component_problems(recipe, catalog)
    if problems:
        raise RunnerError(*problems)
    return recipe


def _validate_settings(path: Path, data: dict[str, Any], positions: dict[str, Where]) -> tuple[Recipe, list[str]]:
    recipe = Recipe(path=path, settings=Settings(), sections={}, raw=data, positions=positions)
    problems: list[str] = []
    settings = {k: v for k, v in data.items() if k in Settings.model_fields}  # the rest: plugin sections
    for kind in KINDS:
        section = _as_section(data.get(kind, DEFAULT_SECTIONS.get(kind)))
        if section is None:
            problems.append(f"{recipe.where(kind)}: {kind}: required section missing (e.g. '{kind}: {{name: ...}}')")
        elif not isinstance(section, dict) or not isinstance(section.get("name"), str):
            problems.append(f"{recipe.where(kind)}: {kind}: expected a component name or a mapping with 'name:'")
        else:
            recipe.sections[kind] = section
    try:
        recipe.settings = Settings.model_validate(settings)
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, recipe, "", RESERVED_KEYS))
    return recipe, problems


SUGGESTIONS = 20
"""Problems that get a "did you mean" search; past them (the screen shows 20) a huge recipe stays fast."""


def pydantic_problems(exc: ValidationError, recipe: Recipe, prefix: str, allowed, shown: int = 0) -> list[str]:
    """One ``file:line:col: key: what`` line per pydantic error, with a suggestion for unknown keys (for the first
    :data:`SUGGESTIONS` problems, counting ``shown`` already reported)."""
    out = []
    errors = _merge_union_errors(exc.errors())
    for err in errors:
        dotted = (prefix + ".".join(str(p) for p in err["loc"])).rstrip(".")
        where = recipe.where(dotted)
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(err["loc"][-1], allowed) if shown + len(out) < SUGGESTIONS else ""
            out.append(f"{where}: {dotted}: unknown field{hint}")
        elif err["type"] == "missing":
            out.append(f"{where}: {dotted}: required field missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{where}: {dotted}: {msg[0].lower()}{msg[1:]}, got {err['input']!r}")
    return out


def _merge_union_errors(errors: list[dict]) -> list[dict]:
    """One error per field for a value that fits no member of a union (``float | 'auto'``): pydantic gives one
    per member, with the member's tag appended to the location."""
    merged: dict[tuple, dict] = {}
    for err in errors:
        loc = tuple(err["loc"])
        tagged = len(loc) > 1 and isinstance(loc[-1], str) and (
            "[" in loc[-1] or loc[-1] in ("float", "int", "str", "bool", "function-after", "constrained-float"))
        key = loc[:-1] if tagged else loc
        if tagged and key in merged:
            first = merged[key]
            more = err["msg"].removeprefix("Input should ")
            first["msg"] = f"{first['msg']} or {more[0].lower()}{more[1:]}"
            continue
        merged[key] = {**err, "loc": key} if tagged else err
    return list(merged.values())


def validate_components(recipe: Recipe, catalog) -> Recipe:
    """Check each section names a known component and that its parameters fit that component's model."""
    problems = _component_problems(recipe, catalog)
    if problems:
        raise RunnerError(*problems)
    return recipe


def _section_problems(recipe: Recipe, catalog) -> list[str]:
    """Validate the recipe's other top-level keys against the plugins' sections; fill in sections on by default."""
    problems: list[str] = []
    recipe.extras = {}
    for key, value in recipe.raw.items():
        if key in RESERVED_KEYS:
            continue
        if key not in catalog.sections:
            hint = did_you_mean(key, [*RESERVED_KEYS, *catalog.sections]) if len(problems) < SUGGESTIONS else ""
            problems.append(f"{recipe.where(key)}: {key}: unknown field{hint}")
            continue
        section = catalog.sections[key][0]
        if value is False or value is None:
            recipe.extras[key] = None
            continue
        try:
            recipe.extras[key] = section.params.model_validate({} if value is True else value)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, recipe, key + ".", list(section.params.model_fields)))
    for name, (section, _) in catalog.sections.items():
        if name not in recipe.raw:
            recipe.extras[name] = section.params() if section.on_by_default else None
    return problems


def _component_problems(recipe: Recipe, catalog) -> list[str]:
    problems: list[str] = _section_problems(recipe, catalog)
    for kind in KINDS:
        if kind not in recipe.sections:
            continue
        section = dict(recipe.sections[kind])
        name = section.pop("name")
        try:
            component = catalog.get(kind, name)
        except RunnerError as exc:
            problems.append(f"{recipe.where(kind + '.name')}: {kind}.name: {exc}")
            continue
        try:
            recipe.params[kind] = component.params.model_validate(section)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, recipe, kind + ".", list(component.params.model_fields)))
    return problems
