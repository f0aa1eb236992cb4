"""How fast the command line answers: each command in a fresh process, timed from outside, against its budget.

    RUNNER_DATA_PATH=../shared/data python bench/cli_startup.py            # 5 runs each, median
    python bench/cli_startup.py --runs 3 --json startup.json

Prints a table (median and fastest wall seconds, the budget, and which heavy libraries the command imported) and
the same as JSON. Output goes to a pipe, as in a script or CI log; ``--tty`` runs each command under a
pseudo-terminal instead (rich help, as a person at a terminal sees it). The CPU is printed with the figures:
start-up is import time, and import time is CPU time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMMANDS = [  # (arguments, budget in seconds: issue "A command line people enjoy")
    (["--help"], 0.3),
    (["run", "--help"], 0.3),
    (["list"], 1.5),
    (["show", "optimizer", "sgd"], 1.5),
    (["show", "optimizer", "RAdam"], None),  # its parameters come from torch's signature: torch is imported
    (["plugins"], 1.5),
    (["validate", "recipes/extract.yaml"], 1.5),
    (["plan", "recipes/extract.yaml"], 3.0),
]

HEAVY = ("torch", "torchvision", "timm", "numpy", "PIL", "matplotlib", "pydantic")

PROBE = """
import atexit, json, sys
atexit.register(lambda: sys.stderr.write("\\nHEAVY " + json.dumps([m for m in {heavy!r} if m in sys.modules]) + "\\n"))
sys.argv = ["runner", *sys.argv[1:]]
from runner.cli import entry
entry()
"""


def cpu() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
    fast = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(fast) or 'no AVX2'}"


def time_command(args: list[str], runs: int, tty: bool) -> dict:
    """Wall seconds of ``runner ARGS`` in fresh processes (the runner script, so its own start-up counts)."""
    runner = Path(sys.executable).with_name("runner")
    command = [str(runner), *args]
    if tty:
        command = ["script", "-qec", " ".join(command), "/dev/null"]
    walls, heavy = [], []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"runner {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    probe = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], cwd=REPO,
                           capture_output=True, text=True)
    for line in probe.stderr.splitlines():
        if line.startswith("HEAVY "):
            heavy = json.loads(line[6:])
    return {"command": "runner " + " ".join(args), "median_s": round(statistics.median(walls), 3),
            "fastest_s": round(min(walls), 3), "imports": heavy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tty", action="store_true", help="under a pseudo-terminal (needs util-linux script)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    rows = []
    for command, budget in COMMANDS:
        row = time_command(command, args.runs, args.tty)
        row["budget_s"] = budget
        row["within"] = None if budget is None else row["median_s"] <= budget
        rows.append(row)
    print(f"CPU: {cpu()}; {args.runs} runs each, output to a {'terminal' if args.tty else 'pipe'}")
    print(f"{'command':<38} {'median s':>8} {'fastest':>8} {'budget':>7}  imports")
    for row in rows:
        budget = "-" if row["budget_s"] is None else f"{row['budget_s']:.1f}"
        flag = "" if row["within"] in (None, True) else " OVER"
        print(f"{row['command']:<38} {row['median_s']:>8.2f} {row['fastest_s']:>8.2f} {budget:>7}  "
              f"{', '.join(row['imports']) or '-'}{flag}")
    result = {"cpu": cpu(), "runs": args.runs, "tty": args.tty, "python": platform.python_version(), "rows": rows}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
