"""Fashion-MNIST feature extraction in one and in several processes, and its cost as the training set grows.

    python bench/distributed.py                    # 10k, 30k, 60k training images; 1 and 2 processes
    python bench/distributed.py --sizes 60000 --nprocs 1,2,4
    python bench/distributed.py --quick            # 1,000 and 2,000 images: a minute

Runs ``recipes/fashion_mnist_extract.yaml`` (Debian's dataset-fashion-mnist; all 10,000 test images as val) through
the real CLI, ``runner run --nproc N`` for N > 1, each in a fresh process with an empty feature cache, so the
frozen trunk's pass over every image is in the time. Prints a table (wall s, images/s, best val acc, peak memory of
the largest process) and writes the same as JSON (--json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import REPO, timed  # noqa: E402

RECIPE = "recipes/fashion_mnist_extract.yaml"
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def run(size: int, nproc: int, overrides: list[str], data_home: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, RUNNER_CACHE_DIR=str(Path(tmp) / "cache"), RUNNER_DATA_HOME=str(data_home))
        cmd = [sys.executable, "-m", "runner", "run", RECIPE, "--nproc", str(nproc),
               "--set", f"dataset.max_train={size}", "--set", f"output={tmp}/runs",
               *sum([["--set", o] for o in overrides], [])]
        wall, rss, _ = timed(cmd, env)
        (summary_file,) = Path(tmp, "runs").glob("*/summary.json")
        summary = json.loads(summary_file.read_text())
    return {"train_images": size, "processes": nproc, "wall_s": wall, "peak_mib": rss,
            "best_val_acc": summary["best_val_acc"], "epochs": summary["epochs_run"], "cache": summary["cache"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,30000,60000", help="training-set sizes (stratified subsets)")
    p.add_argument("--nprocs", default="1,2", help="process counts, each run at the largest size")
    p.add_argument("--all-nprocs", action="store_true", help="every process count at every size")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override for the recipe")
    p.add_argument("--quick", action="store_true", help="1,000 and 2,000 images, 1,000 val")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if not (DEBIAN / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"Fashion-MNIST is not at {DEBIAN}: apt install dataset-fashion-mnist")
    sizes = [1000, 2000] if args.quick else [int(s) for s in args.sizes.split(",")]
    overrides = [*args.overrides, *(["dataset.max_val=1000"] if args.quick else [])]
    nprocs = [int(n) for n in args.nprocs.split(",")]
    console = Console(width=None if sys.stdout.isatty() else 140)
    rows = []
    with tempfile.TemporaryDirectory() as data_home:
        # unpack Debian's gzipped files once, outside the timings
        subprocess.run([sys.executable, "-m", "runner", "plan", RECIPE, "--set", "dataset.max_train=100"], cwd=REPO,
                       env=dict(os.environ, RUNNER_DATA_HOME=data_home), check=True, capture_output=True)
        for size in sizes:
            for nproc in nprocs:
                if nproc == 1 or args.all_nprocs or size == sizes[-1]:
                    rows.append(run(size, nproc, overrides, Path(data_home)))
                    console.print(f"{size} images, {nproc} process(es): {rows[-1]['wall_s']:.1f} s")
    val = 1000 if args.quick else 10000
    for row in rows:
        row["images_per_s"] = (row["train_images"] + val) / row["wall_s"]  # each image's trunk pass, once
    base = {r["train_images"]: r["wall_s"] for r in rows if r["processes"] == 1}
    table = Table("train images", "processes", "wall s", "images/s (trunk pass)", "best val acc", "peak MiB",
                  "x 1 process")
    for r in rows:
        ratio = r["wall_s"] / base[r["train_images"]] if r["train_images"] in base else None
        table.add_row(str(r["train_images"]), str(r["processes"]), f"{r['wall_s']:.1f}", f"{r['images_per_s']:.0f}",
                      f"{r['best_val_acc']:.4f}", f"{r['peak_mib']:.0f}", f"{ratio:.2f}" if ratio else "")
    console.print(table)
    result = {"recipe": RECIPE, "val_images": val, "cpu_count": os.cpu_count(), "rows": rows}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
