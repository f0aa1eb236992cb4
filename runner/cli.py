"""The ``runner`` command line: parse arguments, call the library, render with rich. Nothing else lives here."""
from __future__ import annotations

import contextlib
import sys
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from runner.components import KINDS
from runner.errors import RunnerError, did_you_mean

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer-learning runs for image classification from YAML recipes.")
console = Console()
errors = Console(stderr=True, highlight=False)
state: dict = {"debug": False, "plugins": []}

KIND_ALIASES = {"datasets": "dataset", "backbones": "backbone", "freeze_policies": "freeze", "freeze_policy": "freeze",
                "freezes": "freeze", "optimizers": "optimizer", "schedulers": "scheduler", "optim": "optimizer"}
KIND_TITLES = {"freeze": "freeze policy"}
TTA_HELP = "test-time augmentation: none, flip or crops (default: the recipe's tta)"


@contextlib.contextmanager
def handled():
    """RunnerError -> its lines on stderr and exit 2; Ctrl-C -> exit 130; tracebacks only with --debug."""
    try:
        yield
    except RunnerError as exc:
        if state["debug"]:
            raise
        shown = exc.problems[:20]  # a screenful; the rest would hide the first, which usually explains them
        for problem in shown:
            errors.print(Text("error: ", style="red") + Text(problem), soft_wrap=True)
        if len(exc.problems) > len(shown):
            errors.print(Text("error: ", style="red") + Text(f"... and {len(exc.problems) - len(shown)} more problems"))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        errors.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        from runner.engine import RunInterrupted
        if not isinstance(exc, RunInterrupted) or state["debug"]:
            raise
        errors.print(f"interrupted: {exc}; continue with: runner resume {exc.folder}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
         plugin: Annotated[list[str], typer.Option("--plugin", help="plugin file or module to load; repeatable")] = []
         ) -> None:
    state["debug"] = debug
    state["plugins"] = list(plugin)
    from runner import distributed
    if not distributed.is_main():  # under torchrun only rank 0 speaks
        console.quiet = errors.quiet = True


def _kind(word: str) -> str:
    kind = KIND_ALIASES.get(word, word)
    if kind not in KINDS:
        raise RunnerError(f"unknown component kind '{word}'{did_you_mean(word, [*KINDS, *KIND_ALIASES])}; "
                          f"kinds: {', '.join(KINDS)}")
    return kind


def _catalog(recipe=None, strict: bool = False):
    """The catalog with --plugin files and, given a loaded recipe, its ``plugins:``; load failures are warned."""
    from runner.plugins import load_catalog
    catalog = load_catalog([*state["plugins"], *(recipe.plugin_refs() if recipe else [])], strict=strict)
    for failure in catalog.plugins.failures:
        errors.print(Text("warning: ", style="yellow") + Text(failure.error), soft_wrap=True)
    return catalog


def _load_with_catalog(recipe, overrides: list[str], origin: Path | None = None):
    """The recipe, validated against a catalog that includes its own ``plugins:``, and that catalog."""
    from runner import recipe as recipes

    made: dict = {}

    def catalog_for(loaded_recipe):
        made["catalog"] = _catalog(loaded_recipe)
        return made["catalog"]

    loaded = recipes.load(recipe, overrides, catalog_for, origin=origin)
    return loaded, made["catalog"]


def _load_resumed(folder: str):
    """A run folder's resolved recipe, relative paths taken from the recipe file it was made from (in last.pt)."""
    from runner import engine

    state = engine.read_last(Path(folder))
    return _load_with_catalog(Path(folder) / "recipe.yaml", [], origin=Path(state["recipe_path"]))


@app.command("list")
def list_(kind: Annotated[Optional[str], typer.Argument(help="one kind: datasets, backbones, freeze, ...")] = None):
    """List every component by kind, with the plugin that provides it."""
    with handled():
        kinds = [_kind(kind)] if kind else list(KINDS)
        catalog = _catalog()
        table = Table("kind", "name", "plugin", "summary")
        table.columns[0].no_wrap = True
        for k in kinds:
            for name in catalog.names(k):
                for entry in catalog.clashes[k].get(name) or [catalog.entries[k][name]]:
                    shown = f"{entry.plugin}:{name}" if name in catalog.clashes[k] else name
                    table.add_row(KIND_TITLES.get(k, k), shown, _short_plugin(entry.plugin),
                                  entry.component.summary)
        console.print(table)


def _short_plugin(name: str) -> str:
    """Built-in plugins by their module's last part (``optim (built-in)``): the table fits 80 columns."""
    return f"{name.removeprefix('runner_plugins.')} (built-in)" if name.startswith("runner_plugins.") else name


def _type_name(annotation) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


@app.command()
def show(kind: Annotated[str, typer.Argument(help="component kind, or 'settings' for the run settings")],
         name: Annotated[Optional[str], typer.Argument(help="component name")] = None):
    """Show a component's parameters (or the recipe's run settings): type, default and help."""
    with handled():
        if kind == "settings":
            from runner.recipe import Settings
            console.print("[bold]run settings[/]: the recipe's keys beside its component sections")
            console.print(_fields_table("setting", Settings))
            return
        k = _kind(kind)
        if name is None:
            raise RunnerError(f"runner show {kind} needs a component name; runner list {kind} shows them")
        catalog = _catalog()
        component = catalog.get(k, name)
        console.print(f"[bold]{KIND_TITLES.get(k, k)} {name}[/] ({catalog.entry(k, name).plugin}): "
                      f"{component.summary}")
        console.print(_fields_table("parameter", component.params))


def _fields_table(title: str, model) -> Table:
    """One row per field of a pydantic model; nested models (early_stopping, lr_find) as ``key.field`` rows."""
    from pydantic import BaseModel

    table = Table(title, "type", "default", "help")
    for field, info in model.model_fields.items():
        default = "required" if info.is_required() else repr(info.default)
        nested = [a for a in (info.annotation, *typing.get_args(info.annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        table.add_row(field, nested[0].__name__ if nested else _type_name(info.annotation),
                      "-" if nested else default, info.description or "")
        for sub, sub_info in (nested[0].model_fields.items() if nested else ()):
            table.add_row(f"  {field}.{sub}", _type_name(sub_info.annotation), repr(sub_info.default),
                          sub_info.description or "")
    return table


@app.command()
def plugins(strict: Annotated[bool, typer.Option("--strict", help="a plugin that fails to load is an error")] = False):
    """List every loaded plugin: where it comes from, the hooks it implements, the components it adds."""
    with handled():
        catalog = _catalog(strict=strict)
        added: dict[str, list[str]] = {}
        for kind in KINDS:
            entries = [*catalog.entries[kind].values(), *(e for es in catalog.clashes[kind].values() for e in es[1:])]
            for entry in entries:
                added.setdefault(entry.plugin, []).append(f"{KIND_TITLES.get(kind, kind)} {entry.component.name}")
        table = Table("plugin", "from", "hooks", "components")
        for name, info in catalog.plugins.info.items():
            if info.error:
                table.add_row(name, info.source, "", Text(info.error, style="red"))
                continue
            hooks = sorted(h.name for h in catalog.pm.get_hookcallers(catalog.pm.get_plugin(name)) or [])
            components = added.get(name, [])
            shown = ", ".join(components[:6]) + (f" and {len(components) - 6} more" if len(components) > 6 else "")
            table.add_row(name, info.source, ", ".join(hooks), shown)
        console.print(table)


@app.command("new-plugin")
def new_plugin(name: Annotated[str, typer.Argument(help="package name, e.g. runner-mybackbone")],
               kind: Annotated[str, typer.Option(help="backbone, dataset, freeze, optimizer, scheduler or hooks")] = "backbone",
               into: Annotated[str, typer.Option(help="folder to create the package in")] = "."):
    """Write a pip-installable plugin package: pyproject with the entry point, one component, one test."""
    from runner.scaffold import new_plugin as scaffold
    with handled():
        root = scaffold(name, kind, Path(into))
        console.print(f"wrote {root}: cd {root} && pip install -e . && pytest")


@app.command()
def validate(recipe: Annotated[str, typer.Argument(help="recipe file or packaged recipe name")],
             set_: Annotated[list[str], typer.Option("--set", help="override, key.path=value (YAML value)")] = []):
    """Check a recipe and its components' parameters without training."""
    from runner import recipe as recipes
    with handled():
        loaded = recipes.load(recipe, set_, _catalog)
        console.print(f"{loaded.path}: ok")


@app.command()
def plan(recipe: Annotated[str, typer.Argument(help="recipe file or packaged recipe name")],
         set_: Annotated[list[str], typer.Option("--set", help="override, key.path=value (YAML value)")] = [],
         as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False):
    """Show, before any training, the parameter groups a recipe trains: size, when, lr, weight decay, BatchNorm."""
    from runner import engine
    from runner.plan import plan as make_plan
    from runner.report import plan_table
    with handled():
        loaded, catalog = _load_with_catalog(recipe, set_)
        data = make_plan(engine.build(loaded, catalog, find_lr=False))
        if as_json:
            import json
            print(json.dumps(data))
        else:
            console.print(plan_table(data))


@app.command()
def run(recipe: Annotated[Optional[str], typer.Argument(help="recipe file or packaged recipe name (e.g. extract)")] = None,
        set_: Annotated[list[str], typer.Option("--set", help="override, key.path=value (YAML value); repeatable")] = [],
        resume: Annotated[Optional[str], typer.Option("--resume", help="run folder to continue from its last.pt")] = None,
        nproc: Annotated[int, typer.Option("--nproc", min=1, help="processes to train in, launched with torchrun "
                                                                  "(data-parallel; gloo on CPU, nccl on GPU)")] = 1,
        nnodes: Annotated[Optional[str], typer.Option(help="torchrun --nnodes (several machines)")] = None,
        node_rank: Annotated[Optional[int], typer.Option(help="torchrun --node-rank")] = None,
        master_addr: Annotated[Optional[str], typer.Option(help="torchrun --master-addr")] = None,
        master_port: Annotated[Optional[int], typer.Option(help="torchrun --master-port")] = None):
    """Train a recipe; writes a run folder with the resolved recipe, metrics, checkpoints and pictures."""
    with handled():
        if nproc > 1 or nnodes:
            _launch(recipe, set_, resume, nproc, nnodes, node_rank, master_addr, master_port)
        elif resume:
            if recipe or set_:
                raise RunnerError("--resume continues a run folder as it was: give no recipe and no --set")
            _train(None, [], resume)
        elif recipe is None:
            raise RunnerError("runner run needs a recipe (a file or a packaged name such as extract) or --resume")
        else:
            _train(recipe, set_, None)


def _launch(recipe, overrides, resume, nproc, nnodes, node_rank, master_addr, master_port) -> None:
    """Check the recipe here (bad input fails at once, exit 2), then run the same command under torchrun."""
    import subprocess

    from runner import distributed
    if resume:
        _load_resumed(resume)
        argv = ["run", "--resume", resume]
    elif recipe is None:
        raise RunnerError("runner run needs a recipe (a file or a packaged name such as extract) or --resume")
    else:
        _load_with_catalog(recipe, overrides)
        argv = ["run", recipe, *(a for o in overrides for a in ("--set", o))]
    flags = [*(["--debug"] if state["debug"] else []), *(a for p in state["plugins"] for a in ("--plugin", p))]
    command = distributed.torchrun_command(nproc, [*flags, *argv], nnodes, node_rank, master_addr, master_port)
    raise typer.Exit(subprocess.call(command))


@app.command("resume")
def resume_(folder: Annotated[str, typer.Argument(help="run folder holding last.pt")]):
    """Continue an interrupted run from its last finished epoch."""
    with handled():
        _train(None, [], folder)


@app.command()
def sweep(recipe: Annotated[str, typer.Argument(help="recipe file or packaged recipe name")],
          grid: Annotated[list[str], typer.Option("--grid", help="key.path=v1,v2,... (YAML values); repeatable: "
                                                               "every combination trains")] = [],
          set_: Annotated[list[str], typer.Option("--set", help="override for every trial, key.path=value")] = [],
          out: Annotated[Optional[str], typer.Option("--out", help="sweep folder (default: <output>/sweep-<recipe>-"
                                                                   "<hash>, found again by the same command)")] = None,
          optuna: Annotated[Optional[int], typer.Option("--optuna", help="sample N trials with optuna's TPE "
                                                                         "(needs optuna: the sweep extra)")] = None,
          range_: Annotated[list[str], typer.Option("--range", help="with --optuna: key=low:high[:log] or "
                                                                    "key=a,b,c; repeatable")] = []):
    """Train a recipe over a grid of overrides (or optuna-sampled trials), ranked in a leaderboard; the same
    command again skips finished trials and continues an interrupted one."""
    import shlex

    from runner import sweep as sweeps
    from runner.plugins import load_catalog

    warned: set[str] = set()

    def catalog_for(loaded):  # a fresh catalog per trial; each plugin failure warned once
        catalog = load_catalog([*state["plugins"], *loaded.plugin_refs()])
        for failure in catalog.plugins.failures:
            if failure.error not in warned:
                warned.add(failure.error)
                errors.print(Text("warning: ", style="yellow") + Text(failure.error), soft_wrap=True)
        return catalog

    with handled():
        plan_ = sweeps.prepare(recipe, grid, set_, optuna, range_, out, catalog_for)
        try:
            sweeps.run(plan_, catalog_for, sweeps.SweepDisplay(console))
        except sweeps.SweepInterrupted as exc:
            words = ["runner", *(w for p in state["plugins"] for w in ("--plugin", p)), "sweep", recipe,
                     *(w for g in grid for w in ("--grid", g)), *(w for s in set_ for w in ("--set", s)),
                     *(["--out", out] if out else []), *(["--optuna", str(optuna)] if optuna is not None else []),
                     *(w for r in range_ for w in ("--range", r))]
            errors.print(f"{exc}; continue with the same command: {shlex.join(words)}", soft_wrap=True,
                         highlight=False)
            raise typer.Exit(exc.exit_code) from None


def _train(recipe: str | None, overrides: list[str], resume: str | None) -> None:
    from runner import engine
    from runner.report import RichReport

    if resume:
        loaded, catalog = _load_resumed(resume)
    else:
        loaded, catalog = _load_with_catalog(recipe, overrides)
    run_ = engine.build(loaded, catalog)
    report = RichReport(console)
    catalog.pm.register(report, name="runner.report")
    try:
        engine.fit(run_, Path(resume) if resume else None)
    finally:
        report.stop()
    from runner import distributed
    distributed.finish()  # not after a failure: the other processes may be inside a collective; torchrun ends them


@app.command("lr-find")
def lr_find(recipe: Annotated[str, typer.Argument(help="recipe file or packaged recipe name")],
            set_: Annotated[list[str], typer.Option("--set", help="override, key.path=value (YAML value)")] = []):
    """The lr range test: train briefly with an exponentially growing lr; table, suggestion and a PNG."""
    from runner import engine, lr_finder
    from runner.runfolder import save_json
    with handled():
        loaded, catalog = _load_with_catalog(recipe, set_)
        run_ = engine.build(loaded, catalog, find_lr=False)
        if run_.cache:
            engine.prepare_features(run_)
        found = loaded.settings.lr_find
        result = lr_finder.find_lr(run_, found.start_lr, found.end_lr, found.steps, diverge=found.diverge)
        table = Table("lr", "smoothed loss", title=f"lr range test: {loaded.name}")
        shown = range(0, len(result.lrs), max(1, len(result.lrs) // 12))
        for i in sorted({*shown, len(result.lrs) - 1}):
            table.add_row(f"{result.lrs[i]:.2e}", f"{result.losses[i]:.4f}")
        console.print(table)
        console.print(f"{len(result.lrs)} steps; {result.stopped}")
        out = Path(loaded.settings.output) / f"{loaded.name}-lr_find"
        out.parent.mkdir(parents=True, exist_ok=True)
        save_json(result.as_dict(), out.with_suffix(".json"))
        lr_finder.plot(result, out.with_suffix(".png"))
        steep = f"; steepest fall at {result.steepest:.3g}" if result.steepest else ""
        console.print(f"[bold]suggested lr {result.suggestion:.3g}[/] ({result.how}{steep}); picture {out}.png; "
                      f"use it with --set optimizer.lr={result.suggestion:.3g} or optimizer: {{lr: auto}}")


@app.command()
def predict(model: Annotated[str, typer.Argument(help="run folder or checkpoint file")],
            paths: Annotated[list[str], typer.Argument(help="image files or folders")],
            top: Annotated[int, typer.Option(help="classes to show per image")] = 3,
            as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
            as_csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table")] = False,
            batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 32,
            tta: Annotated[Optional[str], typer.Option(help=TTA_HELP)] = None):
    """Classify images with a trained model, through the checkpoint's own preprocessing."""
    from runner import inference
    with handled():
        trained = inference.load_trained(model, _catalog(), tta=tta)
        rows = inference.predict_files(trained, inference.image_files(paths), top, batch_size)
        if as_json:
            import json
            for row in rows:
                print(json.dumps(row))
        elif as_csv:
            import csv
            writer = csv.writer(sys.stdout)
            writer.writerow(["file", "class", "probability", "top"])
            for row in rows:
                writer.writerow([row["file"], row.get("class", ""), row.get("probability", ""),
                                 " ".join(f"{c}:{p:.4f}" for c, p in row.get("top", [])) or row.get("error", "")])
        else:
            import os
            base = os.path.commonpath([os.path.dirname(os.path.abspath(r["file"])) for r in rows])
            table = Table(f"file (in {base})", "class", "probability", f"top {top}")
            for row in rows:
                shown = os.path.relpath(os.path.abspath(row["file"]), base)
                if "error" in row:
                    table.add_row(shown, Text(row["error"], style="red"), "", "")
                else:
                    table.add_row(shown, row["class"], f"{row['probability']:.4f}",
                                  ", ".join(f"{c} {p:.3f}" for c, p in row["top"]))
            console.print(table)


@app.command()
def evaluate(run_folder: Annotated[str, typer.Argument(help="run folder (or checkpoint file)")],
             split: Annotated[str, typer.Option(help="split of the recipe's dataset: val or train")] = "val",
             data: Annotated[Optional[str], typer.Option(help="a folder of class folders to evaluate instead")] = None,
             as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
             tta: Annotated[Optional[str], typer.Option(help=TTA_HELP)] = None):
    """Accuracy, per-class precision/recall/F1, confusion matrix (table and confusion.png), worst mistakes."""
    from runner import inference
    with handled():
        catalog = _catalog()
        trained = inference.load_trained(run_folder, catalog, tta=tta)
        if data:
            folder = Path(data)
            result = inference.evaluate(trained, *inference.labelled_files(folder, trained.classes))
        else:
            folder = f"the recipe's {split} split"
            found = inference.recipe_split(trained, split, catalog)
            result = (inference.evaluate(trained, *found) if isinstance(found, tuple)
                      else inference.evaluate_dataset(trained, found, split))
        out = trained.folder / "confusion.png"
        inference.plot_confusion(result, out)
        if as_json:
            import json
            print(json.dumps(result))
            return
        console.print(f"[bold]accuracy {result['accuracy']:.4f}[/] on {result['images']} images of {folder}")
        table = Table("class", "precision", "recall", "F1", "support")
        for row in result["per_class"]:
            table.add_row(row["class"], f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                          str(row["support"]))
        console.print(table)
        matrix = Table("true \\ predicted", *result["classes"])
        for name, counts in zip(result["classes"], result["confusion"]):
            matrix.add_row(name, *[str(c) for c in counts])
        console.print(matrix)
        if result["most_confident_wrong"]:
            wrong = Table("most confidently wrong", "true", "predicted", "probability")
            for w in result["most_confident_wrong"]:
                wrong.add_row(w["file"], w["true"], w["predicted"], f"{w['probability']:.4f}")
            console.print(wrong)
        console.print(f"confusion matrix picture: {out}")


@app.command("export")
def export_(run_folder: Annotated[str, typer.Argument(help="run folder (or checkpoint file)")],
            format: Annotated[str, typer.Option("--format", help="torchscript or onnx")] = "torchscript",
            images: Annotated[Optional[str], typer.Option(help="folder of images for the check batch "
                                                                "(default: the recipe's val split)")] = None,
            out: Annotated[Optional[str], typer.Option(help="output file (default: in the run folder)")] = None):
    """Write the model with its preprocessing metadata; check its outputs against eager PyTorch on real images."""
    import torch

    from runner import inference
    with handled():
        if format not in ("torchscript", "onnx"):  # checked before the model loads
            raise RunnerError(f"--format {format}: expected torchscript or onnx{did_you_mean(format, ['torchscript', 'onnx'])}")
        catalog = _catalog()
        trained = inference.load_trained(run_folder, catalog, device="cpu")
        found = inference.image_files([images]) if images else inference.recipe_split(trained, "val", catalog)
        if isinstance(found, (tuple, list)):  # files: through the checkpoint's preprocessing
            files = (found[0] if isinstance(found, tuple) else found)[:8]
            transform = trained.preprocess.eval_transform()
            from torchvision.datasets.folder import default_loader
            batch = torch.stack([transform(default_loader(str(f))) for f in files])
        else:  # a dataset that yields tensors itself
            files = range(min(8, len(found)))
            batch = torch.stack([found[i][0] for i in files])
        target = Path(out) if out else trained.folder / ("model.torchscript.pt" if format == "torchscript" else "model.onnx")
        diff = inference.export(trained, batch, format, target)
        console.print(f"wrote {target}; max abs difference to eager PyTorch on {len(files)} real images: {diff:.2e}")


def entry() -> None:
    app()


if __name__ == "__main__":
    sys.exit(entry())
