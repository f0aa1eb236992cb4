"""Fashion-MNIST with a frozen EfficientNet-Lite0: what resolution costs and gains, and SGD epochs against a linear
probe solved by L-BFGS, on the same cached features.

    python bench/fashion_mnist.py                     # Debian's dataset-fashion-mnist (apt install dataset-fashion-mnist)
    python bench/fashion_mnist.py --train 10000 --small 2000 --json out.json

Rows, each ``runner run recipes/fashion_mnist_extract.yaml`` in a fresh process with an empty feature cache, timed
end to end: the recipe as it is (64 px, AdamW epochs on cached features) and with ``head_solver: lbfgs`` on
``--train`` training images and all 10,000 test images as val; then 64 px against 224 px on a ``--small`` subset of
each split (224 px costs ~12x the compute per image). Prints the CPU, a table and the same as JSON. The runs share
one ONNX trunk folder, empty when the benchmark starts (a user's ``~/.cache/runner/onnx`` is kept between runs): the
first run at a resolution pays for that export, and its row says so.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOT = Path("/usr/share/datasets/fashion-mnist")


def run(overrides: list[str], exports: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, RUNNER_CACHE_DIR=str(Path(tmp) / "cache" / "features"),
                   RUNNER_DATA_HOME=str(Path(tmp) / "data"), RUNNER_ONNX_CACHE=str(exports))
        command = [sys.executable, "-m", "runner", "run", "recipes/fashion_mnist_extract.yaml", "--set",
                   f"output={tmp}/runs", "--set", "pictures=false", *sum([["--set", o] for o in overrides], [])]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
        (summary,) = Path(tmp, "runs").glob("*/summary.json")
        result = json.loads(summary.read_text())
    return {"overrides": overrides, "wall_s": round(wall, 1), "best_val_acc": result["best_val_acc"],
            "final_val_acc": result["final_val_acc"], "cache": result["cache"], "trunk_pass": result["trunk_pass"],
            "solver": result.get("head_solver")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10000, help="training images of the solver rows")
    parser.add_argument("--small", type=int, default=2000, help="train and val images of the resolution rows")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not ROOT.is_dir():
        raise SystemExit(f"{ROOT} not found: apt install dataset-fashion-mnist")
    sys.path.insert(0, str(REPO))
    from runner import hardware

    full = [f"dataset.max_train={args.train}"]
    small = [f"dataset.max_train={args.small}", f"dataset.max_val={args.small}"]
    with tempfile.TemporaryDirectory() as exports:
        rows = [
            ("64 px, AdamW 10 epochs", run(full, Path(exports))),
            ("64 px, L-BFGS probe", run([*full, "head_solver=lbfgs"], Path(exports))),
            (f"64 px, {args.small}/{args.small}", run(small, Path(exports))),
            (f"224 px, {args.small}/{args.small}", run([*small, "dataset.image_size=224"], Path(exports))),
        ]
    print(f"CPU: {hardware.cpu_summary()}")
    print(f"{'row':<28} {'wall s':>7} {'best val':>9} {'final val':>9}  how")
    for name, row in rows:
        trunk = row["trunk_pass"]
        how = f"{trunk['runtime']} ({trunk['why']}), {trunk['seconds']} s" if trunk else "features from the cache"
        print(f"{name:<28} {row['wall_s']:>7.1f} {row['best_val_acc']:>9.4f} {row['final_val_acc']:>9.4f}  {how}")
    result = {"cpu": hardware.cpu_summary(), "rows": [{"row": name, **row} for name, row in rows]}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
