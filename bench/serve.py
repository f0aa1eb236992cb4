"""Serving throughput: ``runner serve`` under concurrent HTTP load, with dynamic batching and without, beside
``runner predict`` (a process per call).

    python bench/serve.py                          # trains a tiny model first (seconds), then measures it
    python bench/serve.py runs/extract-*/          # a run folder (or checkpoint); --images for its images
    python bench/serve.py --requests 100 --concurrency 1,8,32 --json out.json

The server is the real command in a subprocess on a free port (``runner serve FOLDER --port P``, and again with
``--max-batch 1``); the client is httpx, N requests of one image each from C concurrent asyncio workers, each with
a keep-alive connection of its own, after C untimed warm-up requests. Per cell: requests/s over the timed
requests, p50 and p99 latency, and the mean batch size the server's /v1/health reports for them.
``runner predict FOLDER IMAGE`` is timed end to end as one process per call (start-up and model load included),
the way a script calling it per image would. Client and server share the machine's CPUs.
"""
import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import REPO, tiny_data, timed  # noqa: E402  (bench/ is not a package: the sibling script's helpers)

TINY_RECIPE = {
    "backbone": {"name": "timm", "model": "test_efficientnet"},  # timm's test model: no download, trains in seconds
    "freeze": "all_but_head",
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "scheduler": {"name": "step", "step_size": 1, "gamma": 0.5},
    "epochs": 1,
    "precision": "auto",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_tiny(into: Path) -> tuple[Path, Path]:
    """A tiny run (timm's test_efficientnet on generated two-class images, one epoch): its folder and val images."""
    data = tiny_data(into)
    recipe = {**TINY_RECIPE, "dataset": {"name": "imagefolder", "root": str(data), "batch_size": 4, "workers": 0},
              "output": str(into / "runs")}
    path = into / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    timed([sys.executable, "-m", "runner", "run", str(path)], dict(os.environ))
    (best,) = (into / "runs").glob("*/best.pt")
    return best.parent, data / "val"


def image_files(ref: Path) -> list[Path]:
    if ref.is_file():
        return [ref]
    return sorted(p for p in ref.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class Server:
    """``runner serve`` in a subprocess on a free port, up once /v1/health answers; killed on exit."""

    def __init__(self, model: Path, options: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "runner", "serve", str(model), "--port", str(self.port), *options]

    def __enter__(self):
        import httpx

        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2, trust_env=False).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise SystemExit(f"the server did not come up: {' '.join(self.cmd)}\n{self.output()[-3000:]}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/v1/health", timeout=10, trust_env=False).json()

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def load(url: str, payloads: list[tuple[str, bytes]], requests: int, concurrency: int) -> dict:
    """``requests`` POSTs of one image each from ``concurrency`` workers (after ``concurrency`` untimed ones):
    wall seconds and per-request latencies. Each worker has a client of its own with one keep-alive connection
    (httpx's shared pool slows down past a few connections: it would measure the client, not the server)."""
    import httpx

    clients = [httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=1), timeout=120, trust_env=False)
               for _ in range(concurrency)]

    async def one(client, i: int) -> float:
        name, data = payloads[i % len(payloads)]
        started = time.perf_counter()
        r = await client.post("/v1/predict", files={"files": (name, data, "application/octet-stream")})
        took = time.perf_counter() - started
        if r.status_code != 200:
            raise SystemExit(f"{r.status_code} from the server: {r.text[:500]}")
        return took

    async def worker(client, todo: list[int], out: list[float]):
        while todo:
            out.append(await one(client, todo.pop()))

    try:
        await asyncio.gather(*(one(client, w) for w, client in enumerate(clients)))  # warm-up: connections open
        todo, latencies = list(range(requests)), []
        started = time.perf_counter()
        await asyncio.gather(*(worker(client, todo, latencies) for client in clients))
        wall = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    return {"wall_s": wall, "latencies": latencies}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def serve_cells(model: Path, files: list[Path], mode: str, options: list[str], levels: list[int],
                requests: int) -> list[dict]:
    payloads = [(f.name, f.read_bytes()) for f in files]
    rows = []
    with Server(model, options) as server:
        for c in levels:
            before = server.health()
            got = asyncio.run(load(server.url, payloads, requests, c))
            after = server.health()
            batches = after["batches"] - before["batches"]
            images = after["images"] - before["images"]
            lat = got["latencies"]
            rows.append({"server": mode, "options": options, "concurrency": c, "requests": len(lat),
                         "req_per_s": len(lat) / got["wall_s"], "p50_ms": 1000 * percentile(lat, 50),
                         "p99_ms": 1000 * percentile(lat, 99), "wall_s": got["wall_s"],
                         "mean_batch": images / batches if batches else None,
                         "max_batch_seen": after["max_batch_seen"]})
    return rows


def predict_cell(model: Path, image: Path, calls: int) -> dict:
    """``runner predict MODEL IMAGE --json`` as one process per call."""
    walls = [timed([sys.executable, "-m", "runner", "predict", str(model), str(image), "--json"],
                   dict(os.environ))[0] for _ in range(calls)]
    return {"server": "runner predict (a process per call)", "options": [], "concurrency": 1, "requests": calls,
            "req_per_s": 1 / statistics.median(walls), "p50_ms": 1000 * statistics.median(walls),
            "p99_ms": 1000 * max(walls), "wall_s": sum(walls), "mean_batch": 1.0, "max_batch_seen": 1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", type=Path, help="run folder or checkpoint (default: train a tiny one)")
    p.add_argument("--images", type=Path, help="image file or folder to send (default: the tiny run's val images)")
    p.add_argument("--requests", type=int, default=200, help="timed requests per concurrency level")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated numbers of concurrent clients")
    p.add_argument("--predict-calls", type=int, default=3, help="runner predict processes to time")
    p.add_argument("--serve-option", action="append", default=[],
                   help="extra option for runner serve (e.g. --serve-option=--device=cpu); repeatable")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c]
    load_before = os.getloadavg()[0]  # the machine may be shared: said beside the numbers
    console = Console(width=None if sys.stdout.isatty() else 140)
    with tempfile.TemporaryDirectory() as tmp:
        model, images = args.model, args.images
        trained_s = None
        if model is None:
            started = time.perf_counter()
            model, val = train_tiny(Path(tmp))
            trained_s = time.perf_counter() - started
            images = images or val
        if images is None:
            images = tiny_data(Path(tmp) / "images") / "val"
        files = image_files(images)
        if not files:
            raise SystemExit(f"no images in {images}")
        rows = []
        for mode, options in (("runner serve (batching)", []), ("runner serve --max-batch 1", ["--max-batch", "1"])):
            rows += serve_cells(model, files, mode, [*options, *args.serve_option], levels, args.requests)
        rows.append(predict_cell(model, files[0], args.predict_calls))
    single = next((r for r in rows if r["server"].endswith("--max-batch 1") and r["concurrency"] == 1), rows[0])
    for r in rows:
        r["x_one_at_a_time"] = r["req_per_s"] / single["req_per_s"]
    import torch

    title = (f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads); "
             f"{'tiny model trained here' if args.model is None else args.model}; {len(files)} images; "
             f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    table = Table("server", "concurrency", "requests", "req/s", "p50 ms", "p99 ms", "mean batch",
                  "x unbatched c=1", title=title, title_justify="left")
    for r in rows:
        table.add_row(r["server"], str(r["concurrency"]), str(r["requests"]), f"{r['req_per_s']:.1f}",
                      f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      "" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}", f"{r['x_one_at_a_time']:.3g}")
    console.print(table)
    result = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "model": str(args.model) if args.model else "tiny (trained here)", "train_s": trained_s,
              "load_average": [load_before, os.getloadavg()[0]],
              "images": len(files), "rows": rows}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
