"""Side-by-side benchmark: the tutorial's reference loop and runner's recipes on the same data, in one run.

    python bench/compare.py                      # extract, finetune (25 epochs) and finetune_fast, ants/bees
    python bench/compare.py --short              # extract and probe against the tutorial loop's extract, the loop
                                                 # timed for 3 epochs and scaled to 25 (a few minutes on 2 cores)
    python bench/compare.py --methods extract,probe --reference-wall 344 --reference-acc 0.954
                                                 # a reference figure measured before, not rerun
    python bench/compare.py --methods extract --scale 1,2,4   # and how the extract recipe grows with the set
    python bench/compare.py --device cuda        # the same on a GPU (the tutorial loop takes cuda:0 by itself)
    python bench/compare.py --quick              # seconds: 1 epoch on a small generated set (CI smoke)
    python bench/compare.py --seeds 3            # each recipe with seeds 0, 1, 2: accuracy as mean ± std
    python bench/compare.py --methods gradual --own-epochs   # gradual.yaml for its own 10 epochs, not the loop's 25

Prints the CPU it ran on (model, cores, avx2 / avx512_bf16 / amx flags; the GPU with --device cuda), then a table
(wall s, images/s, best val acc, the precision each run chose, peak memory, time as a fraction of the reference's)
and writes the same as JSON (--json). Each run is a fresh process, timed end to end, its peak RSS read from wait4;
our runs start with an empty feature cache so nothing carries over between them. The trunk's ONNX export is not
features but a compiled form of the weights, kept across runs as a user's ``~/.cache/runner/onnx`` keeps it: one
folder, empty when the benchmark starts, shared by its runs (--fresh-export: a new one per run), and each run's
trunk runtime is printed (which run paid for an export).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "bench" / "tutorial_loop.py"
DATA = REPO.parent / "shared" / "data" / "hymenoptera_data"


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``cmd``; its wall seconds, peak RSS in MiB (itself and waited-for children) and stdout."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text


def device_env(device: str) -> dict[str, str]:
    """The environment for every run: ``--device cpu`` hides GPUs (the tutorial loop takes cuda:0 when it sees one)."""
    return dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}))


def machine(device: str) -> dict:
    """What the figures were measured on: the CPU (model, cores, the flags that decide oneDNN's kernels and bf16
    speed) and, on CUDA, the GPU."""
    sys.path.insert(0, str(REPO))
    from runner import hardware

    info = {"cpu": hardware.cpu_summary(), "cpu_flags": [f for f in hardware.SPEED_FLAGS if f in hardware.cpu_flags()],
            "fast_bf16_cpu": hardware.cpu_has_fast_bf16(), "device": device}
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device here")
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def reference(method: str, data: Path, epochs: int, backbone: str, device: str, run_epochs: int | None = None) -> dict:
    """The tutorial loop for ``epochs``; with ``run_epochs`` fewer, it runs those and its training time is scaled
    to ``epochs`` (every epoch of the loop is the same work), marked as an estimate."""
    run_epochs = run_epochs or epochs
    cmd = [sys.executable, str(REFERENCE), "--mode", method, "--backbone", backbone, "--epochs", str(run_epochs),
           "--data", str(data)]
    wall, rss, out = timed(cmd, device_env(device))
    result = json.loads(out.strip().splitlines()[-1])
    row = {"best_val_acc": result["best_val_acc"], "wall_s": wall, "peak_mib": rss, "precision": "fp32",
           "epochs": epochs}
    if run_epochs != epochs:
        row["wall_s"] = wall + result["train_s"] * (epochs / run_epochs - 1)
        row["note"] = (f"est.: {run_epochs} epochs run ({wall:.1f} s, best val acc {result['best_val_acc']:.4f} "
                       f"after {run_epochs}), training time scaled to {epochs}")
    return row


def ours(recipe: str, data: Path, epochs: int | None, overrides: list[str], device: str,
         exports: Path | None = None) -> dict:
    """A recipe run to the end (its own epochs when ``epochs`` is None), with a cold feature cache; ONNX trunks
    kept in ``exports`` (default: a new folder of its own)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(device_env(device), RUNNER_DATA_PATH=str(data.parent), RUNNER_CACHE_DIR=str(Path(tmp) / "cache"),
                   RUNNER_ONNX_CACHE=str(exports or Path(tmp) / "onnx"))
        cmd = [sys.executable, "-m", "runner", "run", recipe, *(["--set", f"epochs={epochs}"] if epochs else []),
               "--set", f"dataset.root={data.name}", "--set", f"output={tmp}/runs", "--set", f"device={device}",
               *sum([["--set", o] for o in overrides], [])]
        wall, rss, _ = timed(cmd, env)
        (summary_file,) = Path(tmp, "runs").glob("*/summary.json")
        summary = json.loads(summary_file.read_text())
    return {"best_val_acc": summary["best_val_acc"], "final_val_acc": summary.get("final_val_acc"),
            "wall_s": wall, "peak_mib": rss, "cache": summary["cache"], "epochs": summary["epochs_run"],
            "precision": summary["precision"], "runtime": trunk_runtime(summary)}


def trunk_runtime(summary: dict) -> str | None:
    """What ran a run's frozen-trunk pass and why (summary.json's ``trunk_pass``); None where no pass ran."""
    trunk_pass = summary.get("trunk_pass")
    return f"{trunk_pass['runtime']} ({trunk_pass['why']})" if trunk_pass else None


def over_seeds(runs: list[dict]) -> dict:
    """One row for a recipe run with seeds 0..N-1: mean wall time and peak memory, best and final val accuracy as
    mean and sample standard deviation (so a one-image difference is read against the seed-to-seed spread)."""
    import statistics

    if len(runs) == 1:
        return runs[0]
    row = dict(runs[0])

    def spread(key):
        values = [r[key] for r in runs]
        return statistics.mean(values), statistics.stdev(values)

    row["best_val_acc"], row["best_std"] = spread("best_val_acc")
    row["final_mean"], row["final_std"] = spread("final_val_acc")
    row["wall_s"] = statistics.mean(r["wall_s"] for r in runs)
    row["wall_s_each"] = [round(r["wall_s"], 1) for r in runs]
    row["runtime_each"] = [r["runtime"] for r in runs]
    row["peak_mib"] = max(r["peak_mib"] for r in runs)
    row["seeds"] = len(runs)
    return row


def count_images(data: Path) -> tuple[int, int]:
    exts = {".jpg", ".jpeg", ".png"}
    return tuple(sum(1 for p in (data / split).rglob("*") if p.suffix.lower() in exts) for split in ("train", "val"))


def repeated(data: Path, times: int, into: Path) -> Path:
    """``data`` with each training image linked ``times`` times (val unchanged): the same set, ``times`` as big."""
    root = into / f"{data.name}_x{times}"
    for image in (data / "train").rglob("*"):
        if image.is_file():
            for k in range(times):
                target = root / image.relative_to(data).parent / f"{k}_{image.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(image.resolve())
    (root / "val").symlink_to((data / "val").resolve())
    return root


def tiny_data(into: Path) -> Path:
    from PIL import Image

    rng = random.Random(0)
    root = into / "tiny"
    for split, n in (("train", 8), ("val", 4)):
        for c, colour in enumerate([(220, 40, 40), (40, 40, 220)]):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                image = Image.new("RGB", (64, 48), colour)
                for _ in range(80):
                    image.putpixel((rng.randrange(64), rng.randrange(48)), tuple(rng.randrange(256) for _ in "rgb"))
                image.save(folder / f"{i}.jpg")
    return root


def tutorial_method(method: str) -> str:
    """The tutorial method a recipe is held to: fine-tuning recipes to its fine-tune loop, the rest to extract."""
    return "finetune" if method.startswith(("finetune", "gradual")) else "extract"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--methods", default=None,
                   help="our recipes; each is timed against the tutorial loop of its method (extract or finetune); "
                        "default extract,finetune,finetune_fast (--short: extract,probe)")
    p.add_argument("--scale", default="", help="comma-separated multiples of the training set for the extract recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override for our recipes")
    p.add_argument("--device", default="cpu", help="cpu (GPUs hidden from every run) or cuda")
    p.add_argument("--short", action="store_true",
                   help="extract and probe; the tutorial loop runs --reference-epochs (default 3) and is scaled")
    p.add_argument("--reference-epochs", type=int, default=None,
                   help="run the tutorial loop for this many epochs and scale its training time to --epochs")
    p.add_argument("--reference-wall", type=float, default=None,
                   help="do not run the tutorial loop: its wall seconds measured before on this kind of machine")
    p.add_argument("--reference-acc", type=float, default=None, help="with --reference-wall: its best val acc")
    p.add_argument("--quick", action="store_true", help="1 epoch on a small generated set")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--own-epochs", action="store_true",
                   help="run every recipe for the epochs it sets (by default all but the _fast ones run --epochs, "
                        "the loop's)")
    p.add_argument("--fresh-export", action="store_true",
                   help="give each of our runs its own empty ONNX trunk folder (default: one for the whole benchmark)")
    p.add_argument("--seeds", type=int, default=1, help="run each recipe with seeds 0..N-1: mean wall time, best and "
                                                        "final val acc as mean ± std")
    args = p.parse_args()
    if not REFERENCE.is_file() and args.reference_wall is None:
        raise SystemExit(f"the reference loop is not at {REFERENCE}")
    methods = args.methods or ("extract,probe" if args.short else "extract,finetune,finetune_fast")
    reference_epochs = args.reference_epochs or (3 if args.short else None)
    console = Console(width=None if sys.stdout.isatty() else 140)
    where = machine(args.device)
    console.print(f"CPU: {where['cpu']} (fast bf16: {'yes' if where['fast_bf16_cpu'] else 'no'}); device: "
                  f"{args.device}{' (' + where['gpu'] + ')' if 'gpu' in where else ''}", highlight=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        exports = None if args.fresh_export else Path(tmp) / "onnx"
        data = tiny_data(Path(tmp)) if args.quick else args.data
        epochs = 1 if args.quick else args.epochs
        n_train, n_val = count_images(data)
        references: dict[str, dict] = {}
        for method in methods.split(","):
            mode = tutorial_method(method)
            if mode not in references:
                if args.reference_wall is not None:
                    ref = {"best_val_acc": args.reference_acc, "wall_s": args.reference_wall, "peak_mib": None,
                           "precision": "fp32", "epochs": epochs, "note": "given (--reference-wall), not run"}
                else:
                    ref = reference(mode, data, epochs, "lite0", args.device,
                                    min(reference_epochs, epochs) if reference_epochs else None)
                references[mode] = ref
                rows.append({"method": mode, "who": "tutorial loop", "images": n_train, **ref})
            ref = references[mode]
            own = args.own_epochs or method.endswith("_fast")
            runs = [ours(f"recipes/{method}.yaml", data, None if own else epochs,
                         [*args.overrides, f"seed={seed}"], args.device, exports) for seed in range(args.seeds)]
            mine = over_seeds(runs)
            rows.append({"method": method, "who": f"runner {method}.yaml", "images": n_train, **mine,
                         "vs_reference": mine["wall_s"] / ref["wall_s"]})
        for times in [int(t) for t in args.scale.split(",") if t]:
            big = repeated(data, times, Path(tmp))
            mine = ours("recipes/extract.yaml", big, epochs, args.overrides, args.device, exports)
            rows.append({"method": f"extract x{times}", "who": "runner extract.yaml", "images": n_train * times, **mine})
    for row in rows:
        row["images_per_s"] = (row["images"] + n_val) * row.get("epochs", epochs) / row["wall_s"]
    table = Table("method", "who", "train images", "wall s", "img/s", "best val acc", "precision", "peak MiB",
                  "x reference")
    for r in rows:
        acc = "" if r["best_val_acc"] is None else f"{r['best_val_acc']:.4f}"
        if "best_std" in r:
            acc = f"{r['best_val_acc']:.4f} ± {r['best_std']:.4f} (final {r['final_mean']:.4f} ± {r['final_std']:.4f})"
        table.add_row(r["method"], r["who"], str(r["images"]), f"{r['wall_s']:.1f}{' est.' if 'note' in r else ''}",
                      f"{r['images_per_s']:.0f}", acc, _precision(r["precision"]),
                      "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}",
                      f"{r['vs_reference']:.3f}" if "vs_reference" in r else "")
    console.print(table)
    for r in rows:
        if "note" in r:
            console.print(f"{r['who']} ({r['method']}): {r['note']}", highlight=False)
        for seed, (wall, runtime) in enumerate(zip(r.get("wall_s_each", [r["wall_s"]]),
                                                   r.get("runtime_each", [r.get("runtime")]))):
            if runtime is not None:
                console.print(f"{r['who']} ({r['method']}) seed {seed}: {wall:.1f} s, trunk pass in {runtime}",
                              highlight=False)
    result = {"epochs": epochs, "data": str(data if not args.quick else "generated"), "cpu_count": os.cpu_count(),
              **where, "load_average": os.getloadavg(), "rows": rows}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _precision(note: str) -> str:
    """'train fp32 (measured img/s: ...), eval bf16' -> 'train fp32, eval bf16'."""
    import re

    return re.sub(r" \(measured[^)]*\)", "", note)


if __name__ == "__main__":
    main()
