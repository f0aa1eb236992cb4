"""The csv and folder datasets: label files in three formats, the three ways to split off val, and a bad label
file reported row by row as file:LINE."""
from __future__ import annotations

import csv
import json
import os

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_BACKBONE, make_imagefolder
from runner.cli import app
from runner.types import Preprocess
from runner.errors import RunnerError
from runner.plugins import load_catalog


def build(name, base_dir, **params):
    component = load_catalog().get("dataset", name)
    return component.build(component.params(**params), Preprocess(size=32, resize=36), base_dir)


def write_labels(path, rows, header=("path", "label", "split")):
    """``rows`` (tuples in ``header`` order) as a .csv, .tsv or .jsonl file, by the name's extension."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, row))) + "\n" for row in rows))
    else:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writerow(header)
            writer.writerows(rows)
    return path


@pytest.fixture
def rows(imagefolder):
    """(path relative to the data folder, label, split) of the imagefolder fixture: 8+8 train, 4+4 val."""
    return [(str(p.relative_to(imagefolder)), p.parent.name, p.parent.parent.name)
            for p in sorted(imagefolder.rglob("*.jpg"))]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_each_format_loads_with_its_classes_and_split_column(imagefolder, rows, tmp_path, suffix):
    labels = write_labels(imagefolder / f"labels{suffix}", rows)
    data = build("csv", tmp_path, file=str(labels), split_column="split", batch_size=2)
    assert data.classes == ["cats", "dogs"] and len(data.train) == 16 and len(data.val) == 8
    assert sorted(data.train.targets) == [0] * 8 + [1] * 8 and sorted(data.val.targets) == [0] * 4 + [1] * 4
    assert all(os.path.isfile(path) for path, _ in data.train.samples + data.val.samples)
    image, label = data.val[0]
    assert image.shape == (3, 32, 32) and label == data.val.samples[0][1]
    assert data.batch_size == 2 and data.val_batch_size == 64 and data.skipped == []


def test_split_column_values_and_rows_of_other_splits(imagefolder, rows, tmp_path):
    renamed = [(p, label, {"train": "fit", "val": "holdout"}[split]) for p, label, split in rows]
    renamed += [("cats/nowhere.jpg", "cats", "test")]  # another split: left out, even though its file is missing
    labels = write_labels(tmp_path / "labels.csv", renamed)
    data = build("csv", tmp_path, file="labels.csv", root=str(imagefolder), split_column="split",
                 train_value="fit", val_value="holdout")
    assert (len(data.train), len(data.val)) == (16, 8)
    with pytest.raises(RunnerError, match=r"labels.csv: no rows with split 'val'; the column holds fit, holdout, test"):
        build("csv", tmp_path, file=str(labels), root=str(imagefolder), split_column="split", train_value="fit")


def test_val_file_of_another_format_with_int_labels_in_numeric_order(imagefolder, rows, tmp_path):
    number = {"cats": 2, "dogs": 10}
    write_labels(imagefolder / "train.csv", [(p, number[c]) for p, c, s in rows if s == "train"], ("path", "label"))
    write_labels(imagefolder / "val.jsonl", [(p, number[c]) for p, c, s in rows if s == "val"], ("path", "label"))
    data = build("csv", tmp_path, file=str(imagefolder / "train.csv"), val_file=str(imagefolder / "val.jsonl"))
    assert data.classes == ["2", "10"] and (len(data.train), len(data.val)) == (16, 8)
    given = build("csv", tmp_path, file=str(imagefolder / "train.csv"), val_file=str(imagefolder / "val.jsonl"),
                  classes=[10, 2])
    assert given.classes == ["10", "2"] and given.val.targets == [1] * 4 + [0] * 4


def test_val_fraction_is_stratified_deterministic_and_changes_with_the_seed(imagefolder, rows, tmp_path):
    make_imagefolder(imagefolder, classes=("owls",), per_split=(1, 0))  # one image: it must stay in train
    everything = [(str(p.relative_to(imagefolder)), p.parent.name) for p in sorted(imagefolder.rglob("*.jpg"))]
    write_labels(imagefolder / "labels.csv", everything, ("path", "label"))
    write_labels(imagefolder / "reversed.csv", everything[::-1], ("path", "label"))

    def split(file="labels.csv", seed=0):
        data = build("csv", imagefolder, file=file, val_fraction=0.25, seed=seed, preload=False)
        return data, sorted(p for p, _ in data.val.samples)

    data, val = split()
    assert data.classes == ["cats", "dogs", "owls"] and (len(data.train), len(data.val)) == (19, 6)
    assert sorted(data.val.targets) == [0, 0, 0, 1, 1, 1] and data.train.targets.count(2) == 1
    assert not set(val) & {p for p, _ in data.train.samples}
    assert split()[1] == val and split("reversed.csv")[1] == val  # same seed, same split, whatever the row order
    assert split(seed=1)[1] != val


def test_missing_column_names_the_file_and_suggests(imagefolder, rows, tmp_path):
    labels = write_labels(tmp_path / "labels.csv", rows, ("path", "lable", "split"))
    with pytest.raises(RunnerError, match=r"labels.csv:1: no column 'label' \(did you mean 'lable'\?\); the header "
                                          r"has path, lable, split"):
        build("csv", tmp_path, file=str(labels), root=str(imagefolder), split_column="split")
    jsonl = write_labels(tmp_path / "labels.jsonl", rows, ("file", "label", "split"))
    with pytest.raises(RunnerError, match=r"labels.jsonl: no key 'path'.*keys file, label, split"):
        build("csv", tmp_path, file=str(jsonl), root=str(imagefolder), split_column="split")


def test_every_bad_row_is_reported_at_once_as_file_line(imagefolder, tmp_path):
    outside = tmp_path / "outside.jpg"
    Image.new("RGB", (8, 8)).save(outside)
    (imagefolder / "train" / "cats" / "link.jpg").symlink_to(outside)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n"                            # 1
                      "train/cats/cats_0.jpg,cats\n"            # 2: good
                      "train/cats/missing.jpg,cats\n"           # 3: no such file
                      "train/dogs/dogs_0.jpg,cows\n"            # 4: not a class
                      "../outside.jpg,cats\n"                   # 5: leaves the root
                      f"{outside},cats\n"                       # 6: absolute, outside the root
                      "\n"                                      # 7: blank lines are skipped
                      "train/cats/link.jpg,cats\n"              # 8: a symlink out of the root
                      ",dogs\n"                                 # 9: empty path
                      'train/dogs/dogs_1.jpg,"\n"\n'             # 10-11: a quoted newline, an empty label
                      "train/dogs/dogs_2.jpg,dogs\n")           # 12: good
    with pytest.raises(RunnerError) as caught:
        build("csv", tmp_path, file="labels.csv", root=str(imagefolder), val_fraction=0.5, classes=["cats", "dogs"])
    problems = caught.value.problems
    expected = [("labels.csv:3: image 'train/cats/missing.jpg' not found", "expected a path relative to"),
                ("labels.csv:4: label 'cows' is not a class", "expected one of cats, dogs"),
                ("labels.csv:5: path '../outside.jpg' leaves the dataset root", "expected a path inside it"),
                (f"labels.csv:6: path '{outside}' leaves the dataset root", "expected a path inside it"),
                ("labels.csv:8: path 'train/cats/link.jpg' leaves the dataset root", "expected a path inside it"),
                ("labels.csv:9: empty path", "expected an image path"),
                ("labels.csv:10: empty label", "expected the image's class label")]
    assert len(problems) == len(expected), problems
    for problem, (what, hint) in zip(problems, expected):
        assert str(labels) in problem and what in problem and hint in problem, problem


def test_malformed_json_lines_are_reported_with_their_line(imagefolder, tmp_path):
    labels = imagefolder / "labels.jsonl"
    labels.write_text('{"path": "train/cats/cats_0.jpg", "label": "cats"}\n'
                      '{"path": "train/cats/cats_1.jpg", "label": "cats"\n'
                      '["train/dogs/dogs_0.jpg", "dogs"]\n'
                      '\n'
                      '{"path": "train/dogs/dogs_1.jpg", "label": 1.5}\n'
                      '{"path": "train/dogs/dogs_2.jpg"}\n')
    with pytest.raises(RunnerError) as caught:
        build("csv", tmp_path, file=str(labels), val_fraction=0.5)
    problems = caught.value.problems
    assert [p.split(": ")[0] for p in problems] == [f"{labels}:{n}" for n in (2, 3, 5, 6)]
    assert "not valid JSON" in problems[0] and "expected one JSON object per line" in problems[0]
    assert "a JSON list" in problems[1] and "label is a JSON float 1.5; expected a string or integer" in problems[2]
    assert "no 'label' key" in problems[3]


def test_split_choice_format_and_missing_files_are_clear_errors(imagefolder, rows, tmp_path):
    labels = write_labels(imagefolder / "labels.csv", rows)
    with pytest.raises(RunnerError, match="no val split given; expected exactly one of split_column, val_file"):
        build("csv", tmp_path, file=str(labels))
    with pytest.raises(RunnerError, match="split_column and val_fraction given; expected exactly one"):
        build("csv", tmp_path, file=str(labels), split_column="split", val_fraction=0.2)
    (imagefolder / "labels.txt").write_text("path,label\n")
    with pytest.raises(RunnerError, match=r"labels.txt: unknown format '.txt'; expected .csv, .tsv, .jsonl or "
                                          r"\.ndjson"):
        build("csv", tmp_path, file=str(imagefolder / "labels.txt"), val_fraction=0.2)
    with pytest.raises(RunnerError, match="label file 'nope.csv' not found in .*RUNNER_DATA_PATH"):
        build("csv", tmp_path, file="nope.csv", val_fraction=0.2)


def test_a_class_without_training_images_is_an_error(imagefolder, rows, tmp_path):
    rows = [(p, "owls" if p == "val/dogs/dogs_0.jpg" else label, split) for p, label, split in rows]
    labels = write_labels(imagefolder / "labels.csv", rows)
    with pytest.raises(RunnerError, match=r"labels.csv: class\(es\) \['owls'\] have no readable training images"):
        build("csv", tmp_path, file=str(labels), split_column="split")


def test_unreadable_images_follow_bad_images(imagefolder, rows, tmp_path):
    (imagefolder / "train" / "cats" / "broken.jpg").write_bytes(b"not a jpeg")
    labels = write_labels(imagefolder / "labels.csv", [*rows, ("train/cats/broken.jpg", "cats", "train")])
    data = build("csv", tmp_path, file=str(labels), split_column="split")
    assert len(data.train) == 16 and data.skipped == [f"{imagefolder / 'train/cats/broken.jpg'} (truncated or corrupt)"]
    with pytest.raises(RunnerError, match="1 unreadable image"):
        build("csv", tmp_path, file=str(labels), split_column="split", bad_images="error")


def test_grayscale_and_palette_pngs_load_as_three_channels(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.new("L", (20, 30), 128).save(folder / "grey.png")
    Image.new("RGB", (20, 30), (200, 10, 10)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "pal.png")
    Image.new("RGBA", (20, 30), (10, 200, 10, 100)).save(folder / "alpha.png")
    write_labels(folder / "labels.csv", [("grey.png", "a", "train"), ("pal.png", "b", "train"),
                                         ("alpha.png", "a", "val")])
    for preload in (False, True):
        data = build("csv", tmp_path, file="pngs/labels.csv", split_column="split", preload=preload)
        for image, _ in [data.train[0], data.train[1], data.val[0]]:
            assert image.shape == (3, 32, 32) and image.dtype == torch.float32


def test_folder_component_splits_one_folder_of_class_folders(imagefolder, tmp_path):
    data = build("folder", tmp_path, root=str(imagefolder / "train"), val_fraction=0.25)
    assert data.classes == ["cats", "dogs"] and (len(data.train), len(data.val)) == (12, 4)
    assert sorted(data.val.targets) == [0, 0, 1, 1]
    again = build("folder", tmp_path, root=str(imagefolder / "train"), val_fraction=0.25)
    assert again.val.samples == data.val.samples
    other = build("folder", tmp_path, root=str(imagefolder / "train"), val_fraction=0.25, seed=3)
    assert other.val.samples != data.val.samples
    assert build("folder", tmp_path, root=str(imagefolder / "train")).val.targets == [0, 0, 1, 1]  # 0.2 of 8: 2
    with pytest.raises(RunnerError, match="holds train/ and val/ folders: use dataset imagefolder"):
        build("folder", tmp_path, root=str(imagefolder))


def test_training_on_a_csv_through_the_cli(imagefolder, rows, tmp_path):
    write_labels(imagefolder / "labels.csv", [(p, label) for p, label, _ in rows], ("path", "label"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "dataset": {"name": "csv", "file": "data/labels.csv", "val_fraction": 0.25, "batch_size": 4, "workers": 0},
        "backbone": TINY_BACKBONE, "epochs": 1, "output": str(tmp_path / "runs"),
        "optimizer": {"name": "sgd", "lr": 0.01}}))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["classes"] == ["cats", "dogs"]

    write_labels(imagefolder / "labels.csv", [("train/cats/cats_0.jpg", "cats"), ("../x.jpg", "dogs")],
                 ("path", "label"))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert "labels.csv:3: path '../x.jpg' leaves the dataset root" in line
