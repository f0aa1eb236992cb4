"""``runner predict``, ``evaluate`` and ``export``: a trained model used, its results as tables or JSON/CSV; the
work is ``runner.inference``'s."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from runner.cli import (KEEP, NUMBER, WORDS, Rows, app, console, errors, handled, print_json, print_rows, state,
                        warn)
from runner.errors import RunnerError, did_you_mean

TTA_HELP = "test-time augmentation: none, flip or crops (default: the recipe's tta)"


def _is_model(path: str) -> bool:
    """A run folder (a folder holding best.pt) or a checkpoint file: what predict's first argument names."""
    p = Path(path)
    return (p / "best.pt").is_file() if p.is_dir() else p.suffix == ".pt" and p.is_file()


def _newest(models: list[str]) -> str:
    """The run folder (or checkpoint) whose best.pt was written last."""
    def written(ref: str) -> float:
        p = Path(ref)
        return (p / "best.pt" if p.is_dir() else p).stat().st_mtime

    return max(models, key=written)


@app.command()
def predict(model: Annotated[str, typer.Argument(help="run folder or checkpoint file")],
            paths: Annotated[list[str], typer.Argument(help="image files or folders")],
            top: Annotated[int, typer.Option(help="classes to show per image")] = 3,
            as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table (unreadable files "
                                                                 "as lines with an error)")] = False,
            as_csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table")] = False,
            batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 32,
            tta: Annotated[Optional[str], typer.Option(metavar="MODE", help=TTA_HELP)] = None,
            latest: Annotated[bool, typer.Option("--latest", help="of several run folders given (runs/extract-*/), "
                                                                  "use the newest")] = False):
    """Classify images with a trained model, through the checkpoint's own preprocessing."""
    from runner import workflow
    with handled():
        models = [model, *(p for p in paths if _is_model(p))]
        if len(models) > 1:
            if not latest:
                raise RunnerError(f"several run folders given: {', '.join(models)}; predict uses one model (the "
                                  f"first argument): name one, or add --latest to use the newest")
            model = _newest(models)
        elif latest and not _is_model(model):
            raise RunnerError(f"--latest: {model} is not a run folder (a folder with best.pt) or a checkpoint")
        paths = [p for p in paths if not _is_model(p)]
        if not paths:
            raise RunnerError("no images given: runner predict RUN_FOLDER IMAGE_OR_FOLDER...")
        if len(models) > 1:
            errors.print(f"using {model}, the newest of {len(models)} run folders", soft_wrap=True, highlight=False)
        rows = workflow.load(model, tta=tta, plugins=state["plugins"], warn=warn).predict(paths, top, batch_size)
        if as_json:  # a line per file named, unreadable ones too: programs see everything
            for row in rows:
                print(json.dumps(row))
            return
        skipped = [row["file"] for row in rows if "error" in row]
        rows = [row for row in rows if "error" not in row]
        if as_csv:
            import csv
            writer = csv.writer(sys.stdout)
            writer.writerow(["file", "class", "probability", "top"])
            for row in rows:
                writer.writerow([row["file"], row["class"], row["probability"],
                                 " ".join(f"{c}:{p:.4f}" for c, p in row["top"])])
        elif rows:
            import os
            base = os.path.commonpath([os.path.dirname(os.path.abspath(r["file"])) for r in rows])
            table = Rows(("file", KEEP), ("class", KEEP), ("probability", NUMBER), (f"top {top}", WORDS),
                         title=f"in {base}")
            for row in rows:
                table.add_row(os.path.relpath(os.path.abspath(row["file"]), base), row["class"],
                              f"{row['probability']:.4f}", ", ".join(f"{c} {p:.3f}" for c, p in row["top"]))
            print_rows(table)
        if skipped:
            errors.print(f"skipped {len(skipped)} file(s) that are not images it can open: "
                         f"{', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}", soft_wrap=True)


@app.command()
def evaluate(run_folder: Annotated[str, typer.Argument(help="run folder (or checkpoint file)")],
             split: Annotated[str, typer.Option(metavar="SPLIT", help="split of the recipe's dataset: val or train")] = "val",
             data: Annotated[Optional[str], typer.Option(metavar="FOLDER", help="a folder of class folders to evaluate instead")] = None,
             as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
             tta: Annotated[Optional[str], typer.Option(metavar="MODE", help=TTA_HELP)] = None):
    """Accuracy, per-class precision/recall/F1, confusion matrix (table and confusion.png), worst mistakes."""
    from runner import inference, workflow
    with handled():
        if split not in ("train", "val"):
            raise RunnerError(f"--split {split}: expected train or val{did_you_mean(split, ['train', 'val'])}")
        model = workflow.load(run_folder, tta=tta, plugins=state["plugins"], warn=warn)
        result = model.evaluate(data, split)
        folder = Path(data) if data else f"the recipe's {split} split"
        if as_json:  # the result first: a picture that cannot be written must not lose it
            print_json(result)
        else:
            _print_scores(result, folder)
        out = model.folder / "confusion.png"
        try:
            inference.plot_confusion(result, out)
        except (RunnerError, OSError) as exc:
            detail = exc.problems[0] if isinstance(exc, RunnerError) else f"{out}: {exc.strerror or exc}"
            warn(f"{detail}; the result above stands")
            return
        if not as_json:
            console.print(f"confusion matrix picture: {out}", soft_wrap=True, highlight=False)


def _print_scores(result: dict, folder) -> None:
    console.print(Text.assemble((f"accuracy {result['accuracy']:.4f}", "bold"),
                                f" on {result['images']} images of {folder}"))
    table = Rows(("class", KEEP), ("precision", NUMBER), ("recall", NUMBER), ("F1", NUMBER), ("support", NUMBER))
    for row in result["per_class"]:
        table.add_row(row["class"], f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                      str(row["support"]))
    print_rows(table)
    matrix = Rows(("true \\ predicted", KEEP), *((name, NUMBER) for name in result["classes"]),
                  title="confusion matrix: rows are the true class")
    for name, counts in zip(result["classes"], result["confusion"]):
        matrix.add_row(name, *[str(c) for c in counts])
    print_rows(matrix)
    if result["most_confident_wrong"]:
        wrong = Rows(("file", KEEP), ("true", KEEP), ("predicted", KEEP), ("probability", NUMBER),
                     title="most confidently wrong")
        for w in result["most_confident_wrong"]:
            wrong.add_row(w["file"], w["true"], w["predicted"], f"{w['probability']:.4f}")
        print_rows(wrong)


@app.command("export")
def export_(run_folder: Annotated[str, typer.Argument(help="run folder (or checkpoint file)")],
            format: Annotated[str, typer.Option("--format", metavar="FORMAT", help="export (a torch.export program, .pt2), onnx, or "
                                                                 "torchscript (deprecated by torch)")] = "export",
            images: Annotated[Optional[str], typer.Option(metavar="FOLDER", help="folder of images for the check batch "
                                                                "(default: the recipe's val split)")] = None,
            out: Annotated[Optional[str], typer.Option(metavar="FILE", help="output file (default: in the run folder)")] = None):
    """Write the model with its preprocessing metadata; check its outputs against eager PyTorch on real images."""
    from runner import inference, workflow
    with handled():
        if format not in inference.FORMATS:  # checked before the model loads
            raise RunnerError(f"--format {format}: expected {', '.join(inference.FORMATS)}"
                              f"{did_you_mean(format, inference.FORMATS)}")
        if format == "torchscript":
            warn("TorchScript is deprecated by torch; --format export writes a torch.export program (.pt2)")
        model = workflow.load(run_folder, device="cpu", plugins=state["plugins"], warn=warn)
        done = model.export(out, format, images)
        console.print(f"wrote {done['path']}; max abs difference to eager PyTorch on {done['images']} real images: "
                      f"{done['max_abs_diff']:.2e}")
