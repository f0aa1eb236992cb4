"""``runner predict``, ``evaluate`` and ``export``: a trained model used, its results as tables or JSON/CSV; the
work is ``runner.inference``'s."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from runner.cli import app, console, handled, state, warn
from runner.errors import RunnerError, did_you_mean

TTA_HELP = "test-time augmentation: none, flip or crops (default: the recipe's tta)"


@app.command()
def predict(model: Annotated[str, typer.Argument(help="run folder or checkpoint file")],
            paths: Annotated[list[str], typer.Argument(help="image files or folders")],
            top: Annotated[int, typer.Option(help="classes to show per image")] = 3,
            as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
            as_csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table")] = False,
            batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 32,
            tta: Annotated[Optional[str], typer.Option(help=TTA_HELP)] = None):
    """Classify images with a trained model, through the checkpoint's own preprocessing."""
    from runner import workflow
    with handled():
        rows = workflow.load(model, tta=tta, plugins=state["plugins"], warn=warn).predict(paths, top, batch_size)
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
    from runner import inference, workflow
    with handled():
        if split not in ("train", "val"):
            raise RunnerError(f"--split {split}: expected train or val{did_you_mean(split, ['train', 'val'])}")
        model = workflow.load(run_folder, tta=tta, plugins=state["plugins"], warn=warn)
        result = model.evaluate(data, split)
        folder = Path(data) if data else f"the recipe's {split} split"
        if as_json:  # the result first: a picture that cannot be written must not lose it
            import json
            print(json.dumps(result))
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
            console.print(f"confusion matrix picture: {out}")


def _print_scores(result: dict, folder) -> None:
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


@app.command("export")
def export_(run_folder: Annotated[str, typer.Argument(help="run folder (or checkpoint file)")],
            format: Annotated[str, typer.Option("--format", help="export (a torch.export program, .pt2), onnx, or "
                                                                 "torchscript (deprecated by torch)")] = "export",
            images: Annotated[Optional[str], typer.Option(help="folder of images for the check batch "
                                                                "(default: the recipe's val split)")] = None,
            out: Annotated[Optional[str], typer.Option(help="output file (default: in the run folder)")] = None):
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
