"""The one versioned checkpoint format: every command that reads a checkpoint answers a file that is not one
(empty, foreign, a bare tensor, a pickle needing code, newer) with one line and exit 2; resume says what is
missing and never runs a run folder's plugin files unless told."""
from __future__ import annotations


import pytest
import torch
from typer.testing import CliRunner

from runner import checkpoint
from runner.cli import app
from runner.errors import RunnerError
from test_engine import write_recipe

cli = CliRunner()


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def bad_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    files = {"empty": folder / "empty.pt", "foreign": folder / "foreign.pt", "tensor": folder / "tensor.pt",
             "pickle": folder / "pickle.pt", "newer": folder / "newer.pt", "garbage": folder / "garbage.pt"}
    files["empty"].write_bytes(b"")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, files["foreign"])
    torch.save(torch.zeros(3), files["tensor"])
    torch.save({"x": Evil()}, files["pickle"])
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION + 1, "model": {}, "classes": [],
                "preprocess": {}, "recipe": {}}, files["newer"])
    files["garbage"].write_bytes(b"PK\x03\x04 not really a zip" * 10)
    return files


@pytest.mark.parametrize("kind", ["empty", "foreign", "tensor", "pickle", "newer", "garbage"])
def test_load_refuses_what_is_not_a_runner_checkpoint(tmp_path, kind, capfd):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(RunnerError) as info:
        checkpoint.load(path)
    (problem,) = info.value.problems
    assert problem.startswith(str(path)) and "weights_only" not in problem
    assert "this must never run" not in capfd.readouterr().out


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
@pytest.mark.parametrize("kind", ["empty", "foreign", "tensor", "pickle"])
def test_every_command_answers_a_bad_checkpoint_with_one_line(tmp_path, command, kind):
    path = bad_files(tmp_path / "files")[kind]
    args = [command, str(path), *([str(tmp_path)] if command == "predict" else [])]
    result = cli.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("kind", ["empty", "foreign", "tensor", "pickle"])
def test_resume_answers_a_bad_last_pt_with_one_line(tmp_path, kind):
    folder = tmp_path / "run"
    folder.mkdir()
    bad_files(tmp_path / "files")[kind].rename(folder / "last.pt")
    result = cli.invoke(app, ["resume", str(folder)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "KeyError" not in result.output and "weights_only" not in result.output


def test_resume_of_a_missing_folder_says_it_does_not_exist(tmp_path):
    result = cli.invoke(app, ["resume", str(tmp_path / "nothere")])
    assert result.exit_code == 2 and "no such run folder" in result.stderr


def test_interrupt_before_the_first_epoch_offers_no_resume(tmp_path, imagefolder):
    plugin = tmp_path / "stop_at_once.py"
    plugin.write_text("import runner.api\n\n@runner.api.hookimpl\ndef runner_batch_end(run, epoch, phase, batch, size):"
                      "\n    raise KeyboardInterrupt\n")
    result = cli.invoke(app, ["--plugin", str(plugin), "run", write_recipe(tmp_path, imagefolder)])
    assert result.exit_code == 130 and "nothing to resume" in result.stderr
    assert "runner resume" not in result.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    again = cli.invoke(app, ["resume", str(folder)])
    assert again.exit_code == 2 and "before its first epoch ended" in again.stderr


def test_resume_does_not_run_a_run_folders_plugin_files_unless_named(tmp_path, imagefolder):
    plugin = tmp_path / "marker.py"
    marker = tmp_path / "ran.txt"
    plugin.write_text("import pathlib\nimport runner.api\n"
                      f"pathlib.Path({str(marker)!r}).write_text('x')\n\n"
                      "@runner.api.hookimpl\ndef runner_batch_end(run, epoch, phase, batch, size):\n"
                      "    if epoch == 2:\n        raise KeyboardInterrupt\n")
    recipe = write_recipe(tmp_path, imagefolder, epochs=3, plugins=["marker.py"])
    assert cli.invoke(app, ["run", recipe]).exit_code == 130
    marker.unlink()
    (folder,) = (tmp_path / "runs").iterdir()
    refused = cli.invoke(app, ["resume", str(folder)])
    assert refused.exit_code == 2 and "--plugin" in refused.stderr and "marker.py" in refused.stderr
    assert not marker.exists()  # nothing of the folder's plugin ran


def test_checkpoints_carry_format_and_version(tmp_path, imagefolder):
    result = cli.invoke(app, ["run", write_recipe(tmp_path, imagefolder, epochs=1)])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    for name, kind in (("best.pt", "best"), ("last.pt", "last")):
        state = checkpoint.load(folder / name, kind)
        assert state["format"] == checkpoint.FORMAT and state["version"] == checkpoint.VERSION
        assert state["kind"] == kind
    with pytest.raises(RunnerError, match="not a last.pt to resume from"):
        torch.save({k: v for k, v in checkpoint.load(folder / "best.pt").items() if k != "optimizer"},
                   tmp_path / "x.pt")
        checkpoint.load(tmp_path / "x.pt", "last")


def test_evaluate_prints_its_result_before_a_picture_it_cannot_write(tmp_path, imagefolder):
    result = cli.invoke(app, ["run", write_recipe(tmp_path, imagefolder, epochs=1)])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    (folder / "confusion.png").mkdir()  # the picture cannot be written where it goes
    done = cli.invoke(app, ["evaluate", str(folder), "--json"])
    assert done.exit_code == 0, done.output
    import json
    assert 0 <= json.loads(done.stdout.splitlines()[0])["accuracy"] <= 1
    assert "warning:" in done.stderr and "confusion.png" in done.stderr and "disk full" not in done.stderr


def test_quick_epochs_are_written_together_and_a_stop_writes_what_is_held(tmp_path):
    """The writer puts the first epoch on disk at once, holds quicker ones in memory (copies: later steps do not
    change them) and writes them when a write is due or the run stops (flush)."""
    import torch

    from runner.checkpoint import FORMAT, VERSION, Writer, load

    def state(kind, epoch, tensor):  # as last_state makes it: the weights cloned, the optimizer's state live
        return {"format": FORMAT, "version": VERSION, "kind": kind, "model": {"w": tensor.clone()}, "classes": ["a"],
                "preprocess": {}, "recipe": {}, "epoch": epoch, "optimizer": {"momentum": tensor}}

    writer = Writer(tmp_path, every_s=3600)
    weights = torch.zeros(3)
    writer.put("best", state("best", 1, weights.clone()))
    writer.put("last", state("last", 1, weights))
    assert load(tmp_path / "best.pt")["epoch"] == 1 and load(tmp_path / "last.pt")["epoch"] == 1
    weights += 1
    writer.put("last", state("last", 2, weights))
    weights += 1  # the optimizer goes on after the epoch: the held copy keeps epoch 2's values
    assert load(tmp_path / "last.pt")["epoch"] == 1  # held, not yet written
    writer.flush()
    saved = load(tmp_path / "last.pt")
    assert saved["epoch"] == 2 and saved["model"]["w"].tolist() == [1.0, 1.0, 1.0]
    assert saved["optimizer"]["momentum"].tolist() == [1.0, 1.0, 1.0]
    due = Writer(tmp_path / "due", every_s=0)
    (tmp_path / "due").mkdir()
    due.put("last", state("last", 5, weights))
    assert load(tmp_path / "due" / "last.pt")["epoch"] == 5  # a write that is due happens at once
