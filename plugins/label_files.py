"""Datasets from label files (csv, tsv, jsonl) and from one folder split by val_fraction: the layouts images come in
when nobody sorted them into train/ and val/ class folders.

A bad label file is reported whole -- every bad row as ``file:LINE: what; expected what`` -- so it is fixed in one go.
"""
from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path
from typing import Any

from pydantic import Field

from runner.api import (Component, Data, ImageFileParams, ImageFolder, Preprocess, RunnerError, did_you_mean,
                        finish_image_files, find_root, hookimpl, image_transforms, read_rgb, search_path)

FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": "json", ".ndjson": "json"}
"""Label file extension -> CSV delimiter, or ``json`` for one JSON object per line."""


class LabelFileParams(ImageFileParams):
    file: str = Field(description="label file of image path and label rows: .csv, .tsv (a header line naming the "
                                  "columns) or .jsonl/.ndjson (one JSON object per line); relative to the recipe, the "
                                  "working directory or a folder on RUNNER_DATA_PATH")
    root: str | None = Field(None, description="folder the image paths are relative to, found like file; default: "
                                               "each label file's own folder")
    path_column: str = Field("path", description="column (JSONL: key) holding the image path")
    label_column: str = Field("label", description="column (JSONL: key) holding the class label, a string or integer")
    classes: list[str | int] | None = Field(None, min_length=1, description="class names in index order; a row with "
                                            "another label is an error; default: the labels seen, sorted "
                                            "(numerically when all are integers)")
    split_column: str | None = Field(None, description="val split, way 1 of 3: column naming each row's split; "
                                                       "rows with neither train_value nor val_value are left out")
    train_value: str | int = Field("train", description="split_column value of training rows")
    val_value: str | int = Field("val", description="split_column value of validation rows")
    val_file: str | None = Field(None, description="val split, way 2 of 3: a second label file with the same "
                                                   "columns, found like file")
    val_fraction: float | None = Field(None, gt=0, lt=1, description="val split, way 3 of 3: this fraction of each "
                                       "class goes to val (at least one image of a class of two or more; at least "
                                       "one always stays in train)")
    seed: int = Field(0, description="seed of the val_fraction split: the same seed gives the same split")


class FolderParams(ImageFileParams):
    root: str = Field(description="folder holding one sub-folder of images per class; relative to the recipe, the "
                                  "working directory or a folder on RUNNER_DATA_PATH")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="fraction of each class that goes to val (at least one "
                                "image of a class of two or more; at least one always stays in train)")
    seed: int = Field(0, description="seed of the split: the same seed gives the same split")


class LabelledImages(ImageFolder):
    """Listed (path, class index) images: an :class:`ImageFolder` (its attributes, RGB reading and item access) over
    a list of files instead of a folder per class, so the bad-image check, preloading, the feature cache and
    ``runner evaluate`` work on it unchanged."""

    def __init__(self, root: Path, samples: list[tuple[str, int]], classes: list[str], transform, loader=read_rgb):
        # not ImageFolder.__init__: there is no folder of classes to scan
        self.root, self.classes, self.transform, self.loader = str(root), classes, transform, loader
        self.class_to_idx = {name: i for i, name in enumerate(classes)}
        self.samples = self.imgs = samples
        self.targets = [label for _, label in samples]

    def __repr__(self) -> str:
        return f"LabelledImages({self.root}, {len(self.samples)} images, {len(self.classes)} classes)"


def stratified_split(samples: list[tuple[str, Any]], fraction: float, seed: int):
    """``(train, val)`` samples with ``fraction`` of each label in val, in input order.

    Each class is shuffled by its own seeded generator from its paths in sorted order, so the split depends only on
    the seed and that class's files: not on row order, nor on other classes being added or removed.
    """
    by_label: dict[Any, list[str]] = {}
    for path, label in samples:
        by_label.setdefault(label, []).append(path)
    val_paths: set[tuple[str, Any]] = set()
    for label, paths in by_label.items():
        count = min(len(paths) - 1, max(1, round(len(paths) * fraction)))
        shuffled = sorted(paths)
        random.Random(f"{seed}/{label}").shuffle(shuffled)
        val_paths.update((path, label) for path in shuffled[:count])
    return ([s for s in samples if tuple(s) not in val_paths], [s for s in samples if tuple(s) in val_paths])


def find_file(name: str, base_dir: Path, what: str) -> Path:
    """The existing file ``name`` names, searched where dataset roots are (recipe folder, cwd, RUNNER_DATA_PATH)."""
    path = Path(name).expanduser()
    folders = [] if path.is_absolute() else search_path(base_dir)
    for candidate in [path] if path.is_absolute() else [d / path for d in folders]:
        if candidate.is_file():
            return candidate
    if path.is_absolute():
        raise RunnerError(f"{what} {path} not found")
    raise RunnerError(f"{what} '{name}' not found in {', '.join(map(str, folders))}; put it in one of those or add "
                      "its folder to RUNNER_DATA_PATH")


def _cell(value: Any) -> str | None:
    """A cell as stripped text: strings and integers (JSON labels may be numbers), None when empty; a ValueError
    for other JSON values."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"a JSON {type(value).__name__} {json.dumps(value)[:40]}")
    return str(value).strip() or None


def read_label_file(file: Path, columns: list[str], problems: list[str]) -> list[tuple[str, dict[str, str | None]]]:
    """``(file:LINE, {column: text or None})`` per non-blank row; malformed rows go to ``problems``, a column the file
    lacks raises at once (no row could be read)."""
    delimiter = FORMATS.get(file.suffix.lower())
    if delimiter is None:
        raise RunnerError(f"label file {file}: unknown format '{file.suffix}'; expected .csv, .tsv, .jsonl or .ndjson")
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            records = _json_records(file, handle, problems) if delimiter == "json" else \
                _delimited_records(file, handle, delimiter)
            present = records.pop(0)
    except UnicodeDecodeError as exc:
        raise RunnerError(f"label file {file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    missing = [c for c in dict.fromkeys(columns) if c not in present[1]]
    if missing and not records:  # JSON lines, none of them an object: they are in problems already
        return []
    if missing:
        where, names = present
        kind = "key" if delimiter == "json" else "column"
        has = f"the header has {', '.join(names)}" if delimiter != "json" else \
            f"the lines have keys {', '.join(names) or '(none)'}"
        headerless = delimiter != "json" and len(missing) == len(set(columns))
        raise RunnerError(*(f"{where}: no {kind} '{c}'{did_you_mean(c, names)}; {has}"
                            + ("; the first line must be a header naming the columns" if headerless else "")
                            for c in missing))
    rows = []
    for where, record in records:
        row, bad = {}, False
        for column in columns:
            if column not in record:
                problems.append(f"{where}: no '{column}' key; expected one on every line")
                bad = True
                continue
            try:
                row[column] = _cell(record[column])
            except ValueError as exc:
                problems.append(f"{where}: {column} is {exc}; expected a string or integer")
                bad = True
        if not bad:
            rows.append((where, row))
    return rows


def _delimited_records(file: Path, handle, delimiter: str) -> list:
    """[(header where, header names), (where, {column: cell}) ...]; a row's line is the one it starts on."""
    reader = csv.reader(handle, delimiter=delimiter)
    header, records, start = None, [], 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = [cell.strip() for cell in cells]
                records.append((f"{file}:{line}", header))
            else:
                records.append((f"{file}:{line}", dict(zip(header, cells))))
    except csv.Error as exc:
        raise RunnerError(f"{file}:{reader.line_num}: {exc}; expected {'comma' if delimiter == ',' else 'tab'}-"
                          "separated cells") from None
    if header is None:
        raise RunnerError(f"label file {file} is empty; expected a header line naming the columns, then one line "
                          "per image")
    return records


def _json_records(file: Path, handle, problems: list[str]) -> list:
    """[(file, keys seen on any line), (where, object) ...]; lines that are not JSON objects go to ``problems``."""
    records, keys = [], {}
    for number, text in enumerate(handle, 1):
        if not text.strip():
            continue
        where = f"{file}:{number}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); expected one JSON object "
                            "per line")
            continue
        if not isinstance(value, dict):
            problems.append(f"{where}: a JSON {type(value).__name__}; expected one JSON object per line, such as "
                            '{"path": "cats/1.jpg", "label": "cats"}')
            continue
        keys.update(dict.fromkeys(value))
        records.append((where, value))
    if not records and not problems:
        raise RunnerError(f"label file {file} is empty; expected one JSON object per image")
    return [(str(file), list(keys)), *records]


def resolve_rows(rows, root: Path, path_column: str, label_column: str, classes: list[str] | None,
                 problems: list[str]):
    """``(where, image path, label)`` of rows naming an existing file inside ``root`` and one of ``classes`` (any
    label when None); every problem of the others goes to ``problems``.

    Containment is checked on the resolved path, so ``..``, absolute paths and symlinks cannot reach files outside
    the dataset.
    """
    real_root = root.resolve()
    good = []
    for where, row in rows:
        path, label = row[path_column], row[label_column]
        if path is None:
            problems.append(f"{where}: empty {path_column}; expected an image path relative to {root}")
        if label is None:
            problems.append(f"{where}: empty {label_column}; expected the image's class label")
        elif classes is not None and label not in classes:
            problems.append(f"{where}: label '{_shown(label)}' is not a class{did_you_mean(label, classes)}; expected "
                            f"one of {', '.join(classes)}")
            label = None
        if path is None:
            continue
        shown = _shown(path)
        try:  # a path the OS cannot look up is a bad row like any other, not a traceback
            if "\0" in path:
                raise ValueError("it contains a NUL byte")
            target = (root / path).resolve()
            is_file = target.is_file()
        except (OSError, ValueError, RuntimeError) as exc:  # too long, NUL, symlink loop (a RuntimeError in 3.11)
            why = "a symlink loop" if isinstance(exc, RuntimeError) else getattr(exc, "strerror", None) or str(exc)
            problems.append(f"{where}: path '{shown}' cannot be looked up ({why}); expected an image path relative "
                            f"to {root}")
            continue
        if not target.is_relative_to(real_root):
            problems.append(f"{where}: path '{shown}' leaves the dataset root {real_root} (it is {target}); expected "
                            "a path inside it")
        elif not is_file:
            problems.append(f"{where}: image '{shown}' not found (no file {root / path}); expected a path relative to "
                            f"{root}")
        elif label is not None:
            good.append((where, str(target), label))
    return good


def _shown(text: str, width: int = 80) -> str:
    """``text`` fit for a one-line message: control characters escaped, cut to ``width`` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= width else text[:width - 3] + "..."


def _label_order(labels) -> list[str]:
    """Sorted labels: numerically when all are integers (so labels 0..9 keep their numbers as indices)."""
    if all(re.fullmatch(r"[+-]?\d+", label) for label in labels):
        return sorted(labels, key=lambda label: (int(label), label))
    return sorted(labels)


def build_csv(params: LabelFileParams, preprocess: Preprocess, base_dir: Path) -> Data:
    ways = [w for w in ("split_column", "val_file", "val_fraction") if getattr(params, w) is not None]
    if len(ways) != 1:
        raise RunnerError(f"dataset csv: {' and '.join(ways) or 'no val split'} given; expected exactly one of "
                          "split_column, val_file or val_fraction")
    file = find_file(params.file, base_dir, "label file")
    val_file = find_file(params.val_file, base_dir, "val label file") if params.val_file else None
    root = find_root(params.root, base_dir) if params.root else None
    classes = [str(c).strip() for c in params.classes] if params.classes is not None else None
    twice = sorted({c for c in classes or [] if classes.count(c) > 1})
    if twice:
        raise RunnerError(f"dataset csv: classes {twice} listed more than once")
    columns = [params.path_column, params.label_column, *([params.split_column] if params.split_column else [])]
    problems: list[str] = []

    def resolved(label_file: Path, rows):
        return resolve_rows(rows, root or label_file.parent, params.path_column, params.label_column, classes,
                            problems)

    rows = read_label_file(file, columns, problems)
    if params.split_column:
        train_value, val_value = str(params.train_value), str(params.val_value)
        values = {row[params.split_column] for _, row in rows}
        for wanted in (train_value, val_value):
            if wanted not in values:
                problems.append(f"{file}: no rows with {params.split_column} '{wanted}'"
                                f"{did_you_mean(wanted, [v for v in values if v])}; the column holds "
                                f"{', '.join(sorted(v or '(empty)' for v in values)) or 'nothing'}")
        train_rows = resolved(file, [r for r in rows if r[1][params.split_column] == train_value])
        val_rows = resolved(file, [r for r in rows if r[1][params.split_column] == val_value])
    elif val_file is not None:
        train_rows = resolved(file, rows)
        val_rows = resolved(val_file, read_label_file(val_file, columns, problems))
    else:
        train_rows = resolved(file, rows)
        val_rows = []
    if problems:
        raise RunnerError(*problems)
    if classes is None:
        classes = _label_order({label for _, _, label in train_rows + val_rows})
    index = {name: i for i, name in enumerate(classes)}
    train_samples = [(path, label) for _, path, label in train_rows]
    val_samples = [(path, label) for _, path, label in val_rows]
    if params.val_fraction is not None:
        train_samples, val_samples = stratified_split(train_samples, params.val_fraction, params.seed)
    if not val_samples:
        raise RunnerError(f"{val_file or file}: the val split has no images" +
                          ("; with val_fraction, classes need two images or more" if params.val_fraction else ""))
    train_tf, val_tf = image_transforms(preprocess, params.augment)
    train = LabelledImages(root or file.parent, [(p, index[c]) for p, c in train_samples], classes, train_tf)
    val = LabelledImages(root or (val_file or file).parent, [(p, index[c]) for p, c in val_samples], classes, val_tf)
    return finish_image_files(train, val, params, preprocess, str(file))


def build_folder(params: FolderParams, preprocess: Preprocess, base_dir: Path) -> Data:
    root = find_root(params.root, base_dir)
    try:
        listing = ImageFolder(str(root))
    except FileNotFoundError as exc:
        raise RunnerError(f"dataset {root}: {exc}; expected one folder per class holding images") from None
    if {"train", "val"} <= set(listing.classes):
        raise RunnerError(f"dataset {root} holds train/ and val/ folders: use dataset imagefolder, or set root to "
                          "one folder of class folders")
    if not listing.samples:
        raise RunnerError(f"dataset {root} has no images; expected {root}/<class>/<image>")
    names = [(path, listing.classes[i]) for path, i in listing.samples]
    train, val = stratified_split(names, params.val_fraction, params.seed)
    if not val:
        raise RunnerError(f"dataset {root}: the val split has no images; classes need two images or more")
    index = listing.class_to_idx
    train_tf, val_tf = image_transforms(preprocess, params.augment)
    return finish_image_files(LabelledImages(root, [(p, index[c]) for p, c in train], listing.classes, train_tf),
                  LabelledImages(root, [(p, index[c]) for p, c in val], listing.classes, val_tf),
                  params, preprocess, str(root))


@hookimpl
def runner_datasets():
    return [Component("csv", "images listed with labels in a CSV, TSV or JSONL file; val by a column, a second file "
                             "or a fraction", build_csv, LabelFileParams),
            Component("folder", "one folder of class folders, split into train and val by a stratified fraction",
                      build_folder, FolderParams)]
