"""What the tuning tools buy on ants/bees: the lr finder against the tutorial's lr, and a small lr grid sweep.

    python bench/toolbox.py                      # finetune.yaml at lr 0.001 and at lr auto (25 epochs), then
                                                 # a 3-trial extract.yaml sweep over optimizer.lr
    python bench/toolbox.py --quick              # the same at 3 epochs (a few minutes: a smoke run)
    python bench/toolbox.py --json out.json      # also write the results as JSON

Every run is the real CLI in a fresh process (``runner run`` / ``runner sweep``), timed end to end (start-up and,
for lr auto, the lr range test included), its peak RSS read from wait4, with an empty feature cache and a fresh
output folder. Results come from the run folders: summary.json, recipe.yaml (the lr actually trained with),
lr_find.json, and the sweep's leaderboard.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import DATA, timed  # noqa: E402  (bench/ is not a package: the sibling script's helpers)

FIXED_LR = 0.001
"""The tutorial's lr, as in recipes/finetune.yaml."""
SWEEP_LRS = "0.01,0.003,0.001"


def _env(data: Path, tmp: Path) -> dict[str, str]:
    return dict(os.environ, RUNNER_DATA_PATH=str(data.parent), RUNNER_CACHE_DIR=str(tmp / "cache"))


def _common(data: Path, epochs: int | None, out: Path, overrides: list[str]) -> list[str]:
    sets = [f"dataset.root={data.name}", f"output={out}", *([f"epochs={epochs}"] if epochs else []), *overrides]
    return [w for s in sets for w in ("--set", s)]


def _lr_find_summary(path: Path) -> dict | None:
    """lr_find.json boiled down: the suggestion and how it was chosen, where the loss bottomed out, the curve."""
    if not path.exists():
        return None
    found = json.loads(path.read_text())
    losses, lrs = found["losses"], found["lrs"]
    low = lrs.index(min(lrs, key=lambda lr: abs(lr - 10 * found["suggestion"])))  # the finder's minimum
    return {"suggestion": found["suggestion"], "how": found["how"], "steepest": found["steepest"],
            "stopped": found["stopped"], "steps": len(lrs), "lr_at_min_loss": lrs[low], "min_loss": losses[low],
            "first_loss": losses[0], "last_lr": lrs[-1], "last_loss": losses[-1], "lrs": lrs, "losses": losses}


def finetune(data: Path, epochs: int | None, lr: str, overrides: list[str]) -> dict:
    """recipes/finetune.yaml with ``optimizer.lr=lr``, one ``runner run`` process."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "runner", "run", "recipes/finetune.yaml",
               *_common(data, epochs, tmp / "runs", [f"optimizer.lr={lr}", *overrides])]
        wall, rss, _ = timed(cmd, _env(data, tmp))
        (folder,) = (p.parent for p in (tmp / "runs").glob("*/summary.json"))
        summary = json.loads((folder / "summary.json").read_text())
        resolved = yaml.safe_load((folder / "recipe.yaml").read_text())
        found = _lr_find_summary(folder / "lr_find.json")
        epochs_log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
    return {"experiment": "lr finder", "run": f"finetune.yaml lr={lr}", "lr_setting": lr,
            "lr": resolved["optimizer"]["lr"], "best_val_acc": summary["best_val_acc"],
            "best_epoch": summary["best_epoch"], "epochs": summary["epochs_run"], "wall_s": wall,
            "train_s": summary["wall_s"], "peak_mib": rss,
            "val_acc_per_epoch": [e["val_acc"] for e in epochs_log],
            "seconds_per_epoch": [round(e["seconds"], 2) for e in epochs_log], "lr_find": found}


def sweep(data: Path, epochs: int | None, lrs: str, overrides: list[str]) -> dict:
    """``runner sweep recipes/extract.yaml --grid optimizer.lr=...`` in one process; the trials from its
    leaderboard.json (each trial's wall_s is its run's own, from summary.json: no process start-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "runner", "sweep", "recipes/extract.yaml", "--grid", f"optimizer.lr={lrs}",
               *_common(data, epochs, tmp / "runs", overrides)]
        wall, rss, _ = timed(cmd, _env(data, tmp))
        (board,) = (tmp / "runs").glob("*/leaderboard.json")
        rows = json.loads(board.read_text())["rows"]
    trials = [{"trial": r["trial"], "lr": r["overrides"]["optimizer.lr"], "best_val_acc": r["best_val_acc"],
               "best_epoch": r["best_epoch"], "train_s": r["wall_s"], "status": r["status"]}
              for r in sorted(rows, key=lambda r: r["trial"])]
    return {"grid": f"optimizer.lr={lrs}", "wall_s": wall, "trials_s": sum(t["train_s"] or 0 for t in trials),
            "peak_mib": rss, "trials": trials,
            "best": max(trials, key=lambda t: -1 if t["best_val_acc"] is None else t["best_val_acc"])}


def _without_curve(row: dict) -> dict:
    found = row["lr_find"] and {k: v for k, v in row["lr_find"].items() if k not in ("lrs", "losses")}
    return {**row, "lr_find": found}


def _f(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--epochs", type=int, help="epochs for every run (default: each recipe's own, 25)")
    p.add_argument("--lrs", default=SWEEP_LRS, help="the sweep's optimizer.lr grid for extract.yaml")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: lr, sweep")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override for every run")
    p.add_argument("--quick", action="store_true", help="3 epochs per run: a smoke run of a few minutes")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no data at {args.data}")
    epochs = 3 if args.quick else args.epochs
    skip = {s for s in args.skip.split(",") if s}
    console = Console(width=None if sys.stdout.isatty() else 140)

    runs: list[dict] = []
    if "lr" not in skip:
        for lr in (str(FIXED_LR), "auto"):
            runs.append(finetune(args.data, epochs, lr, args.overrides))
        fixed, auto = runs
        # the finder's cost: the extra end-to-end time that training itself does not account for
        auto["lr_find_s"] = (auto["wall_s"] - auto["train_s"]) - (fixed["wall_s"] - fixed["train_s"])
    swept = None if "sweep" in skip else sweep(args.data, epochs, args.lrs, args.overrides)

    table = Table("experiment", "run", "lr", "best val acc", "epoch", "train s", "wall s", "peak MiB", "note",
                  title=f"{args.data.name}, {epochs or 'recipe'} epochs, {os.cpu_count()} CPUs", title_justify="left")
    for r in runs:
        note = ""
        if r["lr_find"] is not None:
            f = r["lr_find"]
            note = (f"finder ~{r['lr_find_s']:.0f} s; loss min at {f['lr_at_min_loss']:.3g}; steepest "
                    f"{_f(f['steepest'], '.3g') or '-'}; {f['stopped']}")
        table.add_row(r["experiment"], r["run"], f"{r['lr']:.3g}", f"{r['best_val_acc']:.4f}", str(r["best_epoch"]),
                      f"{r['train_s']:.1f}", f"{r['wall_s']:.1f}", f"{r['peak_mib']:.0f}", note)
    if swept is not None:
        if runs:
            table.add_section()
        for t in swept["trials"]:
            table.add_row("sweep", f"extract.yaml trial {t['trial']}", f"{t['lr']:.3g}", _f(t["best_val_acc"], ".4f"),
                          _f(t["best_epoch"], "d"), _f(t["train_s"], ".1f"), "", "",
                          ("best; " if t is swept["best"] else "") + ("" if t["status"] == "done" else t["status"]))
        table.add_row("sweep", f"runner sweep ({len(swept['trials'])} trials)",
                      f"{swept['best']['lr']:.3g}", _f(swept["best"]["best_val_acc"], ".4f"), "",
                      f"{swept['trials_s']:.1f}", f"{swept['wall_s']:.1f}", f"{swept['peak_mib']:.0f}",
                      "whole command; train s = sum of trials")
    console.print(table)
    result = {"epochs": epochs or "recipe", "data": str(args.data), "cpu_count": os.cpu_count(),
              "overrides": args.overrides, "finetune": runs, "sweep": swept}
    print(json.dumps({**result, "finetune": [_without_curve(r) for r in runs]}))  # the curve only in --json
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
