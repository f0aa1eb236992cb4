"""How fast a whole model validates on this machine: the plain eval-mode model against its BatchNorm-folded copy
(what a val phase runs on a CPU, ``runner/folding.py``), at several batch sizes, channels_last.

    python bench/val_speed.py                              # efficientnet_lite0, batches 8 16 32 64
    python bench/val_speed.py --backbone resnet18 --batches 16 64 --json val.json

Random 224-pixel images (speed does not depend on the pixels); each cell is the best of ``--repeat`` timed passes of
64 images after one warm-up pass. The largest difference between the two models' logits is shown (fp32 rounding).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def images_per_second(model, batch: int, repeat: int) -> float:
    import torch

    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    passes = max(1, 64 // batch)
    with torch.inference_mode():
        model(x)
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            for _ in range(passes):
                model(x)
            best = min(best, time.perf_counter() - started)
    return batch * passes / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()

    import torch

    from runner import hardware
    from runner.folding import fold_batchnorm
    from runner.plugins import load_catalog

    component = load_catalog().get("backbone", args.backbone)
    model = component.build(component.params()).model.eval().to(memory_format=torch.channels_last)
    folded, count = fold_batchnorm(model)
    folded.to(memory_format=torch.channels_last)
    probe = torch.randn(4, 3, 224, 224)
    with torch.inference_mode():
        difference = float((model(probe) - folded(probe)).abs().max())
    rows = []
    print(f"{'batch':>5} {'plain img/s':>12} {'folded img/s':>13} {'x':>6}")
    for batch in args.batches:
        plain, fast = images_per_second(model, batch, args.repeat), images_per_second(folded, batch, args.repeat)
        rows.append({"batch": batch, "plain_img_s": round(plain, 1), "folded_img_s": round(fast, 1)})
        print(f"{batch:>5} {plain:>12.1f} {fast:>13.1f} {fast / plain:>6.2f}")
    print(f"{args.backbone}: {count} BatchNorms folded, largest logit difference {difference:.1e}; "
          f"CPU: {hardware.cpu_summary()}; {torch.get_num_threads()} threads")
    result = {"backbone": args.backbone, "folded": count, "max_diff": difference, "cpu": hardware.cpu_summary(),
              "rows": rows}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
