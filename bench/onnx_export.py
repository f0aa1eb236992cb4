"""What exporting the frozen trunk to ONNX costs, by exporter, and how fast ONNX Runtime then runs it against torch
(``runner/onnx_trunk.py``: the cached pass of ``trunk_runtime: auto | onnxruntime``).

    python bench/onnx_export.py                               # efficientnet_lite0 at 224 px, batch 16
    python bench/onnx_export.py --backbone resnet18 --json export.json
    RUNNER_DATA_PATH=../shared/data python bench/onnx_export.py --recipe recipes/extract.yaml   # + a real pass

The trunk is the BatchNorm-folded eval-mode model with its head replaced by an identity, as a run exports it.
Each exporter writes into a temporary folder, for the batch's shape as runner exports (and, for comparison,
the TorchScript exporter with a dynamic batch). Speeds are taken in ``--repeat`` interleaved rounds (every runtime
once per round, best round kept: a runtime timed first in a process runs slower for a while) over 64 random
images, torch in channels_last as a run uses it; the largest difference to torch's features shows that each
export computes the same thing (fp32 rounding). ``--recipe`` also times passes over the recipe's training split
fed by its loader (the transforms run between batches, as in a run): torch, and ONNX Runtime with and without its
threads busy-waiting between calls (``session.intra_op.allow_spinning``).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_rates(runtimes: dict, batches, repeat: int) -> dict[str, float]:
    """Images/s of each runtime over ``batches`` (a list, or a callable giving an iterable of image batches), best of
    ``repeat`` interleaved rounds after one warm-up batch each."""
    import torch

    def each():
        return batches() if callable(batches) else batches

    best = {name: float("inf") for name in runtimes}
    count = 0
    with torch.inference_mode():
        for forward in runtimes.values():
            forward(next(iter(each())))
        for _ in range(repeat):
            for name, forward in runtimes.items():
                count = 0
                started = time.perf_counter()
                for images in each():
                    forward(images)
                    count += len(images)
                best[name] = min(best[name], time.perf_counter() - started)
    return {name: count / seconds for name, seconds in best.items()}


def ort_runtime(path: Path, spinning: bool = True):
    import torch

    from runner import onnx_trunk

    session = onnx_trunk.open_session(path, spinning)
    if isinstance(session.get_inputs()[0].shape[0], int):
        return onnx_trunk.batched(session)
    feed = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {feed: x.contiguous().numpy()})[0])


def torch_runtime(trunk):
    import torch

    fast = copy.deepcopy(trunk).to(memory_format=torch.channels_last)
    return lambda x: fast(x.contiguous(memory_format=torch.channels_last))


def dynamic_batch(module, shape, path: Path) -> None:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, *shape[1:]),), str(path), dynamo=False, input_names=["images"],
                          dynamic_axes={"images": {0: "batch"}})


def loader_fed(recipe: str, folder: Path, repeat: int) -> list[dict]:
    """Passes over the recipe's training split, batches from its loader, per runtime."""
    from torch.utils.data import DataLoader

    from runner import engine, feature_cache, hardware, onnx_trunk, session
    from runner.folding import fold_batchnorm

    loaded, catalog = session.load(recipe, [])
    run = engine.build(loaded, catalog)
    run.model.eval()
    head = next(name for name, module in run.model.named_modules() if module is run.backbone.head)
    trunk = onnx_trunk._trunk_only(fold_batchnorm(run.model)[0], head)
    loader = DataLoader(run.data.train, batch_size=feature_cache.extraction_batch(run), shuffle=False)
    path = folder / "recipe-trunk.onnx"
    batch = feature_cache.extraction_batch(run)
    onnx_trunk._export(copy.deepcopy(trunk), (batch, *run.data.train[0][0].shape), path)
    runtimes = {"torch": torch_runtime(trunk), "onnxruntime, spinning on": ort_runtime(path, True),
                "onnxruntime, spinning off": ort_runtime(path, False)}
    hardware.keep_freed_memory()  # the environment of a run's pass (feature_cache.extract)
    with hardware.compute_threads(run.device):
        rates = best_rates(runtimes, lambda: (images for images, _ in loader), repeat)
    return [{"runtime": name, "images": len(run.data.train), "img_s": round(rate, 1)} for name, rate in rates.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--recipe", help="also time loader-fed passes over this recipe's training split")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()

    import torch

    from runner import hardware, onnx_trunk
    from runner.folding import fold_batchnorm
    from runner.plugins import load_catalog

    hardware.keep_freed_memory()

    component = load_catalog().get("backbone", args.backbone)
    built = component.build(component.params())
    built.replace_head(2)  # as a run does: the head is the module the trunk's output feeds
    folded, _ = fold_batchnorm(built.model.eval())
    head = next(name for name, module in built.model.named_modules() if module is built.head)
    trunk = onnx_trunk._trunk_only(folded, head)
    images = torch.randn(args.batch, 3, args.size, args.size)
    with torch.inference_mode():
        want = trunk(images)
    rows, runtimes = {"torch (no export)": {"export_s": 0.0, "max_diff": 0.0}}, {"torch (no export)":
                                                                                 torch_runtime(trunk)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, dynamo in (("torchscript", False), ("dynamo", True), ("torchscript, any batch", None)):
            path = folder / f"{name}.onnx"
            started = time.perf_counter()
            try:
                if dynamo is None:  # what runner exported before: a dynamic batch keeps the padding's arithmetic
                    dynamic_batch(copy.deepcopy(trunk), images.shape, path)
                else:
                    onnx_trunk._export(copy.deepcopy(trunk), tuple(images.shape), path, dynamo=dynamo)
            except Exception as exc:
                rows[name] = {"failed": f"{type(exc).__name__}: {str(exc)[:100]}"}
                continue
            export_s = time.perf_counter() - started
            runtimes[name] = ort_runtime(path)
            with torch.inference_mode():
                rows[name] = {"export_s": round(export_s, 2), "max_diff": float((runtimes[name](images) - want)
                                                                                 .abs().max())}
        per_batch = [images] * max(1, 64 // args.batch)
        for name, rate in best_rates(runtimes, per_batch, args.repeat).items():
            rows[name]["img_s"] = round(rate, 1)
        passes = loader_fed(args.recipe, folder, args.repeat) if args.recipe else []
    print(f"{'exporter':<24} {'export s':>9} {'images/s':>9} {'max diff':>9}")
    for name, row in rows.items():
        if "failed" in row:
            print(f"{name:<24} failed: {row['failed']}")
        else:
            print(f"{name:<24} {row['export_s']:>9.1f} {row['img_s']:>9.1f} {row['max_diff']:>9.1e}")
    for row in passes:
        print(f"{args.recipe} train split ({row['images']} images, loader-fed) through {row['runtime']}: "
              f"{row['img_s']:.1f} images/s")
    result = {"backbone": args.backbone, "batch": args.batch, "size": args.size, "cpu": hardware.cpu_summary(),
              "threads": torch.get_num_threads(), "rows": [{"exporter": n, **r} for n, r in rows.items()],
              "passes": passes}
    print(f"CPU: {result['cpu']}; {result['threads']} threads")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
