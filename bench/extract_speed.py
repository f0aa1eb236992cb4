"""What makes the cached trunk pass fast, measured: each way of running runner's feature extraction, one at a time
in a fresh process (the allocator setting cannot be undone in a process), on the real images of a recipe.

    RUNNER_DATA_PATH=../shared/data python bench/extract_speed.py               # every configuration, extract.yaml
    python bench/extract_speed.py --configs before,now --repeat 3               # a few, three times each
    python bench/extract_speed.py --compile                                     # also torch.compile of the trunk

Each configuration builds the recipe (preload included, not timed), then times ``feature_cache.extract`` over the
training split (one view: the random crops and the trunk, as a run pays them) ``--repeat`` times; the table shows
the first pass (what a run pays) and the best pass, in images/s, with the CPU it ran on. The features of every
configuration are compared with the plain path's (``before``): the largest difference is shown.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    # name: (fold, keep freed memory, batch, prefetch (transforms one batch ahead in a thread; None: measured on
    # the pass, runner.feeding), threads (None: physical cores), channels_last)
    "before": dict(fold=False, malloc=False, batch=64, prefetch=False, threads=None, channels_last=True),
    "+malloc": dict(fold=False, malloc=True, batch=64, prefetch=False, threads=None, channels_last=True),
    "+fold": dict(fold=True, malloc=False, batch=64, prefetch=False, threads=None, channels_last=True),
    "fold+malloc b64": dict(fold=True, malloc=True, batch=64, prefetch=False, threads=None, channels_last=True),
    "fold+malloc b32": dict(fold=True, malloc=True, batch=32, prefetch=False, threads=None, channels_last=True),
    "now (b16)": dict(fold=True, malloc=True, batch=16, prefetch=None, threads=None, channels_last=True),
    "fold+malloc b8": dict(fold=True, malloc=True, batch=8, prefetch=False, threads=None, channels_last=True),
    "now NCHW": dict(fold=True, malloc=True, batch=16, prefetch=None, threads=None, channels_last=False),
    "now, no prefetch": dict(fold=True, malloc=True, batch=16, prefetch=False, threads=None, channels_last=True),
    "now, prefetch": dict(fold=True, malloc=True, batch=16, prefetch=True, threads=None, channels_last=True),
    "now 1-thread": dict(fold=True, malloc=True, batch=16, prefetch=None, threads=1, channels_last=True),
}
ALIASES = {"now": "now (b16)"}


def one(recipe: str, name: str, repeat: int, compile_: bool, reference: str | None) -> dict:
    """In this process: build ``recipe``, set configuration ``name`` up, time the extraction ``repeat`` times."""
    import torch

    from runner import engine, feature_cache, hardware, session

    config = CONFIGS[name] if not compile_ else CONFIGS["now (b16)"]
    if config["threads"]:
        os.environ["OMP_NUM_THREADS"] = str(config["threads"])  # compute_threads then leaves torch's setting
        torch.set_num_threads(config["threads"])
    if not config["malloc"]:
        hardware.keep_freed_memory = lambda: False
    if not config["fold"]:
        feature_cache.fold_batchnorm = lambda model: (model, 0)
    feature_cache.EXTRACT_CPU_BATCH = config["batch"]
    if config["prefetch"] is not None:
        from runner import feeding

        feed = feeding.feed
        feeding.feed = lambda batches, verdict: feed(batches, {"ahead": config["prefetch"]})
    loaded, catalog = session.load(recipe, [f"channels_last={str(config['channels_last']).lower()}"])
    built = time.perf_counter()
    run = engine.build(loaded, catalog)
    build_s = time.perf_counter() - built
    if compile_:
        fold = feature_cache.fold_batchnorm

        def compiled(model):
            trunk, count = fold(model)
            return torch.compile(trunk), count

        feature_cache.fold_batchnorm = compiled
        feature_cache._submodule_named_like = lambda model, module, copy: (
            module if copy is model else copy._orig_mod.get_submodule(
                next(n for n, m in model.named_modules() if m is module)))
    passes = []
    features = None
    for _ in range(repeat):
        torch.manual_seed(0)
        started = time.perf_counter()
        features, _ = feature_cache.extract(run, run.data.train, 1)
        passes.append(time.perf_counter() - started)
    n = len(run.data.train)
    result = {"config": "torch.compile (now)" if compile_ else name, "images": n, "first_s": passes[0],
              "best_s": min(passes), "first_img_s": n / passes[0], "best_img_s": n / min(passes),
              "build_s": build_s, "threads": torch.get_num_threads(), "cpu": hardware.cpu_summary()}
    if reference:
        ref = torch.load(reference, weights_only=True)
        result["max_diff"] = float((features - ref).abs().max())
    else:
        result["features"] = features
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="recipes/extract.yaml")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated: {', '.join(CONFIGS)} (now = "
                                                               "what runner does)")
    p.add_argument("--repeat", type=int, default=2, help="timed passes per configuration (the first is a run's)")
    p.add_argument("--compile", action="store_true", help="also torch.compile of the folded trunk (compile time "
                                                          "is in the first pass)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--reference", help=argparse.SUPPRESS)
    p.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        import torch

        result = one(args.recipe, args.one, args.repeat, args.compiled, args.reference)
        if "features" in result:
            torch.save(result.pop("features"), os.environ["EXTRACT_SPEED_REFERENCE"])
        print(json.dumps(result))
        return
    import tempfile

    names = [ALIASES.get(n.strip(), n.strip()) for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    if "before" in names:
        names.remove("before")
    names.insert(0, "before")  # the reference for the features' difference
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = str(Path(tmp) / "before.pt")
        env = dict(os.environ, RUNNER_CACHE_DIR=str(Path(tmp) / "cache"), EXTRACT_SPEED_REFERENCE=reference)
        shared = REPO.parent / "shared" / "data"
        if "RUNNER_DATA_PATH" not in env and shared.is_dir():
            env["RUNNER_DATA_PATH"] = str(shared)
        jobs = [(n, False) for n in names] + ([("now (b16)", True)] if args.compile else [])
        for name, compiled in jobs:
            cmd = [sys.executable, __file__, "--recipe", args.recipe, "--one", name, "--repeat", str(args.repeat),
                   *(["--compiled"] if compiled else []),
                   *(["--reference", reference] if name != "before" or compiled else [])]
            out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{row['config']:>22}: first pass {row['first_img_s']:6.1f} img/s, best {row['best_img_s']:6.1f} "
                  f"img/s ({row['images']} images, {row['threads']} threads"
                  f"{', max |diff| %.1e' % row['max_diff'] if 'max_diff' in row else ''})", flush=True)
    print(f"CPU: {rows[0]['cpu']}; load average at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
