"""What the command line prints, at 80 columns and in pipes: names, paths and numbers whole, no box drawing outside
a terminal, JSON that round-trips, the conventions (--version, flags without metavars, global options in their
place, a closed pipe is no error), predict's messages, and the pictures' contents and sizes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

import runner
from runner.cli import KEEP, NUMBER, WORDS, WRAP, Rows, app, print_rows

cli = CliRunner()
REPO = Path(__file__).resolve().parents[1]
BOX = set("│┃━─┏┓┗┛┡┩╇╈┳┻╭╮╰╯")


def invoke(*args: str, columns: int = 80):
    return cli.invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)})


def tokens(output: str) -> set[str]:
    """Every whitespace-separated word of ``output``: a name is whole when it is one of them."""
    return set(output.split())


def assert_fits(output: str, width: int = 80) -> None:
    assert max(map(len, output.splitlines()), default=0) <= width, output
    assert not BOX & set(output), "box drawing outside a terminal:\n" + output


# -- names never cut at 80 columns, no box drawing in a pipe ----------------------------------------------------------

def test_list_at_80_columns_keeps_every_component_and_plugin_name_whole():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    assert_fits(result.output)
    words = tokens(result.output)
    catalog = runner.components()
    assert len(catalog) > 30
    for row in catalog:
        assert row["name"] in words, row["name"]
        assert row["plugin"] in words, row["plugin"]
    assert "freeze policy" not in result.output  # one name per kind: the recipe key


def test_list_at_80_columns_is_grouped_by_kind_and_plugin():
    lines = invoke("list").output.splitlines()
    heading = lines.index("optimizer  from runner_plugins.optim")
    assert lines[0] == "dataset  from runner_plugins.label_files"
    assert any(line.split()[:1] == ["sgd"] and "stochastic gradient descent" in line for line in lines[heading:])
    one_kind = invoke("list", "optimizer").output.splitlines()  # fits as a table: name, plugin, summary
    assert one_kind[0].split() == ["name", "plugin", "summary"]


def test_list_on_a_wide_screen_is_one_table_with_the_plugin_column():
    result = invoke("list", columns=200)
    header = result.output.splitlines()[0].split()
    assert header == ["kind", "name", "plugin", "summary"]
    (sgd,) = [line for line in result.output.splitlines() if line.split()[:2] == ["optimizer", "sgd"]]
    assert sgd.split()[2] == "runner_plugins.optim"


def test_plugins_at_80_columns_keeps_every_plugin_name_whole():
    from runner.plugins import load_catalog

    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    assert_fits(result.output)
    words = tokens(result.output)
    names = list(load_catalog(lenient=True).plugins.info)
    assert "runner_plugins.torchvision_datasets" in names
    for name in names:
        assert name in words, name


def test_show_at_80_columns_writes_types_as_a_person_does():
    result = invoke("show", "optimizer", "sgd")
    assert result.exit_code == 0, result.output
    assert_fits(result.output)
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}
    assert "float > 0 | 'auto'" in rows["lr"] and "float >= 0" in rows["momentum"] and " bool " in rows["nesterov"]
    assert "Annotated" not in result.output and "FieldInfo" not in result.output
    imagefolder = invoke("show", "dataset", "imagefolder").output
    assert "'standard' | 'none'" in imagefolder and "str | None" in imagefolder and "int > 0" in imagefolder


def test_type_text_reads_the_constraints():
    from typing import Annotated, Literal

    from pydantic import BaseModel, Field

    from runner.cli.components import field_rows

    class Params(BaseModel):
        lr: Annotated[float, Field(gt=0)] | Literal["auto"] = 0.1
        epochs: int = Field(1, ge=1)
        decay: float = Field(0.5, gt=0, le=1)
        augment: Literal["standard", "none"] = "standard"
        flag: bool = False
        name: str | None = None
        betas: tuple[float, float] = (0.9, 0.999)
        names: list[str] = Field(default_factory=list, min_length=1)

    types = {row["name"]: row["type"] for row in field_rows(Params)}
    assert types == {"lr": "float > 0 | 'auto'", "epochs": "int >= 1", "decay": "0 < float <= 1",
                     "augment": "'standard' | 'none'", "flag": "bool", "name": "str | None",
                     "betas": "tuple[float, float]", "names": "list[str] (length >= 1)"}


def test_plan_table_keeps_module_names_whole_at_80_columns_on_a_terminal_and_in_a_pipe():
    from runner.cli.report import plan_table

    modules = ["conv_stem+bn1", *(f"blocks.{i}" for i in range(7)), "conv_head+bn2"]
    rows = [{"group": name, "modules": f"{name.split('+')[0]}, bn{i}, features.{i}.conv_pw, features.{i}.se",
             "parameters": 1_652_640, "trains": f"from epoch {10 - i}", "lr": 0.000134, "lr_scale": 0.13,
             "weight_decay": 0.05, "batchnorm": "eval (held)"} for i, name in enumerate(modules)]
    rows.append({"group": "head", "modules": "classifier", "parameters": 2562, "trains": "from epoch 1", "lr": 0.001,
                 "lr_scale": 1.0, "weight_decay": 0.05, "batchnorm": "-"})
    data = {"recipe": "gradual", "rows": rows, "trainable": 10, "total": 10, "epochs": 10}
    for terminal in (True, False):
        console = Console(width=80, force_terminal=terminal, color_system=None, record=True)
        console.print(plan_table(data))
        out = console.export_text()
        assert max(map(len, out.splitlines())) <= 80
        words = tokens(out.replace(", ", " ").replace("; ", " "))
        for row in rows:
            assert row["group"] in words and f"{row['parameters']:,}" in words
            for module in row["modules"].split(", "):
                assert module in words, (terminal, module, out)


@pytest.mark.parametrize("terminal", [True, False])
def test_rows_keep_names_paths_and_numbers_whole_at_any_width(terminal):
    long_name = "runner_plugins.torchvision_datasets:CosineAnnealingWarmRestarts"
    for width in range(30, 140, 7):
        table = Rows(("name", KEEP), ("modules", WORDS), ("n", NUMBER), ("summary", WRAP))
        table.add_row(long_name, "blocks.0-6, conv_head, conv_stem", "3,371,008", "a long summary " * 6)
        table.add_row("sgd", "classifier", "2,562", "short")
        console = Console(width=width, force_terminal=terminal, color_system=None, record=True)
        print_rows(table, console)
        out = console.export_text()
        words = tokens(out.replace(", ", " "))
        assert {"blocks.0-6", "conv_head", "conv_stem", "3,371,008", "classifier", "sgd", long_name} <= words, out
        assert (set(out) & BOX) <= ({"─"} if terminal else set()), out  # a rule under the header, on a terminal


def test_no_box_drawing_and_nothing_past_80_columns_in_any_listing():
    for args in (["list"], ["list", "freeze"], ["plugins"], ["show", "optimizer", "Adam"], ["show", "settings"]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
        assert_fits(result.output)


# -- JSON ---------------------------------------------------------------------------------------------------------------

def test_list_json_is_the_python_api_catalog():
    result = invoke("list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == runner.components()
    one = json.loads(invoke("list", "backbones", "--json").stdout)
    assert one == runner.components("backbone")


def test_show_json_round_trips_the_parameters():
    from runner.plugins import load_catalog

    result = invoke("show", "optimizer", "sgd", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    component = load_catalog().get("optimizer", "sgd")
    assert shown["kind"] == "optimizer" and shown["plugin"] == "runner_plugins.optim"
    assert [p["name"] for p in shown["params"]] == list(component.params.model_fields)
    assert shown["schema"] == component.params.model_json_schema()
    lr = next(p for p in shown["params"] if p["name"] == "lr")
    assert lr == {"name": "lr", "type": "float > 0 | 'auto'", "required": False, "default": 0.01,
                  "help": component.params.model_fields["lr"].description}
    assert component.params.model_validate({p["name"]: p["default"] for p in shown["params"]})
    settings = json.loads(invoke("show", "settings", "--json").stdout)
    assert "epochs" in [s["name"] for s in settings["settings"]]
    assert "pictures" in [s["name"] for s in settings["sections"]]


def test_plugins_json_lists_what_each_plugin_adds():
    from runner.plugins import load_catalog

    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert set(plugins) == set(load_catalog(lenient=True).plugins.info)
    optim = plugins["runner_plugins.optim"]
    assert optim["source"] == "built-in" and optim["error"] is None
    assert {"kind": "optimizer", "name": "sgd"} in optim["components"]
    assert "runner_optimizers" in optim["hooks"]
    assert plugins["runner_plugins.pictures"]["sections"] == ["pictures"]


# -- conventions --------------------------------------------------------------------------------------------------------

def test_version():
    result = cli.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"runner {runner.__version__}\n"


def test_flags_show_no_metavar_and_completion_is_offered():
    top = invoke("--help", columns=120).output
    assert "<bool>" not in top and "--install-completion" in top and "--version" in top
    for command in ("predict", "plugins", "list", "validate"):
        out = invoke(command, "--help", columns=120).output
        assert "<bool>" not in out, (command, out)


def _imported(args: list[str]) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def test_help_imports_no_torch_nor_pydantic():
    for args in (["--help"], ["validate", "--help"], ["predict", "--help"]):
        assert not _imported(args) & {"torch", "torchvision", "timm", "matplotlib", "numpy"}, args
    assert "pydantic" not in _imported(["--help"])


@pytest.mark.parametrize("args", [["list"], ["plugins"], ["show", "optimizer", "sgd"], ["show", "scheduler", "step"],
                                  ["validate", "recipes/extract.yaml"], ["show", "settings"]])
def test_reading_the_catalog_imports_no_torch(args):
    """Component names, summaries and parameter models come without torch, torchvision or timm (start-up budget)."""
    assert not _imported(args) & {"torch", "torchvision", "timm", "matplotlib", "numpy"}, args


def test_parameters_from_a_torch_signature_are_built_on_first_use():
    from runner.session import catalog

    entry = catalog().entry("optimizer", "RAdam")
    assert "decoupled_weight_decay" in entry.component.params.model_fields  # torch.optim.RAdam's own argument
    assert entry.component.params is entry.component.params  # built once


def test_help_into_a_pipe_is_plain_text_with_whole_sentences():
    done = subprocess.run([sys.executable, "-m", "runner", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0 and not set(done.stdout) & set("╭│╰─")
    commands = done.stdout.split("Commands:")[1]
    assert "..." not in commands and all(len(line) <= 80 for line in done.stdout.splitlines())
    serve = subprocess.run([sys.executable, "-m", "runner", "serve", "--help"], cwd=REPO, capture_output=True,
                           text=True, timeout=60).stdout
    assert "runner-transfer[serve]" in serve.replace("\n  ", "")
    run = subprocess.run([sys.executable, "-m", "runner", "run", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60).stdout
    assert "--set KEY=VALUE" in run and "--seeds N" in run and "<list[str]>" not in run and "<int" not in run


@pytest.mark.parametrize("option, shown", [(["--debug"], "runner --debug validate ..."),
                                           (["--plugin", "mine.py"], "runner --plugin mine.py validate ..."),
                                           (["--plugin=mine.py"], "runner --plugin=mine.py validate ...")])
def test_a_global_option_after_the_command_says_where_it_goes(option, shown):
    result = invoke("validate", "recipes/extract.yaml", *option)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line == f"error: {option[0].split('=')[0]} is a global option: put it before the command, e.g. {shown}"


def test_kind_names_are_the_recipe_keys_and_old_names_still_work():
    assert invoke("show", "freeze", "gradual").exit_code == 0
    assert invoke("show", "freeze_policy", "gradual").exit_code == 0
    assert invoke("list", "freeze policy").exit_code == 0
    typo = invoke("show", "freeze_polcy", "gradual")
    assert typo.exit_code == 2 and "did you mean 'freeze'?" in typo.stderr


def run_piped(command: str, reader: str, tmp_path: Path) -> tuple[int, str, str]:
    err = tmp_path / "stderr.txt"
    script = f"{sys.executable} -m runner {command} 2>{err} | {reader}; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, err.read_text()


def test_a_closed_pipe_ends_quietly_with_exit_code_0(tmp_path):
    code, out, err = run_piped("show optimizer sgd", "head -1", tmp_path)
    assert (code, err) == (0, "") and out.startswith("optimizer sgd (runner_plugins.optim)")
    # a reader gone before anything is written: the broken pipe for certain
    assert run_piped("show optimizer sgd", "true", tmp_path) == (0, "", "")
    assert run_piped("list --json", "true", tmp_path) == (0, "", "")


# -- predict and evaluate -----------------------------------------------------------------------------------------------

class FakeModel:
    """What ``runner.workflow.load`` returns, without a checkpoint: predict and evaluate give canned rows."""

    def __init__(self, folder: Path, rows=None, result=None):
        self.folder, self.rows, self.result = folder, rows or [], result

    def predict(self, paths, top, batch_size):
        return self.rows

    def evaluate(self, data, split):
        return self.result


def run_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "best.pt").write_bytes(b"")
    return path


@pytest.fixture
def loaded(monkeypatch):
    """The model predict/evaluate would load: ``loaded["model"]``; the refs they asked for: ``loaded["refs"]``."""
    from runner import workflow

    state: dict = {"refs": []}

    def load(ref, **kwargs):
        state["refs"].append(ref)
        return state["model"]

    monkeypatch.setattr(workflow, "load", load)
    return state


def test_predict_given_several_run_folders_says_so_and_suggests_latest(tmp_path, loaded):
    older, newer = run_folder(tmp_path / "runs" / "extract-1"), run_folder(tmp_path / "runs" / "extract-2")
    os.utime(older / "best.pt", (1, 1))
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    result = invoke("predict", older, newer, photo)
    assert result.exit_code == 2 and loaded["refs"] == []
    (line,) = result.stderr.splitlines()
    assert f"several run folders given: {older}, {newer}" in line and "--latest" in line

    loaded["model"] = FakeModel(newer, [{"file": str(photo), "class": "cats", "probability": 0.9,
                                         "top": [["cats", 0.9], ["dogs", 0.1]]}])
    result = invoke("predict", older, newer, photo, "--latest")
    assert result.exit_code == 0, result.output
    assert loaded["refs"] == [str(newer)] and f"using {newer}, the newest of 2 run folders" in result.stderr
    assert "photo.jpg" in tokens(result.stdout)


def test_predict_keeps_file_names_whole_at_80_columns_and_counts_what_it_skipped(tmp_path, loaded):
    folder = run_folder(tmp_path / "run")
    names = [f"IMG_2024_holiday_in_the_mountains_with_the_whole_family_{i:04d}_edited_final.jpeg" for i in range(3)]
    rows = [{"file": str(tmp_path / "photos" / name), "class": "a_rather_long_class_name", "probability": 0.87654,
             "top": [["a_rather_long_class_name", 0.87654], ["another_class", 0.1]]} for name in names]
    rows.append({"file": str(tmp_path / "photos" / "notes.jpg"), "error": "not a readable image"})
    loaded["model"] = FakeModel(folder, rows)
    result = invoke("predict", folder, tmp_path / "photos")
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    words = tokens(result.stdout)
    assert set(names) <= words and "a_rather_long_class_name" in words and "0.8765" in words
    assert "notes.jpg" not in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("skipped 1 file(s) that are not images it can open: ") and line.endswith("notes.jpg")
    as_csv = invoke("predict", folder, tmp_path / "photos", "--csv").stdout.splitlines()
    assert len(as_csv) == 4 and "notes.jpg" not in "".join(as_csv)


def evaluation(wrong: list[str]) -> dict:
    classes = ["a_class_with_a_long_name", "b"]
    return {"accuracy": 0.5, "images": 4, "classes": classes, "confusion": [[1, 1], [1, 1]],
            "per_class": [{"class": c, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for c in classes],
            "most_confident_wrong": [{"file": file, "true": classes[0], "predicted": "b", "probability": 0.9321}
                                     for file in wrong]}


def test_evaluate_keeps_the_wrong_files_path_whole_at_80_columns(tmp_path, loaded):
    folder = run_folder(tmp_path / "run")
    wrong = "data/val/a_class_with_a_long_name/a_photo_with_a_very_long_file_name_0001.jpg"
    loaded["model"] = FakeModel(folder, result=evaluation([wrong]))
    result = invoke("evaluate", folder)
    assert result.exit_code == 0, result.output
    assert_fits("\n".join(line for line in result.stdout.splitlines() if str(tmp_path) not in line))
    assert wrong in tokens(result.stdout) and "0.9321" in tokens(result.stdout)
    with Image.open(folder / "confusion.png") as picture:
        assert picture.width >= 600 and picture.height >= 600
    longer = str(tmp_path / wrong)  # longer than the screen: on one line all the same, for the terminal to wrap
    loaded["model"] = FakeModel(folder, result=evaluation([longer]))
    assert longer in tokens(invoke("evaluate", folder).stdout)


# -- pictures -----------------------------------------------------------------------------------------------------------

def metrics_rows(groups: int, epochs: int = 7) -> list[dict]:
    """Fake metrics.jsonl rows: falling loss, rising accuracy, a step schedule over ``groups`` layer-decayed lrs."""
    return [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 1 - 1 / (e + 1),
             "val_acc": 1 - 1.3 / (e + 2), "lr": [1e-3 * 0.8 ** (groups - 1 - g) * 0.5 ** (e // 3)
                                                  for g in range(groups)]} for e in range(1, epochs + 1)]


def legend_labels(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_curves_show_each_groups_lr_on_a_log_scale_with_whole_epochs(tmp_path):
    from runner_plugins.pictures import curves_figure, plot_curves

    names = ["blocks.5", "blocks.6", "head"]
    fig = curves_figure(metrics_rows(3), names)
    loss, acc, lr = fig.axes
    assert legend_labels(lr) == names and lr.get_yscale() == "log"
    assert legend_labels(loss) == ["train", "val"] and legend_labels(acc) == ["train", "val"]
    assert [line.get_ydata()[0] for line in lr.get_lines()] == pytest.approx([1e-3 * 0.64, 1e-3 * 0.8, 1e-3])
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 7]
        assert ticks and all(float(t).is_integer() for t in ticks) and ax.get_xlabel() == "epoch"
    width, height = fig.get_size_inches() * 80
    assert width >= 1000 and height >= 300
    plot_curves(metrics_rows(3), tmp_path / "curves.png", names)
    with Image.open(tmp_path / "curves.png") as picture:
        assert picture.width >= 1000 and picture.height >= 300


@pytest.mark.parametrize("scale", [1.0, 12345.0])
def test_curves_are_saved_uncropped_with_everything_drawn_inside_the_picture(tmp_path, scale):
    """curves.png is not cropped to what is drawn (that renders it twice), so the fixed margins must hold every
    label, title, tick and legend, long tick labels (losses in the thousands) and a 10-group lr legend included."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from runner_plugins.pictures import curves_figure, plot_curves

    names = ["conv_stem+bn1", *(f"blocks.{i}" for i in range(7)), "conv_head+bn2", "head"]
    rows = [{**row, "train_loss": row["train_loss"] * scale, "val_loss": row["val_loss"] * scale}
            for row in metrics_rows(len(names), epochs=30)]
    fig = curves_figure(rows, names)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    picture = fig.bbox
    for ax in fig.axes:
        drawn = ax.get_tightbbox(canvas.get_renderer())
        assert picture.x0 <= drawn.x0 and drawn.x1 <= picture.x1 and picture.y0 <= drawn.y0 and drawn.y1 <= picture.y1
    plot_curves(rows, tmp_path / "curves.png", names)
    with Image.open(tmp_path / "curves.png") as saved:
        assert saved.size == tuple(round(inches * 80) for inches in fig.get_size_inches())  # the whole figure


def test_curves_with_many_groups_show_the_heads_lr_and_the_lowest():
    from runner_plugins.pictures import curves_figure

    names = ["conv_stem+bn1", *(f"blocks.{i}" for i in range(7)), "conv_head+bn2", "head"]
    lr = curves_figure(metrics_rows(10), names).axes[2]
    assert legend_labels(lr) == ["head", "conv_stem+bn1 (lowest)"]
    assert "2 of 10 groups" in lr.get_title()
    one = curves_figure(metrics_rows(1)).axes[2]
    assert legend_labels(one) == ["lr"]


def test_confusion_picture_is_readable(tmp_path):
    from runner.inference import plot_confusion

    classes = ["ants", "bees", "wasps"]
    result = {"classes": classes, "confusion": [[50, 3, 0], [4, 60, 1], [0, 2, 41]], "accuracy": 0.94,
              "images": 161}
    fig = plot_confusion(result, tmp_path / "confusion.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == classes
    assert [t.get_text() for t in ax.get_yticklabels()] == classes
    cells = [t.get_text() for t in ax.texts]
    assert cells == [str(c) for row in result["confusion"] for c in row]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true" and "0.9400" in ax.get_title()
    with Image.open(tmp_path / "confusion.png") as picture:
        assert picture.width >= 600 and picture.height >= 600


def test_image_grid_has_large_labels_in_their_colours(tmp_path):
    import numpy
    import torch

    from runner.api import Preprocess
    from runner_plugins.pictures import LABEL_PX, image_grid

    preprocess = Preprocess(size=32, resize=36, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = [torch.zeros(3, 32, 32) for _ in range(6)]  # mid-grey once de-normalised
    titles = [f"class_{i}\n(true: class_{i})" for i in range(6)]
    colours = ["black"] * 5 + ["red"]
    image_grid(images, titles, colours, preprocess, tmp_path / "batch.png", "a training batch")
    with Image.open(tmp_path / "batch.png") as picture:
        assert picture.width >= 800 and picture.height >= 400  # 32-pixel images are enlarged to be seen
        pixels = numpy.asarray(picture.convert("RGB")).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    dark = pixels.sum(-1) < 150
    grey = (abs(pixels - 128) < 8).all(-1)
    rows_with_red, cols_with_red = numpy.nonzero(red)
    assert len(rows_with_red), "the wrong prediction's label is red"
    assert cols_with_red.min() > picture.width // 4 and rows_with_red.min() > picture.height // 2  # row 2, col 2
    assert not red[: picture.height // 2].any(), "the right ones are not"
    assert rows_with_red.max() - rows_with_red.min() >= 2 * LABEL_PX  # two lines, letters of LABEL_PX >= 14
    assert LABEL_PX >= 14 and dark[: picture.height // 10].any()  # a title above the grid
    assert grey.sum() >= 6 * 200 * 200  # the six images, at least 200 pixels a side


def test_metrics_csv_names_lr_columns_by_group():
    from runner_plugins.metrics_log import flat

    row = flat({"epoch": 1, "val_acc": 0.5, "lr": [0.1, 0.2, 0.3]}, ["blocks.6", "blocks.6/no_decay", "head"])
    assert row == {"epoch": 1, "val_acc": 0.5, "lr_blocks.6": 0.1, "lr_blocks.6/no_decay": 0.2, "lr_head": 0.3}
    assert flat({"epoch": 1, "lr": [0.1, 0.2]}) == {"epoch": 1, "lr_0": 0.1, "lr_1": 0.2}
