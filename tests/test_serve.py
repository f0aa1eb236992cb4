"""runner serve: a real server process on 127.0.0.1 answering over HTTP what runner.load(...).predict answers,
batching concurrent requests, refusing bad uploads with a 4xx and serving on."""
from __future__ import annotations

import asyncio
import hashlib
import io
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from typer.testing import CliRunner

import runner
from runner.errors import RunnerError
from test_engine import write_recipe

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 200_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny trained run and ``runner serve`` on it in a subprocess, killed at the end."""
    from conftest import make_imagefolder

    tmp = tmp_path_factory.mktemp("serve")
    data = make_imagefolder(tmp / "data")
    result = runner.run(write_recipe(tmp, data, epochs=1), progress=False)
    port = free_port()
    log = open(tmp / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "serve", str(result.folder), "--port", str(port),
                             "--max-bytes", str(MAX_BYTES), "--max-wait-ms", "20"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{Path(log.name).read_text()}"
            assert time.monotonic() < deadline, f"the server did not come up:\n{Path(log.name).read_text()}"
            try:
                if httpx.get(f"{url}/v1/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        files = sorted((data / "val").rglob("*.jpg"))
        yield SimpleNamespace(url=url, folder=result.folder, files=files, port=port,
                              client=httpx.Client(base_url=url, timeout=60, trust_env=False), log=Path(log.name))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def upload(*paths: Path, field: str = "files") -> list:
    return [(field, (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def same_rows(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g["file"] == Path(e["file"]).name and g["class"] == e["class"]
        assert [c for c, _ in g["top"]] == [c for c, _ in e["top"]]
        assert g["probability"] == pytest.approx(e["probability"], abs=1e-4)
        assert [p for _, p in g["top"]] == pytest.approx([p for _, p in e["top"]], abs=1e-4)


def test_predictions_equal_model_predict(served):
    expected = runner.load(served.folder).predict([str(f) for f in served.files])
    r = served.client.post("/v1/predict", files=upload(*served.files))
    assert r.status_code == 200, r.text
    same_rows(r.json()["predictions"], expected)
    one = served.client.post("/v1/predict", params={"top": 1}, files=upload(served.files[-1])).json()["predictions"]
    assert len(one) == 1 and len(one[0]["top"]) == 1 and one[0]["class"] == expected[-1]["class"]


def test_concurrent_requests_are_answered_and_batched(served):
    expected = {Path(row["file"]).name: row for row in runner.load(served.folder).predict(map(str, served.files))}
    before = served.client.get("/v1/health").json()

    async def hammer():
        async with httpx.AsyncClient(base_url=served.url, timeout=60, trust_env=False,  # conftest's proxy: no
                                     limits=httpx.Limits(max_connections=32)) as client:
            return await asyncio.gather(*(client.post("/v1/predict", files=upload(served.files[i % len(served.files)]))
                                          for i in range(32)))

    answers = asyncio.run(hammer())
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    for a in answers:
        (got,) = a.json()["predictions"]
        same_rows([got], [expected[got["file"]]])
    health = served.client.get("/v1/health").json()
    assert health["status"] == "ok" and health["requests"] - before["requests"] == 32
    assert health["images"] - before["images"] == 32
    assert health["batches"] - before["batches"] < 32 and health["max_batch_seen"] > 1  # images shared passes
    assert sum(int(size) * n for size, n in health["batch_sizes"].items()) == health["images"]
    assert health["recent_batch_sizes"] and max(health["recent_batch_sizes"]) <= health["max_batch"] == 32


def png_header(width: int, height: int) -> bytes:
    """A PNG that says it is width x height (a few dozen bytes): what a decompression bomb looks like at open."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_bad_requests_get_a_4xx_naming_the_problem_and_the_server_serves_on(served):
    jpeg = served.files[0].read_bytes()
    good = upload(served.files[0])
    cases = [
        ("not an image", {"files": [("files", ("notes.txt", b"hello, not a picture", "text/plain"))]}, 400,
         "notes.txt: not an image"),
        ("truncated", {"files": [("files", ("cut.jpg", jpeg[:len(jpeg) // 2], "image/jpeg"))]}, 400,
         "cut.jpg: truncated"),
        ("empty", {"files": [("files", ("empty.jpg", b"", "image/jpeg"))]}, 400, "empty.jpg: empty file"),
        ("bomb", {"files": [("files", ("bomb.png", png_header(9000, 9000), "image/png"))]}, 400,
         "bomb.png: too large (9000x9000 pixels"),
        ("huge bomb", {"files": [("files", ("huge.png", png_header(30000, 30000), "image/png"))]}, 400,
         "huge.png: too large"),
        ("over --max-bytes", {"files": [("files", ("big.jpg", jpeg + b"\0" * MAX_BYTES, "image/jpeg"))]}, 413,
         "big.jpg: over --max-bytes"),
        ("one bad among good", {"files": good + [("files", ("x.jpg", b"junk", "image/jpeg"))]}, 400,
         "x.jpg: not an image"),
        ("wrong field", {"files": upload(served.files[0], field="image")}, 400, "field(s) 'image'"),
        ("no files", {"data": {"note": "hi"}}, 400, "field 'files'"),
        ("not multipart", {"json": {"files": "a.jpg"}}, 400, "application/json, not multipart/form-data"),
        ("no body", {}, 400, "no images"),
        ("a text field", {"data": {"files": "a.jpg"}}, 422, "files"),
        ("top 0", {"files": good, "params": {"top": 0}}, 422, "top"),
        ("too many files", {"files": good * 65}, 413, "at most 64"),
    ]
    rejected = served.client.get("/v1/health").json()["rejected"]
    for name, request, status, words in cases:
        r = served.client.post("/v1/predict", **request)
        assert r.status_code == status, (name, r.text)
        assert words in r.json()["error"], (name, r.text)
        ok = served.client.post("/v1/predict", files=good)
        assert ok.status_code == 200 and ok.json()["predictions"][0]["file"] == served.files[0].name, (name, ok.text)
    health = served.client.get("/v1/health").json()
    assert health["status"] == "ok" and health["rejected"] - rejected == len(cases)
    assert "Traceback" not in served.log.read_text()


def test_model_endpoint_and_docs(served):
    info = served.client.get("/v1/model").json()
    model = runner.load(served.folder)
    assert info["classes"] == model.classes == ["cats", "dogs"]
    assert info["sha256"] == hashlib.sha256((served.folder / "best.pt").read_bytes()).hexdigest()
    assert info["preprocess"]["size"] == model.preprocess.size and info["recipe"]["backbone"] == model.recipe["backbone"]
    assert info["tta"] == "none" and info["dtype"] == "float32"  # the recipe says fp32
    assert served.client.get("/docs").status_code == 200
    assert "/v1/predict" in served.client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_batcher_runs_queued_images_as_one_pass_equal_to_predict(served, tta):
    from runner import serve

    from runner.inference import load_trained
    from runner.plugins import load_catalog

    model = runner.load(served.folder, tta=tta)
    expected = model.predict([str(f) for f in served.files])
    trained = load_trained(served.folder, load_catalog(), tta=tta)
    transform = trained.transform()
    images = [transform(serve.decode(f.read_bytes())) for f in served.files]

    async def run():
        batcher = serve.Batcher(trained, max_batch=32, max_wait_ms=200)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit([image]) for image in images)), batcher.stats
        finally:
            await batcher.stop()

    answers, stats = asyncio.run(run())
    assert stats.batches == 1 and stats.max_batch_seen == len(images)
    got = [serve.row(model.classes, p, 3, f.name) for (p,), f in zip(answers, served.files)]
    same_rows(got, expected)


def test_missing_extra_is_one_line_saying_how_to_install(monkeypatch):
    from runner import serve
    from runner.cli import app

    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(RunnerError) as caught:
        serve.require_extra()
    assert caught.value.problems == ["runner serve needs the serve extra (missing fastapi): "
                                     "pip install 'runner-transfer[serve]'"]
    done = CliRunner().invoke(app, ["serve", "no/such/run"])
    assert done.exit_code == 2 and "pip install 'runner-transfer[serve]'" in done.output


def test_port_in_use_and_bad_options_are_one_line_errors(served):
    from runner.cli import app

    done = CliRunner().invoke(app, ["serve", str(served.folder), "--port", str(served.port)])
    assert done.exit_code == 2 and f"cannot listen on 127.0.0.1:{served.port}" in done.output
    done = CliRunner().invoke(app, ["serve", str(served.folder), "--max-batch", "0", "--top", "0"])
    assert done.exit_code == 2 and "--max-batch 0" in done.output and "--top 0" in done.output
