"""Where the seconds of one ``runner run`` go: a timeline from process start to exit, one fresh process per run.

    RUNNER_DATA_PATH=../shared/data python bench/startup.py                 # recipes/extract.yaml, 3 runs
    python bench/startup.py recipes/probe.yaml --runs 1 --set epochs=1

Each mark is seconds since the process started (``/proc/self/stat``'s start time), taken by wrapping runner's own
functions, so the same script times an older checkout (``PYTHONPATH=old_checkout``) as long as those names exist:
imports done, recipe and plugins loaded, backbone built, first image decoded, build done (dataset preloaded,
precision decided), features extracted, epochs done, exit. The fixed cost of a run is everything before the
first image is decoded. Each run starts with an empty feature cache; the runs share one ONNX trunk folder, empty
when the benchmark starts (as a user's ``~/.cache/runner/onnx`` is kept between runs; ``--fresh-export``: one per
run), and the trunk runtime each run used is printed under the table.

Beside each run, a bare process that only imports what any torch training with this backbone imports (torch,
torchvision, timm, and ``torch._dynamo``, which torchvision's ops and torch's optimizers import) gives the floor no
runner change can go under; ``runner's own`` is the first decoded image minus that floor: the part of the fixed
cost that is runner's (recipe, plugins, building, fingerprinting, and runner's other imports). ``--json``: the same
marks as JSON.
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


def _started_ago() -> float:
    """Seconds between this process's start (``/proc/self/stat``) and now."""
    ticks = os.sysconf("SC_CLK_TCK")
    start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    return float(Path("/proc/uptime").read_text().split()[0]) - start


_T0 = time.perf_counter()
_AGO = _started_ago()


def since_start() -> float:
    """Seconds since this process started (its interpreter's start-up included)."""
    return _AGO + time.perf_counter() - _T0


def timeline(recipe: str, overrides: list[str], output: str) -> dict:
    marks = {"interpreter": since_start()}

    def mark(name):
        marks.setdefault(name, since_start())

    def wrap(owner, attr, before=None, after=None):
        original = getattr(owner, attr)

        def wrapped(*args, **kwargs):
            if before:
                mark(before)
            result = original(*args, **kwargs)
            if after:
                mark(after)
            return result

        setattr(owner, attr, wrapped)

    import importlib

    import runner.cli  # noqa: F401  (what `runner` imports first)
    import runner.engine as engine
    import torch  # noqa: F401

    build = importlib.import_module("runner.engine.build")
    loop = importlib.import_module("runner.engine.loop")
    imagedata = importlib.import_module("runner.imagedata")  # its MemoryLoader decodes through read_rgb
    session = importlib.import_module("runner.session")
    mark("imports")
    wrap(session, "load", after="recipe + plugins loaded")
    original_make = build.Components.make

    def make(self, kind, *args, **kwargs):
        made = original_make(self, kind, *args, **kwargs)
        if kind == "backbone":
            mark("backbone built")
        return made

    build.Components.make = make
    wrap(imagedata, "read_rgb", before="first image decoded")
    wrap(engine, "build", after="build done")
    wrap(build, "use_cached_features", after="features extracted")
    wrap(loop, "_epochs", after="epochs done")
    wrap(loop, "save_json", after="summary written")  # then the run-end hooks: pictures
    wrap(loop, "fit", after="run-end hooks done")
    from runner.cli import app

    sys.argv = ["runner", "run", recipe, "--set", f"output={output}", *sum([["--set", o] for o in overrides], [])]
    try:
        app(prog_name="runner")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    mark("exit")
    summaries = list(Path(output).glob("*/summary.json"))
    if summaries:
        marks["cache"] = json.loads(summaries[0].read_text()).get("cache", "")
    return marks


FLOOR = "import torch, torchvision, timm, torch._dynamo"
"""What the floor process runs: the imports every torch training with a timm backbone pays (the tutorial's loop
pays all but timm's)."""


def floor(env: dict) -> float:
    """Seconds from a fresh interpreter's start to the end of :data:`FLOOR`, measured inside it."""
    out = subprocess.run([sys.executable, __file__, "--floor-child"], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", nargs="?", default="recipes/extract.yaml")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--fresh-export", action="store_true", help="an empty ONNX trunk folder for each run")
    p.add_argument("--json", type=Path, help="write every run's marks here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--floor-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.floor_child:
        exec(FLOOR)
        print(since_start())
        return
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["RUNNER_CACHE_DIR"] = str(Path(tmp) / "cache")
            with open(os.devnull, "w") as quiet:
                stdout, sys.stdout = sys.stdout, quiet
                try:
                    marks = timeline(args.recipe, args.overrides, str(Path(tmp) / "runs"))
                finally:
                    sys.stdout = stdout
        print(json.dumps(marks))
        return
    env = dict(os.environ)
    shared = REPO.parent / "shared" / "data"
    if "RUNNER_DATA_PATH" not in env and shared.is_dir():
        env["RUNNER_DATA_PATH"] = str(shared)
    runs = []
    with tempfile.TemporaryDirectory() as exports:
        for run in range(args.runs):
            env["RUNNER_ONNX_CACHE"] = str(Path(exports) / (str(run) if args.fresh_export else "shared"))
            out = subprocess.run([sys.executable, __file__, args.recipe, "--child",
                                  *sum([["--set", o] for o in args.overrides], [])],
                                 env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            runs[-1]["floor: bare imports"] = floor(env)
            if "first image decoded" in runs[-1]:
                runs[-1]["runner's own"] = runs[-1]["first image decoded"] - runs[-1]["floor: bare imports"]
    notes = [r.pop("cache", "") for r in runs]
    names = list(runs[0])
    print(f"{'mark':>26}  " + "  ".join(f"run {i + 1:>2}" for i in range(len(runs))) + "   (s since process start)")
    for name in names:
        print(f"{name:>26}  " + "  ".join(f"{r.get(name, float('nan')):6.2f}" for r in runs))
    for i, note in enumerate(notes):
        print(f"run {i + 1}: feature cache {note}")
    print(f"floor: a fresh process running `{FLOOR}`, after each run; runner's own: first image decoded - floor")
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"recipe": args.recipe, "overrides": args.overrides, "runs": runs,
                                         "notes": notes}, indent=1))


if __name__ == "__main__":
    main()
