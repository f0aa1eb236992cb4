"""How fast a preload decodes photos much larger than the transforms need: JPEG draft mode and decoding threads.

    RUNNER_DATA_PATH=../shared/data python bench/decode_speed.py             # 48 ants/bees photos enlarged to 3000 px
    python bench/decode_speed.py --count 96 --side 4000 --json decode.json

Phone photos are 3000-4000 pixels a side; a 224-pixel model keeps a 256- or 512-pixel copy of each (``MemoryLoader``).
The photos here are real ants/bees images enlarged (bicubic) and saved as JPEG (quality 90), then preloaded the way
a run does (``runner.imagedata.drop_bad_images`` through a ``MemoryLoader``: shorter side 512, a training split)
with draft mode on or off and 1 or all decoding threads. Each row is the best of ``--repeat`` fresh preloads.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DATA = Path(os.environ.get("RUNNER_DATA_PATH", Path(__file__).resolve().parents[2] / "shared" / "data"))


def make_photos(folder: Path, count: int, side: int) -> Path:
    """``count`` JPEGs of ``side`` pixels on the longer side, in two class folders, from the ants/bees images."""
    from PIL import Image

    sources = sorted((DATA / "hymenoptera_data" / "train").glob("*/*.jpg"))[:count]
    if len(sources) < count:
        raise SystemExit(f"needs {count} images under {DATA / 'hymenoptera_data' / 'train'}")
    for source in sources:
        with Image.open(source) as image:
            scale = side / max(image.size)
            big = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                              Image.Resampling.BICUBIC)
        (folder / source.parent.name).mkdir(parents=True, exist_ok=True)
        big.save(folder / source.parent.name / source.name, quality=90)
    return folder


def preload_seconds(root: Path, draft: bool, threads: int) -> tuple[float, tuple[int, int]]:
    from runner import imagedata, images

    original = images.read_rgb
    imagedata.read_rgb = original if draft else (lambda path, decode=True, shorter=None: original(path, decode))
    imagedata.decode_threads = lambda: threads
    try:
        split = imagedata.ImageFolder(str(root))
        split.loader = imagedata.MemoryLoader(512, "bicubic")
        started = time.perf_counter()
        imagedata.drop_bad_images(split, "error")
        seconds = time.perf_counter() - started
    finally:
        imagedata.read_rgb = original
    return seconds, next(iter(split.loader.images.values())).size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=48)
    p.add_argument("--side", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()

    from runner import hardware, imagedata

    everything = imagedata.decode_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_photos(Path(tmp), args.count, args.side)
        print(f"{'draft':>6} {'threads':>8} {'seconds':>8} {'images/s':>9}  kept size")
        for draft in (False, True):
            for threads in sorted({1, everything}):
                seconds, size = min(preload_seconds(root, draft, threads) for _ in range(args.repeat))
                rows.append({"draft": draft, "threads": threads, "seconds": round(seconds, 2),
                             "images_per_s": round(args.count / seconds, 1), "kept": list(size)})
                print(f"{'on' if draft else 'off':>6} {threads:>8} {seconds:>8.2f} {args.count / seconds:>9.1f}  "
                      f"{size[0]}x{size[1]}")
    print(f"{args.count} JPEGs, longer side {args.side}; CPU: {hardware.cpu_summary()}")
    result = {"count": args.count, "side": args.side, "cpu": hardware.cpu_summary(), "rows": rows}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
