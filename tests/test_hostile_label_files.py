"""Hostile label files: rows whose path the OS cannot look up (a NUL byte, a name too long, a symlink loop) are bad
rows reported as file:LINE like the others, and fuzzed rows give a dataset or a RunnerError, nothing else."""
from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.types import Preprocess
from runner.errors import RunnerError
from runner.plugins import load_catalog
from test_label_files import write_labels


@functools.cache
def csv_dataset():
    return load_catalog().get("dataset", "csv")  # once: a catalog takes a moment to build


def build(base_dir, **params):
    component = csv_dataset()
    return component.build(component.params(**params), Preprocess(size=32, resize=36), base_dir)


def _problems(call) -> list[str]:
    with pytest.raises(RunnerError) as info:
        call()
    assert all("\n" not in p for p in info.value.problems)
    return info.value.problems


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_nul_byte_long_name_and_symlink_loop_are_file_line_problems(imagefolder, tmp_path, suffix):
    os.symlink("loop_b", imagefolder / "loop_a")
    os.symlink("loop_a", imagefolder / "loop_b")
    rows = [("train/cats/cats_0.jpg", "cats", "train"), ("val/cats/cats_0.jpg", "cats", "val"),
            ("train/cats/a\0b.jpg", "cats", "train"),
            ("train/" + "x" * 300 + ".jpg", "dogs", "train"),
            ("loop_a/cats_0.jpg", "dogs", "val"),
            ("loop_a", "dogs", "val")]
    labels = write_labels(imagefolder / f"labels{suffix}", rows)
    problems = _problems(lambda: build(tmp_path, file=str(labels), split_column="split"))
    first = 4 if suffix == ".csv" else 3  # after the header line
    assert [p.split(": ")[0] for p in problems] == [f"{labels}:{first + n}" for n in range(4)]
    assert "a\\x00b.jpg' cannot be looked up (it contains a NUL byte)" in problems[0]
    assert "cannot be looked up (File name too long)" in problems[1] and "xxx...'" in problems[1]
    assert len(problems[1]) < 400
    assert "cannot be looked up (a symlink loop)" in problems[2] and "(a symlink loop)" in problems[3]


def test_a_nul_byte_in_a_label_is_escaped_in_the_message(imagefolder, tmp_path):
    rows = [("train/cats/cats_0.jpg", "ca\0ts", "train"), ("val/cats/cats_0.jpg", "cats", "val")]
    labels = write_labels(imagefolder / "labels.csv", rows)
    problems = _problems(lambda: build(tmp_path, file=str(labels), split_column="split",
                                       classes=["cats", "dogs"]))
    assert problems == [f"{labels}:2: label 'ca\\x00ts' is not a class (did you mean 'cats'?); expected one of "
                        "cats, dogs"]


cells = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["train/cats/cats_0.jpg", "val/dogs/dogs_1.jpg", "../x", "/etc/passwd", "cats", "dogs", "train", "val",
     "x" * 300, "a\0b", "loop", "loop/x", ""])
json_values = cells | st.integers(-3, 3) | st.none() | st.booleans() | st.floats() | st.lists(cells, max_size=2)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]),
       rows=st.lists(st.tuples(json_values, json_values, json_values), max_size=6),
       header=st.sampled_from([("path", "label", "split"), ("path", "labl", "split"), ("a\0", "", "\n")]))
def test_fuzzed_rows_load_or_raise_the_projects_error(imagefolder, tmp_path, suffix, rows, header):
    if not (imagefolder / "loop").is_symlink():
        os.symlink("loop", imagefolder / "loop")
    labels = write_labels(imagefolder / f"fuzz{suffix}", rows, header)
    try:
        data = build(tmp_path, file=str(labels), split_column="split")
    except RunnerError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)
    else:
        assert len(data.train) and len(data.val)
